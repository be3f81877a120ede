"""PostgreSQL's reads of jobs and steps; the row-to-record parsing is shared (responder.store.rows)."""

from responder.store.postgres.driver import Db
from responder.store.records import Job, StepRecord
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
    "STACKS_WITH_INCIDENT",
    "affected",
    "delivery",
    "job",
    "job_by_id",
    "latest_jobs_of_stack",
    "sql_list",
    "stack",
    "steps",
    "unpark_stalled",
]


def affected(status: str) -> int:
    """The row count of a command status such as `DELETE 3`."""
    return int(status.rsplit(" ", 1)[-1])


async def job_by_id(db: Db, job_id: int, *, with_steps: bool = False) -> Job | None:
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return job(row, await steps(db, job_id) if with_steps else ())


async def steps(db: Db, job_id: int) -> tuple[StepRecord, ...]:
    found = await db.fetch("SELECT * FROM steps WHERE job_id = $1 ORDER BY id", job_id)
    return tuple(step(r) for r in found)
