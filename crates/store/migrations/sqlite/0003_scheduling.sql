-- Longest-first needs each task's key (job name / task name, shared by
-- repeated submissions) and the runtime history per key.
ALTER TABLE tasks ADD COLUMN task_key TEXT NOT NULL DEFAULT '';
UPDATE tasks SET task_key = (SELECT j.name FROM jobs j WHERE j.id = tasks.job_id) || '/' || tasks.name;

CREATE TABLE task_stats (
    task_key    TEXT PRIMARY KEY,
    runs        INTEGER NOT NULL,
    mean_ms     REAL    NOT NULL,
    p95_ms      REAL    NOT NULL,
    recent      TEXT    NOT NULL    -- JSON list of the newest durations (ms), at most 50
);
