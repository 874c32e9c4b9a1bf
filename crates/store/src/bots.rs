//! Merge-request bots' state: one row per (bot, project, request, head sha)
//! taken up, so a request is never processed twice, across restarts.
//!
//! [`Store::begin_bot_request`] claims a request (the unique key makes a
//! second claim, by this or another coordinator, find the first);
//! [`Store::set_bot_request_note`] records its note;
//! [`Store::submit_bot_jobs`] submits its jobs and records them in one
//! transaction (once: a second call finds them); [`Store::finish_bot_request`]
//! ends it, once. [`Store::bot_reusable_jobs`] finds stored results of a sha
//! per host, which a request reuses instead of running them again.

use testfleet_core::job::JobSpec;
use testfleet_core::time_fmt::UnixMillis;

use crate::db::{on_pool, on_tx};
use crate::ops::submit_in;
use crate::{Missing, NewTask, QueuedTask, Result, Store, StoreError};

/// Where a bot's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotRequestState {
    /// Taken up; no job recorded yet.
    Queued,
    /// Its jobs are submitted.
    Running,
    /// Its result note is written.
    Reported,
    /// It ended without a comparison (the reason says why).
    Failed,
}

impl BotRequestState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BotRequestState::Queued => "queued",
            BotRequestState::Running => "running",
            BotRequestState::Reported => "reported",
            BotRequestState::Failed => "failed",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<BotRequestState> {
        Some(match s {
            "queued" => BotRequestState::Queued,
            "running" => BotRequestState::Running,
            "reported" => BotRequestState::Reported,
            "failed" => BotRequestState::Failed,
            _ => return None,
        })
    }

    /// Whether the request is over.
    pub fn is_final(self) -> bool {
        matches!(self, BotRequestState::Reported | BotRequestState::Failed)
    }
}

/// A request a bot takes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBotRequest {
    /// `gitlab`, `github`.
    pub bot: String,
    /// The project's id or path on the host.
    pub project: String,
    /// The request's number in the project.
    pub iid: i64,
    /// The head commit benchmarked.
    pub head_sha: String,
    /// The digest of the job template the request's jobs are rendered
    /// from (results are reused only from jobs of the same template).
    pub template_digest: String,
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotRequest {
    pub id: i64,
    pub bot: String,
    pub project: String,
    pub iid: i64,
    pub head_sha: String,
    /// The baseline commit (the merge base), once known.
    pub base_sha: Option<String>,
    pub state: BotRequestState,
    /// Its jobs, head's first, each side in job order (empty while queued).
    pub jobs: Vec<BotJob>,
    /// The note the bot posted (and edits).
    pub note_id: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// See [`NewBotRequest::template_digest`].
    pub template_digest: Option<String>,
    /// Confirmation rounds done (the tasks of UNKNOWN verdicts run again).
    pub confirm_rounds: i64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    bot: String,
    project: String,
    iid: i64,
    head_sha: String,
    base_sha: Option<String>,
    state: String,
    note_id: Option<i64>,
    reason: Option<String>,
    template_digest: Option<String>,
    confirm_rounds: i64,
    created_at: i64,
    updated_at: i64,
}

impl Row {
    fn into_request(self, jobs: Vec<BotJob>) -> Result<BotRequest> {
        let state = BotRequestState::parse(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "bot request {} has state `{}`",
                self.id, self.state
            ))
        })?;
        Ok(BotRequest {
            id: self.id,
            bot: self.bot,
            project: self.project,
            iid: self.iid,
            head_sha: self.head_sha,
            base_sha: self.base_sha,
            state,
            jobs,
            note_id: self.note_id,
            reason: self.reason,
            template_digest: self.template_digest,
            confirm_rounds: self.confirm_rounds,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, bot, project, iid, head_sha, base_sha, state, note_id, reason, template_digest, \
     confirm_rounds, created_at, updated_at";

/// Which side of the comparison a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotSide {
    /// The request's head commit.
    Head,
    /// The baseline: the merge base with the target branch.
    Base,
}

impl BotSide {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BotSide::Head => "head",
            BotSide::Base => "base",
        }
    }

    fn parse(s: &str) -> Option<BotSide> {
        match s {
            "head" => Some(BotSide::Head),
            "base" => Some(BotSide::Base),
            _ => None,
        }
    }
}

/// One job of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotJob {
    pub side: BotSide,
    pub job_id: i64,
    /// An earlier job whose stored results are reused (not submitted by
    /// this request).
    pub reused: bool,
}

/// What one side of a request runs: earlier jobs reused, and a job to
/// submit for what they do not cover.
#[derive(Debug, Clone)]
pub struct BotSideJobs {
    pub side: BotSide,
    /// Earlier jobs whose results are reused.
    pub reused: Vec<i64>,
    /// The job to submit, with its tasks (none when everything is reused).
    pub submit: Option<(JobSpec, Vec<NewTask>)>,
}

/// What [`Store::submit_bot_jobs`] did.
#[derive(Debug, Clone)]
pub struct BotJobsSubmitted {
    /// The request as it is now (running, its jobs recorded).
    pub request: BotRequest,
    /// The tasks this call queued (none when the jobs had already been
    /// recorded, by an earlier pass or another coordinator).
    pub queued: Vec<QueuedTask>,
}

/// Stored results of a sha on a host: the newest passed job that has them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReusableJob {
    pub host: String,
    pub job_id: i64,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    request_id: i64,
    side: String,
    job_id: i64,
    reused: bool,
}

impl Store {
    /// Takes up a request at `now`, queued. Returns the stored request and
    /// whether this call created it (`false`: it was taken up before, in
    /// whatever state it is now).
    pub async fn begin_bot_request(
        &self,
        new: &NewBotRequest,
        now: UnixMillis,
    ) -> Result<(BotRequest, bool)> {
        let inserted: Option<i64> = on_pool!(&self.writer, p => sqlx::query_scalar(
            "INSERT INTO bot_requests
               (bot, project, iid, head_sha, template_digest, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6)
             ON CONFLICT (bot, project, iid, head_sha) DO NOTHING RETURNING id",
        )
        .bind(&new.bot)
        .bind(&new.project)
        .bind(new.iid)
        .bind(&new.head_sha)
        .bind(&new.template_digest)
        .bind(now)
        .fetch_optional(p)
        .await)?;
        let found = self
            .bot_request_by_key(&new.bot, &new.project, new.iid, &new.head_sha)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a bot request vanished after its insert".into()))?;
        Ok((found, inserted.is_some()))
    }

    /// The request with this key, if taken up.
    pub async fn bot_request_by_key(
        &self,
        bot: &str,
        project: &str,
        iid: i64,
        head_sha: &str,
    ) -> Result<Option<BotRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM bot_requests
             WHERE bot = $1 AND project = $2 AND iid = $3 AND head_sha = $4"
        );
        // The writer: a caller reads what it has just written.
        let row: Option<Row> = on_pool!(&self.writer, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(bot)
            .bind(project)
            .bind(iid)
            .bind(head_sha)
            .fetch_optional(p)
            .await)?;
        match row {
            Some(row) => Ok(self.with_jobs(vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// One request by id.
    pub async fn bot_request(&self, id: i64) -> Result<BotRequest> {
        let sql = format!("SELECT {COLUMNS} FROM bot_requests WHERE id = $1");
        let row: Option<Row> = on_pool!(&self.writer, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?;
        let row = row.ok_or(StoreError::NotFound(Missing::BotRequest(id)))?;
        self.with_jobs(vec![row])
            .await?
            .pop()
            .ok_or(StoreError::NotFound(Missing::BotRequest(id)))
    }

    /// A bot's unfinished requests (queued or running) in a project,
    /// oldest first.
    pub async fn open_bot_requests(&self, bot: &str, project: &str) -> Result<Vec<BotRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM bot_requests
             WHERE bot = $1 AND project = $2 AND state IN ('queued', 'running')
             ORDER BY id"
        );
        let rows: Vec<Row> = on_pool!(&self.writer, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(bot)
            .bind(project)
            .fetch_all(p)
            .await)?;
        self.with_jobs(rows).await
    }

    /// Rows with their jobs.
    async fn with_jobs(&self, rows: Vec<Row>) -> Result<Vec<BotRequest>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let jobs: Vec<JobRow> = on_pool!(&self.writer, p => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT request_id, side, job_id, reused FROM bot_request_jobs WHERE request_id IN (",
            );
            let mut ids = q.separated(", ");
            for row in &rows {
                ids.push_bind(row.id);
            }
            q.push(") ORDER BY request_id, side DESC, job_id");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|row| {
                let mine = jobs
                    .iter()
                    .filter(|j| j.request_id == row.id)
                    .map(|j| {
                        let side = BotSide::parse(&j.side).ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "bot request {} has a job on side `{}`",
                                row.id, j.side
                            ))
                        })?;
                        Ok(BotJob {
                            side,
                            job_id: j.job_id,
                            reused: j.reused,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                row.into_request(mine)
            })
            .collect()
    }

    /// Records a queued request's baseline and jobs, submitting the new
    /// ones, in one transaction: the request becomes running. When its
    /// jobs were recorded already (an earlier pass, another coordinator),
    /// nothing is submitted and the request is returned as it is.
    /// Refused (a conflict) once the request is over.
    pub async fn submit_bot_jobs(
        &self,
        id: i64,
        base_sha: &str,
        sides: Vec<BotSideJobs>,
        now: UnixMillis,
    ) -> Result<BotJobsSubmitted> {
        let mut tx = self.writer.begin().await?;
        let claimed = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE bot_requests SET base_sha = $1, state = 'running', updated_at = $2
             WHERE id = $3 AND state = 'queued'",
        )
        .bind(base_sha)
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected()))?;
        if claimed == 0 {
            drop(tx);
            let request = self.bot_request(id).await?;
            if request.state.is_final() {
                return Err(StoreError::Conflict(format!(
                    "cannot record the jobs of bot request {id}: it is already {}",
                    request.state.as_str()
                )));
            }
            return Ok(BotJobsSubmitted {
                request,
                queued: Vec::new(),
            });
        }
        let mut queued = Vec::new();
        for side in sides {
            let mut rows: Vec<(i64, bool)> = side.reused.iter().map(|&j| (j, true)).collect();
            if let Some((spec, tasks)) = &side.submit {
                let (job_id, q) = submit_in(&mut tx, spec, tasks.clone(), now).await?;
                queued.extend(q);
                rows.push((job_id, false));
            }
            for (job_id, reused) in rows {
                on_tx!(&mut tx, c => sqlx::query(
                    "INSERT INTO bot_request_jobs (request_id, side, job_id, reused)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(side.side.as_str())
                .bind(job_id)
                .bind(reused)
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
            }
        }
        tx.commit().await?;
        Ok(BotJobsSubmitted {
            request: self.bot_request(id).await?,
            queued,
        })
    }

    /// Stored results of `sha` per host, from the bot's own earlier jobs of
    /// the same template (`request`'s bot, project and template digest):
    /// for each host (of `hosts`, or any when `None`), the newest passed
    /// such job with benchmark points at that sha on that host.
    pub async fn bot_reusable_jobs(
        &self,
        request: &BotRequest,
        sha: &str,
        hosts: Option<&[String]>,
    ) -> Result<Vec<ReusableJob>> {
        let Some(digest) = &request.template_digest else {
            return Ok(Vec::new());
        };
        if hosts.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        Ok(on_pool!(&self.reader, p => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT s.host AS host, MAX(p.job_id) AS job_id
                 FROM bench_points p
                 JOIN bench_series s ON s.id = p.series_id
                 JOIN jobs j ON j.id = p.job_id
                 WHERE p.sha = ",
            );
            q.push_bind(sha);
            q.push(
                " AND j.state = 'passed' AND p.job_id IN (
                   SELECT bj.job_id FROM bot_request_jobs bj
                   JOIN bot_requests r ON r.id = bj.request_id
                   WHERE r.bot = ",
            );
            q.push_bind(&request.bot);
            q.push(" AND r.project = ");
            q.push_bind(&request.project);
            q.push(" AND r.template_digest = ");
            q.push_bind(digest);
            q.push(")");
            if let Some(hosts) = hosts {
                q.push(" AND s.host IN (");
                let mut list = q.separated(", ");
                for h in hosts {
                    list.push_bind(h);
                }
                q.push(")");
            }
            q.push(" GROUP BY s.host ORDER BY s.host");
            q.build_query_as().fetch_all(p).await
        })?)
    }

    /// Counts one more confirmation round of a running request (before its
    /// tasks are queued again, so a crash loses a round rather than adds
    /// one). Refused (a conflict) unless the request is running.
    pub async fn bump_bot_request_rounds(&self, id: i64, now: UnixMillis) -> Result<BotRequest> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE bot_requests SET confirm_rounds = confirm_rounds + 1, updated_at = $1
             WHERE id = $2 AND state = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        let request = self.bot_request(id).await?;
        if done == 0 {
            return Err(StoreError::Conflict(format!(
                "cannot count a confirmation round of bot request {id}: it is {}",
                request.state.as_str()
            )));
        }
        Ok(request)
    }

    /// Records the note the bot posted for a request.
    pub async fn set_bot_request_note(
        &self,
        id: i64,
        note_id: i64,
        now: UnixMillis,
    ) -> Result<BotRequest> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE bot_requests SET note_id = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(note_id)
        .bind(now)
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(Missing::BotRequest(id)));
        }
        self.bot_request(id).await
    }

    /// Ends a request as reported or failed (with the reason). Returns
    /// `false` when it had already ended (nothing changed).
    pub async fn finish_bot_request(
        &self,
        id: i64,
        state: BotRequestState,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<bool> {
        if !state.is_final() {
            return Err(StoreError::Conflict(format!(
                "a bot request cannot end as `{}`",
                state.as_str()
            )));
        }
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE bot_requests SET state = $1, reason = $2, updated_at = $3
             WHERE id = $4 AND state IN ('queued', 'running')",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if done == 0 {
            // Unknown id is an error; a finished one is not.
            self.bot_request(id).await?;
        }
        Ok(done > 0)
    }
}
