"""The durable job store: records, statuses and the narrow interface the daemon uses.

SQLite is the embedded implementation; a PostgreSQL one (for several replicas) implements the same
`Store` protocol.
"""

from collections.abc import Sequence
from typing import Protocol

from responder.store.records import (
    FINAL_STATUSES,
    RELEASED_STACKS,
    Caps,
    DeliveryRecord,
    DeliveryStatus,
    IncidentRecord,
    IncidentStatus,
    Job,
    JobStatus,
    JsonObject,
    NewDelivery,
    NewJob,
    RecordedDelivery,
    StackRecord,
    StackStatus,
    StepRecord,
)

__all__ = [
    "FINAL_STATUSES",
    "RELEASED_STACKS",
    "Caps",
    "DeliveryRecord",
    "DeliveryStatus",
    "IncidentRecord",
    "IncidentStatus",
    "Job",
    "JobStatus",
    "JsonObject",
    "NewDelivery",
    "NewJob",
    "RecordRejected",
    "RecordedDelivery",
    "StackRecord",
    "StackStatus",
    "StepRecord",
    "Store",
    "StoreUnavailable",
]


class StoreUnavailable(Exception):
    """The store cannot be reached or written; webhook answers become 503 so the sender retries."""


class RecordRejected(ValueError):
    """The store cannot hold this delivery (a value it cannot encode); it alone fails, with this reason."""


class Store(Protocol):
    """What the daemon needs from a job store. Every method is one transaction."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        """Store the delivery and its jobs in one transaction, unless it repeats an earlier one: the
        same id, the same source and event id, or the same `dedupe_key` within its window.
        Raise `RecordRejected` when it cannot be stored (no other delivery is affected)."""

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """`record_delivery` for several deliveries of one request, all in one transaction (all
        stored or none); a body they share is stored once."""

    async def claim_next(self, now: float) -> Job | None:
        """Mark the oldest runnable job running: the first queued job of a stack with none running."""

    async def next_due(self) -> float | None:
        """When the earliest waiting (retrying or scheduled) job becomes runnable."""

    async def add_step(self, job_id: int, step: StepRecord) -> None: ...
    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        now: float,
        *,
        error: str | None = None,
        outputs: JsonObject | None = None,
    ) -> None: ...
    async def retry_later(self, job_id: int, not_before: float, error: str) -> None: ...
    async def running_jobs(self) -> list[Job]: ...
    async def get_job(self, job_id: int) -> Job | None: ...
    async def list_jobs(
        self,
        *,
        incident_id: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]: ...
    async def incident(self, incident_id: str) -> IncidentRecord | None:
        """Everything stored about the incident; None when no delivery or job names it."""

    async def reserve_stack(self, record: StackRecord, caps: Caps) -> str | None:
        """Record a stack about to be created, unless a cap forbids it: then name the cap."""

    async def touch_stack(
        self,
        project: str,
        stack: str,
        *,
        operation: str,
        now: float,
        status: StackStatus | None = None,
        outputs: JsonObject | None = None,
        export_path: str | None = None,
    ) -> None: ...
    async def get_stack(self, project: str, stack: str) -> StackRecord | None: ...
    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]: ...
    async def operations_since(self, since: float) -> int: ...
    async def pending_jobs_for(self, project: str, stack: str) -> int: ...

    async def await_approval(self, job_id: int, plan: JsonObject, now: float) -> None: ...
    async def decide(
        self, job_id: int, approve: bool, now: float, reason: str = ""
    ) -> Job | None: ...
    async def expired_approvals(self, older_than: float) -> list[int]: ...
    async def request_cancel(self, job_id: int, now: float) -> Job | None: ...

    async def prune(self, before: float) -> dict[str, int]:
        """Delete what finished before `before`: final jobs with their steps, deliveries left without
        jobs, and bodies, resolved incidents and destroyed stack records nothing refers to any more.
        Never anything unfinished. Returns the number of rows deleted per table."""
