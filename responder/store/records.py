"""The store's records and statuses: what goes in (`NewDelivery`, `NewJob`) and what comes out."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from responder.events import Event

# A decoded JSON object (outputs, plans): its values are whatever JSON holds.
JsonObject = dict[str, Any]


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


# The error a job cancelled by request ends with, however it ended: by its runner, or by the store
# before it started.
CANCELLED_BY_REQUEST = "cancelled by request"

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


class IncidentStatus(StrEnum):
    """An incident's status as its pager last reported it (the rules: `responder.incidents`)."""

    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


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
    # Event types for the same incident that cancel it while scheduled.
    cancel_on: tuple[str, ...] = ()


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
    outputs: JsonObject | None
    params: dict[str, str]
    coalesced_into: int | None = None
    plan: JsonObject | None = None  # the planned changes waiting for (or given) approval
    approved_plan: JsonObject | None = None
    cancel_requested: bool = False
    steps: tuple[StepRecord, ...] = ()
    # The lease of a running job: the node that holds it, until when, and the fence its writes carry.
    node: str | None = None
    lease_expires_at: float | None = None
    fence: int = 0

    @property
    def stack_key(self) -> str:
        return f"{self.project}/{self.stack}"


@dataclass(frozen=True)
class NextClaim:
    """A store call's request to claim this node's next job too, at `at`. `token` names the claim
    (unique per claim the runner asks for): asked again with the same token, as a retry whose answer
    was lost, the store returns the job that token claimed instead of claiming another."""

    token: str
    at: float


@dataclass(frozen=True)
class Decision:
    """What deciding a job made of it: `made` is False when the job was not awaiting approval (an
    earlier decision, or a job that never asked), and `job` is then as it was."""

    job: Job
    made: bool


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
    outputs: JsonObject | None = None
    export_path: str | None = None
    idle_ttl: float | None = None
    max_age: float | None = None
    incident_status: IncidentStatus | None = None  # None: an incident no pager reported
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
    # (playbook, status) of the earlier jobs this delivery ended: coalesced into one of its jobs,
    # or cancelled by its event type (`cancel_on`).
    ended: tuple[tuple[str, JobStatus], ...] = ()


@dataclass(frozen=True)
class DeliveryRecord:
    """A stored delivery, without its body."""

    id: str
    source: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    received_at: float


@dataclass(frozen=True)
class IncidentRecord:
    """What the store holds about one incident: its deliveries in order of arrival, its jobs with
    their steps, and its stacks."""

    id: str
    status: IncidentStatus | None  # None: no pager reported it (manual runs only)
    deliveries: tuple[DeliveryRecord, ...]
    jobs: tuple[Job, ...]
    stacks: tuple[StackRecord, ...]


@dataclass(frozen=True)
class IncidentSummary:
    """An incident as a list shows it, without its whole history: its newest jobs (without their
    steps), how many jobs it has, the sources that reported it, and its stacks."""

    id: str
    status: IncidentStatus | None  # None: no pager reported it (manual runs only)
    sources: tuple[str, ...]  # of its deliveries, in order of first arrival
    job_count: int
    jobs: tuple[Job, ...]  # the newest, newest first
    stacks: tuple[StackRecord, ...]


class NoteStatus(StrEnum):
    """Where a note on its way to an incident's timeline or chat stands."""

    PENDING = "pending"  #: waiting to be sent (first, or again after `not_before`)
    SENDING = "sending"  #: claimed by a node, which is sending it now (until its lease expires)
    SENT = "sent"
    FAILED = "failed"  #: refused for good, or given up after the give-up time


@dataclass(frozen=True)
class NewNote:
    """A note as a job's result queues it: one destination's request, rendered in full, and the
    idempotency key embedded in it."""

    destination: str  # "pagerduty" | "slack"
    target: str  # the PagerDuty incident id; empty for chat
    body: str  # the JSON request body, as it will be sent
    key: str  # unique per note: recorded before sending, found again in the incident's notes


@dataclass(frozen=True)
class NoteRecord:
    id: int
    job_id: int
    destination: str
    target: str
    body: str
    key: str
    status: NoteStatus
    attempts: int
    created_at: float
    not_before: float
    last_error: str | None = None
    sent_at: float | None = None
    # Claimed while it was `sending`: the node that sent it before may have died after the
    # service took it, so it may already be there.
    resumed: bool = False
