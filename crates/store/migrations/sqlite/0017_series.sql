-- Benchmark series (issue 14): every metric value of a finished attempt,
-- with its identity and its place in history. Written by the outbox
-- consumer `tf:series` (crates/store/src/series), never by the finish.

-- One metric of one benchmark on one host. A series never mixes hosts; the
-- counters are kept on the row (moved only by points really inserted), so
-- listing series reads no points.
CREATE TABLE bench_series (
    id          INTEGER PRIMARY KEY,
    host        TEXT    NOT NULL,
    program     TEXT    NOT NULL,
    function    TEXT    NOT NULL,
    data_tag    TEXT    NOT NULL,   -- '' when the benchmark has none
    metric      TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    points      INTEGER NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    last_value  REAL    NOT NULL,
    UNIQUE (host, program, function, data_tag, metric, unit)
);

-- One value: which attempt (and which repetition of it) gave it, what was
-- tested (sha, branch, integration; NULL when the job did not say) and on
-- which machine (the hash of the host's MachineInfo, or 'unknown').
CREATE TABLE bench_points (
    id          INTEGER PRIMARY KEY,
    series_id   INTEGER NOT NULL REFERENCES bench_series(id),
    attempt_id  INTEGER NOT NULL REFERENCES attempts(id),
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    repetition  INTEGER NOT NULL,
    value       REAL    NOT NULL,
    sha         TEXT,
    branch      TEXT,
    integration TEXT,
    fingerprint TEXT    NOT NULL,
    at          INTEGER NOT NULL,   -- the integration's timestamp, else the finish time
    UNIQUE (series_id, attempt_id, repetition)
);
CREATE INDEX bench_points_by_time ON bench_points(series_id, at, id);
CREATE INDEX bench_points_by_job ON bench_points(job_id);

-- What a fingerprint hash stands for: the MachineInfo JSON it hashes.
CREATE TABLE bench_fingerprints (
    hash        TEXT PRIMARY KEY,
    machine     TEXT NOT NULL
);

-- A regression (or any change) acknowledged by a user, from `sha` on.
CREATE TABLE bench_acks (
    id          INTEGER PRIMARY KEY,
    series_id   INTEGER NOT NULL REFERENCES bench_series(id),
    sha         TEXT    NOT NULL,
    note        TEXT    NOT NULL,
    bug_url     TEXT,
    by_user     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX bench_acks_by_series ON bench_acks(series_id);
