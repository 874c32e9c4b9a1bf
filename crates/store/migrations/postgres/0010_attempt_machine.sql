-- The machine an attempt ran on as its agent reported it with the attempt
-- (JSON MachineInfo, with the host preparation done for it: CPUs pinned,
-- governor, turbo, siblings, nice). The series' fingerprint prefers it to
-- the agent's connect-time record; NULL for attempts reported without one.
ALTER TABLE attempts ADD COLUMN machine TEXT;
