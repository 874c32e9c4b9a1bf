-- The jobs list counts each job's tasks per state and outcome
-- (`GROUP BY job_id, state, outcome`, with the attempts summed): this index
-- answers it without reading the tasks' rows. It starts with (job_id, state),
-- so it also serves what tasks_by_job_state served.
DROP INDEX tasks_by_job_state;
CREATE INDEX tasks_by_job_counts ON tasks(job_id, state, outcome, attempts);
-- A job's tasks a page at a time, in id order.
CREATE INDEX tasks_by_job_id ON tasks(job_id, id);
