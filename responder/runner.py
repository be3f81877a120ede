"""The job runner: a pool of workers taking jobs from the store and running their playbooks.

Jobs for one stack run one at a time in arrival order (the store's claim guarantees it); retryable
failures wait with exponential backoff in their place in line; jobs interrupted by a crash are
recovered at start.
"""

import asyncio
import contextlib
import datetime
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

from responder.health import StoreHealth
from responder.lifecycle import SYSTEM_PLAYBOOKS
from responder.logs import get_logger
from responder.playbook import OPERATOR_PARAMS, Context, Playbook
from responder.stacks import (
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    StackError,
    StackNotFoundError,
    StackOperations,
    StackTarget,
    StepResult,
)
from responder.stacks.operations import config_values
from responder.stacks.protocol import ConfigValue, Step
from responder.store import (
    RELEASED_STACKS,
    Caps,
    Job,
    JobStatus,
    StackRecord,
    StackStatus,
    StepRecord,
    Store,
)

T = TypeVar("T")

log = get_logger("responder.runner")

# Responder's own playbooks act on stacks other playbooks made, so they run those stacks' programs.
SYSTEM_NAMES = frozenset(p.name for p in SYSTEM_PLAYBOOKS)


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
        health: StoreHealth | None = None,
    ) -> None:
        self.store = store
        self.ops = ops
        self.playbooks = playbooks
        self.workers = workers
        self.job_timeout = job_timeout
        self.retry_backoff = retry_backoff
        self.params = dict(
            params or {}
        )  # the operator's: a job may add only what its playbook declares
        self.clock = clock
        self.caps = caps or Caps()
        self.health = health or StoreHealth()
        # project -> program of the playbooks that create stacks, for system jobs on stacks the store
        # does not know (orphans).
        self.programs = {
            p.project: p.program for p in playbooks.values() if p.name not in SYSTEM_NAMES
        }
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
        """Cancel a job: a waiting one at once, a running one cleanly (its playbook is stopped where it
        is; an operation it runs is cancelled through the CLI and the stack repaired)."""
        job = await self.store.request_cancel(job_id, self.clock())
        handle = self._handles.get(job_id)
        if job is not None and job.status == JobStatus.RUNNING and handle is not None:
            handle.cancel()
        return await self.store.get_job(job_id) if job is not None else None

    def notify(self) -> None:
        """New jobs were stored: wake an idle worker."""
        self._wakeup.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running jobs `grace` seconds, then interrupt them.

        Queued jobs stay queued, and interrupted ones stay `running`: the next start recovers both.
        A job still waiting for the store to record its result is interrupted the same way.
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
        for job in await self.health.call("recovery", self.store.running_jobs):
            structlog.contextvars.bind_contextvars(**_job_context(job))
            try:
                await self._recover(job)
            finally:
                structlog.contextvars.clear_contextvars()

    async def _recover(self, job: Job) -> None:
        log.warning("job.recovering", attempts=job.attempts)
        playbook = self.playbooks.get(job.playbook)
        program = await self._program(job, playbook) if playbook is not None else None
        if program is not None:
            await self.ops.recover(StackTarget(job.stack, job.project, program))
        error = "interrupted: the daemon stopped while this job ran"
        now = self.clock()
        if program is not None and job.attempts < job.max_attempts:
            await self._write(job, lambda: self.store.retry_later(job.id, now, error))
            log.info("job.retrying", reason=error)
        else:
            await self._write(
                job, lambda: self.store.finish(job.id, JobStatus.FAILED, now, error=error)
            )
            log.error("job.failed", error=error)

    async def _loop(self, index: int) -> None:
        """One worker: claim, run, repeat. Nothing but cancellation ends it: a store outage is
        waited out (and reported in readiness), anything unexpected is logged and the loop goes on."""
        caller = f"worker {index}"
        while not self._stopping:
            try:
                await self._next(caller)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("runner.loop_error", worker=index)
                await asyncio.sleep(self.health.max_delay)  # not a hot loop if the fault persists

    async def _next(self, caller: str) -> None:
        job = await self.health.call(caller, lambda: self.store.claim_next(self.clock()))
        if job is None:
            await self._idle(caller)
            return
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

    async def _idle(self, caller: str) -> None:
        due = await self.health.call(caller, self.store.next_due)
        timeout = max(0.05, due - self.clock()) if due else 5.0
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), min(timeout, 5.0))

    async def _write(self, job: Job, fn: Callable[[], Awaitable[T]]) -> T:
        """A store call for this job, retried until the store takes it: a result is never dropped."""
        return await self.health.call(f"job {job.id}", fn)

    async def _program(self, job: Job, playbook: Playbook) -> str | None:
        """The program a job's stack runs. Never chosen by the job: its playbook's own, except for
        responder's system playbooks, which act on stacks other playbooks made: then the stack's."""
        if playbook.name not in SYSTEM_NAMES:
            return playbook.program
        record = await self._write(job, lambda: self.store.get_stack(job.project, job.stack))
        return record.program if record is not None else self.programs.get(job.project)

    def _params(self, job: Job, playbook: Playbook) -> dict[str, str]:
        """The operator's parameters, overlaid with the job's only where its playbook declares them."""
        allowed = set(playbook.params) - OPERATOR_PARAMS
        return {**self.params, **{k: v for k, v in job.params.items() if k in allowed}}

    async def _run(self, job: Job) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**_job_context(job))
        started = time.monotonic()
        log.info("job.started", attempt=job.attempts, max_attempts=job.max_attempts)
        try:
            await self._attempt(job, started)
        except asyncio.CancelledError:
            log.warning("job.interrupted", duration_ms=_ms(started))
            raise
        except Exception as e:  # a fault of the runner or the store, not of the playbook
            log.exception("job.crashed")
            await self._fail(job, f"internal error: {e!r}", started, error_kind="internal_error")
        finally:
            self._handles.pop(job.id, None)
            structlog.contextvars.clear_contextvars()

    async def _attempt(self, job: Job, started: float) -> None:
        playbook = self.playbooks.get(job.playbook)
        if playbook is None:
            await self._fail(job, f"playbook {job.playbook!r} is not loaded", started)
            return
        program = await self._program(job, playbook)
        if program is None:
            await self._fail(job, f"no playbook deploys project {job.project!r}", started)
            return
        deadline = asyncio.get_running_loop().time() + self.job_timeout
        handle = JobStack(self, job, playbook, program, deadline=deadline)
        self._handles[job.id] = handle
        # Read again now that `cancel` can find the handle: the claim's copy of the job predates a
        # cancel that came in between, and nothing else would pass it on.
        current = await self._write(job, lambda: self.store.get_job(job.id))
        if current is not None and current.cancel_requested:
            handle.cancel()
        event = job.event
        ctx = Context(
            event=event,
            incident=event.incident,
            log=get_logger(f"playbooks.{playbook.name}"),
            stack=handle,
            playbook=playbook.name,
            job_id=job.id,
            params=self._params(job, playbook),
        )
        failure: Exception | None = None
        try:
            async with handle.stopping(), self.ops.locked(handle.target):
                await playbook(ctx)
                await handle.flush()
        except Exception as e:  # judged below, together with a cancel that may have caused it
            failure = e
        status, error, retry_at = JobStatus.SUCCEEDED, "", 0.0
        if handle.cancelled or isinstance(failure, OperationCancelled):
            # Whatever the playbook made of it (it may have caught the error and returned): the job
            # was cancelled, and does not end as anything else.
            status, error = JobStatus.CANCELLED, "cancelled by request"
            step = failure.step if isinstance(failure, StackError) else None
            log.warning("job.cancelled", step=step or None, duration_ms=_ms(started))
        elif isinstance(failure, AwaitingApproval):
            plan, now = failure.plan, self.clock()
            log.warning("job.awaiting_approval", plan=plan, duration_ms=_ms(started))
            await self._write(job, lambda: self.store.await_approval(job.id, plan, now))
            return
        elif isinstance(failure, Refused):
            status, error = JobStatus.REFUSED, str(failure)
            log.warning("job.refused", cap=failure.cap, duration_ms=_ms(started))
        elif isinstance(failure, StackError):
            if failure.retryable and job.attempts < job.max_attempts:
                delay = self.retry_backoff * 2 ** (job.attempts - 1)
                status, error, retry_at = JobStatus.QUEUED, str(failure), self.clock() + delay
                log.warning(
                    "job.retrying", error=error, error_kind=failure.kind, delay_seconds=delay
                )
            else:
                status, error = JobStatus.FAILED, str(failure)
                _log_failed(error, started, failure.kind)
        elif failure is not None:
            log.error("job.playbook_error", exc_info=failure)
            status, error = JobStatus.FAILED, f"{type(failure).__name__}: {failure}"
            _log_failed(error, started, "playbook_error")
        await handle.abandon()
        error = self.mask(error)
        if status == JobStatus.QUEUED:
            await self._write(job, lambda: self.store.retry_later(job.id, retry_at, error))
            self._wakeup.set()
            return
        outputs = handle.last_outputs if status == JobStatus.SUCCEEDED else None
        now = self.clock()
        await self._write(
            job,
            lambda: self.store.finish(job.id, status, now, error=error or None, outputs=outputs),
        )
        if status == JobStatus.SUCCEEDED:
            log.info("job.succeeded", duration_ms=_ms(started))

    async def _fail(self, job: Job, error: str, started: float, error_kind: str = "") -> None:
        error = self.mask(error)
        _log_failed(error, started, error_kind)
        now = self.clock()
        await self._write(
            job, lambda: self.store.finish(job.id, JobStatus.FAILED, now, error=error)
        )

    def mask(self, text: str) -> str:
        """Error text bound for the store and the API: an exception may quote a registered secret,
        and the log's redactor only guards the log."""
        redactor = self.ops.redactor
        return str(redactor.redact(text)) if redactor else text


def _log_failed(error: str, started: float, error_kind: str) -> None:
    log.error("job.failed", error=error, error_kind=error_kind or None, duration_ms=_ms(started))


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
# The stack's status after each step that changes it.
STEP_STATUS = {
    "up": StackStatus.LIVE,
    "refresh": StackStatus.LIVE,
    "destroy": StackStatus.DESTROYED,
}


class JobStack:
    """The `StackHandle` a playbook gets: runs steps under the job's lock and deadline, records each,
    and enforces the playbook's caps, approval gates and destroy permission."""

    def __init__(
        self, runner: Runner, job: Job, playbook: Playbook, program: str, *, deadline: float
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.job = job
        self.playbook = playbook
        self.deadline = deadline
        self.target = StackTarget(job.stack, job.project, program)
        self.name = job.stack
        self.last_outputs: dict[str, Any] | None = None  # masked; what the job record shows
        self.cancelled = False
        self._scope: asyncio.Timeout | None = None  # the playbook's run, while it lasts
        # The step an expired deadline or a cancel stopped: (step, started_at, monotonic start).
        self._interrupted: tuple[str, float, float] | None = None
        self._known = False  # the store has a live record of this stack
        self._exists: bool | None = None  # whether the backend has it, as far as the store knows
        self._reserved = False  # this job reserved the stack, and no `up` has made it live yet
        self._pending_config: dict[str, ConfigValue] = {}

    def cancel(self) -> None:
        """Stop the job: its playbook at once, wherever it is (see `stopping`), and any step it
        tries after that."""
        self.cancelled = True
        if self._scope is not None and not self._scope.expired():
            self._scope.reschedule(asyncio.get_running_loop().time())

    @contextlib.asynccontextmanager
    async def stopping(self) -> AsyncIterator[None]:
        """The playbook's run, stopped when the job's deadline passes or the job is cancelled: in its
        own code as in an operation, whose processes are ended and whose stack is repaired first.
        Raises OperationTimeout or OperationCancelled then, with the stopped step recorded failed."""
        if self.cancelled:
            raise OperationCancelled("job cancelled before it started", stack=self.name)
        scope = asyncio.timeout_at(self.deadline)
        try:
            async with scope:
                self._scope = scope
                yield
        except TimeoutError:
            if not scope.expired():
                raise  # the playbook's own
            step = self._interrupted[0] if self._interrupted else ""
            error: StackError = (
                OperationCancelled("job cancelled", stack=self.name, step=step)
                if self.cancelled
                else OperationTimeout(
                    f"job exceeded its {self.runner.job_timeout:g}s timeout",
                    stack=self.name,
                    step=step,
                )
            )
            if self._interrupted:
                await self._step_failed(*self._interrupted, self.runner.mask(str(error)))
            raise error from None
        finally:
            self._scope = None

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
        """Destroy the stack. One already gone from the backend is recorded as destroyed: the goal
        is reached, and the reaper must not queue its reap again and again."""
        if not self.playbook.allow_destroy:
            raise DestroyNotAllowed(
                f"playbook {self.playbook.name!r} may not destroy stacks (declare allow_destroy=True)",
                stack=self.name,
                step="destroy",
            )
        try:
            return await self._destroy(remove)
        except StackNotFoundError:
            log.warning("stack.already_gone", reason="the backend has no such stack")
            await self._record(operation="destroy", status=StackStatus.DESTROYED)
            return StepResult("destroy", self.name, 0.0, details={"already_gone": True})

    async def abandon(self) -> None:
        """The job ends: a stack it reserved that no `up` made live is `failed`, which frees its cap
        slot and lets the reaper destroy whatever the attempt left in the backend."""
        if self._reserved:
            log.warning(
                "stack.failed", reason="the job ended before the stack's first up succeeded"
            )
            await self._record(operation="abandon", status=StackStatus.FAILED)

    async def _destroy(self, remove: bool) -> StepResult:
        if self.playbook.approve_destroy:
            preview = await self._one({"op": "preview_destroy"})
            self._require_approval(
                {"operation": "destroy", "steps": preview.details.get("plan", [])}, preview.changes
            )
        steps: list[Step] = [{"op": "destroy", "remove": remove}]
        record = await self._write(lambda: self.store.get_stack(self.target.project, self.name))
        if not _exported_before_failed_destroy(record):
            # The postmortem record: the final state, secrets still encrypted, kept after the stack
            # is gone.
            export = (
                self.runner.postmortem_dir
                / f"{self.target.project}--{self.name}--{int(self.runner.clock())}.json"
            )
            export.parent.mkdir(parents=True, exist_ok=True)
            steps.insert(0, {"op": "export", "path": str(export)})
        results = await self._run(steps)
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
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise OperationTimeout(
                "job timeout reached before this step", stack=self.name, step=names
            )
        tags = await self._reserve() if any(s.get("create") for s in steps) else None
        if self._exists is None:
            record = await self._write(lambda: self.store.get_stack(self.target.project, self.name))
            self._exists = record is not None and record.status == StackStatus.LIVE
        await self._check_rate()
        started_at = self.runner.clock()
        started = time.monotonic()
        for step in steps:
            log.info("job.step_started", step=step["op"])
        done: list[StepResult] = []
        try:
            results = await self.runner.ops.run(
                self.target,
                steps,
                timeout=remaining,
                hold=True,
                tags=tags,
                exists=self._exists,
                done=done,
            )
        except StackError as e:
            await _uninterrupted(self._succeeded(done, started_at))
            await self._step_failed(e.step or names, started_at, started, self.runner.mask(str(e)))
            raise
        except asyncio.CancelledError:
            await _uninterrupted(self._succeeded(done, started_at))
            if len(done) < len(steps):  # `stopping` records the stopped step once the run has ended
                self._interrupted = (steps[len(done)]["op"], started_at, started)
            raise
        # Recorded whole even if the job is stopped meanwhile: the store must know what was done.
        await _uninterrupted(self._succeeded(results, started_at))
        return results

    async def _step_failed(self, step: str, started_at: float, started: float, error: str) -> None:
        failed = StepRecord(step, started_at, _ms(started), "failed", error)
        await self._write(lambda: self.store.add_step(self.job.id, failed))
        log.warning("job.step_finished", step=step, outcome="failed", duration_ms=_ms(started))

    async def _succeeded(self, results: list[StepResult], started_at: float) -> None:
        for result in results:
            done = StepRecord(
                result.step,
                started_at,
                round(result.duration * 1000, 1),
                "succeeded",
                None,
                result.changes,
            )
            await self._write(functools.partial(self.store.add_step, self.job.id, done))
            log.info(
                "job.step_finished",
                step=result.step,
                outcome="succeeded",
                duration_ms=round(result.duration * 1000, 1),
            )
            await self._note(result)

    async def _note(self, result: StepResult) -> None:
        """Keep the store's view of the stack current: activity, status, outputs, postmortem export."""
        if result.outputs:
            self.last_outputs = result.masked_outputs()
        await self._record(
            operation=result.step,
            status=STEP_STATUS.get(result.step),
            outputs=self.last_outputs if result.step in ("up", "refresh") else None,
            export_path=result.details.get("path") if result.step == "export" else None,
        )

    async def _record(
        self,
        *,
        operation: str,
        status: StackStatus | None,
        outputs: dict[str, Any] | None = None,
        export_path: str | None = None,
    ) -> None:
        if status:
            self._exists = status == StackStatus.LIVE
            self._reserved = False
        await self._write(
            lambda: self.store.touch_stack(
                self.target.project,
                self.name,
                operation=operation,
                now=self.runner.clock(),
                status=status,
                outputs=outputs,
                export_path=export_path,
            )
        )

    async def _write(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.runner._write(self.job, fn)

    async def _reserve(self) -> dict[str, str] | None:
        """Before a step that may create the stack: check the caps and record ownership. Returns the
        tags to set if the stack is created."""
        if self._known:
            return None
        existing = await self._write(lambda: self.store.get_stack(self.target.project, self.name))
        if existing is not None and existing.status not in RELEASED_STACKS:
            self._known = True
            self._exists = existing.status == StackStatus.LIVE
            return None
        now = self.runner.clock()
        incident = self.job.event.incident
        service = incident.service.summary if incident and incident.service else ""
        record = StackRecord(
            project=self.target.project,
            stack=self.name,
            program=self.target.program,
            incident_id=self.job.incident_id,
            playbook=self.playbook.name,
            service=service,
            status=StackStatus.PROVISIONING,
            created_at=now,
            last_activity_at=now,
            last_operation="reserve",
            idle_ttl=self.playbook.idle_ttl,
            max_age=self.playbook.max_age,
        )
        cap = await self._write(lambda: self.store.reserve_stack(record, self.runner.caps))
        if cap:
            raise Refused(cap)
        self._known = True
        self._exists = False
        self._reserved = True
        return {
            "responder:incident": self.job.incident_id,
            "responder:playbook": self.playbook.name,
            "responder:delivery": self.job.delivery_id,
            "responder:created": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
        }

    async def _check_rate(self) -> None:
        cap = self.runner.caps.operations_per_minute
        since = self.runner.clock() - 60
        if cap and await self._write(lambda: self.store.operations_since(since)) >= cap:
            raise Refused(f"max_operations_per_minute={cap}")


async def _uninterrupted(aw: Awaitable[T]) -> T:
    """Await `aw` to its end; a cancellation meanwhile is raised only after it."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.shield(task)  # a second cancellation leaves it to finish on its own
        raise


def _exported_before_failed_destroy(record: StackRecord | None) -> bool:
    """Whether the stack's last successful step was the export of a destroy that then failed: that
    export still holds the state from before any destroy began, and another would add nothing."""
    return (
        record is not None
        and record.last_operation == "export"
        and record.export_path is not None
        and Path(record.export_path).is_file()
    )


def _job_context(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "delivery_id": job.delivery_id,
        "event_id": job.event.id,
        "event_type": job.event_type,
        "incident_id": job.incident_id,
        "playbook": job.playbook,
        "stack": job.stack,
    }


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
