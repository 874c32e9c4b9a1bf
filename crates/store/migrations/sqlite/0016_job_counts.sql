-- A finished job keeps its tasks' counts on its row, so the jobs list reads
-- them instead of counting the tasks at every request (only queued and
-- running jobs are counted live). All NULL while the job is queued or
-- running; written, with the terminal state, by the transaction that
-- settles the job, and cleared by any that queues a task of it again.
-- What is counted is `JobSummary` (crates/wire/src/api.rs): tasks per
-- state, tasks per outcome of their last attempt, attempts over all tasks,
-- tasks run more than once.
ALTER TABLE jobs ADD COLUMN tasks_queued INTEGER;
ALTER TABLE jobs ADD COLUMN tasks_running INTEGER;
ALTER TABLE jobs ADD COLUMN tasks_passed INTEGER;
ALTER TABLE jobs ADD COLUMN tasks_failed INTEGER;
ALTER TABLE jobs ADD COLUMN tasks_cancelled INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_passed INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_failed INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_flaky INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_timed_out INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_stalled INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_crashed INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_infra_error INTEGER;
ALTER TABLE jobs ADD COLUMN outcomes_cancelled INTEGER;
ALTER TABLE jobs ADD COLUMN attempts_total INTEGER;
ALTER TABLE jobs ADD COLUMN tasks_retried INTEGER;

-- Jobs that finished before this migration get their counts now, in one
-- pass over the tasks (the same statement as migrations/postgres/0004).
UPDATE jobs SET
    tasks_queued = c.queued, tasks_running = c.running, tasks_passed = c.passed,
    tasks_failed = c.failed, tasks_cancelled = c.cancelled,
    outcomes_passed = c.o_passed, outcomes_failed = c.o_failed, outcomes_flaky = c.o_flaky,
    outcomes_timed_out = c.o_timed_out, outcomes_stalled = c.o_stalled,
    outcomes_crashed = c.o_crashed, outcomes_infra_error = c.o_infra_error,
    outcomes_cancelled = c.o_cancelled,
    attempts_total = c.attempts, tasks_retried = c.retried
FROM (
    SELECT job_id,
           COUNT(CASE WHEN state = 'queued' THEN 1 END) AS queued,
           COUNT(CASE WHEN state = 'running' THEN 1 END) AS running,
           COUNT(CASE WHEN state = 'passed' THEN 1 END) AS passed,
           COUNT(CASE WHEN state = 'failed' THEN 1 END) AS failed,
           COUNT(CASE WHEN state = 'cancelled' THEN 1 END) AS cancelled,
           COUNT(CASE WHEN outcome = 'passed' THEN 1 END) AS o_passed,
           COUNT(CASE WHEN outcome = 'failed' THEN 1 END) AS o_failed,
           COUNT(CASE WHEN outcome = 'flaky' THEN 1 END) AS o_flaky,
           COUNT(CASE WHEN outcome = 'timed_out' THEN 1 END) AS o_timed_out,
           COUNT(CASE WHEN outcome = 'stalled' THEN 1 END) AS o_stalled,
           COUNT(CASE WHEN outcome = 'crashed' THEN 1 END) AS o_crashed,
           COUNT(CASE WHEN outcome = 'infra_error' THEN 1 END) AS o_infra_error,
           COUNT(CASE WHEN outcome = 'cancelled' THEN 1 END) AS o_cancelled,
           CAST(SUM(attempts) AS BIGINT) AS attempts,
           COUNT(CASE WHEN attempts > 1 THEN 1 END) AS retried
    FROM tasks GROUP BY job_id
) AS c
WHERE c.job_id = jobs.id AND jobs.state IN ('passed', 'failed', 'cancelled');
