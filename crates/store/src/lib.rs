//! The durable store: jobs, tasks, attempts, logs and agents, on embedded
//! SQLite or on PostgreSQL (`db` holds the two backends).
//!
//! Every state change the coordinator makes goes through one of the operations
//! here, each in one transaction, so a coordinator killed at any moment restarts
//! from a consistent state. Writes share one connection (SQLite has one writer
//! anyway, and this keeps `BEGIN IMMEDIATE` waits out of the read path); reads
//! use a small pool of their own.

mod agent_writes;
mod artifacts;
mod attempts;
mod batch;
mod batch_pg;
mod batch_sqlite;
mod bots;
mod cluster;
mod copy;
mod db;
mod events;
mod events_batch;
mod finished_jobs;
mod ops;
mod outbox;
#[cfg(test)]
mod pg_plans;
mod planner_stats;
mod progress;
mod progress_pg;
mod rdb_view;
mod resultsdb;
mod retry;
mod scratch;
mod security;
mod series;
mod views;

use std::path::Path;

pub use artifacts::{ArtifactSlot, NewArtifact, StoredArtifact};
pub use bots::{
    BotJob, BotJobsSubmitted, BotRequest, BotRequestState, BotSide, BotSideJobs, NewBotRequest,
    ReusableJob,
};
pub use cluster::{
    AgentPresence, CHANNEL, ClusterListener, ClusterNotice, CoordinatorRecord, NoticeKind,
    PresentAttempt,
};
pub use copy::{CopyError, CopyReport, TableCount, TableProgress, copy_store};
pub use db::{Backend, DatabaseUrl};
pub use events::{EventFilter, EventJob, Ingested, IngestedJob, NewEvent};
pub use finished_jobs::FinishedJob;
pub use ops::*;
pub use outbox::{ExportEvent, RESULTSDB_VIEW, SinkStatus};
pub use progress::{Progress, ProgressWriter};
pub use resultsdb::{
    DataFilter, NewRdbResult, RdbGroup, RdbQuery, RdbResult, RdbTestcase, job_group_uuid,
};
pub use retry::Retried;
pub use scratch::ScratchDatabase;
pub use security::{AuditEntry, StoredAgentSecret, StoredToken, StoredUser, TokenEntry, UserEntry};
pub use series::{
    Fingerprint, NewAck, SERIES_VIEW, SeriesFilter, SeriesKey, SeriesPoints, StoredAck,
    StoredPoint, StoredSeries,
};
pub use views::{AttemptContext, StoredAgent, summarize};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cause is part of the message (not a `source`), so a log line
    /// that prints the error alone still says what the database answered.
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("failed to encode or decode stored JSON")]
    Json(#[from] serde_json::Error),
    #[error("failed to create the data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    BadUrl(String),
    #[error("{0} not found")]
    NotFound(Missing),
    #[error("{0}")]
    Conflict(String),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

/// What a [`StoreError::NotFound`] looked for: the kind of record and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Job(i64),
    Task(i64),
    Attempt(i64),
    /// An attempt asked for by its number within a task.
    AttemptOfTask {
        number: i64,
        task: i64,
    },
    Artifact(i64),
    /// A ResultsDB result.
    Result(i64),
    /// A ResultsDB testcase, by name.
    Testcase(String),
    /// A ResultsDB group, by UUID.
    Group(String),
    User(String),
    /// An API token that exists and is not revoked, by name.
    ActiveToken(String),
    /// An agent secret that is not revoked, by host name.
    ActiveAgentSecret(String),
    /// A benchmark series.
    Series(i64),
    /// A trigger event of the events log.
    Event(i64),
    /// A merge-request bot's request.
    BotRequest(i64),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Job(id) => write!(f, "job {id}"),
            Missing::Task(id) => write!(f, "task {id}"),
            Missing::Attempt(id) => write!(f, "attempt {id}"),
            Missing::AttemptOfTask { number, task } => write!(f, "attempt {number} of task {task}"),
            Missing::Artifact(id) => write!(f, "artifact {id}"),
            Missing::Result(id) => write!(f, "result {id}"),
            Missing::Testcase(name) => write!(f, "testcase `{name}`"),
            Missing::Group(uuid) => write!(f, "group {uuid}"),
            Missing::User(name) => write!(f, "user `{name}`"),
            Missing::ActiveToken(name) => write!(f, "active token `{name}`"),
            Missing::ActiveAgentSecret(host) => write!(f, "active secret for host `{host}`"),
            Missing::Series(id) => write!(f, "series {id}"),
            Missing::Event(id) => write!(f, "event {id}"),
            Missing::BotRequest(id) => write!(f, "bot request {id}"),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Db(e)
    }
}

impl StoreError {
    /// A conflict with a concurrent writer that the database resolved by
    /// aborting this transaction (PostgreSQL deadlock or serialization
    /// failure, SQLite busy): running it again is the remedy.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                Some("40P01") | Some("40001") | Some("5") | Some("517")
            ),
            _ => false,
        }
    }
}

/// Runs `op` again (up to 8 times, with a short growing pause) while it
/// fails with a conflict that the database resolved by aborting it.
pub(crate) async fn retry_conflicts<T, F, Fut>(op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry_while(
        8,
        std::time::Duration::from_millis(2),
        StoreError::is_conflict,
        op,
    )
    .await
}

/// Runs `op` up to `runs` times while it fails with an error `transient`
/// accepts, pausing `pause`, then twice as long, … between runs; the last
/// run's answer is returned whatever it is.
pub(crate) async fn retry_while<T, F, Fut>(
    runs: u32,
    mut pause: std::time::Duration,
    transient: fn(&StoreError) -> bool,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    for _ in 1..runs {
        match op().await {
            Err(e) if transient(&e) => {
                tracing::debug!("transaction failed ({e}); running it again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    op().await
}

/// A new attempt's lease when nobody called [`Store::set_lease`].
const DEFAULT_LEASE_MS: i64 = 10_000;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: db::Pool,
    reader: db::Pool,
    progress: ProgressWriter,
    batcher: batch::Batcher,
    /// Commits agents' connections and retirements in batches, in order
    /// (`agent_writes`).
    agent_writes: agent_writes::AgentWriter,
    /// Commits trigger events in batches (`events_batch`).
    events: events_batch::EventBatcher,
    /// How long a new attempt's lease runs (ms); see [`Store::set_lease`].
    lease_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Keeps a young PostgreSQL database's planner statistics current
    /// (`planner_stats`) while any handle of this store lives.
    _planner: Option<std::sync::Arc<planner_stats::Keeper>>,
    /// Held while this process maps outbox events into the ResultsDB view
    /// (`outbox`): on SQLite an event is mapped in several transactions.
    materializing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (creating if needed) `DIR/testfleet.db` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        Store::connect(&DatabaseUrl::in_dir(data_dir)).await
    }

    /// Opens the store at `url` (SQLite file or PostgreSQL database) and
    /// brings its schema up to date.
    pub async fn connect(url: &DatabaseUrl) -> Result<Store> {
        let db::Pools { writer, reader } = db::connect(url).await?;
        let progress = ProgressWriter::spawn(writer.clone());
        let batcher = batch::Batcher::spawn(writer.clone());
        let events = events_batch::EventBatcher::spawn(writer.clone());
        let agent_writes = agent_writes::AgentWriter::spawn(writer.clone());
        let planner = match &reader {
            db::Pool::Postgres(pool) => {
                Some(std::sync::Arc::new(planner_stats::spawn(pool.clone())))
            }
            db::Pool::Sqlite(_) => None,
        };
        Ok(Store {
            _planner: planner,
            writer,
            reader,
            progress,
            batcher,
            agent_writes,
            events,
            lease_ms: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(DEFAULT_LEASE_MS)),
            materializing: std::sync::Arc::default(),
        })
    }

    /// Tells the store whether other coordinators write to its database
    /// now: on PostgreSQL it then commits claims and finishes with fewer
    /// concurrent writers (see `batch.rs`), so that the coordinators'
    /// transactions wait less on each other's row locks.
    pub fn set_shared(&self, shared: bool) {
        self.batcher.set_shared(shared);
    }

    /// Sets how long the lease of an attempt claimed from now on runs
    /// before a coordinator renews it (the coordinator's `lease_timeout`).
    pub fn set_lease(&self, lease: std::time::Duration) {
        let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.lease_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.writer.backend()
    }

    /// Where stage changes and work-log lines go (written in batches).
    pub fn progress(&self) -> &ProgressWriter {
        &self.progress
    }

    /// Writes pending progress and agent writes, then closes both pools,
    /// flushing the WAL.
    pub async fn close(&self) {
        self.progress.flush().await;
        self.agent_writes.flush().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}
