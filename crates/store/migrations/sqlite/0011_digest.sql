-- HTTP Digest (RFC 7616) needs HA1 = H(username:realm:password), which an
-- argon2 hash cannot give. It is stored beside the argon2 hash when a user is
-- added or its password changed, with the realm it was computed for. Users
-- from before this migration have none: Digest tells them to reset their
-- password, Basic keeps working.
ALTER TABLE users ADD COLUMN digest_realm TEXT;
ALTER TABLE users ADD COLUMN digest_ha1_md5 TEXT;
ALTER TABLE users ADD COLUMN digest_ha1_sha256 TEXT;
