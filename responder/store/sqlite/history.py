"""What the store has recorded, read back (jobs, an incident's whole record) and pruned."""

import functools
import sqlite3
from typing import Any

from responder.incidents import parse_status
from responder.store import (
    IncidentRecord,
    IncidentStatus,
    IncidentSummary,
    Job,
    JobStatus,
    StackRecord,
)
from responder.store.sqlite import prune, rows
from responder.store.sqlite.connection import Connection

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
        sql = (
            f"SELECT status, count(*) FROM jobs WHERE status IN ({rows.UNFINISHED}) GROUP BY status"
        )
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
        """What is old enough is found first, then deleted a batch per transaction (see `prune`):
        children before their parents, so no foreign key is ever left dangling."""
        counts = dict.fromkeys(prune.TABLES, 0)

        async def delete(query: str, params: tuple[Any, ...], batch: prune.Batch) -> None:
            # Slow too: a long scan must not hold back the answers already waiting on the thread.
            keys = await self._call(lambda: prune.found(self._conn(), query, params), slow=True)
            for chunk in prune.batches(keys):
                deleted = await self._write(functools.partial(batch, ids=chunk), slow=True)
                for table, count in deleted.items():
                    counts[table] += count

        await delete(prune.OLD_JOBS, (before,), prune.delete_jobs)
        await delete(prune.OLD_DELIVERIES, (before,), prune.delete_deliveries)
        await delete(prune.ORPHAN_PAYLOADS, (), prune.delete_payloads)
        records = await self._write(lambda db: prune.delete_records(db, before), slow=True)
        return counts | records


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


def _stacks_of(db: sqlite3.Connection, incident_id: str) -> tuple[StackRecord, ...]:
    found = db.execute(
        f"{rows.STACKS_WITH_INCIDENT} WHERE s.incident_id = ? ORDER BY s.stack", (incident_id,)
    )
    return tuple(rows.stack(r) for r in found)


def _status_of(db: sqlite3.Connection, incident_id: str) -> IncidentStatus | None:
    found = db.execute("SELECT status FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return parse_status(found[0] if found else None)
