-- Leases kept in the database: a running attempt's lease expires at this time
-- unless the coordinator its agent is connected to renews it, so any
-- coordinator sharing the database can reap an attempt whose agent is gone.
ALTER TABLE attempts ADD COLUMN lease_expires_at INTEGER;
CREATE INDEX attempts_by_lease ON attempts(lease_expires_at) WHERE outcome IS NULL;
