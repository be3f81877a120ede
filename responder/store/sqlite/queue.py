"""The job queue: claiming in arrival order one job per stack, finishing, retrying, approvals and
cancellation."""

import json
import sqlite3

from responder.store import Job, JobStatus, JsonObject, StepRecord
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection

# The first queued job of each stack, provided nothing runs on that stack: strict arrival order.
# Two NOT EXISTS, each answered from the (status, project, stack, id) index; one with an OR would
# scan the table for every queued job.
CLAIMABLE = """
SELECT * FROM jobs AS j
WHERE j.status = 'queued'
  AND NOT EXISTS (SELECT 1 FROM jobs AS r
                  WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack)
  AND NOT EXISTS (SELECT 1 FROM jobs AS q
                  WHERE q.status = 'queued' AND q.project = j.project AND q.stack = j.stack AND q.id < j.id)
ORDER BY j.id
"""


class JobQueue(Connection):
    async def claim_next(self, now: float) -> Job | None:
        def claim(db: sqlite3.Connection) -> Job | None:
            # Due scheduled jobs join the queue in their original place (by id).
            db.execute(
                "UPDATE jobs SET status = 'queued', not_before = 0 WHERE status = 'scheduled' AND not_before <= ?",
                (now,),
            )
            for row in db.execute(CLAIMABLE):
                if row["not_before"] > now:
                    continue  # its stack waits for it: later jobs of that stack stay behind
                db.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ? WHERE id = ?",
                    (now, row["id"]),
                )
                return rows.job_by_id(db, row["id"])
            return None

        return await self._write(claim)

    async def next_due(self) -> float | None:
        def due(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT MIN(not_before) FROM jobs WHERE status IN ('queued', 'scheduled') AND not_before > 0"
            ).fetchone()
            return row[0] if row and row[0] is not None else None

        return await self._run(due)

    async def add_step(self, job_id: int, step: StepRecord) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO steps (job_id, step, started_at, duration_ms, outcome, error, changes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    step.step,
                    step.started_at,
                    step.duration_ms,
                    step.outcome,
                    step.error,
                    json.dumps(step.changes),
                ),
            )
        )

    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        now: float,
        *,
        error: str | None = None,
        outputs: JsonObject | None = None,
    ) -> None:
        encoded = json.dumps(outputs) if outputs is not None else None
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, outputs = ? WHERE id = ?",
                (status.value, now, error, encoded, job_id),
            )
        )

    async def retry_later(self, job_id: int, not_before: float, error: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET status = 'queued', not_before = ?, error = ? WHERE id = ?",
                (not_before, error, job_id),
            )
        )

    async def running_jobs(self) -> list[Job]:
        return await self._run(
            lambda db: [
                rows.job(r)
                for r in db.execute("SELECT * FROM jobs WHERE status = 'running' ORDER BY id")
            ]
        )

    async def await_approval(self, job_id: int, plan: JsonObject, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET status = 'awaiting_approval', plan = ?, approved_plan = NULL, finished_at = NULL,"
                " not_before = ? WHERE id = ?",
                (json.dumps(plan), now, job_id),
            )
        )

    async def decide(self, job_id: int, approve: bool, now: float, reason: str = "") -> Job | None:
        """Approve (back in line, first for its stack) or reject a job awaiting approval."""

        def decide(db: sqlite3.Connection) -> Job | None:
            job = rows.job_by_id(db, job_id)
            if job is None or job.status != JobStatus.AWAITING_APPROVAL:
                return job
            if approve:
                db.execute(
                    "UPDATE jobs SET status = 'queued', approved_plan = plan, not_before = 0,"
                    " attempts = attempts - 1 WHERE id = ?",
                    (job_id,),
                )
            else:
                db.execute(
                    "UPDATE jobs SET status = 'rejected', finished_at = ?, error = ? WHERE id = ?",
                    (now, reason or "rejected", job_id),
                )
            return rows.job_by_id(db, job_id)

        return await self._write(decide)

    async def expired_approvals(self, older_than: float) -> list[int]:
        return await self._run(
            lambda db: [
                r[0]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE status = 'awaiting_approval' AND not_before <= ?",
                    (older_than,),
                )
            ]
        )

    async def request_cancel(self, job_id: int, now: float) -> Job | None:
        """Cancel a waiting job at once; flag a running one (the runner stops it)."""

        def cancel(db: sqlite3.Connection) -> Job | None:
            job = rows.job_by_id(db, job_id)
            if job is None:
                return None
            if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.AWAITING_APPROVAL):
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled by request'"
                    " WHERE id = ?",
                    (now, job_id),
                )
            elif job.status == JobStatus.RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return rows.job_by_id(db, job_id)

        return await self._write(cancel)
