-- The job store's tables, as the SQLite store has them, with what several nodes need from the start:
-- uniqueness that makes dedupe hold across connections (and nodes), and a partial unique index that
-- makes two running jobs on one stack impossible whoever claims them.

CREATE TABLE payloads (
    digest text PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE deliveries (
    id text PRIMARY KEY,
    -- Arrival order, for an incident's history (ids are the senders' and say nothing of order).
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    source text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    incident_id text NOT NULL,
    status text NOT NULL,
    payload text NOT NULL REFERENCES payloads (digest),
    received_at double precision NOT NULL,
    dedupe_key text,
    -- An event id is recorded once per source: a replay under a new delivery id conflicts here.
    UNIQUE (source, event_id)
);
CREATE INDEX deliveries_incident ON deliveries (incident_id, received_at, seq);
CREATE INDEX deliveries_payload ON deliveries (payload);
CREATE INDEX deliveries_dedupe ON deliveries (dedupe_key, received_at) WHERE dedupe_key IS NOT NULL;
CREATE INDEX deliveries_received ON deliveries (received_at);

CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id text NOT NULL REFERENCES deliveries (id),
    playbook text NOT NULL,
    project text NOT NULL,
    stack text NOT NULL,
    event text NOT NULL,  -- JSON text, exactly as encoded (jsonb would refuse a \u0000 in a title)
    incident_id text NOT NULL,
    event_type text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    not_before double precision NOT NULL DEFAULT 0,
    coalesce boolean NOT NULL DEFAULT false,
    coalesced_into bigint,
    cancel_on text[] NOT NULL DEFAULT '{}',
    cancel_requested boolean NOT NULL DEFAULT false,
    plan text,
    approved_plan text,
    params text NOT NULL DEFAULT '{}',
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    error text,
    outputs text
);
CREATE INDEX jobs_status ON jobs (status, project, stack, id);
CREATE INDEX jobs_queue ON jobs (status, id);
CREATE INDEX jobs_incident ON jobs (incident_id, id);
CREATE INDEX jobs_delivery ON jobs (delivery_id);
-- Per-stack exclusivity as a constraint, not only as the claim query's logic: a claim that would
-- start a second job on a stack fails instead, on any node.
CREATE UNIQUE INDEX jobs_one_running_per_stack ON jobs (project, stack) WHERE status = 'running';

CREATE TABLE steps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id),
    step text NOT NULL,
    started_at double precision NOT NULL,
    duration_ms double precision NOT NULL,
    outcome text NOT NULL,
    error text,
    changes text NOT NULL DEFAULT '{}'
);
CREATE INDEX steps_job ON steps (job_id, id);
CREATE INDEX steps_started ON steps (started_at);

CREATE TABLE stacks (
    project text NOT NULL,
    stack text NOT NULL,
    program text NOT NULL,
    incident_id text NOT NULL,
    playbook text NOT NULL,
    service text NOT NULL,
    status text NOT NULL,
    created_at double precision NOT NULL,
    last_activity_at double precision NOT NULL,
    last_operation text NOT NULL,
    outputs text,
    export_path text,
    idle_ttl double precision,
    max_age double precision,
    PRIMARY KEY (project, stack)
);
CREATE INDEX stacks_incident ON stacks (incident_id);

CREATE TABLE incidents (
    id text PRIMARY KEY,
    status text NOT NULL,
    last_event_at double precision NOT NULL,
    resolved_at double precision
);
