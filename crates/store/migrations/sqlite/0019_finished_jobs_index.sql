-- The finished-jobs feed (the AMQP publisher) pages jobs by
-- (finished_at, id) after a cursor; without an index each page scanned
-- every job. Unfinished jobs (finished_at NULL) stay out of it.
CREATE INDEX jobs_by_finished_at ON jobs(finished_at, id) WHERE finished_at IS NOT NULL;
