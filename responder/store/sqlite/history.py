"""What the store has recorded, read back (jobs, an incident's whole record) and pruned."""

import sqlite3

from responder.incidents import parse_status
from responder.store import FINAL_STATUSES, IncidentRecord, Job, JobStatus
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection


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
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        return await self._run(
            lambda db: [rows.job(r) for r in db.execute(sql, (*args, limit, offset))]
        )

    async def incident(self, incident_id: str) -> IncidentRecord | None:
        return await self._run(lambda db: _incident(db, incident_id))

    async def delivery_ids(self) -> set[str]:
        """Every stored delivery's id (for tests and tools)."""
        return await self._run(lambda db: {r[0] for r in db.execute("SELECT id FROM deliveries")})

    async def prune(self, before: float) -> dict[str, int]:
        return await self._write(lambda db: _prune(db, before))


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
    stacks = tuple(
        rows.stack(r)
        for r in db.execute(
            f"{rows.STACKS_WITH_INCIDENT} WHERE s.incident_id = ? ORDER BY s.stack", (incident_id,)
        )
    )
    status = db.execute("SELECT status FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return IncidentRecord(
        id=incident_id,
        status=parse_status(status[0] if status else None),
        deliveries=deliveries,
        jobs=jobs,
        stacks=stacks,
    )


def _prune(db: sqlite3.Connection, before: float) -> dict[str, int]:
    """See `Store.prune`. Children first, so no foreign key is ever left dangling."""
    final = sorted(FINAL_STATUSES)
    marks = ", ".join("?" * len(final))
    unfinished = sorted(set(JobStatus) - FINAL_STATUSES)
    old_jobs = (
        f"SELECT id FROM jobs WHERE status IN ({marks}) AND COALESCE(finished_at, created_at) < ?"
    )
    counts = {
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
            f" AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.status IN ({', '.join('?' * len(unfinished))})"
            " AND jobs.project = stacks.project AND jobs.stack = stacks.stack)",
            (before, *unfinished),
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
