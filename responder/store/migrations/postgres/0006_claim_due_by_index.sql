-- The claim's first step, due scheduled jobs joining the queue, by the partial index `jobs_due`
-- (0005): its predicate now says `not_before > 0` (true of every scheduled job), without which the
-- index cannot answer and each claim walked every scheduled job. Otherwise as in 0004.
CREATE OR REPLACE FUNCTION claim_job(claimed_at double precision, claimer text, lease_until double precision)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
DECLARE
    claimed jobs;
BEGIN
    UPDATE jobs SET status = 'queued', not_before = 0
    WHERE status = 'scheduled' AND not_before > 0 AND not_before <= claimed_at;

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
