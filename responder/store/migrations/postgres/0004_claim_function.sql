-- Claiming a job in one round trip, with a plan that stays good when the statistics are stale.
--
-- The claim walks the queued jobs in id order and takes the first that is next on its stack. Planned
-- from statistics taken before a burst (the queue was short then), PostgreSQL chose to test every
-- queued job against its stack, then sort them: 0.8 s a claim with 1,200 jobs queued, under the intake
-- bench. Inside this function a sort is disabled (`enable_sort`, `enable_bitmapscan`), so the plan is
-- the walk of `jobs_queue` in order, stopping at the first claimable job, however stale the
-- statistics. The status is bounded rather than compared for equality and the order is (status, id),
-- which only `jobs_queue` gives: otherwise the walk may take the primary key through every finished job.
-- Due scheduled jobs join the queue first, in their original place (by id). A claim that trips the
-- one-running-per-stack index raises, and the caller runs it again.
CREATE FUNCTION claim_job(claimed_at double precision, claimer text, lease_until double precision)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
DECLARE
    claimed jobs;
BEGIN
    UPDATE jobs SET status = 'queued', not_before = 0
    WHERE status = 'scheduled' AND not_before <= claimed_at;

    UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = claimed_at,
        node = claimer, lease_expires_at = lease_until, fence = fence + 1
    WHERE id = (
        SELECT j.id FROM jobs AS j
        WHERE j.status >= 'queued' AND j.status <= 'queued' AND j.not_before <= claimed_at
          AND NOT EXISTS (SELECT 1 FROM jobs AS r
                          WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack)
          AND NOT EXISTS (SELECT 1 FROM jobs AS q
                          WHERE q.status = 'queued' AND q.project = j.project AND q.stack = j.stack
                            AND q.id < j.id)
        ORDER BY j.status, j.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING * INTO claimed;
    IF FOUND THEN
        RETURN NEXT claimed;
    END IF;
END
$$;
