-- Merge-request bots (seed 003): one row per request and head sha the bot
-- has taken up, so a request is never processed twice, across restarts.
-- `state` is queued | running | reported | failed; the jobs are the head's
-- and the merge base's benchmark runs, `note_id` the one note the bot
-- posts and then edits.
CREATE TABLE bot_requests (
    id          INTEGER PRIMARY KEY,
    bot         TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    iid         INTEGER NOT NULL,
    head_sha    TEXT    NOT NULL,
    base_sha    TEXT,
    state       TEXT    NOT NULL,
    head_job_id INTEGER,
    base_job_id INTEGER,
    note_id     INTEGER,
    reason      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (bot, project, iid, head_sha)
);
CREATE INDEX bot_requests_by_state ON bot_requests(bot, project, state, id);
