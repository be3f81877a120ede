"""The SQLite job store: one file in the data dir, WAL mode, one connection on its own thread.

Every public method runs as a single function on that thread, so a transaction is never interleaved
with another coroutine's statements and the event loop never waits on the disk.
"""

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from responder.store import (
    Caps,
    Job,
    JobStatus,
    NewDelivery,
    NewJob,
    RecordedDelivery,
    StackRecord,
    StepRecord,
    StoreUnavailable,
)

T = TypeVar("T")
_Pending = tuple[NewDelivery, list[NewJob], "asyncio.Future[RecordedDelivery]"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_incident ON deliveries (incident_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    playbook TEXT NOT NULL,
    project TEXT NOT NULL,
    stack TEXT NOT NULL,
    event TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    coalesce INTEGER NOT NULL DEFAULT 0,
    coalesced_into INTEGER,
    cancel_on TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    plan TEXT,
    approved_plan TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, project, stack, id);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_incident ON jobs (incident_id, id);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    step TEXT NOT NULL,
    started_at REAL NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    changes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS steps_job ON steps (job_id, id);
CREATE TABLE IF NOT EXISTS stacks (
    project TEXT NOT NULL,
    stack TEXT NOT NULL,
    program TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    playbook TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_activity_at REAL NOT NULL,
    last_operation TEXT NOT NULL,
    outputs TEXT,
    export_path TEXT,
    idle_ttl REAL,
    max_age REAL,
    PRIMARY KEY (project, stack)
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    last_event_at REAL NOT NULL,
    resolved_at REAL
);
"""

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
        self._pending: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL for job bookkeeping: in WAL mode a commit survives a crash of this process, and a job
        # whose last state is lost to a power cut is simply recovered and run again. Deliveries are
        # committed with FULL (see `_transaction`): a 2xx survives power loss too.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
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
        """Group commit: deliveries arriving while a commit is on the disk wait for the next one, and
        all of them share it. Each caller still returns only after its own delivery is durable."""
        future: asyncio.Future[RecordedDelivery] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, jobs, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        return await future

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []

            def commit(
                db: sqlite3.Connection, batch: list[_Pending] = batch
            ) -> list[RecordedDelivery]:
                return [_record(db, delivery, jobs) for delivery, jobs, _ in batch]

            try:
                results = await self._call(
                    functools.partial(self._transaction, commit, durable=True)
                )
            except StoreUnavailable as e:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (*_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

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
            if row is not None and row["status"] != "destroyed":
                return None  # already ours and alive: no new stack
            live = "status != 'destroyed'"
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
        status: str | None = None,
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

    async def counts(self) -> dict[str, int]:
        def count() -> dict[str, int]:
            rows = self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            return {r[0]: r[1] for r in rows}

        return await self._call(count)

    async def delivery_ids(self) -> set[str]:
        return await self._call(
            lambda: {r[0] for r in self._conn().execute("SELECT id FROM deliveries")}
        )


def _record(db: sqlite3.Connection, delivery: NewDelivery, jobs: list[NewJob]) -> RecordedDelivery:
    inserted = db.execute(
        "INSERT INTO deliveries (id, source, event_id, event_type, incident_id, status, body, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            delivery.id,
            delivery.source,
            delivery.event_id,
            delivery.event_type,
            delivery.incident_id,
            delivery.status,
            delivery.body,
            delivery.received_at,
        ),
    ).rowcount
    if not inserted:
        return RecordedDelivery(created=False, job_ids=[], status="duplicate")
    now = delivery.received_at
    status = delivery.status
    if delivery.incident_id and delivery.source != "responder":
        status, jobs = _against_incident(db, delivery, jobs)
        if status != delivery.status:
            db.execute("UPDATE deliveries SET status = ? WHERE id = ?", (status, delivery.id))
        _note_incident(db, delivery)
        # A later event of a listed type cancels a scheduled job for the same incident (a reopen
        # inside the grace period keeps the stack).
        db.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = ?"
            " WHERE status = 'scheduled' AND incident_id = ?"
            " AND EXISTS (SELECT 1 FROM json_each(jobs.cancel_on) WHERE value = ?)",
            (
                now,
                f"cancelled by {delivery.event_type} (delivery {delivery.id})",
                delivery.incident_id,
                delivery.event_type,
            ),
        )
    ids: list[int] = []
    for job in jobs:
        cursor = db.execute(
            "INSERT INTO jobs (delivery_id, playbook, project, stack, event, incident_id, event_type,"
            " status, max_attempts, coalesce, params, created_at, not_before, cancel_on)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.id,
                job.playbook,
                job.project,
                job.stack,
                json.dumps(job.event),
                delivery.incident_id,
                delivery.event_type,
                "scheduled" if job.delay > 0 else "queued",
                job.max_attempts,
                int(job.coalesce),
                json.dumps(job.params),
                now,
                now + job.delay if job.delay > 0 else 0,
                json.dumps(list(job.cancel_on)),
            ),
        )
        job_id = int(cursor.lastrowid or 0)
        if job.coalesce:
            # Older queued runs of this playbook on this stack are superseded by this newer one.
            db.execute(
                "UPDATE jobs SET status = 'coalesced', coalesced_into = ?, finished_at = ?"
                " WHERE status = 'queued' AND coalesce = 1 AND playbook = ? AND project = ? AND stack = ?"
                " AND id < ? AND attempts = 0",
                (job_id, now, job.playbook, job.project, job.stack, job_id),
            )
        ids.append(job_id)
    return RecordedDelivery(created=True, job_ids=ids, status=status)


OPEN = ("triggered", "acknowledged")


def _against_incident(
    db: sqlite3.Connection, delivery: NewDelivery, jobs: list[NewJob]
) -> tuple[str, list[NewJob]]:
    """Checked in the same transaction as the insert, so two concurrent repeats cannot both pass:
    a trigger for an incident already open is a repeat; updates may need an open incident."""
    row = db.execute(
        "SELECT status FROM incidents WHERE id = ?", (delivery.incident_id,)
    ).fetchone()
    known = row["status"] if row else None
    if delivery.event_type == "incident.triggered" and known in OPEN:
        return "deduplicated", []
    if (
        delivery.updates_need_open_incident
        and delivery.event_type != "incident.triggered"
        and known not in OPEN
    ):
        return "ignored", []
    return delivery.status, jobs


def _note_incident(db: sqlite3.Connection, delivery: NewDelivery) -> None:
    status = delivery.incident_status or delivery.event_type.rpartition(".")[2]
    resolved_at = delivery.received_at if status == "resolved" else None
    db.execute(
        "INSERT INTO incidents (id, status, last_event_at, resolved_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, last_event_at = excluded.last_event_at,"
        " resolved_at = CASE WHEN excluded.status = 'resolved'"
        "   THEN COALESCE(incidents.resolved_at, excluded.resolved_at) ELSE NULL END",
        (delivery.incident_id, status, delivery.received_at, resolved_at),
    )


def _job(row: sqlite3.Row, steps: tuple[StepRecord, ...] = ()) -> Job:
    return Job(
        id=row["id"],
        delivery_id=row["delivery_id"],
        playbook=row["playbook"],
        project=row["project"],
        stack=row["stack"],
        event=json.loads(row["event"]),
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
        status=row["status"],
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
