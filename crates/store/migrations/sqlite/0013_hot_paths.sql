-- Status updates find a running task by its current attempt; without this
-- index every update scanned the whole tasks table.
CREATE INDEX tasks_by_current_attempt ON tasks(current_attempt) WHERE current_attempt IS NOT NULL;

-- A job's state is recomputed from its tasks' states at each task's end;
-- counting per state then reads the index only.
DROP INDEX tasks_by_job;
CREATE INDEX tasks_by_job_state ON tasks(job_id, state);
