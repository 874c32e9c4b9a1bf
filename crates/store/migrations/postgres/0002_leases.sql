-- Leases kept in the database (see migrations/sqlite/0014_leases.sql).
ALTER TABLE attempts ADD COLUMN lease_expires_at BIGINT;
CREATE INDEX attempts_by_lease ON attempts(lease_expires_at) WHERE outcome IS NULL;
