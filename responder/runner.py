"""The job runner: a pool of workers taking jobs from the store and running their playbooks.

Jobs for one stack run one at a time in arrival order (the store's claim guarantees it); retryable
failures wait with exponential backoff in their place in line; jobs interrupted by a crash are
recovered at start.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from responder.events import event_from_dict
from responder.logs import get_logger
from responder.playbook import Context, Playbook
from responder.stacks import (
    DestroyNotAllowed,
    OperationTimeout,
    StackError,
    StackOperations,
    StackTarget,
    StepResult,
)
from responder.stacks.operations import config_values
from responder.store import Job, JobStatus, StepRecord, Store, StoreUnavailable

log = get_logger("responder.runner")


class Runner:
    def __init__(
        self,
        store: Store,
        ops: StackOperations,
        playbooks: Mapping[str, Playbook],
        *,
        workers: int,
        job_timeout: float,
        retry_backoff: float,
        params: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ops = ops
        self.playbooks = playbooks
        self.workers = workers
        self.job_timeout = job_timeout
        self.retry_backoff = retry_backoff
        self.params = dict(params or {})
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"<Runner workers={self.workers} running={len(self._running)}>"

    async def start(self) -> None:
        await self.recover()
        self._loops = [
            asyncio.create_task(self._loop(i), name=f"runner-{i}") for i in range(self.workers)
        ]

    def notify(self) -> None:
        """New jobs were stored: wake an idle worker."""
        self._wakeup.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running jobs `grace` seconds, then interrupt them.

        Queued jobs stay queued, and interrupted ones stay `running`: the next start recovers both.
        """
        self._stopping = True
        self._wakeup.set()
        running = list(self._running.values())
        if running:
            log.info("runner.draining", running=len(running), grace_seconds=grace)
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def recover(self) -> None:
        """Repair the stacks of jobs a crash left `running`, then retry them or mark them failed."""
        for job in await self.store.running_jobs():
            structlog.contextvars.bind_contextvars(**_job_context(job))
            try:
                log.warning("job.recovering", attempts=job.attempts)
                playbook = self.playbooks.get(job.playbook)
                if playbook is not None:
                    await self.ops.recover(
                        StackTarget(job.stack, playbook.project, playbook.program)
                    )
                error = "interrupted: the daemon stopped while this job ran"
                if playbook is not None and job.attempts < job.max_attempts:
                    await self.store.retry_later(job.id, self.clock(), error)
                    log.info("job.retrying", reason=error)
                else:
                    await self.store.finish(job.id, JobStatus.FAILED, self.clock(), error=error)
                    log.error("job.failed", error=error)
            finally:
                structlog.contextvars.clear_contextvars()

    async def _loop(self, index: int) -> None:
        while not self._stopping:
            try:
                job = await self.store.claim_next(self.clock())
            except StoreUnavailable as e:
                log.error("runner.store_unavailable", error=str(e))
                await asyncio.sleep(1)
                continue
            if job is None:
                await self._idle()
                continue
            task = asyncio.create_task(self._run(job))
            self._running[job.id] = task
            try:
                await asyncio.shield(task)  # a stop() cancels the loop, not the job
            except asyncio.CancelledError:
                if not task.done():
                    await asyncio.wait([task])
                raise
            finally:
                self._running.pop(job.id, None)
                self._wakeup.set()  # the stack is free: its next job may now run

    async def _idle(self) -> None:
        due = await self.store.next_due()
        timeout = max(0.05, due - self.clock()) if due else 5.0
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), min(timeout, 5.0))

    async def _run(self, job: Job) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**_job_context(job))
        started = time.monotonic()
        log.info("job.started", attempt=job.attempts, max_attempts=job.max_attempts)
        playbook = self.playbooks.get(job.playbook)
        if playbook is None:
            await self._fail(job, f"playbook {job.playbook!r} is not loaded", started)
            return
        handle = JobStack(self, job, playbook, deadline=time.monotonic() + self.job_timeout)
        event = event_from_dict(job.event)
        ctx = Context(
            event=event,
            incident=event.incident,
            log=get_logger(f"playbooks.{playbook.name}"),
            stack=handle,
            playbook=playbook.name,
            job_id=job.id,
            params={**self.params, **job.params},
        )
        try:
            async with self.ops.locked(handle.target):
                await playbook(ctx)
        except StackError as e:
            if e.retryable and job.attempts < job.max_attempts:
                delay = self.retry_backoff * 2 ** (job.attempts - 1)
                await self.store.retry_later(job.id, self.clock() + delay, str(e))
                log.warning("job.retrying", error=str(e), error_kind=e.kind, delay_seconds=delay)
                self._wakeup.set()
            else:
                await self._fail(job, str(e), started, error_kind=e.kind)
        except asyncio.CancelledError:
            log.warning("job.interrupted", duration_ms=_ms(started))
            raise
        except Exception as e:
            log.exception("job.playbook_error")
            await self._fail(job, f"{type(e).__name__}: {e}", started, error_kind="playbook_error")
        else:
            await self.store.finish(
                job.id, JobStatus.SUCCEEDED, self.clock(), outputs=handle.last_outputs
            )
            log.info("job.succeeded", duration_ms=_ms(started))
        finally:
            structlog.contextvars.clear_contextvars()

    async def _fail(self, job: Job, error: str, started: float, error_kind: str = "") -> None:
        await self.store.finish(job.id, JobStatus.FAILED, self.clock(), error=error)
        log.error(
            "job.failed", error=error, error_kind=error_kind or None, duration_ms=_ms(started)
        )


class JobStack:
    """The `StackHandle` a playbook gets: runs steps under the job's lock and deadline, records each."""

    def __init__(self, runner: Runner, job: Job, playbook: Playbook, *, deadline: float) -> None:
        self.runner = runner
        self.job = job
        self.playbook = playbook
        self.deadline = deadline
        self.target = StackTarget(job.stack, playbook.project, playbook.program)
        self.name = job.stack
        self.last_outputs: dict[str, Any] | None = None  # masked; what the job record shows

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        return await self._step(
            {"op": "set_config", "create": True, "config": config_values(config)}
        )

    async def up(self) -> StepResult:
        return await self._step({"op": "up", "create": True})

    async def refresh(self) -> StepResult:
        return await self._step({"op": "refresh"})

    async def preview(self) -> StepResult:
        return await self._step({"op": "preview", "create": True})

    async def outputs(self) -> StepResult:
        return await self._step({"op": "outputs"})

    async def destroy(self, *, remove: bool = True) -> StepResult:
        if not self.playbook.allow_destroy:
            raise DestroyNotAllowed(
                f"playbook {self.playbook.name!r} may not destroy stacks (declare allow_destroy=True)",
                stack=self.name,
                step="destroy",
            )
        return await self._step({"op": "destroy", "remove": remove})

    async def _step(self, step: Any) -> StepResult:
        op = step["op"]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise OperationTimeout("job timeout reached before this step", stack=self.name, step=op)
        started_at = self.runner.clock()
        started = time.monotonic()
        log.info("job.step_started", step=op)
        try:
            result = (await self.runner.ops.run(self.target, [step], timeout=remaining, hold=True))[
                -1
            ]
        except StackError as e:
            await self._record(StepRecord(op, started_at, _ms(started), "failed", str(e)))
            log.warning("job.step_finished", step=op, outcome="failed", duration_ms=_ms(started))
            raise
        await self._record(
            StepRecord(op, started_at, _ms(started), "succeeded", None, result.changes)
        )
        log.info("job.step_finished", step=op, outcome="succeeded", duration_ms=_ms(started))
        if result.outputs:
            self.last_outputs = result.masked_outputs()
        if op in ("up", "refresh", "destroy"):
            status = "destroyed" if op == "destroy" else "up"
            await self.runner.store.record_stack(
                self.target.project,
                self.name,
                self.job.incident_id,
                status,
                op,
                self.last_outputs if op != "destroy" else None,
                self.runner.clock(),
            )
        return result

    async def _record(self, step: StepRecord) -> None:
        await self.runner.store.add_step(self.job.id, step)


def _job_context(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "delivery_id": job.delivery_id,
        "event_id": job.event.get("id"),
        "event_type": job.event_type,
        "incident_id": job.incident_id,
        "playbook": job.playbook,
        "stack": job.stack,
    }


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
