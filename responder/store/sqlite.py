"""The SQLite job store: one file in the data dir, WAL mode, one connection on its own thread.

Every public method runs as a single function on that thread, so a transaction is never interleaved
with another coroutine's statements and the event loop never waits on the disk.
"""

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from responder.events import event_from_dict
from responder.store import (
    RELEASED_STACKS,
    Caps,
    Job,
    JobStatus,
    NewDelivery,
    NewJob,
    RecordedDelivery,
    RecordRejected,
    StackRecord,
    StackStatus,
    StepRecord,
    StoreUnavailable,
)
from responder.store import deliveries as delivery_sql
from responder.store.schema import ensure_schema

T = TypeVar("T")
_Pending = tuple[delivery_sql.Request, "asyncio.Future[list[RecordedDelivery]]"]

# The first queued job of each stack, provided nothing runs on that stack: strict arrival order.
# Two NOT EXISTS, each answered from the (status, project, stack, id) index; one with an OR would
# scan the table for every queued job.
CLAIMABLE = """
SELECT * FROM jobs AS j
WHERE j.status = 'queued'
  AND NOT EXISTS (SELECT 1 FROM jobs AS r
                  WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack)
  AND NOT EXISTS (SELECT 1 FROM jobs AS q
                  WHERE q.status = 'queued' AND q.project = j.project AND q.stack = j.stack AND q.id < j.id)
ORDER BY j.id
"""


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []  # waiting for the next commit
        self._committing: list[_Pending] = []  # in the commit on the disk now
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_file(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL for job bookkeeping: in WAL mode a commit survives a crash of this process, and a job
        # whose last state is lost to a power cut is simply recovered and run again. Deliveries are
        # committed with FULL (see `_transaction`): a 2xx survives power loss too.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        ensure_schema(db)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._call(lambda: self._conn().execute("SELECT 1").fetchone())

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except (sqlite3.Error, RuntimeError) as e:  # RuntimeError: executor already shut down
            raise StoreUnavailable(f"job store unavailable: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("store is closed")
        return self._db

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        """Run `fn` in one transaction; `durable` commits with an fsync (and so also makes every
        earlier NORMAL commit durable, since they precede it in the WAL)."""
        db = self._conn()
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if durable:
                db.execute("PRAGMA synchronous=NORMAL")
        return result

    # -- intake ---------------------------------------------------------------------------------

    async def record_delivery(self, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
        return (await self.record_deliveries([(delivery, jobs)]))[0]

    async def record_deliveries(
        self, deliveries: Sequence[tuple[NewDelivery, list[NewJob]]]
    ) -> list[RecordedDelivery]:
        """Group commit: requests arriving while a commit is on the disk wait for the next one, and
        all of them share it. Each caller still returns only after its own request is durable."""
        future: asyncio.Future[list[RecordedDelivery]] = asyncio.get_running_loop().create_future()
        self._pending.append((deliveries, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
            self._committer.add_done_callback(self._committer_stopped)
        return await future

    async def _commit_pending(self) -> None:
        """Commit batches until none is pending, resolving each caller's future with its result,
        its request's rejection, or the error that failed the whole commit."""
        while self._pending:
            self._committing, self._pending = self._pending, []
            requests = [request for request, _ in self._committing]
            try:
                outcomes = await self._call(
                    functools.partial(
                        self._transaction,
                        functools.partial(delivery_sql.record_requests, requests=requests),
                        durable=True,
                    )
                )
            except Exception as e:  # handed to every waiting caller
                _fail(self._committing, e)
            else:
                for (_, future), outcome in zip(self._committing, outcomes, strict=True):
                    if future.done():
                        continue  # its caller went away
                    if isinstance(outcome, RecordRejected):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            self._committing = []

    def _committer_stopped(self, task: "asyncio.Task[None]") -> None:
        """The committer was cancelled (the loop is closing; perhaps before it even started) or
        broke: whatever it held or had yet to take, nobody may wait for it forever."""
        if task.cancelled() or task.exception() is not None:
            leftover, self._committing, self._pending = self._committing + self._pending, [], []
            _fail(leftover, StoreUnavailable("the job store stopped committing; retry later"))

    # -- running --------------------------------------------------------------------------------

    async def claim_next(self, now: float) -> Job | None:
        def claim(db: sqlite3.Connection) -> Job | None:
            # Due scheduled jobs join the queue in their original place (by id).
            db.execute(
                "UPDATE jobs SET status = 'queued', not_before = 0 WHERE status = 'scheduled' AND not_before <= ?",
                (now,),
            )
            for row in db.execute(CLAIMABLE):
                if row["not_before"] > now:
                    continue  # its stack waits for it: later jobs of that stack stay behind
                db.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ? WHERE id = ?",
                    (now, row["id"]),
                )
                return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())
            return None

        return await self._call(lambda: self._transaction(claim))

    async def next_due(self) -> float | None:
        def due() -> float | None:
            row = (
                self._conn()
                .execute(
                    "SELECT MIN(not_before) FROM jobs WHERE status IN ('queued', 'scheduled') AND not_before > 0"
                )
                .fetchone()
            )
            return row[0] if row and row[0] is not None else None

        return await self._call(due)

    async def add_step(self, job_id: int, step: StepRecord) -> None:
        await self._call(
            lambda: self._conn().execute(
                "INSERT INTO steps (job_id, step, started_at, duration_ms, outcome, error, changes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    step.step,
                    step.started_at,
                    step.duration_ms,
                    step.outcome,
                    step.error,
                    json.dumps(step.changes),
                ),
            )
        )

    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        now: float,
        *,
        error: str | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        await self._call(
            lambda: self._conn().execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, outputs = ? WHERE id = ?",
                (
                    status.value,
                    now,
                    error,
                    json.dumps(outputs) if outputs is not None else None,
                    job_id,
                ),
            )
        )

    async def retry_later(self, job_id: int, not_before: float, error: str) -> None:
        await self._call(
            lambda: self._conn().execute(
                "UPDATE jobs SET status = 'queued', not_before = ?, error = ? WHERE id = ?",
                (not_before, error, job_id),
            )
        )

    async def running_jobs(self) -> list[Job]:
        return await self._call(
            lambda: [
                _job(r)
                for r in self._conn().execute(
                    "SELECT * FROM jobs WHERE status = 'running' ORDER BY id"
                )
            ]
        )

    async def reserve_stack(self, record: StackRecord, caps: Caps) -> str | None:
        """Record a stack about to be created, unless a cap forbids it: then name the cap."""

        def reserve(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT status FROM stacks WHERE project = ? AND stack = ?",
                (record.project, record.stack),
            ).fetchone()
            if row is not None and row["status"] not in RELEASED_STACKS:
                return None  # already ours and alive: no new stack
            # A destroyed stack, or one whose first `up` failed, holds no cap slot.
            live = "status NOT IN ('destroyed', 'failed')"  # RELEASED_STACKS
            for cap, limit, where, args in (
                ("max_live_stacks", caps.live_stacks, live, ()),
                (
                    "max_stacks_per_service",
                    caps.per_service,
                    f"{live} AND service = ?",
                    (record.service,),
                ),
                (
                    "max_stacks_per_playbook",
                    caps.per_playbook,
                    f"{live} AND playbook = ?",
                    (record.playbook,),
                ),
            ):
                if (
                    limit
                    and db.execute(f"SELECT COUNT(*) FROM stacks WHERE {where}", args).fetchone()[0]
                    >= limit
                ):
                    return f"{cap}={limit}"
            db.execute(
                "INSERT OR REPLACE INTO stacks (project, stack, program, incident_id, playbook, service, status,"
                " created_at, last_activity_at, last_operation, idle_ttl, max_age)"
                " VALUES (?, ?, ?, ?, ?, ?, 'provisioning', ?, ?, 'reserve', ?, ?)",
                (
                    record.project,
                    record.stack,
                    record.program,
                    record.incident_id,
                    record.playbook,
                    record.service,
                    record.created_at,
                    record.created_at,
                    record.idle_ttl,
                    record.max_age,
                ),
            )
            return None

        return await self._call(lambda: self._transaction(reserve))

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
    ) -> None:
        await self._call(
            lambda: self._conn().execute(
                "UPDATE stacks SET last_operation = ?, last_activity_at = ?, status = COALESCE(?, status),"
                " outputs = COALESCE(?, outputs), export_path = COALESCE(?, export_path)"
                " WHERE project = ? AND stack = ?",
                (
                    operation,
                    now,
                    status,
                    json.dumps(outputs) if outputs is not None else None,
                    export_path,
                    project,
                    stack,
                ),
            )
        )

    async def get_stack(self, project: str, stack: str) -> StackRecord | None:
        def get() -> StackRecord | None:
            row = (
                self._conn()
                .execute(
                    f"{STACKS_WITH_INCIDENT} WHERE s.project = ? AND s.stack = ?", (project, stack)
                )
                .fetchone()
            )
            return _stack(row) if row else None

        return await self._call(get)

    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]:
        where = "" if include_destroyed else " WHERE s.status != 'destroyed'"
        return await self._call(
            lambda: [
                _stack(r)
                for r in self._conn().execute(
                    f"{STACKS_WITH_INCIDENT}{where} ORDER BY s.created_at"
                )
            ]
        )

    async def operations_since(self, since: float) -> int:
        return await self._call(
            lambda: int(
                self._conn()
                .execute("SELECT COUNT(*) FROM steps WHERE started_at >= ?", (since,))
                .fetchone()[0]
            )
        )

    async def pending_jobs_for(self, project: str, stack: str) -> int:
        return await self._call(
            lambda: int(
                self._conn()
                .execute(
                    "SELECT COUNT(*) FROM jobs WHERE project = ? AND stack = ?"
                    " AND status IN ('queued', 'scheduled', 'running', 'awaiting_approval')",
                    (project, stack),
                )
                .fetchone()[0]
            )
        )

    # -- approvals and cancellation ----------------------------------------------------------------

    async def await_approval(self, job_id: int, plan: dict[str, Any], now: float) -> None:
        await self._call(
            lambda: self._conn().execute(
                "UPDATE jobs SET status = 'awaiting_approval', plan = ?, approved_plan = NULL, finished_at = NULL,"
                " not_before = ? WHERE id = ?",
                (json.dumps(plan), now, job_id),
            )
        )

    async def decide(self, job_id: int, approve: bool, now: float, reason: str = "") -> Job | None:
        """Approve (back in line, first for its stack) or reject a job awaiting approval."""

        def decide(db: sqlite3.Connection) -> Job | None:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != "awaiting_approval":
                return _job(row) if row else None
            if approve:
                db.execute(
                    "UPDATE jobs SET status = 'queued', approved_plan = plan, not_before = 0,"
                    " attempts = attempts - 1 WHERE id = ?",
                    (job_id,),
                )
            else:
                db.execute(
                    "UPDATE jobs SET status = 'rejected', finished_at = ?, error = ? WHERE id = ?",
                    (now, reason or "rejected", job_id),
                )
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

        return await self._call(lambda: self._transaction(decide))

    async def expired_approvals(self, older_than: float) -> list[int]:
        return await self._call(
            lambda: [
                r[0]
                for r in self._conn().execute(
                    "SELECT id FROM jobs WHERE status = 'awaiting_approval' AND not_before <= ?",
                    (older_than,),
                )
            ]
        )

    async def request_cancel(self, job_id: int, now: float) -> Job | None:
        """Cancel a waiting job at once; flag a running one (the runner stops it)."""

        def cancel(db: sqlite3.Connection) -> Job | None:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] in ("queued", "scheduled", "awaiting_approval"):
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled by request'"
                    " WHERE id = ?",
                    (now, job_id),
                )
            elif row["status"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

        return await self._call(lambda: self._transaction(cancel))

    # -- reading --------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        def get() -> Job | None:
            db = self._conn()
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(row, _steps(db, job_id)) if row else None

        return await self._call(get)

    async def list_jobs(
        self,
        *,
        incident_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        where, args = [], []
        if incident_id:
            where.append("incident_id = ?")
            args.append(incident_id)
        if status:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        return await self._call(
            lambda: [_job(r) for r in self._conn().execute(sql, (*args, limit, offset))]
        )

    async def incident(self, incident_id: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            db = self._conn()
            deliveries = [
                {
                    k: row[k]
                    for k in ("id", "source", "event_id", "event_type", "status", "received_at")
                }
                for row in db.execute(
                    "SELECT * FROM deliveries WHERE incident_id = ? ORDER BY received_at",
                    (incident_id,),
                )
            ]
            jobs = [
                _job(r, _steps(db, r["id"]))
                for r in db.execute(
                    "SELECT * FROM jobs WHERE incident_id = ? ORDER BY id", (incident_id,)
                )
            ]
            stacks = [
                _stack(r)
                for r in db.execute(
                    f"{STACKS_WITH_INCIDENT} WHERE s.incident_id = ? ORDER BY s.stack",
                    (incident_id,),
                )
            ]
            if not deliveries and not jobs:
                return None
            return {"id": incident_id, "deliveries": deliveries, "jobs": jobs, "stacks": stacks}

        return await self._call(get)

    async def prune(self, before: float) -> dict[str, int]:
        return await self._call(
            lambda: self._transaction(lambda db: delivery_sql.prune(db, before))
        )

    async def counts(self) -> dict[str, int]:
        def count() -> dict[str, int]:
            rows = self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            return {r[0]: r[1] for r in rows}

        return await self._call(count)

    async def delivery_ids(self) -> set[str]:
        return await self._call(
            lambda: {r[0] for r in self._conn().execute("SELECT id FROM deliveries")}
        )


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _private_file(path: Path) -> None:
    """Create the database file (and tighten an existing one) to 0600 whatever the umask: it holds
    every webhook body. SQLite gives its -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


def _job(row: sqlite3.Row, steps: tuple[StepRecord, ...] = ()) -> Job:
    return Job(
        id=row["id"],
        delivery_id=row["delivery_id"],
        playbook=row["playbook"],
        project=row["project"],
        stack=row["stack"],
        event=event_from_dict(json.loads(row["event"])),
        incident_id=row["incident_id"],
        event_type=row["event_type"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        not_before=row["not_before"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        outputs=json.loads(row["outputs"]) if row["outputs"] else None,
        params=json.loads(row["params"]),
        coalesced_into=row["coalesced_into"],
        plan=json.loads(row["plan"]) if row["plan"] else None,
        approved_plan=json.loads(row["approved_plan"]) if row["approved_plan"] else None,
        cancel_requested=bool(row["cancel_requested"]),
        steps=steps,
    )


def _stack(row: sqlite3.Row) -> StackRecord:
    return StackRecord(
        project=row["project"],
        stack=row["stack"],
        program=row["program"],
        incident_id=row["incident_id"],
        playbook=row["playbook"],
        service=row["service"],
        status=StackStatus(row["status"]),
        created_at=row["created_at"],
        last_activity_at=row["last_activity_at"],
        last_operation=row["last_operation"],
        outputs=json.loads(row["outputs"]) if row["outputs"] else None,
        export_path=row["export_path"],
        idle_ttl=row["idle_ttl"],
        max_age=row["max_age"],
        incident_status=row["incident_status"] or "",
        incident_last_event_at=row["incident_last_event_at"],
        incident_resolved_at=row["incident_resolved_at"],
    )


STACKS_WITH_INCIDENT = (
    "SELECT s.*, i.status AS incident_status, i.last_event_at AS incident_last_event_at,"
    " i.resolved_at AS incident_resolved_at FROM stacks AS s LEFT JOIN incidents AS i ON i.id = s.incident_id"
)


def _steps(db: sqlite3.Connection, job_id: int) -> tuple[StepRecord, ...]:
    return tuple(
        StepRecord(
            r["step"],
            r["started_at"],
            r["duration_ms"],
            r["outcome"],
            r["error"],
            json.loads(r["changes"]),
        )
        for r in db.execute("SELECT * FROM steps WHERE job_id = ? ORDER BY id", (job_id,))
    )
