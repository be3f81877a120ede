"""The job queue: claims in arrival order one job per stack, finishing, retries, approvals, cancels."""

import json
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
from responder.store.postgres import rows
from responder.store.postgres.connection import Connection
from responder.store.postgres.driver import Db
from responder.store.postgres.notes import insert_notes

# A queued job `j` that is next on its stack: nothing runs there (a probe of the unique index of
# running jobs), and no earlier job waits there (a probe of the partial index `jobs_waiting_by_stack`,
# in a form that no other index can answer; migration 0007 says why).
FIRST_IN_LINE = """NOT EXISTS (SELECT 1 FROM jobs AS r
                  WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack
                  OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM jobs AS q
                  WHERE (q.status = 'queued') IS TRUE AND q.project = j.project AND q.stack = j.stack
                    AND q.id + 0 < j.id
                  OFFSET 0)"""

# The first queued job of the oldest stack whose first queued job is due and that runs nothing:
# strict arrival order per stack, after due scheduled jobs join the queue. SKIP LOCKED lets
# concurrent claimers (other workers, other nodes) pass over a job another is taking instead of
# queueing behind it; the partial unique index on running jobs is the last word if two ever picked
# the same stack. One statement: the function (migrations 0004 and 0007) holds the SQL, and why its
# plan is pinned.
CLAIM = "SELECT * FROM claim_job($1, $2, $3, $4)"

# When the earliest waiting job becomes runnable: a scheduled job (it then joins the queue), or a
# retry next on its stack. A retry behind a running job is due only when that job ends, which its
# node announces: counting it would have every idle worker of every node poll until then. Queued
# jobs with a time are retries, few: only they are probed.
NEXT_DUE = f"""
SELECT MIN(not_before) FROM (
    SELECT not_before FROM jobs WHERE status = 'scheduled' AND not_before > 0
    UNION ALL
    SELECT j.not_before FROM jobs AS j
    WHERE j.status = 'queued' AND j.not_before > 0 AND {FIRST_IN_LINE}
) AS waiting
"""


def fenced(write: str, job: str, fence: str) -> str:
    """`write` (a data-modifying statement, its condition ending in `{holds}`) made only by a job
    still running under its fence (parameters `job`, `fence`), or by no job (`job` NULL). FOR SHARE:
    a take-over committed meanwhile is waited for and seen (the row then no longer matches), and
    one under way skips this job for now. The statement answers whether the write was the job's
    to make."""
    holds = f"({job}::bigint IS NULL OR EXISTS (SELECT 1 FROM holder))"
    return f"""
WITH holder AS (
    SELECT 1 FROM jobs WHERE id = {job} AND status = 'running' AND fence = {fence} FOR SHARE
), written AS ({write.format(holds=holds)})
SELECT {holds}
"""


# A step, unless a step of its key is recorded already (the unique index `steps_once`, migration
# 0010): a call whose answer was lost (a dropped connection, a timeout while its commit waited) may
# have committed, or be committing, when the runner sends it again. Fenced by $9 (the job, or NULL
# for an unfenced step) and $10.
STEP = fenced(
    "INSERT INTO steps (job_id, step, started_at, duration_ms, outcome, error, changes, key)"
    " SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE {holds} ON CONFLICT DO NOTHING",
    "$9",
    "$10",
)


def held(fence: str) -> str:
    """The condition of a write given a fence (parameter `fence`): the job runs under it. An
    unfenced write (NULL) is as before leases: the reaper's, and single-node recovery's."""
    return f"({fence}::integer IS NULL OR (status = 'running' AND fence = {fence}))"


# A job's result, and whether its commit may skip waiting for the WAL flush; then, if asked, the
# claim of this node's next job, in the same transaction (`finish_job`, migration 0009: one round
# trip and one commit a job, not two). The same result sent again under the same fence and claim
# token (its answer was lost) is `repeated`: taken as written, and the job that token claimed comes
# back. The result skips the flush when the job has an attempt left,
# queues no notes, and nothing was claimed with it. Such a result lost with the server's last moments
# is as a crash's: the job is still running under a lease its node no longer renews, so it is taken
# over, its stack repaired, and run again (as SQLite's store commits job bookkeeping without fsync);
# meanwhile the API may have shown it finished. A last attempt's result would be recorded as failed
# by that recovery, notes' write-back must not be sent for a result that may vanish, and a claim must
# not be forgotten while its job runs: those wait, as the server is configured to. Nothing that
# depends on a result can be durable before it: the WAL is flushed in order, so the next claim on its
# stack, which waits for its own flush, flushes this commit first. Not waiting drains a backlog of
# no-op jobs ≈ 1.14× faster (bench/RESULTS.md). Lazy is only ever asked outside a transaction
# (`finish` runs the notes' in one), so it ends with this statement's own commit.
FINISH = (
    "SELECT changed, repeated, (claimed).*"
    " FROM finish_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
RETRY = (
    "UPDATE jobs SET status = 'queued', not_before = $1, error = $2, lease_expires_at = NULL"
    f" WHERE id = $3 AND {held('$4')}"
)
# A job `retry_later` put back in line under this fence, node, time and error.
RETRIED = (
    "SELECT 1 FROM jobs WHERE id = $1 AND status = 'queued' AND fence = $2 AND node = $3"
    " AND not_before = $4 AND error IS NOT DISTINCT FROM $5"
)
# As SQLite's (`responder.store.sqlite.queue.RELEASE`).
RELEASE = (
    "UPDATE jobs SET attempts = attempts - 1, lease_expires_at = NULL,"
    " started_at = CASE WHEN attempts > 1 THEN started_at END,"
    " status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,"
    " finished_at = CASE WHEN cancel_requested THEN $3::double precision END,"
    " error = CASE WHEN cancel_requested THEN $4 ELSE error END"
    " WHERE id = $1 AND status = 'running' AND fence = $2 RETURNING status"
)
AWAIT_APPROVAL = (
    "UPDATE jobs SET status = 'awaiting_approval', plan = $1, approved_plan = NULL,"
    f" finished_at = NULL, not_before = $2, lease_expires_at = NULL WHERE id = $3 AND {held('$4')}"
)
APPROVE = (
    "UPDATE jobs SET status = 'queued', approved_plan = plan, not_before = 0,"
    " attempts = attempts - 1 WHERE id = $1"
)


UNPARK_STALLED = rows.unpark_stalled("true", "false")


class JobQueue(Connection):
    async def claim_next(self, now: float, token: str | None = None) -> Job | None:
        args = (now, self.node, now + self.lease, token)
        row = await self._run(lambda db: db.fetchrow(CLAIM, *args))
        return rows.job(row) if row is not None else None

    async def next_due(self) -> float | None:
        due: float | None = await self._run(lambda db: db.fetchval(NEXT_DUE))
        return due

    async def unpark_stalled(self) -> list[int]:
        found = await self._run(lambda db: db.fetch(UNPARK_STALLED))
        return sorted(r["id"] for r in found)

    async def add_step(
        self, job_id: int, step: StepRecord, *, fence: int | None = None, key: str | None = None
    ) -> None:
        values = (step.step, step.started_at, step.duration_ms, step.outcome, storable(step.error))
        args = (job_id, *values, json.dumps(step.changes), key, None if fence is None else job_id)
        holds = await self._run(lambda db: db.fetchval(STEP, *args, fence))
        if not holds:
            raise LeaseLost(job_id)

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
        claim: tuple[float | None, str | None, float | None, str | None] = (None,) * 4
        if then_claim is not None:
            at = then_claim.at
            claim = (at, self.node, at + self.lease, then_claim.token)
        args = (status.value, now, storable(error), encoded, job_id, fence, not notes, *claim)

        async def finish(db: Db) -> tuple[bool, Job | None]:
            row = await db.fetchrow(FINISH, *args)
            assert row is not None  # one row, always
            written = row["changed"] > 0
            _check_held(int(written or row["repeated"]), job_id, fence)  # rolls the notes back
            if notes and written:
                await insert_notes(db, job_id, notes, now)
            return written or row["repeated"], rows.job(row) if row["id"] is not None else None

        # One statement without notes: no transaction's extra round trips on the common path.
        if notes:
            ended, claimed = await self._write(finish)
        else:
            ended, claimed = await self._run(finish)
        if ended:  # (a repeat too: the try that wrote it could not announce it)
            self._announce()  # its stack is free: the next job there may run
        return claimed

    async def retry_later(
        self, job_id: int, not_before: float, error: str, *, fence: int | None = None
    ) -> None:
        args = (not_before, storable(error), job_id, fence)
        changed = rows.affected(await self._run(lambda db: db.execute(RETRY, *args)))
        if not changed and fence is not None:
            # The same write again (a retry of one whose answer was lost) finds it written.
            again = (job_id, fence, self.node, not_before, args[1])
            changed = int(await self._run(lambda db: db.fetchval(RETRIED, *again)) is not None)
        _check_held(changed, job_id, fence)
        if changed:
            self._announce()

    async def release(self, job_id: int, fence: int, now: float) -> JobStatus:
        status = await self._run(
            lambda db: db.fetchval(RELEASE, job_id, fence, now, CANCELLED_BY_REQUEST)
        )
        if status is None:
            raise LeaseLost(job_id)
        self._announce()  # runnable again, by any node (or its stack free, if it was cancelled)
        return JobStatus(status)

    async def await_approval(
        self, job_id: int, plan: JsonObject, now: float, *, fence: int | None = None
    ) -> None:
        args = (json.dumps(plan), now, job_id, fence)
        status = await self._run(lambda db: db.execute(AWAIT_APPROVAL, *args))
        _check_held(rows.affected(status), job_id, fence)

    async def decide(
        self, job_id: int, approve: bool, now: float, reason: str = ""
    ) -> Decision | None:
        async def decide(db: Db) -> Decision | None:
            status = await _lock_status(db, job_id)
            if status != JobStatus.AWAITING_APPROVAL:
                job = await rows.job_by_id(db, job_id)
                return Decision(job, made=False) if job is not None else None
            if approve:
                await db.execute(APPROVE, job_id)
            else:
                await db.execute(
                    "UPDATE jobs SET status = 'rejected', finished_at = $1, error = $2 WHERE id = $3",
                    now,
                    storable(reason) or "rejected",
                    job_id,
                )
            decided = await rows.job_by_id(db, job_id)
            assert decided is not None  # its row is locked by this transaction
            return Decision(decided, made=True)

        decision = await self._write(decide)
        if decision is not None and decision.made and approve:
            self._announce()
        return decision

    async def expired_approvals(self, older_than: float) -> list[int]:
        found = await self._run(
            lambda db: db.fetch(
                "SELECT id FROM jobs WHERE status = 'awaiting_approval' AND not_before <= $1"
                " ORDER BY id",
                older_than,
            )
        )
        return [r["id"] for r in found]

    async def request_cancel(self, job_id: int, now: float) -> Job | None:
        """Cancel a waiting job at once; flag a running one (the runner stops it)."""

        async def cancel(db: Db) -> Job | None:
            status = await _lock_status(db, job_id)
            if status is None:
                return None
            if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.AWAITING_APPROVAL):
                await db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = $1, error = $2 WHERE id = $3",
                    now,
                    CANCELLED_BY_REQUEST,
                    job_id,
                )
            elif status == JobStatus.RUNNING:
                await db.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", job_id)
            return await rows.job_by_id(db, job_id)

        job = await self._write(cancel)
        if job is not None and job.status == JobStatus.CANCELLED:
            self._announce()  # once committed: a waiting retry held its stack, the next may run
        return job


async def _lock_status(db: Db, job_id: int) -> JobStatus | None:
    """The job's status, its row locked until the transaction ends: a concurrent claim, decision or
    cancel waits, then sees what this one made of it."""
    status = await db.fetchval("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", job_id)
    return JobStatus(status) if status is not None else None


def _check_held(changed: int, job_id: int, fence: int | None) -> None:
    """A fenced write that changed nothing found the job no longer running under its fence."""
    if fence is not None and changed == 0:
        raise LeaseLost(job_id)
