"""The durable job store: records, statuses and the narrow interface the daemon uses.

SQLite is the embedded implementation; a PostgreSQL one (for several replicas) implements the same
`Store` protocol.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from responder.events import Event


class StoreUnavailable(Exception):
    """The store cannot be reached or written; webhook answers become 503 so the sender retries."""


class RecordRejected(ValueError):
    """The store cannot hold this delivery (a value it cannot encode); it alone fails, with this reason."""


class JobStatus(StrEnum):
    QUEUED = "queued"  #: waiting for its stack (and for `not_before` when retrying)
    SCHEDULED = "scheduled"  #: delayed until `not_before` (e.g. destroy after a grace period)
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  #: its plan waits for POST /jobs/{id}/approve
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COALESCED = "coalesced"  #: superseded by a newer queued run of the same playbook and stack
    CANCELLED = "cancelled"
    REFUSED = "refused"  #: over a blast-radius cap
    REJECTED = "rejected"  #: its plan was rejected, or the approval timed out

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.COALESCED,
        JobStatus.CANCELLED,
        JobStatus.REFUSED,
        JobStatus.REJECTED,
    }
)


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"  #: it matched playbooks, whose jobs were created
    IGNORED = "ignored"  #: no playbook matched, or an update for an incident that is not open
    PING = "ping"
    DEDUPLICATED = "deduplicated"  #: a trigger for an incident already open: no jobs
    DUPLICATE = "duplicate"  #: a redelivery of an earlier delivery: nothing was stored


class StackStatus(StrEnum):
    PROVISIONING = "provisioning"  #: reserved; its first `up` has not succeeded yet
    LIVE = "live"
    FAILED = "failed"  #: its first `up` failed
    DESTROYED = "destroyed"
    STUCK = "stuck"  #: the reaper gave up destroying it; kept until a step changes it


# Stack statuses a new reservation may take over, and that no cap counts.
RELEASED_STACKS = frozenset({StackStatus.DESTROYED, StackStatus.FAILED})


@dataclass(frozen=True)
class NewDelivery:
    id: str
    source: str
    event_id: str
    event_type: str
    incident_id: str
    status: DeliveryStatus  # accepted | ignored | ping
    body: bytes
    received_at: float
    # Acknowledge/resolve for an incident that is not open is dropped (the Events API's rule).
    updates_need_open_incident: bool = False
    # A source without delivery ids (Events v2) recognises repeats by content: an earlier delivery
    # with the same `dedupe_key`, received less than `dedupe_window` seconds before and with no change
    # of its incident's status since, makes this one a redelivery.
    dedupe_key: str = ""
    dedupe_window: float = 0.0

    @classmethod
    def of(
        cls,
        event: Event,
        *,
        id: str,
        body: bytes,
        received_at: float,
        status: DeliveryStatus = DeliveryStatus.ACCEPTED,
        updates_need_open_incident: bool = False,
        dedupe_key: str = "",
        dedupe_window: float = 0.0,
    ) -> "NewDelivery":
        """The delivery record of one event, whichever source (or responder itself) produced it."""
        return cls(
            id=id,
            source=event.source,
            event_id=event.id,
            event_type=event.type,
            incident_id=event.incident_id,
            status=status,
            body=body,
            received_at=received_at,
            updates_need_open_incident=updates_need_open_incident,
            dedupe_key=dedupe_key,
            dedupe_window=dedupe_window,
        )


@dataclass(frozen=True)
class NewJob:
    playbook: str
    project: str
    stack: str
    event: Event
    max_attempts: int
    coalesce: bool = False
    params: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds: > 0 makes the job `scheduled`
    cancel_on: tuple[
        str, ...
    ] = ()  # event types for the same incident that cancel it while scheduled


@dataclass(frozen=True)
class StepRecord:
    step: str
    started_at: float
    duration_ms: float
    outcome: str
    error: str | None = None
    changes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    id: int
    delivery_id: str
    playbook: str
    project: str
    stack: str
    event: Event
    incident_id: str
    event_type: str
    status: JobStatus
    attempts: int
    max_attempts: int
    not_before: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    outputs: dict[str, Any] | None
    params: dict[str, str]
    coalesced_into: int | None = None
    plan: dict[str, Any] | None = None  # the planned changes waiting for (or given) approval
    approved_plan: dict[str, Any] | None = None
    cancel_requested: bool = False
    steps: tuple[StepRecord, ...] = ()

    @property
    def stack_key(self) -> str:
        return f"{self.project}/{self.stack}"


@dataclass(frozen=True)
class StackRecord:
    """A burner stack as the store knows it: owner, lifecycle policy and last known state."""

    project: str
    stack: str
    program: str
    incident_id: str
    playbook: str
    service: str
    status: StackStatus
    created_at: float
    last_activity_at: float
    last_operation: str
    outputs: dict[str, Any] | None = None
    export_path: str | None = None
    idle_ttl: float | None = None
    max_age: float | None = None
    incident_status: str = ""
    incident_last_event_at: float | None = None
    incident_resolved_at: float | None = None


@dataclass(frozen=True)
class Caps:
    """Blast-radius limits; 0 means unlimited."""

    live_stacks: int = 0
    per_service: int = 0
    per_playbook: int = 0
    operations_per_minute: int = 0


@dataclass(frozen=True)
class RecordedDelivery:
    created: bool  # False: a redelivery, nothing new was stored
    job_ids: list[int]
    status: DeliveryStatus  # a repeat for an open incident is `deduplicated`
    duplicate_of: str = ""  # for a redelivery: the earlier delivery it repeats


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
        outputs: dict[str, Any] | None = None,
    ) -> None: ...
    async def retry_later(self, job_id: int, not_before: float, error: str) -> None: ...
    async def running_jobs(self) -> list[Job]: ...
    async def get_job(self, job_id: int) -> Job | None: ...
    async def list_jobs(
        self,
        *,
        incident_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]: ...
    async def incident(self, incident_id: str) -> dict[str, Any] | None: ...

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
        outputs: dict[str, Any] | None = None,
        export_path: str | None = None,
    ) -> None: ...
    async def get_stack(self, project: str, stack: str) -> StackRecord | None: ...
    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]: ...
    async def operations_since(self, since: float) -> int: ...
    async def pending_jobs_for(self, project: str, stack: str) -> int: ...

    async def await_approval(self, job_id: int, plan: dict[str, Any], now: float) -> None: ...
    async def decide(
        self, job_id: int, approve: bool, now: float, reason: str = ""
    ) -> Job | None: ...
    async def expired_approvals(self, older_than: float) -> list[int]: ...
    async def request_cancel(self, job_id: int, now: float) -> Job | None: ...

    async def prune(self, before: float) -> dict[str, int]:
        """Delete what finished before `before`: final jobs with their steps, deliveries left without
        jobs, and bodies, resolved incidents and destroyed stack records nothing refers to any more.
        Never anything unfinished. Returns the number of rows deleted per table."""
