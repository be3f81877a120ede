-- A worker's result and its next claim in one call: one round trip and one commit a job instead of
-- two. The claim runs after the result is written, so it sees the stack this job freed, and only if
-- the result was (a write refused under a lost fence claims nothing). The fence condition is
-- `held()`'s in responder/store/postgres/queue.py; lazy is the commit rule explained at FINISH there.
CREATE FUNCTION finish_job(
    new_status text, ended_at double precision, failure text, result text, job bigint,
    held_fence integer, lazy boolean,
    claimed_at double precision, claimer text, lease_until double precision,
    OUT changed integer, OUT claimed jobs)
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
    IF changed > 0 AND claimer IS NOT NULL THEN
        SELECT * INTO claimed FROM claim_job(claimed_at, claimer, lease_until);
    END IF;
    IF lazy AND retryable AND claimed.id IS NULL THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;
