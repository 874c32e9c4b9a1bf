-- Automatic re-triggers of known failures (server config `known_failures`).
ALTER TABLE tasks ADD COLUMN retriggers INTEGER NOT NULL DEFAULT 0;
