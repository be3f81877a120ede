"""Rows read back as the store's records (the columns' JSON decoded, statuses as enums)."""

import json
from collections.abc import Iterable
from enum import StrEnum

import asyncpg

from responder.events import event_from_dict
from responder.incidents import parse_status
from responder.store import (
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobStatus,
    StackRecord,
    StackStatus,
    StepRecord,
)
from responder.store.postgres.driver import Db

# A stack with the state of its incident, which the reaper's idle and orphan rules read.
STACKS_WITH_INCIDENT = (
    "SELECT s.*, i.status AS incident_status, i.last_event_at AS incident_last_event_at,"
    " i.resolved_at AS incident_resolved_at FROM stacks AS s LEFT JOIN incidents AS i ON i.id = s.incident_id"
)


def sql_list(statuses: Iterable[StrEnum]) -> str:
    """Statuses as an SQL list of literals, for a rule written once in Python (`FINAL_STATUSES`)."""
    return ", ".join(f"'{status.value}'" for status in sorted(statuses))


def affected(status: str) -> int:
    """The row count of a command status such as `DELETE 3`."""
    return int(status.rsplit(" ", 1)[-1])


def _json(text: str | None) -> dict[str, object] | None:
    return json.loads(text) if text else None


def job(row: asyncpg.Record, steps: tuple[StepRecord, ...] = ()) -> Job:
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
        outputs=_json(row["outputs"]),
        params=json.loads(row["params"]),
        coalesced_into=row["coalesced_into"],
        plan=_json(row["plan"]),
        approved_plan=_json(row["approved_plan"]),
        cancel_requested=row["cancel_requested"],
        steps=steps,
    )


async def job_by_id(db: Db, job_id: int, *, with_steps: bool = False) -> Job | None:
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return job(row, await steps(db, job_id) if with_steps else ())


async def steps(db: Db, job_id: int) -> tuple[StepRecord, ...]:
    found = await db.fetch("SELECT * FROM steps WHERE job_id = $1 ORDER BY id", job_id)
    return tuple(
        StepRecord(
            r["step"],
            r["started_at"],
            r["duration_ms"],
            r["outcome"],
            r["error"],
            json.loads(r["changes"]),
        )
        for r in found
    )


def stack(row: asyncpg.Record) -> StackRecord:
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
        outputs=_json(row["outputs"]),
        export_path=row["export_path"],
        idle_ttl=row["idle_ttl"],
        max_age=row["max_age"],
        incident_status=parse_status(row["incident_status"]),
        incident_last_event_at=row["incident_last_event_at"],
        incident_resolved_at=row["incident_resolved_at"],
    )


def delivery(row: asyncpg.Record) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        source=row["source"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=DeliveryStatus(row["status"]),
        received_at=row["received_at"],
    )
