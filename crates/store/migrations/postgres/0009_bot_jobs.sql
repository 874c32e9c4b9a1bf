-- A bot request's jobs, per side (`head` or `base`): the jobs it submitted
-- and, with `reused`, earlier jobs whose stored results for the same sha
-- and host it reuses instead of running them again. A side may take
-- several (one reused job per host, plus one new job for the hosts without
-- results). Replaces bot_requests' head_job_id and base_job_id, which held
-- one job per side. The rows are written in the transaction that submits
-- the new jobs, so a kill never leaves a job the bot does not know of.
CREATE TABLE bot_request_jobs (
    request_id BIGINT  NOT NULL,
    side       TEXT    NOT NULL,
    job_id     BIGINT  NOT NULL,
    reused     BOOLEAN NOT NULL,
    PRIMARY KEY (request_id, side, job_id)
);
INSERT INTO bot_request_jobs (request_id, side, job_id, reused)
    SELECT id, 'head', head_job_id, FALSE FROM bot_requests WHERE head_job_id IS NOT NULL;
INSERT INTO bot_request_jobs (request_id, side, job_id, reused)
    SELECT id, 'base', base_job_id, FALSE FROM bot_requests WHERE base_job_id IS NOT NULL;
ALTER TABLE bot_requests DROP COLUMN head_job_id;
ALTER TABLE bot_requests DROP COLUMN base_job_id;
-- The digest of the job template (and queue) a request's jobs were
-- rendered from: results are reused only from jobs of the same template.
ALTER TABLE bot_requests ADD COLUMN template_digest TEXT;
-- Confirmation rounds done: while verdicts are UNKNOWN, the bot runs the
-- tasks behind them again (a bounded number of times) before it answers.
ALTER TABLE bot_requests ADD COLUMN confirm_rounds BIGINT NOT NULL DEFAULT 0;
-- Finding stored results of a sha to reuse.
CREATE INDEX bench_points_by_sha ON bench_points(sha, job_id);
