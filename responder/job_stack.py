"""The stack handle a job's playbook gets: operations under the job's lock and deadline, recorded."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from responder.health import StoreHealth
from responder.logs import get_logger
from responder.outcome import require_approval
from responder.playbook import Playbook
from responder.stack_records import StackBook
from responder.stacks import (
    Call,
    DestroyNotAllowed,
    OperationCancelled,
    OperationTimeout,
    StackError,
    StackNotFoundError,
    StackOperations,
    StackTarget,
    StepResult,
    check_config,
)
from responder.store import Caps, Job, LeaseLost, StackStatus, Store

T = TypeVar("T")

log = get_logger("responder.runner")

RISKY_OPS = frozenset({"replace", "delete", "create-replacement", "delete-replaced", "discard"})

# An operation as JobStack sends it: (config, tags, call) -> its result.
Operation = Callable[
    [Mapping[str, object] | None, Mapping[str, str] | None, Call], Awaitable[StepResult]
]


@dataclass(frozen=True)
class StackDeps:
    """What a job's stack handle needs of the daemon."""

    ops: StackOperations
    store: Store
    health: StoreHealth  # every store call is retried through it: a result is never dropped
    clock: Callable[[], float]
    caps: Caps
    postmortem_dir: Path
    mask: Callable[[str], str]  # error text bound for the store: registered secrets masked
    job_timeout: float


class JobStack:
    """The `StackHandle` a playbook gets: runs operations under the job's lock and deadline, records
    each step, and enforces the playbook's caps, approval gates and destroy permission."""

    def __init__(
        self, deps: StackDeps, job: Job, playbook: Playbook, program: str, *, deadline: float
    ) -> None:
        self.deps = deps
        self.ops = deps.ops
        self.job = job
        self.playbook = playbook
        self.deadline = deadline
        self.target = StackTarget(job.stack, job.project, program)
        self.name = job.stack
        self.cancelled = False
        self.book = StackBook(
            deps.store,
            job,
            playbook,
            self.target,
            clock=deps.clock,
            caps=deps.caps,
            write=self._write,
        )
        self._scope: asyncio.Timeout | None = None  # the playbook's run, while it lasts
        # The step an expired deadline or a cancel stopped: (step, started_at, monotonic start).
        self._interrupted: tuple[str, float, float] | None = None
        self._pending_config: dict[str, object] = {}

    @property
    def last_outputs(self) -> dict[str, Any] | None:
        """The stack's outputs as last seen (masked): what the job record shows."""
        return self.book.last_outputs

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
                    f"job exceeded its {self.deps.job_timeout:g}s timeout",
                    stack=self.name,
                    step=step,
                )
            )
            if self._interrupted:
                await self.book.step_failed(*self._interrupted, self.deps.mask(str(error)))
            raise error from None
        finally:
            self._scope = None

    async def set_config(self, config: Mapping[str, object]) -> StepResult:
        """Deferred: the config travels with the next operation, in the same worker and CLI session
        (one process start instead of two). `flush()` applies what is left when the playbook ends.
        Checked now, so a bad value fails where the playbook set it."""
        check_config(config)
        self._pending_config.update(config)
        return StepResult("set_config", self.name, 0.0, details={"deferred": True})

    async def flush(self) -> None:
        if self._pending_config:
            await self._run(
                "set_config",
                lambda config, tags, call: self.ops.set_config(
                    self.target, config or {}, tags=tags, call=call
                ),
                creates=True,
            )

    async def up(self) -> StepResult:
        if self.playbook.approve_changes:
            preview = await self.preview()
            plan = {"operation": "up", "steps": preview.details.get("plan", [])}
            if any(step["op"] in RISKY_OPS for step in plan["steps"]):
                require_approval(self.job, plan, preview.changes)
        return await self._run(
            "up",
            lambda config, tags, call: self.ops.up(
                self.target, config=config, tags=tags, call=call
            ),
            creates=True,
        )

    async def refresh(self) -> StepResult:
        return await self._run(
            "refresh",
            lambda config, tags, call: self.ops.refresh(
                self.target, config=config, tags=tags, call=call
            ),
        )

    async def preview(self) -> StepResult:
        return await self._run(
            "preview",
            lambda config, tags, call: self.ops.preview(
                self.target, config=config, tags=tags, call=call
            ),
            creates=True,
        )

    async def outputs(self) -> StepResult:
        # Read-only: pending config stays pending for the next operation that uses it.
        return await self._run(
            "outputs",
            lambda _config, _tags, call: self.ops.outputs(self.target, call=call),
            with_config=False,
        )

    async def recorded_outputs(self) -> dict[str, Any] | None:
        if not self.book.read_before:
            await self.book.stack()
        return self.book.before.outputs if self.book.before is not None else None

    async def destroy(self, *, remove: bool = True, missing_ok: bool = False) -> StepResult:
        """Destroy the stack. One already gone from the backend is recorded as destroyed either way
        (the goal is reached, and the reaper must not queue its reap again and again); it raises
        StackNotFoundError unless `missing_ok`."""
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
            await self.book.record(operation="destroy", status=StackStatus.DESTROYED)
            if not missing_ok:
                raise
            return StepResult("destroy", self.name, 0.0, details={"already_gone": True})

    async def abandon(self) -> None:
        """The job ends: a stack it reserved that no `up` made live is `failed`, which frees its cap
        slot and lets the reaper destroy whatever the attempt left in the backend."""
        await self.book.abandon()

    async def _destroy(self, remove: bool) -> StepResult:
        if self.playbook.approve_destroy:
            preview = await self._run(
                "preview_destroy",
                lambda config, tags, call: self.ops.preview_destroy(
                    self.target, config=config, tags=tags, call=call
                ),
            )
            require_approval(
                self.job,
                {"operation": "destroy", "steps": preview.details.get("plan", [])},
                preview.changes,
            )
        export: Path | None = None
        if not await self.book.exported_before_failed_destroy():
            # The postmortem record: the final state, secrets still encrypted, kept after the stack
            # is gone.
            export = (
                self.deps.postmortem_dir
                / f"{self.target.project}--{self.name}--{int(self.deps.clock())}.json"
            )
            export.parent.mkdir(parents=True, exist_ok=True)
        return await self._run(
            "destroy",
            lambda config, tags, call: self.ops.destroy(
                self.target, remove=remove, export_to=export, config=config, tags=tags, call=call
            ),
            before=["export"] if export else [],
            export_to=export,
        )

    async def _run(
        self,
        op: str,
        operation: Operation,
        *,
        creates: bool = False,
        with_config: bool = True,
        before: list[str] | None = None,
        export_to: Path | None = None,
    ) -> StepResult:
        """Run one operation (with the pending config, if it takes config) and record its steps."""
        config: dict[str, object] | None = None
        if self._pending_config and with_config:
            config, self._pending_config = self._pending_config, {}
        steps = [*(["set_config"] if config and op != "set_config" else []), *(before or []), op]
        names = "+".join(steps)
        if self.cancelled:
            raise OperationCancelled("job cancelled", stack=self.name, step=names)
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise OperationTimeout(
                "job timeout reached before this step", stack=self.name, step=names
            )
        tags = await self.book.reserve() if creates or config else None
        exists = await self.book.exists()
        await self.book.check_rate()
        started_at = self.deps.clock()
        started = time.monotonic()
        for step in steps:
            log.info("job.step_started", step=step)
        done: list[StepResult] = []
        job = (self.job.id, self.job.fence)
        call = Call(timeout=remaining, held=True, exists=exists, on_step=done.append, job=job)
        try:
            result = await operation(config, tags, call)
        except StackError as e:
            await _uninterrupted(self.book.succeeded(done, started_at, export_to))
            await self.book.step_failed(
                e.step or names, started_at, started, self.deps.mask(str(e))
            )
            raise
        except asyncio.CancelledError:
            await _uninterrupted(self.book.succeeded(done, started_at, export_to))
            if len(done) < len(steps):  # `stopping` records the stopped step once the run has ended
                self._interrupted = (steps[len(done)], started_at, started)
            raise
        # Recorded whole even if the job is stopped meanwhile: the store must know what was done.
        await _uninterrupted(self.book.succeeded(done, started_at, export_to))
        return result

    async def _write(self, fn: Callable[[], Awaitable[T]]) -> T:
        """A store call for this job, retried until the store takes it. One refused because another
        node holds the job now also refuses every later operation of this handle: a playbook that
        catches the error must not go on changing a stack that is no longer its job's."""
        try:
            return await self.deps.health.call(f"job {self.job.id}", fn)
        except LeaseLost:
            self.cancelled = True
            raise


async def _uninterrupted(aw: Awaitable[T]) -> T:
    """Await `aw` to its end; a cancellation meanwhile is raised only after it."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.shield(task)  # a second cancellation leaves it to finish on its own
        raise
