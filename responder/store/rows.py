"""Rows of either store read back as its records: the columns' JSON decoded, statuses as enums."""

import contextlib
import json
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Protocol

import orjson

from responder.events import event_from_dict
from responder.incidents import parse_status
from responder.store.records import (
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobStatus,
    NoteRecord,
    NoteStatus,
    StackRecord,
    StackStatus,
    StepRecord,
)

# A stack with the state of its incident, which the reaper's idle and orphan rules read.
STACKS_WITH_INCIDENT = (
    "SELECT s.*, i.status AS incident_status, i.last_event_at AS incident_last_event_at,"
    " i.resolved_at AS incident_resolved_at FROM stacks AS s LEFT JOIN incidents AS i ON i.id = s.incident_id"
)


def latest_jobs_of_stack(param: Callable[[int], str]) -> str:
    """A stack's latest jobs, newest first, given its project, stack and the limit as parameters 1,
    2 and 3 (`param` spells a parameter in the store's SQL): one probe of the `jobs_status` index
    per status, where a search by stack alone would walk every job."""
    latest = " UNION ALL ".join(
        f"SELECT * FROM (SELECT * FROM jobs WHERE status = '{status.value}'"
        f" AND project = {param(1)} AND stack = {param(2)} ORDER BY id DESC LIMIT {param(3)})"
        f" AS {status.value}"
        for status in JobStatus
    )
    return f"SELECT * FROM ({latest}) AS latest ORDER BY id DESC LIMIT {param(3)}"


def unpark_stalled(parked: str, not_parked: str) -> str:
    """`Store.unpark_stalled`'s statement, given how the store spells a parked job and one not."""
    return f"""
UPDATE jobs SET parked = {not_parked} WHERE status = 'queued' AND parked = {parked} AND id IN (
    SELECT min(p.id) FROM jobs AS p
    WHERE p.status = 'queued' AND p.parked = {parked}
      AND NOT EXISTS (SELECT 1 FROM jobs AS r
                      WHERE r.status = 'running' AND r.project = p.project AND r.stack = p.stack)
      AND NOT EXISTS (SELECT 1 FROM jobs AS q
                      WHERE q.status = 'queued' AND q.parked = {not_parked}
                        AND q.project = p.project AND q.stack = p.stack AND q.id < p.id)
    GROUP BY p.project, p.stack
) RETURNING id"""


class Row(Protocol):
    """A row by column name: `sqlite3.Row` and `asyncpg.Record` alike."""

    def __getitem__(self, key: str, /) -> Any: ...


def sql_list(statuses: Iterable[StrEnum]) -> str:
    """Statuses as an SQL list of literals, for a rule written once in Python (`FINAL_STATUSES`)."""
    return ", ".join(f"'{status.value}'" for status in sorted(statuses))


def json_text(value: Any) -> str:
    """`value` as JSON text for a column: orjson (a job's event encodes about 15× faster than with
    `json`, which showed in the intake profile), `json` for what orjson refuses (integers beyond
    64 bits, lone surrogates). Both escape NUL, and the text is read back by `json_value`."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# Every digit read as a zero: nineteen zeros in a row in the result are nineteen digits in a row, maybe
# an integer beyond 64 bits, which orjson would read as a float. (A bytes translation and a substring
# search: 3 µs for a job's event, where the regex `\d{19}` took 35 µs, more than `json.loads`.)
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def json_value(text: str) -> Any:
    """A column's JSON text decoded as `json.loads` would: by orjson (each claimed job's event is
    decoded on the runner's hot path), by `json` for a text that may hold an integer orjson would
    round to a float, or anything else orjson refuses (NaN, which `json.dumps` writes; a lone
    surrogate, which `surrogatepass` keeps as bytes that are not UTF-8)."""
    data = text.encode(errors="surrogatepass")
    if _LONG_NUMBER not in data.translate(_DIGITS_AS_ZEROS):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(data)
    return json.loads(text)


def _json(text: str | None) -> Any:
    return json_value(text) if text else None


def job(row: Row, steps: tuple[StepRecord, ...] = ()) -> Job:
    return Job(
        id=row["id"],
        delivery_id=row["delivery_id"],
        playbook=row["playbook"],
        project=row["project"],
        stack=row["stack"],
        event=event_from_dict(json_value(row["event"])),
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
        params=json_value(row["params"]),
        coalesced_into=row["coalesced_into"],
        plan=_json(row["plan"]),
        approved_plan=_json(row["approved_plan"]),
        cancel_requested=bool(row["cancel_requested"]),  # SQLite's is an integer
        steps=steps,
        node=row["node"],
        lease_expires_at=row["lease_expires_at"],
        fence=row["fence"],
    )


def step(row: Row) -> StepRecord:
    return StepRecord(
        row["step"],
        row["started_at"],
        row["duration_ms"],
        row["outcome"],
        row["error"],
        json_value(row["changes"]),
    )


def stack(row: Row) -> StackRecord:
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


def delivery(row: Row) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        source=row["source"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=DeliveryStatus(row["status"]),
        received_at=row["received_at"],
    )


def note(row: Row, *, resumed: bool = False) -> NoteRecord:
    return NoteRecord(
        id=row["id"],
        job_id=row["job_id"],
        destination=row["destination"],
        target=row["target"],
        body=row["body"],
        key=row["key"],
        status=NoteStatus(row["status"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        not_before=row["not_before"],
        last_error=row["last_error"],
        sent_at=row["sent_at"],
        resumed=resumed,
    )
