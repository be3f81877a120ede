-- The queued runs a new coalescing job supersedes, by their stack and playbook. Without this index
-- the plan a session kept from an empty queue found them by walking `jobs_queue` through every queued
-- job before the new one: recording a delivery took 0.8 ms with 20 jobs queued, 1.8 ms with 6,000.
-- Partial, so only coalescing jobs still waiting are in it, the smallest index the planner can take:
-- chosen on a tie of estimates, as on a true estimate.
CREATE INDEX jobs_coalescible ON jobs (project, stack, playbook)
    WHERE status = 'queued' AND coalesce AND attempts = 0;
