"""The job queue: claiming in arrival order one job per stack, finishing, retrying, approvals and
cancellation."""

import json
import sqlite3
from collections.abc import Sequence

from responder.store import (
    CANCELLED_BY_REQUEST,
    Decision,
    Job,
    JobStatus,
    JsonObject,
    LeaseLost,
    NewNote,
    NextClaim,
    StepRecord,
)
from responder.store.limits import storable
from responder.store.sqlite import rows
from responder.store.sqlite.connection import Connection
from responder.store.sqlite.notes import insert_notes

# A queued job `j` that is next on its stack: nothing runs there, and no earlier job waits there.
# Two NOT EXISTS, each answered from the (status, project, stack, id) index; one with an OR would
# scan the table for every queued job.
FIRST_IN_LINE = """NOT EXISTS (SELECT 1 FROM jobs AS r
                  WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack)
  AND NOT EXISTS (SELECT 1 FROM jobs AS q
                  WHERE q.status = 'queued' AND q.project = j.project AND q.stack = j.stack AND q.id < j.id)"""

# The first due job in line on its stack, taken in one statement; parked jobs (behind a running
# one, see the schema) are not looked at (`jobs_ready`, named: left to itself SQLite walked every
# queued job by `jobs_queue`). A job whose stack waits for its retry time is first in
# line but not due: the later jobs of that stack stay behind it.
CLAIM = f"""
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = :now, node = :node,
                lease_expires_at = :expires, fence = fence + 1, claim_token = :token
WHERE id = (SELECT j.id FROM jobs AS j INDEXED BY jobs_ready
            WHERE j.status = 'queued' AND j.parked = 0 AND j.not_before <= :now AND {FIRST_IN_LINE}
            ORDER BY j.id LIMIT 1)
RETURNING *
"""

# The job this node claimed under a token, if it still runs: a retried claim gets it back.
CLAIMED_BEFORE = "SELECT * FROM jobs WHERE status = 'running' AND node = ? AND claim_token = ?"

# Due scheduled jobs join the queue in their original place (by id). `not_before > 0` (true of every
# scheduled job) lets the partial index `jobs_due` answer: without it, each claim walked every
# scheduled job: 0.76–0.79 ms with 7,000 of them waiting, against 7 µs (bench/RESULTS.md).
PROMOTE_DUE = (
    "UPDATE jobs SET status = 'queued', not_before = 0"
    " WHERE status = 'scheduled' AND not_before > 0 AND not_before <= ?"
)

# When the earliest waiting job becomes runnable: a scheduled job (it then joins the queue), or a
# retry next on its stack. A retry behind a running job is due only when that job ends, which wakes
# the workers: counting it would have every idle worker poll until then. Queued jobs with a time
# are retries, few: only they are probed.
NEXT_DUE = f"""
SELECT MIN(not_before) FROM (
    SELECT not_before FROM jobs WHERE status = 'scheduled' AND not_before > 0
    UNION ALL
    SELECT j.not_before FROM jobs AS j
    WHERE j.status = 'queued' AND j.not_before > 0 AND {FIRST_IN_LINE}
)
"""

# A write given a fence (the next two parameters, both the fence) is for a job running under it; an
# unfenced write (None) is as before leases: the reaper's, and single-node recovery's.
HELD = "(? IS NULL OR (status = 'running' AND fence = ?))"
# A job `retry_later` put back in line under this fence, node, time and error.
RETRIED = (
    "SELECT 1 FROM jobs WHERE id = ? AND status = 'queued' AND fence = ? AND node = ?"
    " AND not_before = ? AND error IS ?"
)
# A claim handed back unstarted: queued again, its attempt uncounted, its lease dropped (and the
# start time of a first attempt); its fence stays spent, so that a write made under it still fails.
# A job whose cancel was asked meanwhile ends cancelled instead, as a waiting job's cancel ends it.
RELEASE = (
    "UPDATE jobs SET attempts = attempts - 1, lease_expires_at = NULL,"
    " started_at = CASE WHEN attempts > 1 THEN started_at END,"
    " status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,"
    " finished_at = CASE WHEN cancel_requested THEN :now END,"
    " error = CASE WHEN cancel_requested THEN :reason ELSE error END"
    " WHERE id = :id AND status = 'running' AND fence = :fence RETURNING status"
)
# A step, unless a step of its key is recorded already (a call sent again; PostgreSQL's `steps_once`).
STEP = (
    "INSERT INTO steps (job_id, step, started_at, duration_ms, outcome, error, changes, key)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
    " WHERE ?8 IS NULL OR NOT EXISTS (SELECT 1 FROM steps WHERE job_id = ?1 AND key = ?8)"
)


UNPARK_STALLED = rows.unpark_stalled("1", "0")


class JobQueue(Connection):
    async def claim_next(self, now: float, token: str | None = None) -> Job | None:
        return await self._write(lambda db: self._claim(db, now, token))

    def _claim(self, db: sqlite3.Connection, now: float, token: str | None) -> Job | None:
        if token is not None:
            before = db.execute(CLAIMED_BEFORE, (self.node, token)).fetchone()
            if before is not None:
                return rows.job(before)
        db.execute(PROMOTE_DUE, (now,))
        values = {"now": now, "node": self.node, "expires": now + self.lease, "token": token}
        found = db.execute(CLAIM, values).fetchone()
        return rows.job(found) if found is not None else None

    async def unpark_stalled(self) -> list[int]:
        return await self._write(
            lambda db: sorted(r[0] for r in db.execute(UNPARK_STALLED).fetchall())
        )

    async def next_due(self) -> float | None:
        def due(db: sqlite3.Connection) -> float | None:
            row = db.execute(NEXT_DUE).fetchone()
            return row[0] if row and row[0] is not None else None

        return await self._run(due)

    async def add_step(
        self, job_id: int, step: StepRecord, *, fence: int | None = None, key: str | None = None
    ) -> None:
        values = (job_id, step.step, step.started_at, step.duration_ms, step.outcome)
        args = (*values, storable(step.error), json.dumps(step.changes), key)
        await self._write_held(None if fence is None else (job_id, fence), STEP, args)

    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        now: float,
        *,
        error: str | None = None,
        outputs: JsonObject | None = None,
        fence: int | None = None,
        notes: Sequence[NewNote] = (),
        then_claim: NextClaim | None = None,
    ) -> Job | None:
        encoded = json.dumps(outputs) if outputs is not None else None

        def finish(db: sqlite3.Connection) -> Job | None:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, outputs = ?,"
                f" lease_expires_at = NULL WHERE id = ? AND {HELD}",
                (status.value, now, storable(error), encoded, job_id, fence, fence),
            )
            written = cursor.rowcount > 0
            if not written and not _repeated(db, job_id, status, now, fence):
                _check_held(cursor, job_id, fence)
                return None
            if notes and written:
                insert_notes(db, job_id, notes, now)
            if then_claim is None:
                return None
            return self._claim(db, then_claim.at, then_claim.token)

        return await self._write(finish)

    async def retry_later(
        self, job_id: int, not_before: float, error: str, *, fence: int | None = None
    ) -> None:
        stored = storable(error)

        def retry(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE jobs SET status = 'queued', not_before = ?, error = ?,"
                f" lease_expires_at = NULL WHERE id = ? AND {HELD}",
                (not_before, stored, job_id, fence, fence),
            ).rowcount
            # The same write again (a retry of one whose answer was lost) finds it written.
            return (
                bool(changed)
                or db.execute(RETRIED, (job_id, fence, self.node, not_before, stored)).fetchone()
                is not None
            )

        if not await self._write(retry) and fence is not None:
            raise LeaseLost(job_id)

    async def release(self, job_id: int, fence: int, now: float) -> JobStatus:
        def release(db: sqlite3.Connection) -> JobStatus:
            row = db.execute(
                RELEASE, {"id": job_id, "fence": fence, "now": now, "reason": CANCELLED_BY_REQUEST}
            ).fetchone()
            if row is None:
                raise LeaseLost(job_id)
            return JobStatus(row[0])

        return await self._write(release)

    async def await_approval(
        self, job_id: int, plan: JsonObject, now: float, *, fence: int | None = None
    ) -> None:
        cursor = await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET status = 'awaiting_approval', plan = ?, approved_plan = NULL,"
                f" finished_at = NULL, not_before = ?, lease_expires_at = NULL WHERE id = ? AND {HELD}",
                (json.dumps(plan), now, job_id, fence, fence),
            )
        )
        _check_held(cursor, job_id, fence)

    async def decide(
        self, job_id: int, approve: bool, now: float, reason: str = ""
    ) -> Decision | None:
        def decide(db: sqlite3.Connection) -> Decision | None:
            job = rows.job_by_id(db, job_id)
            if job is None or job.status != JobStatus.AWAITING_APPROVAL:
                return Decision(job, made=False) if job is not None else None
            if approve:
                db.execute(
                    "UPDATE jobs SET status = 'queued', approved_plan = plan, not_before = 0,"
                    " attempts = attempts - 1 WHERE id = ?",
                    (job_id,),
                )
            else:
                db.execute(
                    "UPDATE jobs SET status = 'rejected', finished_at = ?, error = ? WHERE id = ?",
                    (now, storable(reason) or "rejected", job_id),
                )
            decided = rows.job_by_id(db, job_id)
            assert decided is not None  # the row was read above, in this transaction
            return Decision(decided, made=True)

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
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ?",
                    (now, CANCELLED_BY_REQUEST, job_id),
                )
            elif job.status == JobStatus.RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return rows.job_by_id(db, job_id)

        return await self._write(cancel)


def _repeated(
    db: sqlite3.Connection, job_id: int, status: JobStatus, now: float, fence: int | None
) -> bool:
    """This very result is already written (a retry of a call whose answer was lost). Only a
    fenced write is a retry's: an unfenced one changes the job whatever its state."""
    if fence is None:
        return False
    found = db.execute(
        "SELECT 1 FROM jobs WHERE id = ? AND status = ? AND finished_at = ? AND fence = ?",
        (job_id, status.value, now, fence),
    ).fetchone()
    return found is not None


def _check_held(cursor: sqlite3.Cursor, job_id: int, fence: int | None) -> None:
    """A fenced write that changed nothing found the job no longer running under its fence."""
    if fence is not None and cursor.rowcount == 0:
        raise LeaseLost(job_id)
