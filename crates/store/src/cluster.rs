//! What coordinators sharing one PostgreSQL database tell each other
//! (docs/scale-out.md): notices over `LISTEN/NOTIFY` on the channel
//! [`CHANNEL`], sent after the commits they announce and never inside a hot
//! transaction, and the `coordinators` table, where each one keeps a
//! heartbeat and the agents connected to it. The reads here let a
//! coordinator catch up with what it may have missed (a notice is lost
//! when its listener reconnects, and never reaches a coordinator behind
//! PgBouncer in transaction mode): the queued tasks, and which of the
//! attempts it holds were ended by another.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use testfleet_core::time_fmt::UnixMillis;

use crate::db::{Pool, on_pool};
use crate::ops::{QUEUED_COLUMNS, QueuedRow, RUNNING_COLUMNS};
use crate::{QueuedTask, Result, RunningAttempt, Store};

/// The `LISTEN/NOTIFY` channel of testfleet's coordinators.
pub const CHANNEL: &str = "testfleet";

/// Ids per statement of the IN-list reads.
const CHUNK: usize = 1000;

/// One coordinator's word to the others sharing its database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNotice {
    /// The coordinator that sent it (it ignores its own).
    pub from: String,
    #[serde(flatten)]
    pub what: NoticeKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoticeKind {
    /// Tasks of this job were queued (submitted, retried, re-triggered).
    Queued { job_id: i64 },
    /// This job was cancelled: its agents are to stop.
    Cancelled { job_id: i64 },
    /// The sender's agents changed: its presence row is new.
    Fleet,
    /// Jobs or tasks changed: browsers watching them refresh. `jobs` empty
    /// means "some job": too many changed to name them.
    Live { jobs: Vec<i64> },
    /// The sender claimed these tasks: the others drop them from their
    /// index rather than claim them in vain until their next poll. (One of
    /// them queued again before this notice arrives leaves an index until
    /// that index's next poll; the sender still has it.)
    Claimed { tasks: Vec<i64> },
}

/// An agent as the coordinator it is connected to shows it to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPresence {
    pub hostname: String,
    pub status: Option<String>,
    pub detail: Option<String>,
    pub load: Option<f64>,
    pub last_connected: Option<UnixMillis>,
    pub running: Option<PresentAttempt>,
}

/// The attempt an agent runs, in [`AgentPresence`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresentAttempt {
    pub job_id: i64,
    pub task_id: i64,
    pub attempt_id: i64,
    pub integration_id: String,
}

/// A coordinator of the database, as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorRecord {
    pub id: String,
    pub started_at: UnixMillis,
    pub heartbeat_at: UnixMillis,
    pub agents: Vec<AgentPresence>,
}

#[derive(sqlx::FromRow)]
struct CoordinatorRow {
    id: String,
    started_at: i64,
    heartbeat_at: i64,
    agents: String,
}

/// Notices of the other coordinators, as they arrive (PostgreSQL only).
pub struct ClusterListener {
    listener: PgListener,
}

impl std::fmt::Debug for ClusterListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterListener").finish_non_exhaustive()
    }
}

impl ClusterListener {
    /// The next notice. `Ok(None)`: the connection was lost and is made
    /// again on the next call; notices sent meanwhile are gone, so the
    /// caller catches up from the tables. A payload that is not a notice
    /// (another program on the channel) is skipped.
    pub async fn recv(&mut self) -> Result<Option<ClusterNotice>> {
        loop {
            let Some(n) = self.listener.try_recv().await? else {
                return Ok(None);
            };
            match serde_json::from_str(n.payload()) {
                Ok(notice) => return Ok(Some(notice)),
                Err(e) => tracing::debug!("ignoring a notice on `{CHANNEL}` that is not ours: {e}"),
            }
        }
    }
}

impl Store {
    /// Listens for the other coordinators' notices; `None` on SQLite, which
    /// one coordinator has to itself.
    pub async fn cluster_listener(&self) -> Result<Option<ClusterListener>> {
        let Pool::Postgres(pool) = &self.reader else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(ClusterListener { listener }))
    }

    /// Tells the other coordinators (nothing on SQLite). Its own statement,
    /// after the commit it announces: a `NOTIFY` inside a transaction would
    /// serialize every commit on PostgreSQL's notify queue lock.
    pub async fn notify(&self, notice: &ClusterNotice) -> Result<()> {
        let Pool::Postgres(pool) = &self.reader else {
            return Ok(());
        };
        let payload = serde_json::to_string(notice)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Records this coordinator's heartbeat and, when `agents` is given,
    /// the agents connected to it (else the stored list stays).
    pub async fn heartbeat(
        &self,
        id: &str,
        started_at: UnixMillis,
        now: UnixMillis,
        agents: Option<&[AgentPresence]>,
    ) -> Result<()> {
        let agents = agents.map(serde_json::to_string).transpose()?;
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO coordinators (id, started_at, heartbeat_at, agents)
             VALUES ($1, $2, $3, COALESCE($4, '[]'))
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                 agents = COALESCE($4, coordinators.agents)",
        )
        .bind(id)
        .bind(started_at)
        .bind(now)
        .bind(agents)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Removes a coordinator's row (it shuts down), and rows whose heartbeat
    /// is older than `stale_before` (coordinators that went away).
    pub async fn forget_coordinators(&self, id: &str, stale_before: UnixMillis) -> Result<u64> {
        Ok(on_pool!(&self.writer, p => sqlx::query(
            "DELETE FROM coordinators WHERE id = $1 OR heartbeat_at < $2",
        )
        .bind(id)
        .bind(stale_before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// The coordinators whose heartbeat is not older than `since`.
    pub async fn coordinators(&self, since: UnixMillis) -> Result<Vec<CoordinatorRecord>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, CoordinatorRow>(
            "SELECT id, started_at, heartbeat_at, agents FROM coordinators
             WHERE heartbeat_at >= $1 ORDER BY id",
        )
        .bind(since)
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(CoordinatorRecord {
                    agents: serde_json::from_str(&r.agents)?,
                    id: r.id,
                    started_at: r.started_at,
                    heartbeat_at: r.heartbeat_at,
                })
            })
            .collect()
    }

    /// The ids of every queued task.
    pub async fn queued_task_ids(&self) -> Result<Vec<i64>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT id FROM tasks WHERE state = 'queued' ORDER BY id",
        )
        .fetch_all(p)
        .await)?)
    }

    /// The queued tasks of a job.
    pub async fn queued_tasks_of_job(&self, job_id: i64) -> Result<Vec<QueuedTask>> {
        let sql = format!(
            "SELECT {QUEUED_COLUMNS} WHERE t.job_id = $1 AND t.state = 'queued' ORDER BY t.id"
        );
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(QueuedRow::into_task).collect()
    }

    /// Those of `ids` that are queued tasks, in full. Read by key:
    /// `(state = 'queued') IS TRUE` keeps PostgreSQL's planner off the
    /// queue's partial index (`batch_pg::claim_rows` says why).
    pub async fn queued_tasks_in(&self, ids: &[i64]) -> Result<Vec<QueuedTask>> {
        let mut tasks = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let rows = on_pool!(&self.reader, p => {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {QUEUED_COLUMNS} WHERE (t.state = 'queued') IS TRUE AND t.id IN ("
                ));
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(") ORDER BY t.id");
                q.build_query_as::<QueuedRow>().fetch_all(p).await
            })?;
            for row in rows {
                tasks.push(row.into_task()?);
            }
        }
        Ok(tasks)
    }

    /// Those of `ids` that are queued tasks (read by key, as
    /// [`Store::queued_tasks_in`]).
    pub async fn still_queued(&self, ids: &[i64]) -> Result<Vec<i64>> {
        self.ids_where(
            "SELECT id FROM tasks WHERE (state = 'queued') IS TRUE AND id IN (",
            ids,
        )
        .await
    }

    /// Those of the attempts `ids` that have ended (another coordinator
    /// ended them: a cancel, an expired lease).
    pub async fn ended_attempts(&self, ids: &[i64]) -> Result<Vec<i64>> {
        self.ids_where(
            "SELECT id FROM attempts WHERE outcome IS NOT NULL AND id IN (",
            ids,
        )
        .await
    }

    /// Attempt `attempt_id` if it is open and `agent`'s: an agent that moved
    /// from another coordinator reports it, and this one takes it over.
    pub async fn open_attempt(
        &self,
        attempt_id: i64,
        agent: &str,
    ) -> Result<Option<RunningAttempt>> {
        // The agent is compared here, not in SQL: with `a.agent = $2` in
        // the statement, PostgreSQL's generic plan read the attempt through
        // the partial index of open attempts by agent (whose entries of
        // ended attempts stay until a vacuum) and filtered on the id,
        // instead of the primary key; the coordinator asks this about once
        // per run.
        let sql = format!("SELECT {RUNNING_COLUMNS} WHERE a.id = $1 AND a.outcome IS NULL");
        let open = on_pool!(&self.reader, p => sqlx::query_as::<_, RunningAttempt>(sqlx::AssertSqlSafe(sql))
                .bind(attempt_id)
                .fetch_optional(p)
                .await)?;
        Ok(open.filter(|run| run.agent == agent))
    }

    /// `head` followed by the ids, in chunks, and `)`: the ids it returns.
    async fn ids_where(&self, head: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let part: Vec<i64> = on_pool!(&self.reader, p => {
                let mut q = sqlx::QueryBuilder::new(head);
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build_query_scalar().fetch_all(p).await
            })?;
            found.extend(part);
        }
        Ok(found)
    }
}
