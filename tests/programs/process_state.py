"""Programs that touch the worker process itself: its environment, its threads, its stdin."""

import os
import subprocess
import sys
import threading
import time

import pulumi

_stacks_seen: list[str] = []


def remembers() -> None:
    """Keeps something in its module: the stacks it ran for (a cache, a client, alike)."""
    _stacks_seen.append(pulumi.get_stack())
    pulumi.export("stacks_seen", list(_stacks_seen))


def sets_umask() -> None:
    os.umask(os.umask(0) ^ 0o004)  # others may read what it creates, or may not: either way changed
    pulumi.export("ok", True)


def sets_env() -> None:
    os.environ["RESPONDER_TEST_LEFT_BEHIND"] = pulumi.get_stack()
    pulumi.export("ok", True)


def leaves_thread() -> None:
    def later() -> None:
        time.sleep(3)
        print("a thread of an earlier request", file=sys.stderr)

    threading.Thread(target=later, daemon=True).start()
    pulumi.export("ok", True)


def reads_stdin() -> None:
    """What a program reading its input gets, itself and through a tool it runs: the end at once."""
    read = sys.stdin.read()
    tool = subprocess.run(["cat"], capture_output=True, timeout=30, check=True).stdout
    pulumi.export("stdin_bytes", len(read) + len(tool))
