-- The claim without a probe for an earlier queued job on each candidate's stack.
--
-- Under the intake bench, with a backlog of queued jobs, PostgreSQL answered that probe ("is a job
-- queued on this stack before this one?") by walking `jobs_queue` through every queued job before the
-- candidate, filtering them by stack, instead of looking up the stack's own entries in `jobs_status`:
-- planned from the statistics of a short queue, both indexes cost "one row", and the smaller one wins
-- the tie. Each claim then read the whole backlog (0.4-2 ms a claim with 1,800 queued, 4,500 buffers;
-- draining n jobs cost n^2). The walk in id order answers the question by itself: the first queued job
-- it meets of a stack is that stack's earliest, so a stack met once is passed over afterwards. What
-- is left per candidate is the running-job probe, which the unique index on running jobs answers
-- exactly. Otherwise as in 0006: due scheduled jobs join the queue first; a retry not yet due holds
-- its stack; SKIP LOCKED passes over a job another claimer is taking (and over its stack).
CREATE OR REPLACE FUNCTION claim_job(claimed_at double precision, claimer text, lease_until double precision)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
DECLARE
    candidate record;
    stack_key text;
    met text[] := '{}';  -- the stacks met so far, as length(project):project||stack (unambiguous)
    claimed jobs;
BEGIN
    UPDATE jobs SET status = 'queued', not_before = 0
    WHERE status = 'scheduled' AND not_before > 0 AND not_before <= claimed_at;

    FOR candidate IN
        SELECT id, project, stack, not_before FROM jobs
        WHERE status >= 'queued' AND status <= 'queued'
        ORDER BY status, id
    LOOP
        stack_key := length(candidate.project) || ':' || candidate.project || candidate.stack;
        CONTINUE WHEN stack_key = ANY (met);
        met := met || stack_key;
        CONTINUE WHEN candidate.not_before > claimed_at;
        CONTINUE WHEN EXISTS (SELECT 1 FROM jobs
                              WHERE status = 'running' AND project = candidate.project
                                AND stack = candidate.stack);
        UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = claimed_at,
            node = claimer, lease_expires_at = lease_until, fence = fence + 1
        WHERE id = (SELECT id FROM jobs WHERE id = candidate.id AND status = 'queued'
                    FOR UPDATE SKIP LOCKED)
        RETURNING * INTO claimed;
        IF FOUND THEN
            RETURN NEXT claimed;
            RETURN;
        END IF;
    END LOOP;
END
$$;
