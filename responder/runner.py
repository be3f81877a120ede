"""The job runner: a pool of workers taking jobs from the store and running their playbooks.

Jobs for one stack run one at a time in arrival order (the store's claim guarantees it); retryable
failures wait with exponential backoff in their place in line; jobs interrupted by a crash are
recovered at start.
"""

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from responder.events import event_from_dict
from responder.logs import get_logger
from responder.playbook import Context, Playbook
from responder.stacks import (
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    StackError,
    StackOperations,
    StackTarget,
    StepResult,
)
from responder.stacks.operations import config_values
from responder.stacks.protocol import ConfigValue, Step
from responder.store import Caps, Job, JobStatus, StackRecord, StepRecord, Store, StoreUnavailable

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
        caps: Caps | None = None,
    ) -> None:
        self.store = store
        self.ops = ops
        self.playbooks = playbooks
        self.workers = workers
        self.job_timeout = job_timeout
        self.retry_backoff = retry_backoff
        self.params = dict(params or {})
        self.clock = clock
        self.caps = caps or Caps()
        self.postmortem_dir: Path = ops.env.data_dir / "postmortem"
        self._handles: dict[int, JobStack] = {}
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

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a job: a waiting one at once, a running one cleanly (the CLI cancels, the stack is repaired)."""
        job = await self.store.request_cancel(job_id, self.clock())
        handle = self._handles.get(job_id)
        if job is not None and job.status == JobStatus.RUNNING and handle is not None:
            handle.cancelled = True
            await self.ops.cancel(handle.target)
        return await self.store.get_job(job_id) if job is not None else None

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
        handle.cancelled = job.cancel_requested
        self._handles[job.id] = handle
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
                await handle.flush()
        except Refused as e:
            await self.store.finish(job.id, JobStatus.REFUSED, self.clock(), error=str(e))
            log.warning("job.refused", cap=e.cap, duration_ms=_ms(started))
        except AwaitingApproval as e:
            await self.store.await_approval(job.id, e.plan, self.clock())
            log.warning("job.awaiting_approval", plan=e.plan, duration_ms=_ms(started))
        except StackError as e:
            if handle.cancelled or isinstance(e, OperationCancelled):
                await self.store.finish(
                    job.id, JobStatus.CANCELLED, self.clock(), error="cancelled by request"
                )
                log.warning("job.cancelled", step=e.step, duration_ms=_ms(started))
            elif e.retryable and job.attempts < job.max_attempts:
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
            self._handles.pop(job.id, None)
            structlog.contextvars.clear_contextvars()

    async def _fail(self, job: Job, error: str, started: float, error_kind: str = "") -> None:
        await self.store.finish(job.id, JobStatus.FAILED, self.clock(), error=error)
        log.error(
            "job.failed", error=error, error_kind=error_kind or None, duration_ms=_ms(started)
        )


class Refused(Exception):
    """A blast-radius cap forbids this job's operation."""

    def __init__(self, cap: str) -> None:
        super().__init__(f"refused: {cap} reached")
        self.cap = cap


class AwaitingApproval(Exception):
    """The job's plan needs approval; the job leaves the worker and waits in the store."""

    def __init__(self, plan: dict[str, Any]) -> None:
        super().__init__("waiting for approval")
        self.plan = plan


RISKY_OPS = frozenset({"replace", "delete", "create-replacement", "delete-replaced", "discard"})


class JobStack:
    """The `StackHandle` a playbook gets: runs steps under the job's lock and deadline, records each,
    and enforces the playbook's caps, approval gates and destroy permission."""

    def __init__(self, runner: Runner, job: Job, playbook: Playbook, *, deadline: float) -> None:
        self.runner = runner
        self.store = runner.store
        self.job = job
        self.playbook = playbook
        self.deadline = deadline
        self.target = StackTarget(
            job.stack, job.project, job.params.get("program") or playbook.program
        )
        self.name = job.stack
        self.last_outputs: dict[str, Any] | None = None  # masked; what the job record shows
        self.cancelled = False
        self._known = False  # the store has a live record of this stack
        self._exists: bool | None = None  # whether the backend has it, as far as the store knows
        self._pending_config: dict[str, ConfigValue] = {}

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        """Deferred: the config travels with the next operation, in the same worker and CLI session
        (one process start instead of two). `flush()` applies what is left when the playbook ends."""
        self._pending_config.update(config_values(config))
        return StepResult("set_config", self.name, 0.0, details={"deferred": True})

    async def flush(self) -> None:
        if self._pending_config:
            await self._run([])

    async def up(self) -> StepResult:
        if self.playbook.approve_changes:
            preview = await self._one({"op": "preview", "create": True})
            plan = {"operation": "up", "steps": preview.details.get("plan", [])}
            if any(step["op"] in RISKY_OPS for step in plan["steps"]):
                self._require_approval(plan, preview.changes)
        return await self._one({"op": "up", "create": True})

    async def refresh(self) -> StepResult:
        return await self._one({"op": "refresh"})

    async def preview(self) -> StepResult:
        return await self._one({"op": "preview", "create": True})

    async def outputs(self) -> StepResult:
        return await self._one({"op": "outputs"})

    async def destroy(self, *, remove: bool = True) -> StepResult:
        if not self.playbook.allow_destroy:
            raise DestroyNotAllowed(
                f"playbook {self.playbook.name!r} may not destroy stacks (declare allow_destroy=True)",
                stack=self.name,
                step="destroy",
            )
        if self.playbook.approve_destroy:
            preview = await self._one({"op": "preview_destroy"})
            self._require_approval(
                {"operation": "destroy", "steps": preview.details.get("plan", [])}, preview.changes
            )
        # The postmortem record: the final state, secrets still encrypted, kept after the stack is gone.
        export = (
            self.runner.postmortem_dir
            / f"{self.target.project}--{self.name}--{int(self.runner.clock())}.json"
        )
        export.parent.mkdir(parents=True, exist_ok=True)
        results = await self._run(
            [{"op": "export", "path": str(export)}, {"op": "destroy", "remove": remove}]
        )
        return results[-1]

    def _require_approval(self, plan: dict[str, Any], changes: dict[str, int]) -> None:
        """Go on only if exactly this plan was approved; otherwise (re)submit it for approval."""
        approved = self.job.approved_plan
        if (
            approved is not None
            and approved.get("operation") == plan["operation"]
            and approved.get("steps") == plan["steps"]
        ):
            log.info("job.approved_plan_applies", operation=plan["operation"])
            return
        if approved is not None:
            log.warning(
                "job.plan_changed",
                operation=plan["operation"],
                reason="the stack changed since approval",
            )
        raise AwaitingApproval({**plan, "changes": changes})

    async def _one(self, step: Step) -> StepResult:
        return (await self._run([step]))[-1]

    async def _run(self, steps: list[Step]) -> list[StepResult]:
        if self._pending_config:
            config, self._pending_config = self._pending_config, {}
            steps = [{"op": "set_config", "create": True, "config": config}, *steps]
        names = "+".join(s["op"] for s in steps)
        if self.cancelled:
            raise OperationCancelled("job cancelled", stack=self.name, step=names)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise OperationTimeout(
                "job timeout reached before this step", stack=self.name, step=names
            )
        tags = await self._reserve() if any(s.get("create") for s in steps) else None
        if self._exists is None:
            record = await self.store.get_stack(self.target.project, self.name)
            self._exists = record is not None and record.status == "live"
        await self._check_rate()
        started_at = self.runner.clock()
        started = time.monotonic()
        for step in steps:
            log.info("job.step_started", step=step["op"])
        try:
            results = await self.runner.ops.run(
                self.target, steps, timeout=remaining, hold=True, tags=tags, exists=self._exists
            )
        except StackError as e:
            await self.store.add_step(
                self.job.id, StepRecord(e.step or names, started_at, _ms(started), "failed", str(e))
            )
            log.warning(
                "job.step_finished",
                step=e.step or names,
                outcome="failed",
                duration_ms=_ms(started),
            )
            raise
        for result in results:
            await self.store.add_step(
                self.job.id,
                StepRecord(
                    result.step,
                    started_at,
                    round(result.duration * 1000, 1),
                    "succeeded",
                    None,
                    result.changes,
                ),
            )
            log.info(
                "job.step_finished",
                step=result.step,
                outcome="succeeded",
                duration_ms=round(result.duration * 1000, 1),
            )
            await self._note(result)
        return results

    async def _note(self, result: StepResult) -> None:
        """Keep the store's view of the stack current: activity, status, outputs, postmortem export."""
        if result.outputs:
            self.last_outputs = result.masked_outputs()
        status = {"up": "live", "refresh": "live", "destroy": "destroyed"}.get(result.step)
        if status:
            self._exists = status == "live"
        await self.store.touch_stack(
            self.target.project,
            self.name,
            operation=result.step,
            now=self.runner.clock(),
            status=status,
            outputs=self.last_outputs if result.step in ("up", "refresh") else None,
            export_path=result.details.get("path") if result.step == "export" else None,
        )

    async def _reserve(self) -> dict[str, str] | None:
        """Before a step that may create the stack: check the caps and record ownership. Returns the
        tags to set if the stack is created."""
        if self._known:
            return None
        existing = await self.store.get_stack(self.target.project, self.name)
        if existing is not None and existing.status != "destroyed":
            self._known = True
            self._exists = existing.status == "live"
            return None
        now = self.runner.clock()
        event = self.job.event
        incident = event.get("incident") or {}
        service = ((incident.get("service") or {}).get("summary")) or ""
        record = StackRecord(
            project=self.target.project,
            stack=self.name,
            program=self.target.program,
            incident_id=self.job.incident_id,
            playbook=self.playbook.name,
            service=service,
            status="provisioning",
            created_at=now,
            last_activity_at=now,
            last_operation="reserve",
            idle_ttl=self.playbook.idle_ttl,
            max_age=self.playbook.max_age,
        )
        cap = await self.store.reserve_stack(record, self.runner.caps)
        if cap:
            raise Refused(cap)
        self._known = True
        self._exists = False
        return {
            "responder:incident": self.job.incident_id,
            "responder:playbook": self.playbook.name,
            "responder:delivery": self.job.delivery_id,
            "responder:created": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
        }

    async def _check_rate(self) -> None:
        cap = self.runner.caps.operations_per_minute
        if cap and await self.store.operations_since(self.runner.clock() - 60) >= cap:
            raise Refused(f"max_operations_per_minute={cap}")


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
