-- Exporters (InfluxDB, external ResultsDB) and the ResultsDB API v2.0 served by the coordinator.

-- The durable outbox: one event per attempt that finished with results, written in the
-- same transaction as the results. Each sink keeps a cursor into it and moves the cursor
-- only after the receiver acknowledged (2xx), so a sink that is down loses nothing.
CREATE TABLE export_events (
    id          INTEGER PRIMARY KEY,
    attempt_id  INTEGER NOT NULL REFERENCES attempts(id),
    created_at  INTEGER NOT NULL
);

CREATE TABLE export_sinks (
    name            TEXT PRIMARY KEY,   -- `influxdb`, `resultsdb`
    cursor          INTEGER NOT NULL DEFAULT 0,  -- last export_events.id delivered
    delivered       INTEGER NOT NULL DEFAULT 0,  -- points / results acknowledged
    dropped         INTEGER NOT NULL DEFAULT 0,  -- refused by the receiver as malformed (4xx)
    failures        INTEGER NOT NULL DEFAULT 0,  -- failed deliveries since the last success
    last_error      TEXT,
    last_error_at   INTEGER,
    last_success_at INTEGER
);

-- ResultsDB v2.0 model: testcases, groups, results with multi-valued key/value data.
CREATE TABLE rdb_testcases (
    name        TEXT PRIMARY KEY,
    ref_url     TEXT
);

CREATE TABLE rdb_groups (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    description TEXT,
    ref_url     TEXT
);

CREATE TABLE rdb_results (
    id          INTEGER PRIMARY KEY,
    testcase    TEXT    NOT NULL REFERENCES rdb_testcases(name),
    outcome     TEXT    NOT NULL,
    note        TEXT,
    ref_url     TEXT,
    submit_time INTEGER NOT NULL,       -- ms since the epoch
    attempt_id  INTEGER                 -- set for results mapped from testfleet attempts
);
CREATE INDEX rdb_results_by_time ON rdb_results(submit_time);
CREATE INDEX rdb_results_by_testcase ON rdb_results(testcase, submit_time);
CREATE INDEX rdb_results_by_attempt ON rdb_results(attempt_id) WHERE attempt_id IS NOT NULL;

CREATE TABLE rdb_result_groups (
    result_id   INTEGER NOT NULL REFERENCES rdb_results(id),
    group_uuid  TEXT    NOT NULL,
    PRIMARY KEY (result_id, group_uuid)
);
CREATE INDEX rdb_result_groups_by_group ON rdb_result_groups(group_uuid);

CREATE TABLE rdb_result_data (
    result_id   INTEGER NOT NULL REFERENCES rdb_results(id),
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL
);
CREATE INDEX rdb_result_data_by_result ON rdb_result_data(result_id);
CREATE INDEX rdb_result_data_by_kv ON rdb_result_data(key, value);
