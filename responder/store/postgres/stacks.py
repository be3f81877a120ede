"""Stack records: reserving a stack under the blast-radius caps, and following its lifecycle."""

import dataclasses
import json
import time

from responder.store import (
    FINAL_STATUSES,
    RELEASED_STACKS,
    Caps,
    Job,
    JobStatus,
    JsonObject,
    LeaseLost,
    StackRecord,
    StackStatus,
)
from responder.store.limits import storable
from responder.store.postgres import rows
from responder.store.postgres.connection import Connection
from responder.store.postgres.driver import Db
from responder.store.postgres.queue import fenced

LIVE = f"status NOT IN ({rows.sql_list(RELEASED_STACKS)})"  # the stacks a cap counts
UNFINISHED = rows.sql_list(set(JobStatus) - FINAL_STATUSES)
LATEST_JOBS = rows.latest_jobs_of_stack(lambda n: f"${n}")
# pg_advisory_xact_lock key that serialises reservations: counting the stacks under a cap and
# adding one must be one step for every node, or two nodes could each take the last slot.
RESERVE_LOCK = 0x7265_7370_5F63_6170  # "resp_cap"


# A stack's last operation.
TOUCH = fenced(
    "UPDATE stacks SET last_operation = $1, last_activity_at = $2,"
    " status = COALESCE($3, status), outputs = COALESCE($4, outputs),"
    " export_path = COALESCE($5, export_path)"
    " WHERE project = $6 AND stack = $7 AND {holds}",
    "$8",
    "$9",
)
# A stack's settings file saved ($5 at $6), or dropped.
SAVE_SETTINGS = fenced(
    "INSERT INTO stack_settings (project, stack, settings, updated_at)"
    " SELECT $1, $2, $5, $6 WHERE {holds} ON CONFLICT (project, stack)"
    " DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
    "$3",
    "$4",
)
DROP_SETTINGS = fenced(
    "DELETE FROM stack_settings WHERE project = $1 AND stack = $2 AND {holds}", "$3", "$4"
)


class StackRecords(Connection):
    async def reserve_stack(self, record: StackRecord, caps: Caps) -> str | None:
        """Record a stack about to be created, unless a cap forbids it: then name the cap."""
        record = dataclasses.replace(record, service=storable(record.service))  # an event's text

        async def reserve(db: Db) -> str | None:
            await db.execute("SELECT pg_advisory_xact_lock($1)", RESERVE_LOCK)
            status = await db.fetchval(
                "SELECT status FROM stacks WHERE project = $1 AND stack = $2",
                record.project,
                record.stack,
            )
            if status is not None and StackStatus(status) not in RELEASED_STACKS:
                return None  # already ours and alive: no new stack
            cap = await _cap_reached(db, record, caps)
            if cap is not None:
                return cap
            # A released record is taken over whole, as a new reservation (outputs and export gone).
            await db.execute(
                "INSERT INTO stacks (project, stack, program, incident_id, playbook, service, status,"
                " created_at, last_activity_at, last_operation, idle_ttl, max_age)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'provisioning', $7, $7, 'reserve', $8, $9)"
                " ON CONFLICT (project, stack) DO UPDATE SET program = excluded.program,"
                " incident_id = excluded.incident_id, playbook = excluded.playbook,"
                " service = excluded.service, status = excluded.status,"
                " created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,"
                " last_operation = excluded.last_operation, outputs = NULL, export_path = NULL,"
                " idle_ttl = excluded.idle_ttl, max_age = excluded.max_age",
                record.project,
                record.stack,
                record.program,
                record.incident_id,
                record.playbook,
                record.service,
                record.created_at,
                record.idle_ttl,
                record.max_age,
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
        job_id, fence = held if held is not None else (None, None)
        args = (
            operation,
            now,
            status.value if status is not None else None,
            encoded,
            export_path,
            project,
            stack,
            job_id,
            fence,
        )
        holds = await self._run(lambda db: db.fetchval(TOUCH, *args))
        if not holds:
            raise LeaseLost(job_id or 0)

    async def get_stack(self, project: str, stack: str) -> StackRecord | None:
        row = await self._run(
            lambda db: db.fetchrow(
                f"{rows.STACKS_WITH_INCIDENT} WHERE s.project = $1 AND s.stack = $2",
                project,
                stack,
            )
        )
        return rows.stack(row) if row is not None else None

    async def list_stacks(self, *, include_destroyed: bool = False) -> list[StackRecord]:
        where = "" if include_destroyed else " WHERE s.status != 'destroyed'"
        sql = f"{rows.STACKS_WITH_INCIDENT}{where} ORDER BY s.created_at, s.project, s.stack"
        return [rows.stack(r) for r in await self._run(lambda db: db.fetch(sql))]

    async def stack_settings(self, project: str, stack: str) -> str | None:
        sql = "SELECT settings FROM stack_settings WHERE project = $1 AND stack = $2"
        text: str | None = await self._run(lambda db: db.fetchval(sql, project, stack))
        return text

    async def save_stack_settings(
        self, project: str, stack: str, text: str | None, *, held: tuple[int, int] | None = None
    ) -> None:
        job_id, fence = held if held is not None else (None, None)
        if text is None:
            args: tuple[object, ...] = (project, stack, job_id, fence)
            holds = await self._run(lambda db: db.fetchval(DROP_SETTINGS, *args))
        else:
            args = (project, stack, job_id, fence, text, time.time())
            holds = await self._run(lambda db: db.fetchval(SAVE_SETTINGS, *args))
        if not holds:
            raise LeaseLost(job_id or 0)

    async def operations_since(self, since: float) -> int:
        sql = "SELECT COUNT(*) FROM steps WHERE started_at >= $1"
        count: int = await self._run(lambda db: db.fetchval(sql, since))
        return count

    async def pending_jobs_for(self, project: str, stack: str) -> int:
        sql = f"SELECT COUNT(*) FROM jobs WHERE project = $1 AND stack = $2 AND status IN ({UNFINISHED})"
        count: int = await self._run(lambda db: db.fetchval(sql, project, stack))
        return count

    async def latest_jobs_of(self, project: str, stack: str, limit: int) -> list[Job]:
        found = await self._run(lambda db: db.fetch(LATEST_JOBS, project, stack, limit))
        return [rows.job(r) for r in found]


async def _cap_reached(db: Db, record: StackRecord, caps: Caps) -> str | None:
    """The first cap one more live stack would exceed, as `name=limit`. A destroyed stack, or one
    whose first `up` failed, holds no cap slot."""
    for cap, limit, where, args in (
        ("max_live_stacks", caps.live_stacks, LIVE, ()),
        ("max_stacks_per_service", caps.per_service, f"{LIVE} AND service = $1", (record.service,)),
        (
            "max_stacks_per_playbook",
            caps.per_playbook,
            f"{LIVE} AND playbook = $1",
            (record.playbook,),
        ),
    ):
        if (
            limit
            and await db.fetchval(f"SELECT COUNT(*) FROM stacks WHERE {where}", *args) >= limit
        ):
            return f"{cap}={limit}"
    return None
