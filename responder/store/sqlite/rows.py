"""SQLite's reads of jobs and steps; the row-to-record parsing is shared (responder.store.rows)."""

import sqlite3

from responder.store.records import FINAL_STATUSES, Job, JobStatus, StepRecord
from responder.store.rows import (
    STACKS_WITH_INCIDENT,
    delivery,
    job,
    latest_jobs_of_stack,
    sql_list,
    stack,
    step,
    unpark_stalled,
)

__all__ = [
    "FINAL",
    "STACKS_WITH_INCIDENT",
    "UNFINISHED",
    "count",
    "delivery",
    "holds",
    "job",
    "job_by_id",
    "latest_jobs_of_stack",
    "sql_list",
    "stack",
    "steps",
    "unpark_stalled",
]

# The job statuses as SQL lists of literals, for rules written once in Python.
FINAL = sql_list(FINAL_STATUSES)
UNFINISHED = sql_list(set(JobStatus) - FINAL_STATUSES)


def count(db: sqlite3.Connection, sql: str, args: tuple[object, ...] = ()) -> int:
    """The number a `SELECT COUNT(*) ...` answers."""
    return int(db.execute(sql, args).fetchone()[0])


def holds(db: sqlite3.Connection, job_id: int, fence: int) -> bool:
    """Whether the job runs under the fence: a fenced write is still the job's to make."""
    sql = "SELECT 1 FROM jobs WHERE id = ? AND status = 'running' AND fence = ?"
    return db.execute(sql, (job_id, fence)).fetchone() is not None


def job_by_id(db: sqlite3.Connection, job_id: int, *, with_steps: bool = False) -> Job | None:
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return job(row, steps(db, job_id) if with_steps else ())


def steps(db: sqlite3.Connection, job_id: int) -> tuple[StepRecord, ...]:
    found = db.execute("SELECT * FROM steps WHERE job_id = ? ORDER BY id", (job_id,))
    return tuple(step(r) for r in found)
