"""What the store has recorded, read back (jobs, an incident's whole record) and pruned."""

import sqlite3

from responder.incidents import parse_status
from responder.store import (
    FINAL_STATUSES,
    IncidentRecord,
    IncidentStatus,
    IncidentSummary,
    Job,
    JobStatus,
    StackRecord,
)
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection

UNFINISHED = rows.sql_list(set(JobStatus) - FINAL_STATUSES)
# Incidents by their newest job. First among the newest jobs alone (a short walk back along the
# primary key: most incidents have a few jobs, so `RECENT_WINDOWS[0]` jobs per incident asked for
# is plenty), then further back; only when a noisy incident crowds them all out, over every job
# (one pass over the `jobs_incident` index: ≈ 0.4 µs a job in SQLite).
RECENT_WINDOWS = (20, 200)
_RECENT_AMONG_NEWEST = (
    "SELECT incident_id FROM (SELECT incident_id, id FROM jobs ORDER BY id DESC LIMIT ?)"
    " GROUP BY incident_id ORDER BY max(id) DESC LIMIT ?"
)
_RECENT = "SELECT incident_id FROM jobs GROUP BY incident_id ORDER BY max(id) DESC LIMIT ?"


class History(Connection):
    async def get_job(self, job_id: int) -> Job | None:
        return await self._run(lambda db: rows.job_by_id(db, job_id, with_steps=True))

    async def list_jobs(
        self,
        *,
        incident_id: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Job]:
        where: list[str] = []
        args: list[str] = []
        if incident_id:
            where.append("incident_id = ?")
            args.append(incident_id)
        if status:
            where.append("status = ?")
            args.append(status.value)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY id{' DESC' if newest_first else ''} LIMIT ? OFFSET ?"
        return await self._run(
            lambda db: [rows.job(r) for r in db.execute(sql, (*args, limit, offset))]
        )

    async def unfinished_job_counts(self) -> dict[JobStatus, int]:
        sql = f"SELECT status, count(*) FROM jobs WHERE status IN ({UNFINISHED}) GROUP BY status"
        return await self._run(lambda db: {JobStatus(status): n for status, n in db.execute(sql)})

    async def incident(self, incident_id: str) -> IncidentRecord | None:
        return await self._run(lambda db: _incident(db, incident_id))

    async def recent_incident_ids(self, limit: int) -> list[str]:
        def recent(db: sqlite3.Connection) -> list[str]:
            for window in RECENT_WINDOWS:
                found = db.execute(_RECENT_AMONG_NEWEST, (limit * window, limit)).fetchall()
                if len(found) == limit:
                    return [r[0] for r in found]
            return [r[0] for r in db.execute(_RECENT, (limit,))]

        return await self._run(recent)

    async def incident_summary(self, incident_id: str, newest_jobs: int) -> IncidentSummary | None:
        return await self._run(lambda db: _summary(db, incident_id, newest_jobs))

    async def delivery_ids(self) -> set[str]:
        """Every stored delivery's id (for tests and tools)."""
        return await self._run(lambda db: {r[0] for r in db.execute("SELECT id FROM deliveries")})

    async def prune(self, before: float) -> dict[str, int]:
        return await self._write(lambda db: _prune(db, before), slow=True)


def _incident(db: sqlite3.Connection, incident_id: str) -> IncidentRecord | None:
    deliveries = tuple(
        rows.delivery(r)
        for r in db.execute(
            "SELECT * FROM deliveries WHERE incident_id = ? ORDER BY received_at, rowid",
            (incident_id,),
        )
    )
    jobs = tuple(
        rows.job(r, rows.steps(db, r["id"]))
        for r in db.execute("SELECT * FROM jobs WHERE incident_id = ? ORDER BY id", (incident_id,))
    )
    if not deliveries and not jobs:
        return None
    stacks = _stacks_of(db, incident_id)
    return IncidentRecord(
        id=incident_id,
        status=_status_of(db, incident_id),
        deliveries=deliveries,
        jobs=jobs,
        stacks=stacks,
    )


def _summary(db: sqlite3.Connection, incident_id: str, limit: int) -> IncidentSummary | None:
    sources = tuple(
        r[0]
        for r in db.execute(
            "SELECT source FROM deliveries WHERE incident_id = ?"
            " GROUP BY source ORDER BY min(received_at), min(rowid)",
            (incident_id,),
        )
    )
    jobs = tuple(
        rows.job(r)
        for r in db.execute(
            "SELECT * FROM jobs WHERE incident_id = ? ORDER BY id DESC LIMIT ?",
            (incident_id, limit),
        )
    )
    count = rows.count(db, "SELECT count(*) FROM jobs WHERE incident_id = ?", (incident_id,))
    stacks = _stacks_of(db, incident_id)
    if not sources and not count and not stacks:
        return None
    return IncidentSummary(
        id=incident_id,
        status=_status_of(db, incident_id),
        sources=sources,
        job_count=count,
        jobs=jobs,
        stacks=stacks,
    )


def _prune(db: sqlite3.Connection, before: float) -> dict[str, int]:
    """See `Store.prune`. Children first, so no foreign key is ever left dangling."""
    final = sorted(FINAL_STATUSES)
    marks = ", ".join("?" * len(final))
    old_jobs = (
        f"SELECT id FROM jobs WHERE status IN ({marks}) AND COALESCE(finished_at, created_at) < ?"
    )
    counts = {
        "notes": db.execute(f"DELETE FROM notes WHERE job_id IN ({old_jobs})", (*final, before)),
        "steps": db.execute(f"DELETE FROM steps WHERE job_id IN ({old_jobs})", (*final, before)),
        "jobs": db.execute(f"DELETE FROM jobs WHERE id IN ({old_jobs})", (*final, before)),
        "deliveries": db.execute(
            "DELETE FROM deliveries WHERE received_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.delivery_id = deliveries.id)",
            (before,),
        ),
        "payloads": db.execute(
            "DELETE FROM payloads"
            " WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.payload = payloads.digest)"
        ),
        "stacks": db.execute(
            "DELETE FROM stacks WHERE status = 'destroyed' AND last_activity_at < ?"
            f" AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.status IN ({UNFINISHED})"
            " AND jobs.project = stacks.project AND jobs.stack = stacks.stack)",
            (before,),
        ),
        # An incident nothing refers to any more, resolved before the cutoff, is forgotten: a later
        # event for it is handled as for an unknown incident, which for a resolved one is the same.
        "incidents": db.execute(
            "DELETE FROM incidents WHERE status = 'resolved' AND last_event_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.incident_id = incidents.id)"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.incident_id = incidents.id)"
            " AND NOT EXISTS (SELECT 1 FROM stacks WHERE stacks.incident_id = incidents.id)",
            (before,),
        ),
    }
    return {table: cursor.rowcount for table, cursor in counts.items()}


def _stacks_of(db: sqlite3.Connection, incident_id: str) -> tuple[StackRecord, ...]:
    found = db.execute(
        f"{rows.STACKS_WITH_INCIDENT} WHERE s.incident_id = ? ORDER BY s.stack", (incident_id,)
    )
    return tuple(rows.stack(r) for r in found)


def _status_of(db: sqlite3.Connection, incident_id: str) -> IncidentStatus | None:
    found = db.execute("SELECT status FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return parse_status(found[0] if found else None)
