"""Worker processes: started warm ahead of need, each running one request, ended with all it started."""

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections import deque
from dataclasses import dataclass

from responder.logs import get_logger
from responder.stacks import processes
from responder.stacks.protocol import PARENT_VARIABLE

log = get_logger("responder.stacks")


@dataclass(frozen=True)
class Worker:
    """A worker process and the marker every process it starts inherits (see processes.py)."""

    proc: asyncio.subprocess.Process
    marker: str

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


class WorkerPool:
    """Keeps warm worker processes (Python started, pulumi imported) waiting for a request.

    Each worker still runs exactly one request, so isolation is unchanged; only start-up is paid early.
    """

    def __init__(self, env: dict[str, str], spares: int) -> None:
        self._env = env
        self._spares_wanted = spares
        self._spares: deque[asyncio.Future[Worker]] = deque()

    def fill(self) -> None:
        while len(self._spares) < self._spares_wanted:
            self._spares.append(asyncio.ensure_future(self._spawn()))

    async def acquire(self) -> Worker:
        while self._spares:
            worker = await self._spares.popleft()
            self.fill()
            if worker.proc.returncode is None:
                return worker
        return await self._spawn()

    def give_back(self, worker: Worker) -> None:
        """A worker that was never sent a request (its operation was cancelled first) waits for the
        next operation instead of being ended."""
        spare = asyncio.get_running_loop().create_future()
        spare.set_result(worker)
        self._spares.appendleft(spare)

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

    async def close(self) -> None:
        while self._spares:
            worker = await self._spares.popleft()
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.communicate()
