-- The machine fingerprint an agent reports at each connection (JSON).
ALTER TABLE agents ADD COLUMN machine TEXT;
