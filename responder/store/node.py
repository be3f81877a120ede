"""This process's name among the nodes that share a store."""

import os
import secrets
import socket


def new_node_id() -> str:
    """Unique per process start: a restarted process is a new node, so the jobs its previous life
    held are never mistaken for its own and are taken over once their leases expire."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
