-- testfleet store, version 1. Times are milliseconds since the Unix epoch.

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    spec            TEXT    NOT NULL,   -- the validated job spec as JSON
    state           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    integration_id  TEXT
);

CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER NOT NULL REFERENCES jobs(id),
    name            TEXT    NOT NULL,
    spec            TEXT    NOT NULL,   -- the task spec as JSON
    priority        INTEGER NOT NULL,
    pinned_agent    TEXT,               -- set for each_agent fan-out
    state           TEXT    NOT NULL,
    stage           TEXT,
    outcome         TEXT,
    detail_message  TEXT,
    agent           TEXT,
    current_attempt INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    test_failures   INTEGER NOT NULL DEFAULT 0,
    infra_failures  INTEGER NOT NULL DEFAULT 0,
    flaky           INTEGER NOT NULL DEFAULT 0,
    last_agent      TEXT,               -- the agent of the last failed attempt, to retry elsewhere
    queued_at       INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX tasks_by_job ON tasks(job_id);
CREATE INDEX tasks_queued ON tasks(state) WHERE state = 'queued';

CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES tasks(id),
    number          INTEGER NOT NULL,
    agent           TEXT    NOT NULL,
    stage           TEXT,
    outcome         TEXT,
    reason          TEXT,
    reason_data     TEXT,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    last_update_ts  INTEGER,            -- newest updateTimestamp applied
    results         TEXT,               -- parsed results (JSON list) uploaded by the agent
    UNIQUE (task_id, number)
);
CREATE INDEX attempts_running ON attempts(agent) WHERE outcome IS NULL;

CREATE TABLE log_chunks (
    attempt_id      INTEGER NOT NULL REFERENCES attempts(id),
    offset          INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    PRIMARY KEY (attempt_id, offset)
);

CREATE TABLE agents (
    hostname        TEXT PRIMARY KEY,
    labels          TEXT    NOT NULL,
    first_seen      INTEGER NOT NULL,
    last_connected  INTEGER NOT NULL,
    retired         INTEGER NOT NULL DEFAULT 0,
    status          TEXT
);

CREATE TABLE work_log (
    id              INTEGER PRIMARY KEY,
    hostname        TEXT    NOT NULL,
    attempt_id      INTEGER,
    integration_id  TEXT,
    status          TEXT    NOT NULL,
    detail          TEXT,
    at              INTEGER NOT NULL
);
