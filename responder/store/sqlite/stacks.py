"""Stack records: reserving a stack under the blast-radius caps, and following its lifecycle."""

import dataclasses
import json
import sqlite3
import time

from responder.store import (
    RELEASED_STACKS,
    Caps,
    Job,
    JsonObject,
    StackRecord,
    StackStatus,
)
from responder.store.limits import storable
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection

LIVE = f"status NOT IN ({rows.sql_list(RELEASED_STACKS)})"  # the stacks a cap counts
LATEST_JOBS = rows.latest_jobs_of_stack(lambda n: f"?{n}")


class StackRecords(Connection):
    async def reserve_stack(self, record: StackRecord, caps: Caps) -> str | None:
        """Record a stack about to be created, unless a cap forbids it: then name the cap."""
        record = dataclasses.replace(record, service=storable(record.service))  # an event's text

        def reserve(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT status FROM stacks WHERE project = ? AND stack = ?",
                (record.project, record.stack),
            ).fetchone()
            if row is not None and StackStatus(row["status"]) not in RELEASED_STACKS:
                return None  # already ours and alive: no new stack
            cap = _cap_reached(db, record, caps)
            if cap is not None:
                return cap
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

        return await self._write(reserve)

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
        encoded = json.dumps(outputs) if outputs is not None else None
        await self._write_held(
            held,
            "UPDATE stacks SET last_operation = ?, last_activity_at = ?, status = COALESCE(?, status),"
            " outputs = COALESCE(?, outputs), export_path = COALESCE(?, export_path)"
            " WHERE project = ? AND stack = ?",
            (operation, now, status, encoded, export_path, project, stack),
        )

    async def get_stack(self, project: str, stack: str) -> StackRecord | None:
        def get(db: sqlite3.Connection) -> StackRecord | None:
            row = db.execute(
                f"{rows.STACKS_WITH_INCIDENT} WHERE s.project = ? AND s.stack = ?", (project, stack)
            ).fetchone()
            return rows.stack(row) if row else None

        return await self._run(get)

    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]:
        where = "" if include_destroyed else " WHERE s.status != 'destroyed'"
        sql = f"{rows.STACKS_WITH_INCIDENT}{where} ORDER BY s.created_at"
        return await self._run(lambda db: [rows.stack(r) for r in db.execute(sql)])

    async def stack_settings(self, project: str, stack: str) -> str | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT settings FROM stack_settings WHERE project = ? AND stack = ?",
                (project, stack),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(read)

    async def save_stack_settings(
        self, project: str, stack: str, text: str | None, *, held: tuple[int, int] | None = None
    ) -> None:
        if text is None:
            sql = "DELETE FROM stack_settings WHERE project = ? AND stack = ?"
            args: tuple[object, ...] = (project, stack)
        else:
            sql = (
                "INSERT INTO stack_settings (project, stack, settings, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (project, stack) DO UPDATE SET settings = excluded.settings,"
                " updated_at = excluded.updated_at"
            )
            args = (project, stack, text, time.time())
        await self._write_held(held, sql, args)

    async def operations_since(self, since: float) -> int:
        sql = "SELECT COUNT(*) FROM steps WHERE started_at >= ?"
        return await self._run(lambda db: rows.count(db, sql, (since,)))

    async def pending_jobs_for(self, project: str, stack: str) -> int:
        sql = f"SELECT COUNT(*) FROM jobs WHERE project = ? AND stack = ? AND status IN ({rows.UNFINISHED})"
        return await self._run(lambda db: rows.count(db, sql, (project, stack)))

    async def latest_jobs_of(self, project: str, stack: str, limit: int) -> list[Job]:
        args = (project, stack, limit)
        return await self._run(lambda db: [rows.job(r) for r in db.execute(LATEST_JOBS, args)])


def _cap_reached(db: sqlite3.Connection, record: StackRecord, caps: Caps) -> str | None:
    """The first cap one more live stack would exceed, as `name=limit`. A destroyed stack, or one
    whose first `up` failed, holds no cap slot."""
    for cap, limit, where, args in (
        ("max_live_stacks", caps.live_stacks, LIVE, ()),
        ("max_stacks_per_service", caps.per_service, f"{LIVE} AND service = ?", (record.service,)),
        (
            "max_stacks_per_playbook",
            caps.per_playbook,
            f"{LIVE} AND playbook = ?",
            (record.playbook,),
        ),
    ):
        if limit and rows.count(db, f"SELECT COUNT(*) FROM stacks WHERE {where}", args) >= limit:
            return f"{cap}={limit}"
    return None
