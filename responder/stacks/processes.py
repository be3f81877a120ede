"""Finding and ending every process of one stack operation: worker, CLI, language host, providers.

Pulumi starts provider plugins (such as the dynamic provider) in process groups of their own, so
neither the worker's process group nor its direct children cover an operation. Two ways find them:
- the marker: each worker is started with `RESPONDER_WORKER_ID=<unique id>` in its environment, which
  every process it starts inherits, so a scan of /proc finds them even after the worker died;
- the tree: the worker is a child subreaper, so orphans re-parent to it and stay below it.
"""

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

MARKER_VARIABLE = "RESPONDER_WORKER_ID"
POLL_SECONDS = 0.05

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def marked(marker: str) -> list[int]:
    """Live processes whose environment carries `RESPONDER_WORKER_ID=<marker>` (zombies have none)."""
    entry = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # exited, or another user's
            continue
        if entry in environ.split(b"\0"):
            found.append(pid)
    return found


def children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is `parent`."""
    return _live_children().get(parent, [])


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes below `root`, from one scan of /proc."""
    by_parent = _live_children()
    found: list[int] = []
    parents = [root]
    while parents:
        below = [child for parent in parents for child in by_parent.get(parent, [])]
        found += below
        parents = below
    return found


def signal_all(find: Callable[[], Iterable[int]], sig: signal.Signals) -> list[int]:
    """Send `sig` to the processes `find` returns; returns the pids signalled.

    Each pid is pinned with a pidfd and signalled only if a second scan, made after pinning, still
    finds it: a pid that was reused in between by an unrelated process is never signalled.
    """
    pinned: dict[int, int] = {}
    for pid in find():
        with contextlib.suppress(ProcessLookupError):
            pinned[pid] = os.pidfd_open(pid)
    try:
        still = set(find())
        sent = []
        for pid, fd in pinned.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
                    sent.append(pid)
        return sent
    finally:
        for fd in pinned.values():
            os.close(fd)


async def end_marked(marker: str, grace: float) -> None:
    """SIGTERM each process carrying the marker once, SIGKILL whatever is left after `grace` seconds;
    return once none is alive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    terminated: set[int] = set()
    while marked(marker):
        if loop.time() < deadline:
            # Once only: a second SIGTERM makes the pulumi CLI abandon its graceful cancel.
            terminated.update(signal_all(lambda: set(marked(marker)) - terminated, signal.SIGTERM))
        else:
            signal_all(lambda: marked(marker), signal.SIGKILL)
        await asyncio.sleep(POLL_SECONDS)


def end_descendants(grace: float) -> None:
    """SIGTERM every process below this one once, SIGKILL whatever is left after `grace` seconds, and
    reap them. Only for a child subreaper: orphans re-parent to it, so they are found and reaped too."""
    me = os.getpid()
    deadline = time.monotonic() + grace
    terminated: set[int] = set()
    while True:
        reap_children()
        if not descendants(me):
            break
        if time.monotonic() < deadline:
            terminated.update(signal_all(lambda: set(descendants(me)) - terminated, signal.SIGTERM))
        else:
            signal_all(lambda: descendants(me), signal.SIGKILL)
        time.sleep(POLL_SECONDS)
    reap_children()


def reap_children() -> None:
    """Collect every child that has exited. Never while another thread waits on a child of its own:
    this could take that child's exit status."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def become_subreaper() -> None:
    """Processes orphaned below this one re-parent to it instead of to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def signal_on_parent_death(sig: signal.Signals) -> None:
    """Have the kernel send `sig` to this process when its parent dies."""
    _prctl(_PR_SET_PDEATHSIG, sig)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _live_children() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z":
            by_parent.setdefault(stat[1], []).append(pid)
    return by_parent


def running(pid: int) -> bool:
    """Whether `pid` runs: it is neither gone nor dead and waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _stat(pid: int) -> tuple[str, int] | None:
    """State and parent pid of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may itself contain spaces and parentheses.
    state, ppid = stat[stat.rindex(")") + 2 :].split(" ", 2)[:2]
    return state, int(ppid)
