-- The jobs list's counts and a job's task pages (see
-- migrations/sqlite/0015_job_summaries.sql).
DROP INDEX tasks_by_job_state;
CREATE INDEX tasks_by_job_counts ON tasks(job_id, state, outcome, attempts);
CREATE INDEX tasks_by_job_id ON tasks(job_id, id);
