-- Jobs queued behind a running one are "parked": the claim's walk of the queue passes over them
-- without a look. Before, with one stack busy and n jobs queued behind it, every claim (one a
-- delivery, each idle worker's) tested those n jobs one by one, about 1 µs each (20 ms a claim at
-- 20,000), so a flood of events for one incident slowed every other incident's jobs.
--
-- - A queued job is parked when recorded while its stack runs a job (responder/store/postgres/
--   deliveries.py; a scheduled one joins the queue later, when that job may be long gone).
-- - When a job leaves the queue or the running state other than by being claimed (it ends, waits for
--   approval, is put back in line, cancelled, coalesced), the stack's first parked job after it is
--   unparked (the trigger below). Jobs are parked only behind a job recorded before them, so that
--   is the first parked job whenever it matters; and a transaction that changes one job then
--   locks only a later one, never an earlier: two such transactions never wait on each other in a
--   circle (as two cancels did, each unparking the other's job).
-- - A running job that ends while jobs are being recorded behind it cannot see them (they are not
--   committed): once committed, the recording unparks those whose stack runs nothing, after
--   waiting for an end under way (`unpark_if_ended` in responder/store/postgres/deliveries.py).
-- - Parking only spares the walk: the claim still checks that a job is first in line and that its
--   stack runs nothing. A parked job whose stack is free with none unparked before it is found by
--   `unpark_stalled` (the reaper's safety net, which logs it: it should never happen).
ALTER TABLE jobs ADD COLUMN parked boolean NOT NULL DEFAULT false;

-- The queue the claim walks, in order, without the parked jobs: only queued jobs, so a job has an
-- entry here once (when recorded), not one a status as in `jobs_queue`.
CREATE INDEX jobs_ready ON jobs (id) WHERE status = 'queued' AND NOT parked;
-- A stack's parked jobs, in order: the first is the one to unpark.
CREATE INDEX jobs_parked ON jobs (project, stack, id) WHERE status = 'queued' AND parked;

CREATE FUNCTION unpark_next() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE jobs SET parked = false
    WHERE id = (SELECT id FROM jobs
                WHERE status = 'queued' AND parked AND project = OLD.project AND stack = OLD.stack
                  AND id > OLD.id
                ORDER BY id LIMIT 1);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_unpark_next AFTER UPDATE OF status ON jobs
FOR EACH ROW
WHEN (OLD.status IN ('running', 'queued') AND NEW.status NOT IN ('running', 'queued'))
EXECUTE FUNCTION unpark_next();

-- As in 0009, walking `jobs_ready`: only the queued jobs not parked (the smallest index that gives
-- their order, so the plan a session keeps takes it however stale the statistics).
CREATE OR REPLACE FUNCTION claim_job(claimed_at double precision, claimer text,
    lease_until double precision, token text)
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
        WHERE j.status = 'queued' AND NOT j.parked
          AND j.not_before <= claimed_at
          AND NOT EXISTS (SELECT 1 FROM jobs AS r
                          WHERE r.status = 'running' AND r.project = j.project AND r.stack = j.stack
                          OFFSET 0)
          AND NOT EXISTS (SELECT 1 FROM jobs AS q
                          WHERE (q.status = 'queued') IS TRUE AND q.project = j.project AND q.stack = j.stack
                            AND q.id + 0 < j.id
                          OFFSET 0)
        ORDER BY j.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING * INTO claimed;
    IF FOUND THEN
        RETURN NEXT claimed;
    END IF;
END
$$;
