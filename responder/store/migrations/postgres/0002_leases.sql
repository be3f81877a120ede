-- Several nodes: a running job is leased to one node (until `lease_expires_at`), and `fence` counts
-- its claims and take-overs, so that a node which lost the job can no longer write its result.
-- A job left running by an earlier version has no lease: the first node to look takes it over. No
-- index on the lease: the few running jobs are found by `jobs_status`, and renewals stay HOT updates.
ALTER TABLE jobs
    ADD COLUMN node text,
    ADD COLUMN lease_expires_at double precision,
    ADD COLUMN fence integer NOT NULL DEFAULT 0;

-- Each stack's Pulumi settings file (config, encrypted secrets, passphrase salt), so that any node
-- can run any stack's next operation.
CREATE TABLE stack_settings (
    project text NOT NULL,
    stack text NOT NULL,
    settings text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (project, stack)
);
