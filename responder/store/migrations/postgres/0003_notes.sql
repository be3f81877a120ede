-- Notes a job's result queues for the incident's timeline (PagerDuty) and chat, committed with the
-- result and sent by a delivery loop on any node. `attempts` counts claims and fences a claim's
-- settlement; `key` is the idempotency key embedded in the note, recorded before it is sent.
CREATE TABLE notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id),
    destination text NOT NULL,
    target text NOT NULL,
    body text NOT NULL,
    key text NOT NULL UNIQUE,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    not_before double precision NOT NULL,
    node text,
    lease_expires_at double precision,
    last_error text,
    sent_at double precision
);
CREATE INDEX notes_due ON notes (status, not_before) WHERE status IN ('pending', 'sending');
CREATE INDEX notes_job ON notes (job_id, id);
