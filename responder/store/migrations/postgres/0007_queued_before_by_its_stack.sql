-- "Is a job queued on this stack before this one?", asked by the claim of each candidate and by
-- `next_due` of each waiting retry: answered by a lookup of that stack's waiting jobs, whatever the
-- statistics say.
--
-- In a plan a session kept from an empty queue (plpgsql's and asyncpg's prepared statements keep a
-- generic plan), every path costs about "one row", and PostgreSQL answered the question with a walk
-- of every queued job (`jobs_queue`, or `jobs_status` by its status alone), each compared with the
-- candidate's stack. Each claim then read the whole backlog (1,002 index reads with 1,000 jobs
-- queued; 0.4-2 ms a claim under the intake bench, so that draining n jobs cost n^2), and `next_due`
-- read it once per waiting retry (20,020 reads for 20 retries behind 1,000 jobs). Now the probe:
-- - ends in `OFFSET 0`, which keeps it a subquery run per candidate with the candidate's stack as
--   its key (an EXISTS with an OFFSET is not turned into a join);
-- - states its status as `(status = 'queued') IS TRUE`, which only the partial index below matches
--   (no index keyed on the status can search by it), and compares `id + 0`, which the primary key
--   cannot search: the stack's own entries in `jobs_waiting_by_stack` are the one way left that is
--   not a walk of the whole table or of an index.
CREATE INDEX jobs_waiting_by_stack ON jobs (project, stack, id) WHERE (status = 'queued') IS TRUE;

-- As in 0006, with the probes above.
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
