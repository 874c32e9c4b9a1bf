-- Users (argon2 password hashes), API tokens (SHA-256 hashes), per-host
-- agent secrets (argon2 hashes) and the audit log.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    token_hash  TEXT    NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE agent_secrets (
    hostname     TEXT PRIMARY KEY,
    secret_hash  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    peer    TEXT,
    action  TEXT    NOT NULL,
    target  TEXT,
    detail  TEXT
);
