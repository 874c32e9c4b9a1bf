//! Merge-request bots' state: one row per (bot, project, request, head sha)
//! taken up, so a request is never processed twice, across restarts.
//!
//! [`Store::begin_bot_request`] claims a request (the unique key makes a
//! second claim, by this or another coordinator, find the first);
//! [`Store::set_bot_request_jobs`] and [`Store::set_bot_request_note`]
//! record what the bot did; [`Store::finish_bot_request`] ends it, once.

use testfleet_core::time_fmt::UnixMillis;

use crate::db::on_pool;
use crate::{Missing, Result, Store, StoreError};

/// Where a bot's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotRequestState {
    /// Taken up; no job submitted yet.
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
    pub head_job_id: Option<i64>,
    pub base_job_id: Option<i64>,
    /// The note the bot posted (and edits).
    pub note_id: Option<i64>,
    /// Why it failed.
    pub reason: Option<String>,
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
    head_job_id: Option<i64>,
    base_job_id: Option<i64>,
    note_id: Option<i64>,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl Row {
    fn into_request(self) -> Result<BotRequest> {
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
            head_job_id: self.head_job_id,
            base_job_id: self.base_job_id,
            note_id: self.note_id,
            reason: self.reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, bot, project, iid, head_sha, base_sha, state, head_job_id, \
                       base_job_id, note_id, reason, created_at, updated_at";

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
            "INSERT INTO bot_requests (bot, project, iid, head_sha, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'queued', $5, $5)
             ON CONFLICT (bot, project, iid, head_sha) DO NOTHING RETURNING id",
        )
        .bind(&new.bot)
        .bind(&new.project)
        .bind(new.iid)
        .bind(&new.head_sha)
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
        row.map(Row::into_request).transpose()
    }

    /// One request by id.
    pub async fn bot_request(&self, id: i64) -> Result<BotRequest> {
        let sql = format!("SELECT {COLUMNS} FROM bot_requests WHERE id = $1");
        let row: Option<Row> = on_pool!(&self.writer, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?;
        row.ok_or(StoreError::NotFound(Missing::BotRequest(id)))?
            .into_request()
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
        rows.into_iter().map(Row::into_request).collect()
    }

    /// Records a request's baseline and jobs; it becomes running. Refused
    /// (a conflict) once the request is over.
    pub async fn set_bot_request_jobs(
        &self,
        id: i64,
        base_sha: &str,
        head_job_id: i64,
        base_job_id: i64,
        now: UnixMillis,
    ) -> Result<BotRequest> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE bot_requests
             SET base_sha = $1, head_job_id = $2, base_job_id = $3, state = 'running', updated_at = $4
             WHERE id = $5 AND state IN ('queued', 'running')",
        )
        .bind(base_sha)
        .bind(head_job_id)
        .bind(base_job_id)
        .bind(now)
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        self.changed_or_conflict(id, done, "record the jobs of")
            .await
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

    async fn changed_or_conflict(&self, id: i64, done: u64, what: &str) -> Result<BotRequest> {
        let request = self.bot_request(id).await?;
        if done == 0 {
            return Err(StoreError::Conflict(format!(
                "cannot {what} bot request {id}: it is already {}",
                request.state.as_str()
            )));
        }
        Ok(request)
    }
}
