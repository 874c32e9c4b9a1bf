-- Trigger events (webhooks, later AMQP): every event received, what it
-- matched and which jobs it created, or why none. `dedup_key` (a delivery
-- id, an idempotency key, or Gerrit's source/change/patch set/sha) is
-- unique, so a delivery seen before never queues twice; a repeated
-- delivery is recorded with no key and outcome `duplicate`.
CREATE TABLE trigger_events (
    id            INTEGER PRIMARY KEY,
    source        TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    delivery_id   TEXT,
    dedup_key     TEXT    UNIQUE,
    received_at   INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    matched_rules TEXT    NOT NULL,   -- JSON list of rule names
    job_ids       TEXT    NOT NULL,   -- JSON list of job ids
    outcome       TEXT    NOT NULL,   -- queued | ignored | duplicate | dropped | error
    reason        TEXT
);
CREATE INDEX trigger_events_by_age ON trigger_events(received_at);
CREATE INDEX trigger_events_by_source ON trigger_events(source, id);
