-- Coordinators sharing this database (docs/scale-out.md): each one writes a
-- heartbeat, and the agents connected to it with what they are doing, so
-- the others' browsers and fleet views see the whole fleet. A row whose
-- heartbeat is older than the lease is a coordinator that went away.
CREATE TABLE coordinators (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    agents TEXT NOT NULL DEFAULT '[]'
);
