"""Worker processes: started warm ahead of need, each running requests one at a time, ended with all
it started."""

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections import deque
from collections.abc import Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from responder.logs import get_logger
from responder.stacks import processes
from responder.stacks.protocol import PARENT_VARIABLE

log = get_logger("responder.stacks")


@dataclass(eq=False)
class Worker:
    """A worker process and the marker every process it starts inherits (see processes.py)."""

    proc: asyncio.subprocess.Process
    marker: str
    requests: int = field(default=0)  # sent to it so far
    program: str = ""  # the program its requests ran (see WorkerPool)

    async def end(self, grace: float) -> None:
        """End every process of the worker's operation, in whatever state it is.

        A worker still running gets one SIGTERM (passed to the CLI as a graceful cancel) and `grace`
        seconds; then every process carrying its marker is killed, whatever its process group or
        parent. One that has exited leaves nothing normally; anything it left anyway gets SIGTERM,
        then SIGKILL after the grace.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
            if self.proc.returncode is None:
                log.warning("stack.worker_killed", pid=self.proc.pid, grace_seconds=grace)
        await processes.end_marked(self.marker, max(0.0, deadline - loop.time()))
        await self.proc.wait()

    def alive(self) -> bool:
        """Not exited, nor dead and not yet reaped (asyncio learns of an exit a moment later)."""
        return self.proc.returncode is None and processes.running(self.proc.pid)

    async def retire(self, grace: float) -> None:
        """End a worker waiting for a request: the end of its input ends it at once (a SIGTERM
        would wait out its grace); `end` follows, for anything left."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), grace)
        await self.end(grace)


class WorkerPool:
    """Keeps worker processes (Python started, pulumi imported) waiting for a request: `spares`
    started ahead of need, and up to `kept` that ran a request cleanly and may run another, up to
    `requests_per_worker` in all: whatever programs and the SDK leave in a process (module state,
    memory: ≈ 80 kB a request, measured) stays bounded.

    A request runs alone in its worker, and a worker runs a next request only after one that ended
    cleanly and left the process as it found it (the worker says so, see worker.py): no process of
    it alive, no thread, no cancel, the same working directory, import path, environment and umask.
    What a program keeps in its own modules (a cache, a client, a setting read once) cannot be
    checked: only programs declared `stateless` run again in a worker, and only in one that ran that
    same program (another program's modules, a `helper` of the same name, must never stand in for
    its own). Reusing a worker saves the start of a Python process with pulumi imported, about a
    quarter of a provisioning's CPU time.
    """

    def __init__(
        self,
        env: dict[str, str],
        spares: int,
        kept: int = 0,
        requests_per_worker: int = 50,
        stateless: Collection[str] = (),
    ) -> None:
        self._env = env
        self._spares_wanted = spares
        self._kept_wanted = kept
        self._requests_per_worker = requests_per_worker
        self._stateless = frozenset(stateless)
        self._spares: deque[asyncio.Future[Worker]] = deque()
        self._kept: list[Worker] = []  # oldest first; the newest for a program is taken first
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()

    def fill(self) -> None:
        while len(self._spares) < self._spares_wanted and not self._closed:
            self._spares.append(asyncio.ensure_future(self._spawn()))

    async def acquire(self, program: str) -> Worker:
        """A worker for a request running `program`: one kept that ran it before, else a spare."""
        for worker in reversed(self._kept):
            if worker.program == program:
                self._kept.remove(worker)
                if worker.alive():
                    return worker
                await worker.end(0)  # it died waiting (killed from outside): nothing of it remains
                return await self.acquire(program)
        while self._spares:
            spare = self._spares.popleft()
            try:
                worker = await asyncio.shield(spare)
            except asyncio.CancelledError:
                if not spare.cancelled():  # still starting, or started: the next caller's
                    self._spares.appendleft(spare)
                    if self._closed:  # the pool's close() already went by
                        self._background(self._end_spares())
                raise
            except Exception:
                self.fill()  # its start failed: the next spare starts now
                raise
            self.fill()
            if worker.alive():
                return worker
        return await self._spawn()

    async def give_back(self, worker: Worker, grace: float) -> None:
        """A worker that was not sent the request it was taken for (its operation was cancelled
        first) waits for the next operation instead of being ended (unless the pool is closed)."""
        if self._closed:
            await worker.retire(grace)
        elif worker.requests:
            self._kept.append(worker)
        else:
            spare = asyncio.get_running_loop().create_future()
            spare.set_result(worker)
            self._spares.appendleft(spare)

    async def release(self, worker: Worker, program: str, grace: float) -> None:
        """A worker whose request, running `program`, ended cleanly: kept for the next request of
        the same program (in place of the oldest kept, if as many are), or retired."""
        if (
            self._closed
            or program not in self._stateless
            or self._kept_wanted == 0
            or worker.requests >= self._requests_per_worker
            or not worker.alive()
        ):
            await worker.retire(grace)
            return
        worker.program = program
        self._kept.append(worker)
        if len(self._kept) > self._kept_wanted:
            await self._kept.pop(0).retire(grace)

    async def _spawn(self) -> Worker:
        marker = uuid.uuid4().hex
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "responder.stacks.worker",
            "--warm",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **self._env,
                processes.MARKER_VARIABLE: marker,
                PARENT_VARIABLE: str(os.getpid()),
            },
            start_new_session=True,  # a Ctrl-C at the daemon's terminal is the daemon's to handle
            limit=2**22,
        )
        return Worker(proc, marker)

    async def close(self, grace: float) -> None:
        """End every waiting worker; a worker released or given back later is ended too."""
        self._closed = True
        kept, self._kept = self._kept, []
        for worker in kept:
            await worker.retire(grace)
        await self._end_spares()

    async def _end_spares(self) -> None:
        while self._spares:
            try:
                worker = await self._spares.popleft()
            except Exception as e:  # it never started: nothing to end
                log.warning("stack.worker_start_failed", error=str(e))
                continue
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.communicate()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # referenced until done, or it may be collected before
        task.add_done_callback(self._tasks.discard)
