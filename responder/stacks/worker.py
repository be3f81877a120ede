"""A stack worker process: runs requests' Pulumi steps one at a time, isolated from the daemon."""

# Started as `python -m responder.stacks.worker`. Isolation means a timeout or cancellation can stop
# it, a crash cannot take the daemon down, and concurrent programs never share Pulumi's
# process-global state. SIGTERM is forwarded once to the running `pulumi` CLI, which then cancels
# gracefully; whatever is still running below the worker after the grace period is killed. The
# daemon's death counts as a SIGTERM. No process the worker starts outlives it: it is a child
# subreaper (orphaned plugins re-parent to it) and ends everything below it at the end of each
# request. It takes another request only after one that succeeded and left the process as it found
# it (see ProcessState; a project folder's program changes it); otherwise it exits. Whether it is
# sent another is the daemon's choice (see WorkerPool). The steps themselves are in steps.py.

import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, NamedTuple, TextIO

from responder.stacks import processes
from responder.stacks.protocol import GRACE_VARIABLE, PARENT_VARIABLE, Message, Request

if TYPE_CHECKING:  # pulumi is imported once the process is set up (see warm_up)
    from pulumi.automation import events

_cancelled = threading.Event()
# Protocol lines go out whole, even across a forced exit. Reentrant: the main thread ends at once
# from its SIGTERM handler even while it writes a line (a whole one: handlers run between calls).
_writing = threading.RLock()
_serving = threading.Event()  # a request is running (else the worker waits for one)
THREADS_SETTLE = 0.5  # seconds the threads a request leaves get to end (see ProcessState)


def main() -> int:
    processes.become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    processes.signal_on_parent_death(signal.SIGTERM)
    if os.getppid() != int(os.environ[PARENT_VARIABLE]):
        return 0  # the daemon died before the line above: nothing to run for
    requests = _take_stdin()
    sink = _Sink(_take_stdout())
    if "--warm" in sys.argv:
        warm_up()
    while True:
        line = requests.readline()
        if not line:
            return 0  # the daemon sent no (further) request
        request: Request = json.loads(line)
        before = ProcessState.now()
        _serving.set()
        try:
            from responder.stacks import steps

            code = steps.run(request, sink, _cancelled)
        finally:
            processes.end_descendants(_grace())
        if code != 0 or _cancelled.is_set() or not before.restored():
            return code
        _serving.clear()  # from here a SIGTERM ends the worker at once
        if _cancelled.is_set():  # one came before: its graceful cancel is armed, do not wait for it
            return code
        sink.send({"kind": "ready", "step": ""})


class ProcessState(NamedTuple):
    """What a request must leave as it found it for the worker to take another: the working
    directory, the import path and the environment (what the next program, and the CLI and plugins
    it starts, would inherit), the umask, and the threads (one left running would go on writing to
    the output, into the next request's). The program runs on a thread of the SDK's server, so it
    cannot change signal handlers. What it keeps in its modules, patches into shared ones, or
    changes elsewhere (limits, logging) is not seen here: only programs declared stateless run
    again (see WorkerPool)."""

    cwd: str
    path: list[str]
    environ: dict[str, str]
    umask: int  # the daemon's 0o077 keeps every file of a stack private
    threads: frozenset[int | None]

    @classmethod
    def now(cls) -> "ProcessState":
        umask = os.umask(0o077)
        os.umask(umask)
        threads = frozenset(t.ident for t in threading.enumerate())
        return cls(os.getcwd(), list(sys.path), dict(os.environ), umask, threads)

    def restored(self) -> bool:
        """The process is as it was; threads started since, still ending, get `THREADS_SETTLE`
        seconds in all (the SDK shuts the program's executor down without waiting for it)."""
        deadline = time.monotonic() + THREADS_SETTLE
        for thread in threading.enumerate():
            if thread.ident not in self.threads and time.monotonic() < deadline:
                thread.join(deadline - time.monotonic())
        return ProcessState.now() == self


def warm_up() -> None:
    """Import the heavy modules before a request arrives (the daemon keeps a warm spare)."""
    from responder.stacks import steps  # noqa: F401  (imports pulumi.automation)


def _summarize_event(event: "events.EngineEvent") -> dict[str, object] | None:
    """Keep what the logs need from an engine event; drop stdout chatter."""
    for name, e in (
        ("resource_pre_event", event.resource_pre_event),
        ("res_outputs_event", event.res_outputs_event),
    ):
        if e is not None and e.metadata is not None:
            m = e.metadata
            status = "started" if name == "resource_pre_event" else "done"
            return {
                "type": name,
                "urn": m.urn,
                "op": m.op.value,
                "resource_type": m.type,
                "status": status,
            }
    failed = event.res_op_failed_event
    if failed is not None:
        m = failed.metadata
        return {"type": "res_op_failed_event", "urn": m.urn, "op": m.op.value, "status": "failed"}
    diag = event.diagnostic_event
    if diag is not None and diag.severity in ("warning", "error"):
        return {
            "type": "diagnostic_event",
            "severity": diag.severity,
            "urn": diag.urn,
            "message": diag.message.strip()[:1000],
        }
    summary = event.summary_event
    if summary is not None:
        return {
            "type": "summary_event",
            "resource_changes": summary.resource_changes,
            "duration_seconds": summary.duration_seconds,
        }
    return None


class _Sink:
    """Writes protocol lines; engine events arrive on SDK threads, so writes are serialized."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def send(self, message: Message) -> None:
        line = json.dumps(message, default=str)
        with _writing:
            self._stream.write(line + "\n")
            self._stream.flush()

    def event(self, step: str, event: "events.EngineEvent") -> None:
        summary = _summarize_event(event)
        if summary is not None:
            self.send({"kind": "event", "step": step, "event": summary})


def _take_stdin() -> TextIO:
    """Keep the real stdin for requests; the program and every process below read /dev/null (end
    of input at once, as when a worker's stdin was closed after its one request)."""
    requests = os.fdopen(os.dup(0), "r")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return requests


def _take_stdout() -> TextIO:
    """Keep the real stdout for the protocol; anything the program prints goes to stderr instead."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """Pass the first SIGTERM to the CLI (a graceful cancel); end everything left after the grace."""
    if not _serving.is_set():  # waiting for a request: nothing to cancel, nothing to wait for
        _end_now()
    if _cancelled.is_set():
        return
    _cancelled.set()
    me = os.getpid()
    processes.signal_all(lambda: processes.children(me), signal.SIGTERM)
    timer = threading.Timer(_grace(), _end_now)
    timer.daemon = True
    timer.start()


def _end_now() -> None:
    """The grace is over (the daemon may be gone and cannot escalate): kill everything below, exit."""
    processes.end_descendants(0)
    with _writing:
        os._exit(1)


def _grace() -> float:
    return float(os.environ[GRACE_VARIABLE])


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: the request is answered and every process below has
    ended, and the daemon waits for this exit to return the result. Tearing down pulumi, grpc and
    their threads took 0.13-0.65 s; nothing in it matters to a process about to end (the protocol
    lines are flushed as they are written, and the SDK removes its temporary files itself)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with _writing:  # not in the middle of a protocol line some late thread writes
        os._exit(code)


if __name__ == "__main__":
    exit_now(main())
