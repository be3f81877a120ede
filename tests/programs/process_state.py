"""Programs that touch the worker process itself: its environment, its threads, its stdin."""

import os
import subprocess
import sys
import threading
import time

import pulumi


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
