-- A step is recorded once, however often it is sent: a store call whose answer was lost (a dropped
-- connection, a timeout while its commit waited) may still be running on the server when the runner
-- sends it again on another connection. Each send carries the step's key (made once, before the
-- first), and the unique index makes a second send wait for the first, then insert nothing
-- (`ON CONFLICT DO NOTHING` in responder/store/postgres/queue.py). A step without a key (NULL: the
-- rows before this migration) never conflicts.
ALTER TABLE steps ADD COLUMN key text;
CREATE UNIQUE INDEX steps_once ON steps (job_id, key);
