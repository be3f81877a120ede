-- When an idle worker should look again (`next_due`): the earliest time of a scheduled job, or of
-- a retry first in line on its stack with nothing running there. Asked as one query, its "is an
-- earlier job queued on this stack?" probe met the plan 0007 describes: kept from an empty queue, it
-- read every queued job before each retry (100,050 index reads for 50 retries behind 2,000 queued
-- jobs, against 2,000 now). As the claim does, a walk of the queue in id order meets each stack's
-- first job first. It reads the queue once: no more than the claim that found nothing before it.
CREATE FUNCTION next_due_at()
RETURNS double precision
LANGUAGE plpgsql
STABLE
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
DECLARE
    candidate record;
    stack_key text;
    met text[] := '{}';  -- as in claim_job
    due double precision;
BEGIN
    SELECT min(not_before) INTO due FROM jobs WHERE status = 'scheduled' AND not_before > 0;
    FOR candidate IN
        SELECT project, stack, not_before FROM jobs
        WHERE status >= 'queued' AND status <= 'queued'
        ORDER BY status, id
    LOOP
        stack_key := length(candidate.project) || ':' || candidate.project || candidate.stack;
        CONTINUE WHEN stack_key = ANY (met);
        met := met || stack_key;
        CONTINUE WHEN candidate.not_before = 0 OR candidate.not_before >= due;
        -- A retry behind a running job is due when that job ends, which its node announces.
        CONTINUE WHEN EXISTS (SELECT 1 FROM jobs
                              WHERE status = 'running' AND project = candidate.project
                                AND stack = candidate.stack);
        due := candidate.not_before;
    END LOOP;
    RETURN due;
END
$$;
