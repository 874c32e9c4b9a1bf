-- Files kept per attempt (artifact globs, and stdout/stderr of failed
-- attempts). The content is a blob of the coordinator's blob store, named
-- by its SHA-256; several rows may share one blob.
CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY,
    attempt_id  INTEGER NOT NULL REFERENCES attempts(id),
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    path        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,   -- always | on_failure | stdout | stderr
    digest      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (attempt_id, path)
);
CREATE INDEX artifacts_by_job ON artifacts(job_id);
CREATE INDEX artifacts_by_digest ON artifacts(digest);
CREATE INDEX artifacts_by_age ON artifacts(created_at);
