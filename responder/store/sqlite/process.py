"""The daemon's side of the store process: a `Store` whose calls run in
`responder.store.sqlite.server`, on a core of their own.

One Python process holds one interpreter lock: with the store's thread in the daemon, intake and
the store's SQL took turns on one core while the machine's second core waited. Apart, they overlap
(bench/RESULTS.md, "Store process"). The store stays one process per file, and this one is the
daemon's: started by `open`, ended by `close`, started again by the next call if it dies (its calls
under way fail with `StoreUnavailable`, as in an outage; what it committed is on disk).
"""

import asyncio
import contextlib
import contextvars
import itertools
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import structlog

import responder
from responder.store import Store, StoreUnavailable
from responder.store.node import new_node_id
from responder.store.sqlite import server
from responder.store.wire import Channel

log = structlog.get_logger("responder.store")

# What the store process inherits: enough to start Python, and nothing the daemon was given
# (webhook secrets, passphrases) since it has no use for them.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SQLITE_TMPDIR", "PYTHONHASHSEED")
CLOSE_TIMEOUT = 10.0  # s: for the store to close, then for its process to end before it is killed
OUTPUT_PAUSE = 0.1  # s: lines the store process writes together (a traceback) are one log event
# Characters of its output in one log event (its start and its end): the line stays within one
# atomic pipe write (4 KiB), which the processes sharing the daemon's output cannot split.
OUTPUT_LIMIT = 1500
RESTART_BACKOFF = 1.0  # s: after a start that failed, calls fail at once for this long
# s: for a call's answer (as PostgreSQL's command timeout): a process stopped or stuck on a hung
# disk fails its callers (a webhook's 503) instead of holding them, and their connections, forever.
CALL_TIMEOUT = 30.0


class SQLiteProcessStore:
    """The embedded `Store` as the daemon runs it: `SQLiteProcessStore(path)`, then `await
    store.open()`. Every call of the `Store` protocol (and the SQLite store's extras) is forwarded,
    by `__getattr__`; a type checker does not count that towards the protocol, hence `as_store`."""

    shared = False  # one process per file: no other node can take its jobs over

    def __init__(self, path: Path, *, node: str | None = None, lease: float = 30.0) -> None:
        self.path = path
        self.node = node or new_node_id()  # kept by every process started for it
        self.lease = lease
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._process: asyncio.subprocess.Process | None = None
        self._channel: Channel | None = None
        self._starting: asyncio.Task[None] | None = None  # shared by the calls that wait for it
        self._failed_at = -RESTART_BACKOFF  # loop time of the last start that failed
        self._closed = False
        self._returncode: int | None = None  # of the last process that ended
        self._output: asyncio.Task[None] | None = None  # forwards the process's stderr to the log

    def as_store(self) -> Store:
        return cast(Store, self)

    async def open(self) -> None:
        await self._started()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            if self._channel is not None:
                with contextlib.suppress(StoreUnavailable, TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT):  # a long prune, a hung disk
                        await self._call(server.CLOSE)
        finally:
            self._closed = True
            if self._starting is not None:  # a start under way ends its process itself, closed
                await asyncio.wait([self._starting])
            await self._end()

    async def listen(self, wake: Callable[[], None]) -> None:
        """Nothing to hear: no other process writes this file."""

    async def lead(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, *args, **kwargs)

        call.__name__ = name
        return call

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreUnavailable("job store unavailable: it is closed")
        if self._channel is None:
            await self._started()
        assert self._channel is not None
        call_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._channel.send((call_id, name, args, kwargs))  # a value pickle refuses raises here
        self._calls[call_id] = answer
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await answer
        except TimeoutError:
            self._calls.pop(call_id, None)  # an answer that comes after all is dropped
            raise StoreUnavailable(
                f"job store unavailable: its process did not answer within {CALL_TIMEOUT:g}s"
            ) from None

    def _answer(self, message: tuple[int, bool, Any]) -> None:
        call_id, ok, value = message
        answer = self._calls.pop(call_id, None)
        if answer is None or answer.done():  # its caller gave up
            return
        if ok:
            answer.set_result(value)
        else:
            answer.set_exception(value)

    async def _started(self) -> None:
        """Wait for the store process to be up, starting it (again, if it died). One start is
        shared by every call that needs it, and a caller that gives up does not stop it."""
        loop = asyncio.get_running_loop()
        if self._starting is None or self._starting.done():
            if loop.time() - self._failed_at < RESTART_BACKOFF:
                raise StoreUnavailable("job store unavailable: its process failed to start")
            # A context of its own: not the job fields of whichever call needed the store first.
            self._starting = loop.create_task(self._start(), context=contextvars.Context())
            # Read by whoever waits; retrieved here too, for a start all its callers gave up on.
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        again = self._process is not None
        if again:  # the one that died: what is left of it
            await self._end()
        try:
            await self._spawn()
            assert self._channel is not None
            await self._call(server.OPEN, str(self.path), self.node, self.lease)
        except BaseException:
            self._failed_at = asyncio.get_running_loop().time()
            await self._end()  # no process is left without its store open
            raise
        if again:
            log.warning("store.process_restarted", previous_returncode=self._returncode)

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    server.__name__,
                    str(theirs.fileno()),
                    str(os.getpid()),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,  # into the daemon's log: see `_forward_output`
                    env=_environment(),
                    start_new_session=True,  # a Ctrl-C at the terminal is the daemon's to handle
                )
            except OSError as e:
                ours.close()
                raise StoreUnavailable(f"job store unavailable: its process: {e}") from e
        assert self._process.stderr is not None
        self._output = asyncio.create_task(
            _forward_output(self._process.stderr, self._process.pid), name="store-output"
        )
        _, channel = await asyncio.get_running_loop().create_unix_connection(
            lambda: Channel(self._answer), sock=ours
        )
        channel.closed.add_done_callback(lambda _: self._lost(channel))
        self._channel = channel

    def _lost(self, channel: Channel) -> None:
        """The process ended (or closed its end): every call waiting on it fails."""
        if channel is not self._channel:
            return
        self._channel = None
        calls, self._calls = self._calls, {}
        for answer in calls.values():
            if not answer.done():
                answer.set_exception(StoreUnavailable("job store unavailable: its process ended"))
        if calls and not self._closed:
            log.warning("store.process_lost", calls_failed=len(calls))

    async def _end(self) -> None:
        """Close the channel and wait for the process to end, killing it if it takes too long."""
        channel, process, self._process = self._channel, self._process, None
        output, self._output = self._output, None
        if channel is not None:
            channel.close()
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        self._returncode = process.returncode
        if output is not None:  # its last words, up to the end of its stderr
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(output, CLOSE_TIMEOUT)


async def _forward_output(stream: asyncio.StreamReader, pid: int) -> None:
    """Log what the store process writes to its stderr (a crash's traceback, a warning): each
    burst of lines as one event, redacted like every other line. Raw, written piece by piece, it
    would break into the middle of the daemon's JSON lines."""
    lines: list[str] = []
    size = 0
    while True:
        line: bytes | None
        try:
            async with asyncio.timeout(OUTPUT_PAUSE if lines else None):
                line = await stream.readline()
        except TimeoutError:  # the burst is over
            line = None
        except ValueError:  # a line beyond the stream's limit, dropped by it
            line = b"[a line too long to log]"
        if line:
            lines.append(text := line.decode(errors="replace").rstrip("\n"))
            size += len(text)
            if size < OUTPUT_LIMIT:
                continue
        if lines:
            output = "\n".join(lines)
            if len(output) > OUTPUT_LIMIT:  # a traceback's end names the error, its start the crash
                half = OUTPUT_LIMIT // 2
                output = f"{output[:half]}\n[... {len(output) - 2 * half} characters ...]\n{output[-half:]}"
            log.error("store.process_output", pid=pid, output=output)
            lines, size = [], 0
        if line == b"":
            return


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    # The package is found where the daemon found it, installed or not.
    source = str(Path(responder.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return env
