"""A job's bookkeeping of its stack in the store: reservation and caps, steps, status and outputs."""

import datetime
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from responder import metrics
from responder.logs import get_logger
from responder.outcome import Refused
from responder.playbook import Playbook
from responder.stacks import StackTarget, StepResult
from responder.store import (
    RELEASED_STACKS,
    Caps,
    Job,
    StackRecord,
    StackStatus,
    StepRecord,
    Store,
)

T = TypeVar("T")

log = get_logger("responder.runner")

# The stack's status after each step that changes it.
STEP_STATUS = {
    "up": StackStatus.LIVE,
    "refresh": StackStatus.LIVE,
    "destroy": StackStatus.DESTROYED,
}


class StoreWriter(Protocol):
    """A store call for one job, retried until the store takes it."""

    async def __call__(self, fn: Callable[[], Awaitable[T]]) -> T: ...


class StackBook:
    """Keeps the store's view of one job's stack current, and enforces the caps on creating it."""

    def __init__(
        self,
        store: Store,
        job: Job,
        playbook: Playbook,
        target: StackTarget,
        *,
        clock: Callable[[], float],
        caps: Caps,
        write: StoreWriter,
    ) -> None:
        self.store = store
        self.job = job
        self.playbook = playbook
        self.target = target
        self.clock = clock
        self.caps = caps
        self.write = write
        self.last_outputs: dict[str, Any] | None = None  # masked; what the job record shows
        self._known = False  # the store has a live record of this stack
        self._exists: bool | None = None  # whether the backend has it, as far as the store knows
        self._reserved = False  # this job reserved the stack, and no `up` has made it live yet
        # The stack's record as it was before this job changed anything (`ctx.stack.recorded_outputs`).
        self.read_before = False
        self.before: StackRecord | None = None

    async def stack(self) -> StackRecord | None:
        record = await self.write(
            lambda: self.store.get_stack(self.target.project, self.target.name)
        )
        if not self.read_before:  # the first read precedes every step of this job
            self.read_before, self.before = True, record
        return record

    async def exists(self) -> bool:
        """Whether the backend has the stack, as far as the store knows (read once per job)."""
        if self._exists is None:
            record = await self.stack()
            self._exists = record is not None and record.status == StackStatus.LIVE
        return self._exists

    async def reserve(self) -> dict[str, str] | None:
        """Before a step that may create the stack: check the caps and record ownership. Returns the
        tags to set if the stack is created."""
        if self._known:
            return None
        existing = await self.stack()
        if existing is not None and existing.status not in RELEASED_STACKS:
            self._known = True
            self._exists = existing.status == StackStatus.LIVE
            return None
        now = self.clock()
        incident = self.job.event.incident
        service = incident.service.summary if incident and incident.service else ""
        record = StackRecord(
            project=self.target.project,
            stack=self.target.name,
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
        cap = await self.write(lambda: self.store.reserve_stack(record, self.caps))
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

    async def check_rate(self) -> None:
        cap = self.caps.operations_per_minute
        since = self.clock() - 60
        if cap and await self.write(lambda: self.store.operations_since(since)) >= cap:
            raise Refused(f"max_operations_per_minute={cap}")

    async def exported_before_failed_destroy(self) -> bool:
        """Whether the stack's last successful step was the export of a destroy that then failed:
        that export still holds the state from before any destroy began, and another would add
        nothing."""
        return _exported(await self.stack())

    async def step_failed(self, step: str, started_at: float, started: float, error: str) -> None:
        duration = round((time.monotonic() - started) * 1000, 1)
        failed = StepRecord(step, started_at, duration, "failed", error)
        await self.write(
            functools.partial(
                self.store.add_step, self.job.id, failed, fence=self.job.fence, key=_step_key()
            )
        )
        log.warning("job.step_finished", step=step, outcome="failed", duration_ms=duration)
        metrics.step_recorded(step, "failed", duration / 1000)

    async def succeeded(
        self, results: list[StepResult], started_at: float, export_to: Path | None = None
    ) -> None:
        """Record completed steps; an `export` step's file is `export_to`."""
        for result in results:
            duration = round(result.duration * 1000, 1)
            done = StepRecord(result.step, started_at, duration, "succeeded", None, result.changes)
            await self.write(
                functools.partial(
                    self.store.add_step, self.job.id, done, fence=self.job.fence, key=_step_key()
                )
            )
            log.info(
                "job.step_finished", step=result.step, outcome="succeeded", duration_ms=duration
            )
            metrics.step_recorded(result.step, "succeeded", result.duration)
            if result.outputs:
                self.last_outputs = result.masked_outputs()
            exported = result.step == "export" and export_to is not None
            await self.record(
                operation=result.step,
                status=STEP_STATUS.get(result.step),
                outputs=self.last_outputs if result.step in ("up", "refresh") else None,
                export_path=str(export_to) if exported else None,
            )

    async def abandon(self) -> None:
        """The job ends: a stack it reserved that no `up` made live is `failed`, which frees its cap
        slot and lets the reaper destroy whatever the attempt left in the backend."""
        if self._reserved:
            log.warning(
                "stack.failed", reason="the job ended before the stack's first up succeeded"
            )
            await self.record(operation="abandon", status=StackStatus.FAILED)

    async def record(
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
        await self.write(
            lambda: self.store.touch_stack(
                self.target.project,
                self.target.name,
                operation=operation,
                now=self.clock(),
                status=status,
                outputs=outputs,
                export_path=export_path,
                held=(self.job.id, self.job.fence),  # not once another node holds the job
            )
        )


def _exported(record: StackRecord | None) -> bool:
    return (
        record is not None
        and record.last_operation == "export"
        and record.export_path is not None
        and Path(record.export_path).is_file()
    )


def _step_key() -> str:
    """A step's key, made once before its first send: each retry of the write sends the same."""
    return uuid.uuid4().hex
