-- A step is recorded once, however often it is sent: a store call whose answer was lost (a dropped
-- connection, a timeout while its commit waited) may still be running on the server when the runner
-- sends it again on another connection, and a check that no such row exists, made by each statement
-- in its own snapshot, lets both in. The unique index makes the second wait for the first and then
-- insert nothing (`ON CONFLICT DO NOTHING` in responder/store/postgres/queue.py). Duplicates written
-- before it are removed first, the earliest of each kept.
DELETE FROM steps AS later USING steps AS earlier
WHERE later.job_id = earlier.job_id AND later.step = earlier.step
  AND later.started_at = earlier.started_at AND later.duration_ms = earlier.duration_ms
  AND later.outcome = earlier.outcome AND later.id > earlier.id;
CREATE UNIQUE INDEX steps_once ON steps (job_id, step, started_at, duration_ms, outcome);
