//! The durable store: jobs, tasks, attempts, logs and agents on embedded SQLite.
//!
//! Every state change the coordinator makes goes through one of the operations
//! here, each in one transaction, so a coordinator killed at any moment restarts
//! from a consistent state. Writes share one connection (SQLite has one writer
//! anyway, and this keeps `BEGIN IMMEDIATE` waits out of the read path); reads
//! use a small pool of their own.

mod artifacts;
mod batch;
mod ops;
mod outbox;
mod progress;
mod resultsdb;
mod security;
mod views;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use artifacts::{ArtifactSlot, NewArtifact, StoredArtifact};
pub use ops::*;
pub use outbox::{ExportEvent, SinkStatus};
pub use progress::{Progress, ProgressWriter};
pub use resultsdb::{
    DataFilter, NewRdbResult, RDB_OUTCOMES, RdbGroup, RdbQuery, RdbResult, RdbTestcase,
    job_group_uuid,
};
pub use security::{StoredAgentSecret, StoredToken, StoredUser};
pub use views::{AttemptContext, StoredAgent, summarize};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("failed to migrate the database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("failed to encode or decode stored JSON")]
    Json(#[from] serde_json::Error),
    #[error("failed to create the data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    progress: ProgressWriter,
    batcher: batch::Batcher,
}

impl Store {
    /// Opens (creating if needed) `DIR/testfleet.db` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("testfleet.db");
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a killed process (only a power loss
            // can drop the last transactions), and keeps commits fast.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        let progress = ProgressWriter::spawn(writer.clone());
        let batcher = batch::Batcher::spawn(writer.clone());
        Ok(Store {
            writer,
            reader,
            progress,
            batcher,
        })
    }

    /// Where stage changes and work-log lines go (written in batches).
    pub fn progress(&self) -> &ProgressWriter {
        &self.progress
    }

    /// Writes pending progress, then closes both pools, flushing the WAL.
    pub async fn close(&self) {
        self.progress.flush().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}
