"""What the store has recorded, read back (jobs, an incident's whole record) and pruned."""

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
from responder.store.postgres import rows
from responder.store.postgres.connection import Connection
from responder.store.postgres.driver import Db

FINAL = rows.sql_list(FINAL_STATUSES)
UNFINISHED = rows.sql_list(set(JobStatus) - FINAL_STATUSES)
OLD_JOBS = (
    f"SELECT id FROM jobs WHERE status IN ({FINAL}) AND COALESCE(finished_at, created_at) < $1"
    # A note still to send keeps its job: its delivery, or its failure, is yet to be seen.
    " AND NOT EXISTS (SELECT 1 FROM notes WHERE notes.job_id = jobs.id"
    " AND notes.status IN ('pending', 'sending'))"
)

# See `Store.prune`. Children first, so no foreign key is ever left dangling.
PRUNE = {
    "notes": f"DELETE FROM notes WHERE job_id IN ({OLD_JOBS})",
    "steps": f"DELETE FROM steps WHERE job_id IN ({OLD_JOBS})",
    "jobs": f"DELETE FROM jobs WHERE id IN ({OLD_JOBS})",
    "deliveries": "DELETE FROM deliveries WHERE received_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.delivery_id = deliveries.id)",
    "payloads": "DELETE FROM payloads"
    " WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.payload = payloads.digest)",
    "stacks": "DELETE FROM stacks WHERE status = 'destroyed' AND last_activity_at < $1"
    f" AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.status IN ({UNFINISHED})"
    " AND jobs.project = stacks.project AND jobs.stack = stacks.stack)",
    # An incident nothing refers to any more, resolved before the cutoff, is forgotten: a later
    # event for it is handled as for an unknown incident, which for a resolved one is the same.
    "incidents": "DELETE FROM incidents WHERE status = 'resolved' AND last_event_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.incident_id = incidents.id)"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.incident_id = incidents.id)"
    " AND NOT EXISTS (SELECT 1 FROM stacks WHERE stacks.incident_id = incidents.id)",
}

# Incidents by their newest job. First among the newest jobs alone (a short walk back along the
# primary key: most incidents have a few jobs, so `RECENT_WINDOWS[0]` jobs per incident asked for
# is plenty), then further back; only when a noisy incident crowds them all out, over every job
# (one pass over the `jobs_incident` index: ≈ 0.4 µs a job in SQLite).
RECENT_WINDOWS = (20, 200)
RECENT_AMONG_NEWEST = (
    "SELECT incident_id FROM (SELECT incident_id, id FROM jobs ORDER BY id DESC LIMIT $1) AS newest"
    " GROUP BY incident_id ORDER BY max(id) DESC LIMIT $2"
)
RECENT = "SELECT incident_id FROM jobs GROUP BY incident_id ORDER BY max(id) DESC LIMIT $1"


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
        args: list[object] = []
        if incident_id:
            args.append(incident_id)
            where.append(f"incident_id = ${len(args)}")
        if status:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        order = "id DESC" if newest_first else "id"
        sql += f" ORDER BY {order} LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
        found = await self._run(lambda db: db.fetch(sql, *args, limit, offset))
        return [rows.job(r) for r in found]

    async def unfinished_job_counts(self) -> dict[JobStatus, int]:
        sql = (
            f"SELECT status, count(*) AS n FROM jobs WHERE status IN ({UNFINISHED}) GROUP BY status"
        )
        found = await self._run(lambda db: db.fetch(sql))
        return {JobStatus(r["status"]): r["n"] for r in found}

    async def incident(self, incident_id: str) -> IncidentRecord | None:
        return await self._write(lambda db: _incident(db, incident_id))

    async def recent_incident_ids(self, limit: int) -> list[str]:
        async def recent(db: Db) -> list[str]:
            for window in RECENT_WINDOWS:
                found = await db.fetch(RECENT_AMONG_NEWEST, limit * window, limit)
                if len(found) == limit:
                    return [r["incident_id"] for r in found]
            return [r["incident_id"] for r in await db.fetch(RECENT, limit)]

        return await self._run(recent)

    async def incident_summary(self, incident_id: str, newest_jobs: int) -> IncidentSummary | None:
        return await self._write(lambda db: _summary(db, incident_id, newest_jobs))

    async def delivery_ids(self) -> set[str]:
        """Every stored delivery's id (for tests and tools)."""
        found = await self._run(lambda db: db.fetch("SELECT id FROM deliveries"))
        return {r["id"] for r in found}

    async def prune(self, before: float) -> dict[str, int]:
        async def prune(db: Db) -> dict[str, int]:
            return {
                table: rows.affected(await db.execute(sql, *([before] if "$1" in sql else [])))
                for table, sql in PRUNE.items()
            }

        return await self._write(prune)


async def _incident(db: Db, incident_id: str) -> IncidentRecord | None:
    # One transaction (REPEATABLE READ would be stricter; the record is for people to read).
    deliveries = tuple(
        rows.delivery(r)
        for r in await db.fetch(
            "SELECT * FROM deliveries WHERE incident_id = $1 ORDER BY received_at, seq",
            incident_id,
        )
    )
    found = await db.fetch("SELECT * FROM jobs WHERE incident_id = $1 ORDER BY id", incident_id)
    jobs = tuple([rows.job(r, await rows.steps(db, r["id"])) for r in found])
    if not deliveries and not jobs:
        return None
    stacks = await _stacks_of(db, incident_id)
    return IncidentRecord(
        id=incident_id,
        status=await _status_of(db, incident_id),
        deliveries=deliveries,
        jobs=jobs,
        stacks=stacks,
    )


async def _summary(db: Db, incident_id: str, limit: int) -> IncidentSummary | None:
    sources = tuple(
        r["source"]
        for r in await db.fetch(
            "SELECT source FROM deliveries WHERE incident_id = $1"
            " GROUP BY source ORDER BY min(received_at), min(seq)",
            incident_id,
        )
    )
    jobs = tuple(
        rows.job(r)
        for r in await db.fetch(
            "SELECT * FROM jobs WHERE incident_id = $1 ORDER BY id DESC LIMIT $2",
            incident_id,
            limit,
        )
    )
    count = await db.fetchval("SELECT count(*) FROM jobs WHERE incident_id = $1", incident_id)
    stacks = await _stacks_of(db, incident_id)
    if not sources and not count and not stacks:
        return None
    return IncidentSummary(
        id=incident_id,
        status=await _status_of(db, incident_id),
        sources=sources,
        job_count=int(count),
        jobs=jobs,
        stacks=stacks,
    )


async def _stacks_of(db: Db, incident_id: str) -> tuple[StackRecord, ...]:
    found = await db.fetch(
        f"{rows.STACKS_WITH_INCIDENT} WHERE s.incident_id = $1 ORDER BY s.stack", incident_id
    )
    return tuple(rows.stack(r) for r in found)


async def _status_of(db: Db, incident_id: str) -> IncidentStatus | None:
    return parse_status(
        await db.fetchval("SELECT status FROM incidents WHERE id = $1", incident_id)
    )
