-- Waiting jobs with a time (scheduled, retries): an idle worker's `next_due` reads only these, not
-- every queued job.
CREATE INDEX jobs_due ON jobs (status, not_before) WHERE not_before > 0;
