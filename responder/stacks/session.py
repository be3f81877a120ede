"""One request's session with its worker: send it, log engine events and steps, collect results."""

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable

from responder.logs import Redactor, get_logger
from responder.shielded import shielded
from responder.stacks.errors import (
    OperationCancelled,
    OperationTimeout,
    StackError,
    WorkerCrashed,
    error_for,
)
from responder.stacks.interface import StackTarget
from responder.stacks.pool import Worker
from responder.stacks.protocol import Request
from responder.stacks.results import StepResult

log = get_logger("responder.stacks")


class WorkerSession:
    """Talks to one worker: sends the request, logs its events and steps, collects results."""

    def __init__(
        self,
        worker: Worker,
        target: StackTarget,
        redactor: Redactor | None,
        on_step: Callable[[StepResult], None] | None,
    ) -> None:
        self.worker = worker
        self.proc = worker.proc
        self.target = target
        self.redactor = redactor
        self.on_step = on_step  # told each step's result as it completes
        self.results: list[StepResult] = []
        self.error: StackError | None = None
        self.current_step = ""
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.ready = False  # the worker said its request ended cleanly and it waits for another
        # Decided once the request ended: the worker, alive and waiting, is the caller's to keep or
        # retire (see WorkerPool.release). Otherwise the session has ended it.
        self.reusable = False

    async def run(
        self, request: Request, timeout: float, cancel: asyncio.Event, grace: Callable[[], float]
    ) -> list[StepResult]:
        """Run the request in the worker until it ends, `timeout` passes or `cancel` is set; when
        this returns or raises, no process of it is alive but, if `reusable`, the idle worker. A
        stopped operation gets `grace()` seconds (asked when it is stopped) to cancel gracefully
        before it is killed."""
        reader = asyncio.create_task(self._communicate(request))
        cancelled = asyncio.create_task(cancel.wait())
        finished: set[asyncio.Task[object]] = set()
        try:
            finished, _ = await asyncio.wait(
                {reader, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
            self.reusable = reader in finished and self.ready
            if not self.reusable:
                await shielded(self._end(reader, grace()), "worker_end")
        stack = self.target.name
        if reader in finished:
            results = reader.result()
            if self.error:
                raise self.error
            return results
        if cancel.is_set():
            if isinstance(self.error, OperationCancelled):
                raise self.error
            raise OperationCancelled("operation cancelled", stack=stack, step=self.current_step)
        raise OperationTimeout(
            f"operation exceeded its {timeout:g}s timeout", stack=stack, step=self.current_step
        )

    async def _end(self, reader: "asyncio.Task[list[StepResult]]", grace: float) -> None:
        await self.worker.end(grace)
        with contextlib.suppress(Exception):  # its error, if any, is the session's to report
            await reader

    async def _communicate(self, request: Request) -> list[StepResult]:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.worker.requests += 1
        # A worker that died meanwhile is reported below as crashed, from its output's end.
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            await self.proc.stdin.drain()
        stderr = asyncio.create_task(self._drain_stderr())
        steps = iter(request["steps"])
        self.current_step = next(steps)["op"]
        started = time.monotonic()
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            kind = message["kind"]
            if kind == "ready":
                # The next session reads on. Lines of this request still unread by now would land
                # in its tail, shown only if it crashes.
                stderr.cancel()
                self.ready = self.error is None and len(self.results) == len(request["steps"])
                return self.results
            if kind == "event":
                log.info(
                    "pulumi.engine",
                    stack=self.target.name,
                    step=message["step"],
                    **message["event"],
                )
                continue
            duration = time.monotonic() - started
            if kind == "done":
                step, result = message["step"], message["result"]
                self._done(StepResult.from_message(step, self.target.name, duration, result))
                self.current_step = next((s["op"] for s in steps), self.current_step)
                started = time.monotonic()
            elif kind == "error":
                self.error = error_for(
                    message["error"],
                    message["message"],
                    stack=self.target.name,
                    step=message["step"],
                )
                log.warning(
                    "stack.step",
                    stack=self.target.name,
                    step=message["step"],
                    outcome="failed",
                    duration_ms=round(duration * 1000, 1),
                    error_kind=self.error.kind,
                    error=message["message"],
                )
        await self.proc.wait()
        await stderr
        if self.error is None and len(self.results) < len(request["steps"]):
            tail = "\n".join(self.stderr_tail)[-1500:]
            self.error = WorkerCrashed(
                f"worker exited with code {self.proc.returncode} before finishing: {tail}",
                stack=self.target.name,
                step=self.current_step,
            )
            log.error(
                "stack.step",
                stack=self.target.name,
                step=self.current_step,
                outcome="crashed",
                exit_code=self.proc.returncode,
                error=self.error.message,
            )
        return self.results

    def _done(self, result: StepResult) -> None:
        if self.redactor:  # before anything can log or keep the step's secret outputs
            self.redactor.add(
                *(s for o in result.outputs.values() if o.secret for s in _texts(o.value))
            )
        self.results.append(result)
        log.info(
            "stack.step",
            stack=self.target.name,
            step=result.step,
            outcome="succeeded",
            duration_ms=round(result.duration * 1000, 1),
            changes=result.changes,
            outputs=result.masked_outputs() or None,
        )
        if self.on_step is not None:
            self.on_step(result)

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr
        async for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode(errors="replace").rstrip())


def _texts(value: object) -> list[str]:
    """The strings a secret output holds, a map's or a list's too, and the whole as it is printed:
    each must be masked wherever it shows up."""
    if isinstance(value, dict):
        nested = [t for v in value.values() for t in _texts(v)]
    elif isinstance(value, list):
        nested = [t for v in value for t in _texts(v)]
    else:
        return [str(value)]
    return [str(value), *nested]
