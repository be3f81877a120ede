"""The durable job store: records, statuses and the narrow interface the daemon uses.

SQLite is the embedded implementation; a PostgreSQL one (for several replicas) implements the same
`Store` protocol.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from responder.store.records import (
    CANCELLED_BY_REQUEST,
    FINAL_STATUSES,
    RELEASED_STACKS,
    Caps,
    Decision,
    DeliveryRecord,
    DeliveryStatus,
    IncidentRecord,
    IncidentStatus,
    IncidentSummary,
    Job,
    JobStatus,
    JsonObject,
    NewDelivery,
    NewJob,
    NewNote,
    NextClaim,
    NoteRecord,
    NoteStatus,
    RecordedDelivery,
    StackRecord,
    StackStatus,
    StepRecord,
)

__all__ = [
    "CANCELLED_BY_REQUEST",
    "FINAL_STATUSES",
    "RELEASED_STACKS",
    "Caps",
    "Decision",
    "DeliveryRecord",
    "DeliveryStatus",
    "IncidentRecord",
    "IncidentStatus",
    "IncidentSummary",
    "Job",
    "JobStatus",
    "JsonObject",
    "LeaseLost",
    "NewDelivery",
    "NewJob",
    "NewNote",
    "NextClaim",
    "NoteRecord",
    "NoteStatus",
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
    """The store cannot hold a value it was given (a delivery's, or a read's: one it cannot encode);
    that call alone fails, with this reason."""


class LeaseLost(Exception):
    """A job's lease is no longer this node's (another node took the job over, or it ended): its
    result must not be written. Raised by every fenced write."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id}: this node no longer holds its lease")
        self.job_id = job_id

    def __reduce__(self) -> tuple[type["LeaseLost"], tuple[int]]:
        return LeaseLost, (self.job_id,)  # as it was made: it crosses from the store process


class Store(Protocol):
    """What the daemon needs from a job store. Every method is one transaction.

    A store is opened by one node (`node`, unique per process start). A job it claims is leased to
    that node for `lease` seconds, renewed by `renew_leases`; every claim or take-over increments the
    job's `fence`, and writes for a running job given a `fence` succeed only while it still matches
    (else `LeaseLost`), so a node that lost a job can never record its result.
    """

    node: str
    lease: float
    # Whether other nodes may share this store (PostgreSQL). Then a node that cannot renew its
    # leases must stop its jobs before another takes them over; alone (SQLite), it goes on.
    shared: bool

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

    async def claim_next(self, now: float, token: str | None = None) -> Job | None:
        """Mark the oldest runnable job running: the first queued job of a stack with none running.
        It is leased to this node until `now + lease`, with a new fence. With a `token` (see
        `NextClaim`), the job this node claimed under it, if it still runs, comes back instead."""

    async def renew_leases(self, fences: Mapping[int, int], now: float) -> set[int]:
        """Extend to `now + lease` the leases of this node's running jobs (job id -> fence); return
        the ids whose lease it no longer holds (taken over by another node, or no longer running)."""

    async def cancels_requested(self) -> set[int]:
        """The ids of this node's running jobs whose cancel was asked, through any node."""

    async def take_over(self, now: float) -> list[Job]:
        """Lease to this node, with a new fence, the running jobs whose lease expired before `now`
        (their node died, or lost the database and stopped them), this node's own included; with
        SQLite (one process per file) also every running job of an earlier node, at once. The caller
        repairs their stacks, then retries or fails them with the new fence."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another node makes a job runnable (new jobs, a retry, a freed stack,
        an approval), until `close`. Best effort: callers still poll. A no-op with one process."""

    async def lead(self) -> bool:
        """Whether this node is the leader (runs the reaper): it takes the leadership when no live
        node holds it and keeps it until it closes or loses its connection. Always True for SQLite."""

    async def stack_settings(self, project: str, stack: str) -> str | None:
        """The stack's Pulumi settings file (`Pulumi.<stack>.yaml`: config, secrets encrypted, and
        the passphrase salt) as last saved by any node; None if none was saved."""

    async def save_stack_settings(
        self, project: str, stack: str, text: str | None, *, held: tuple[int, int] | None = None
    ) -> None:
        """Save the stack's settings file; None deletes it (the stack was removed). `held`, a (job
        id, fence): only while that job runs under that fence, else raise `LeaseLost`."""

    async def next_due(self) -> float | None:
        """When the earliest waiting (retrying or scheduled) job becomes runnable."""

    async def add_step(
        self, job_id: int, step: StepRecord, *, fence: int | None = None, key: str | None = None
    ) -> None:
        """Record a step of a job; with a `fence`, only while the job is running under it. A `key`
        (made once per step) records it once however often it is sent: a call whose answer was
        lost is sent again."""

    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        now: float,
        *,
        error: str | None = None,
        outputs: JsonObject | None = None,
        fence: int | None = None,
        notes: Sequence[NewNote] = (),
        then_claim: NextClaim | None = None,
    ) -> Job | None:
        """Record a job's end, and queue its `notes` in the same transaction (none if the write is
        refused: a job whose result is not written sends nothing). With `then_claim`, claim this
        node's next job in that transaction too, as `claim_next()` would, and return it (one store
        call a job for a worker with a backlog; nothing is claimed if the write is refused).
        The same result again under the same fence (a retry whose answer was lost) is taken as
        written, and queues nothing twice."""

    async def retry_later(
        self, job_id: int, not_before: float, error: str, *, fence: int | None = None
    ) -> None: ...

    async def release(self, job_id: int, fence: int, now: float) -> JobStatus:
        """Hand back a job claimed under `fence` that never started (its worker stopped first):
        queued again in its place, with its lease dropped and the attempt not counted; or, if its
        cancel was asked meanwhile, cancelled at `now`. Its new status. LeaseLost if that claim no
        longer holds it."""

    async def get_job(self, job_id: int) -> Job | None: ...
    async def unfinished_job_counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status that is not final (statuses with none left out)."""

    async def list_jobs(
        self,
        *,
        incident_id: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Job]:
        """Jobs (without their steps) in order of creation, oldest first unless `newest_first`."""

    async def incident(self, incident_id: str) -> IncidentRecord | None:
        """Everything stored about the incident; None when no delivery or job names it."""

    async def recent_incident_ids(self, limit: int) -> list[str]:
        """The `limit` incidents with the newest jobs, the one with the newest job first."""

    async def incident_summary(self, incident_id: str, newest_jobs: int) -> IncidentSummary | None:
        """The incident with only its `newest_jobs` newest jobs (no steps) and its job count, the
        sources of its deliveries and its stacks: for a list. None when nothing names it (no
        delivery, job or stack)."""

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
        held: tuple[int, int] | None = None,
    ) -> None:
        """Record the stack's last operation; `held`, a (job id, fence): only while that job runs
        under that fence, else raise `LeaseLost` (a node that lost the job must not say what its
        stack is now)."""

    async def get_stack(self, project: str, stack: str) -> StackRecord | None: ...
    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]: ...
    async def operations_since(self, since: float) -> int: ...
    async def pending_jobs_for(self, project: str, stack: str) -> int: ...
    async def latest_jobs_of(self, project: str, stack: str, limit: int) -> list[Job]:
        """The stack's last `limit` jobs (without their steps), newest first."""

    async def await_approval(
        self, job_id: int, plan: JsonObject, now: float, *, fence: int | None = None
    ) -> None: ...
    async def decide(
        self, job_id: int, approve: bool, now: float, reason: str = ""
    ) -> Decision | None:
        """Approve (back in line, first for its stack) or reject a job awaiting approval; None if
        there is no such job."""

    async def expired_approvals(self, older_than: float) -> list[int]: ...
    async def unpark_stalled(self) -> list[int]:
        """Unpark each stack's first parked job whose stack runs nothing and has no job not parked
        in line before it, which no claim would ever take; their ids. A safety net: a job is
        unparked as the one before it leaves, so this should find none."""

    async def request_cancel(self, job_id: int, now: float) -> Job | None: ...

    async def claim_notes(self, now: float, limit: int, lease: float) -> list[NoteRecord]:
        """Mark up to `limit` due notes `sending`, leased to this node until `now + lease`: pending
        ones whose `not_before` has come, and `sending` ones whose sender is gone (lease expired;
        with SQLite also any of an earlier process), those `resumed`. Each claim counts an attempt,
        and the attempt number fences the note's settlement. Concurrent claimers never share one."""

    async def settle_note(
        self,
        note_id: int,
        attempt: int,
        status: NoteStatus,
        now: float,
        *,
        error: str | None = None,
        not_before: float = 0.0,
    ) -> bool:
        """Record how a claimed note's attempt ended: `sent`, `failed`, or `pending` again from
        `not_before`. Only while this node's claim `attempt` still holds it; returns whether it did."""

    async def next_note_due(self) -> float | None:
        """When the earliest pending note becomes due (a sending one: when its lease expires)."""

    async def job_notes(self, job_id: int) -> list[NoteRecord]:
        """The notes a job queued, in order."""

    async def prune(self, before: float) -> dict[str, int]:
        """Delete what finished before `before`: final jobs with their steps, deliveries left without
        jobs, and bodies, resolved incidents and destroyed stack records nothing refers to any more.
        Never anything unfinished. Returns the number of rows deleted per table."""
