"""The retention prune's SQL: what is old enough to go, found first, then deleted batch by batch.

Each batch is a transaction of its own, so deliveries keep committing between them, and what SQLite
holds for a transaction (the journal of the pages it changes, kept in memory: see `connection`)
stays small whatever the prune deletes.
"""

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from responder.store.sqlite import rows

BATCH = 500  # rows a transaction deletes
# Deletes one batch of the keys found, each with its own `ids`; the rows deleted per table.
Batch = Callable[..., dict[str, int]]

TABLES = ("notes", "steps", "jobs", "deliveries", "payloads", "stacks", "incidents")

OLD_JOBS = (
    f"SELECT id FROM jobs WHERE status IN ({rows.FINAL}) AND COALESCE(finished_at, created_at) < ?"
    # A note still to send keeps its job: its delivery, or its failure, is yet to be seen.
    " AND NOT EXISTS (SELECT 1 FROM notes WHERE notes.job_id = jobs.id"
    " AND notes.status IN ('pending', 'sending'))"
)
# Each delete states again why its rows may go: whatever arrived since they were found is kept.
_JOB_CHILDREN = ("notes", "steps")
OLD_DELIVERIES = (
    "SELECT id FROM deliveries WHERE received_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.delivery_id = deliveries.id)"
)
_DELETE_DELIVERIES = (
    "DELETE FROM deliveries WHERE id IN ({ids})"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.delivery_id = deliveries.id)"
)
ORPHAN_PAYLOADS = (
    "SELECT digest FROM payloads"
    " WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.payload = payloads.digest)"
)
_DELETE_PAYLOADS = (
    "DELETE FROM payloads WHERE digest IN ({ids})"
    " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.payload = payloads.digest)"
)


def found(db: sqlite3.Connection, query: str, params: Sequence[Any] = ()) -> list[Any]:
    """The first column of `query`'s rows."""
    return [row[0] for row in db.execute(query, params)]


def batches(keys: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start : start + BATCH]


def delete_jobs(db: sqlite3.Connection, ids: list[int]) -> dict[str, int]:
    """Final jobs (they stay final), children first, so no foreign key is ever left dangling."""
    marks = _marks(ids)
    deleted = {
        table: db.execute(f"DELETE FROM {table} WHERE job_id IN ({marks})", ids).rowcount
        for table in _JOB_CHILDREN
    }
    deleted["jobs"] = db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids).rowcount
    return deleted


def delete_deliveries(db: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    return {"deliveries": db.execute(_DELETE_DELIVERIES.format(ids=_marks(ids)), ids).rowcount}


def delete_payloads(db: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    return {"payloads": db.execute(_DELETE_PAYLOADS.format(ids=_marks(ids)), ids).rowcount}


def delete_records(db: sqlite3.Connection, before: float) -> dict[str, int]:
    """Destroyed stacks and resolved incidents nothing refers to any more (few rows: in one go)."""
    stacks = db.execute(
        "DELETE FROM stacks WHERE status = 'destroyed' AND last_activity_at < ?"
        f" AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.status IN ({rows.UNFINISHED})"
        " AND jobs.project = stacks.project AND jobs.stack = stacks.stack)",
        (before,),
    )
    # An incident nothing refers to any more, resolved before the cutoff, is forgotten: a later
    # event for it is handled as for an unknown incident, which for a resolved one is the same.
    incidents = db.execute(
        "DELETE FROM incidents WHERE status = 'resolved' AND last_event_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.incident_id = incidents.id)"
        " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.incident_id = incidents.id)"
        " AND NOT EXISTS (SELECT 1 FROM stacks WHERE stacks.incident_id = incidents.id)",
        (before,),
    )
    return {"stacks": stacks.rowcount, "incidents": incidents.rowcount}


def _marks(keys: list[Any]) -> str:
    return ", ".join("?" * len(keys))
