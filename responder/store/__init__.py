"""The durable job store: records, statuses and the narrow interface the daemon uses.

SQLite is the embedded implementation; a PostgreSQL one (for several replicas) implements the same
`Store` protocol.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached or written; webhook answers become 503 so the sender retries."""


class JobStatus(StrEnum):
    QUEUED = "queued"  #: waiting for its stack (and for `not_before` when retrying)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COALESCED = "coalesced"  #: superseded by a newer queued run of the same playbook and stack

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.COALESCED)


@dataclass(frozen=True)
class NewDelivery:
    id: str
    source: str
    event_id: str
    event_type: str
    incident_id: str
    status: str  # accepted | ignored | ping
    body: bytes
    received_at: float


@dataclass(frozen=True)
class NewJob:
    playbook: str
    project: str
    stack: str
    event: dict[str, Any]
    max_attempts: int
    coalesce: bool = False
    params: dict[str, str] = field(default_factory=dict)


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
    event: dict[str, Any]
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
    steps: tuple[StepRecord, ...] = ()

    @property
    def stack_key(self) -> str:
        return f"{self.project}/{self.stack}"


@dataclass(frozen=True)
class RecordedDelivery:
    created: bool  # False: a redelivery, nothing new was stored
    job_ids: list[int]


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        """Store the delivery and its jobs in one transaction, unless the delivery id is known."""

    async def claim_next(self, now: float) -> Job | None:
        """Mark the oldest runnable job running: the first queued job of a stack with none running."""

    async def next_due(self) -> float | None:
        """When the earliest waiting (retrying) job becomes runnable."""

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
    async def record_stack(
        self,
        project: str,
        stack: str,
        incident_id: str,
        status: str,
        operation: str,
        outputs: dict[str, Any] | None,
        now: float,
    ) -> None: ...
