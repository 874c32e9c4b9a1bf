-- no-transaction
-- A job's spec lists every task: tens of kilobytes for a job of a hundred
-- tasks, megabytes for one of 20,000. SQLite keeps what does not fit in a
-- page on a chain of overflow pages, and to read a column stored after the
-- spec it walks that chain: every claim and every settle that read a job's
-- state, queue or counts walked the whole spec (docs/performance.md, "A
-- job's spec last"). The table is rebuilt with the spec as its last
-- column, by SQLite's documented procedure for changing a table's layout:
-- foreign keys off (outside a transaction, where the pragma applies), the
-- copy in one transaction, foreign keys on again. Ids are kept, so the
-- tasks, artifacts, bench points and bot jobs that name a job still do.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE jobs_new (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT    NOT NULL,
    queue                TEXT    NOT NULL,
    priority             INTEGER NOT NULL,
    state                TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    finished_at          INTEGER,
    integration_id       TEXT,
    tasks_queued         INTEGER,
    tasks_running        INTEGER,
    tasks_passed         INTEGER,
    tasks_failed         INTEGER,
    tasks_cancelled      INTEGER,
    outcomes_passed      INTEGER,
    outcomes_failed      INTEGER,
    outcomes_flaky       INTEGER,
    outcomes_timed_out   INTEGER,
    outcomes_stalled     INTEGER,
    outcomes_crashed     INTEGER,
    outcomes_infra_error INTEGER,
    outcomes_cancelled   INTEGER,
    attempts_total       INTEGER,
    tasks_retried        INTEGER,
    spec                 TEXT    NOT NULL   -- the validated job spec as JSON; last, see above
);
INSERT INTO jobs_new (id, name, queue, priority, state, created_at, finished_at, integration_id,
                      tasks_queued, tasks_running, tasks_passed, tasks_failed, tasks_cancelled,
                      outcomes_passed, outcomes_failed, outcomes_flaky, outcomes_timed_out,
                      outcomes_stalled, outcomes_crashed, outcomes_infra_error, outcomes_cancelled,
                      attempts_total, tasks_retried, spec)
SELECT id, name, queue, priority, state, created_at, finished_at, integration_id,
       tasks_queued, tasks_running, tasks_passed, tasks_failed, tasks_cancelled,
       outcomes_passed, outcomes_failed, outcomes_flaky, outcomes_timed_out,
       outcomes_stalled, outcomes_crashed, outcomes_infra_error, outcomes_cancelled,
       attempts_total, tasks_retried, spec
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_by_finished_at ON jobs(finished_at, id) WHERE finished_at IS NOT NULL;
COMMIT;
PRAGMA foreign_keys = ON;
