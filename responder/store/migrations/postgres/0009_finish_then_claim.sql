-- A worker's result and its next claim in one call: one round trip and one commit a job instead of
-- two. And claims a retry can repeat: a store call whose answer was lost (a dropped connection, a
-- timeout while its commit waited) may have committed, and its retry must neither claim a second
-- job, leaving the first running with nobody to run it, nor refuse the result it already wrote.

-- The token of the call that claimed a running job: the same call again (same node, same token) gets
-- that job back instead of another. A take-over clears it: the job is the recovery's then.
ALTER TABLE jobs ADD COLUMN claim_token text;

-- As in 0007, with the token: checked first, then stamped on the job claimed. The tries of one claim
-- take turns, by a lock on its token held until their transaction ends: a retry that overlaps its
-- first try (whose answer timed out while its commit waited) waits for it, then sees its job. (A
-- unique index on running jobs' tokens did the same, at the cost of 12 % of the drain's rate.)
CREATE FUNCTION claim_job(claimed_at double precision, claimer text, lease_until double precision,
    token text)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
DECLARE
    claimed jobs;
BEGIN
    IF token IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(claimer || ' ' || token, 0));
        RETURN QUERY SELECT * FROM jobs
            WHERE status = 'running' AND node = claimer AND claim_token = token;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    UPDATE jobs SET status = 'queued', not_before = 0
    WHERE status = 'scheduled' AND not_before > 0 AND not_before <= claimed_at;

    UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = claimed_at,
        node = claimer, lease_expires_at = lease_until, fence = fence + 1, claim_token = token
    WHERE id = (
        SELECT j.id FROM jobs AS j
        WHERE j.status >= 'queued' AND j.status <= 'queued'
          AND j.not_before <= claimed_at
          AND NOT EXISTS (SELECT 1 FROM jobs AS r
                          WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack
                          OFFSET 0)
          AND NOT EXISTS (SELECT 1 FROM jobs AS q
                          WHERE (q.status = 'queued') IS TRUE AND q.project = j.project AND q.stack = j.stack
                            AND q.id + 0 < j.id
                          OFFSET 0)
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

-- The claim without a token, as nodes of the version before this one call it while a rolling
-- upgrade runs: the same claim.
CREATE OR REPLACE FUNCTION claim_job(claimed_at double precision, claimer text,
    lease_until double precision)
RETURNS SETOF jobs
LANGUAGE sql
AS $$ SELECT * FROM claim_job(claimed_at, claimer, lease_until, NULL) $$;

-- The result, then (with a token) the claim; it claims only if the result was written: a write
-- refused under a lost fence claims nothing. The claim runs after the write, so it sees the stack
-- this job freed. `repeated`: this very result was already written (same status, end time and
-- fence), by this call's earlier try whose answer was lost. The fence condition is `held()`'s in
-- responder/store/postgres/queue.py; `lazy` is the commit rule explained at FINISH there.
CREATE FUNCTION finish_job(
    new_status text, ended_at double precision, failure text, result text, job bigint,
    held_fence integer, lazy boolean,
    claimed_at double precision, claimer text, lease_until double precision, token text,
    OUT changed integer, OUT repeated boolean, OUT claimed jobs)
LANGUAGE plpgsql
AS $$
DECLARE
    retryable boolean;
BEGIN
    UPDATE jobs SET status = new_status, finished_at = ended_at, error = failure, outputs = result,
        lease_expires_at = NULL
    WHERE id = job AND (held_fence IS NULL OR (status = 'running' AND fence = held_fence))
    RETURNING attempts < max_attempts INTO retryable;
    GET DIAGNOSTICS changed = ROW_COUNT;
    repeated := changed = 0 AND held_fence IS NOT NULL AND EXISTS (
        SELECT 1 FROM jobs
        WHERE id = job AND status = new_status AND finished_at = ended_at AND fence = held_fence);
    IF (changed > 0 OR repeated) AND token IS NOT NULL THEN
        SELECT * INTO claimed FROM claim_job(claimed_at, claimer, lease_until, token);
    END IF;
    IF lazy AND retryable AND claimed.id IS NULL THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;
