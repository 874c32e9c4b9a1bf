//! The two backends behind one store: embedded SQLite and PostgreSQL.
//!
//! Each operation of the store is written once, in SQL both engines accept
//! (`$1`-style parameters, `ON CONFLICT`, `RETURNING`, `CASE` instead of
//! two-argument `MAX`), and runs on one of two concrete sqlx pools — no
//! `Any` driver: [`on_pool!`] and [`on_tx!`] expand a body once per backend,
//! so every query is type-checked against both drivers. The few statements
//! that differ (JSON functions, string aggregation, IN-lists) ask
//! [`Backend`] for their text.
//!
//! Integers are `BIGINT` on PostgreSQL and decode as `i64` on both; flags are
//! `BOOLEAN` there and `INTEGER` 0/1 in SQLite, and decode as `bool` on both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::{Result, StoreError};

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where a store lives, from `--database`, the config file or
/// `TESTFLEET_DATABASE`: `sqlite://PATH` or `postgres://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file (created when missing).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DatabaseUrl {
    /// The default store: `DIR/testfleet.db`.
    pub fn in_dir(dir: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(dir.join("testfleet.db"))
    }

    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The URL without its password, for logs and messages.
impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("<redacted>"));
                    }
                    write!(f, "{u}")
                }
                Err(_) => f.write_str("postgres://<unparsable>"),
            },
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<DatabaseUrl> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::BadUrl(
                    "sqlite:// needs a file path, for example sqlite:///var/lib/testfleet/testfleet.db"
                        .into(),
                ));
            }
            return Ok(DatabaseUrl::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            PgConnectOptions::from_str(s)
                .map_err(|e| StoreError::BadUrl(format!("invalid PostgreSQL URL: {e}")))?;
            return Ok(DatabaseUrl::Postgres(s.to_owned()));
        }
        Err(StoreError::BadUrl(format!(
            "unsupported database URL `{}`: use sqlite://PATH or postgres://USER@HOST:PORT/DB",
            s.split_once("://").map_or(s, |(scheme, _)| scheme)
        )))
    }
}

/// A connection pool of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction of one backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$p` bound to the concrete pool (`&SqlitePool` or
/// `&PgPool`); the body is compiled once per backend.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`; reborrow with `&mut *$c`
/// to use it more than once).
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {on_pool, on_tx};

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// A transaction whose commit on PostgreSQL does not wait for its WAL
    /// to reach the disk (`synchronous_commit = off`, in the same round trip
    /// as `BEGIN`). A server crash may lose the last such commits (at most
    /// three WAL-writer delays, 600 ms by default), never a later commit's
    /// before them: only for writes that decide nothing (`progress`). On
    /// SQLite, a plain transaction.
    pub(crate) async fn begin_unhurried(&self) -> Result<Tx> {
        Ok(match self {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Tx::Postgres(
                p.begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                    .await?,
            ),
        })
    }

    pub(crate) async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    pub(crate) fn is_closed(&self) -> bool {
        on_pool!(self, p => p.is_closed())
    }
}

impl Tx {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    /// The transaction's connection on PostgreSQL, for statements only
    /// PostgreSQL runs (arrays); `None` on SQLite.
    pub(crate) fn postgres(&mut self) -> Option<&mut sqlx::postgres::PgConnection> {
        match self {
            Tx::Sqlite(_) => None,
            Tx::Postgres(t) => Some(&mut **t),
        }
    }

    /// The transaction's connection on SQLite, for statements only SQLite
    /// runs (`json_each`); `None` on PostgreSQL.
    pub(crate) fn sqlite(&mut self) -> Option<&mut sqlx::sqlite::SqliteConnection> {
        match self {
            Tx::Sqlite(t) => Some(&mut **t),
            Tx::Postgres(_) => None,
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// The pools a store uses: `writer` for changes, `reader` for views. On
/// SQLite the writer is one connection (SQLite has one writer anyway, and
/// this keeps `BEGIN IMMEDIATE` waits out of the read path) and readers are
/// read-only; on PostgreSQL both are ordinary pools of the same server.
pub(crate) struct Pools {
    pub writer: Pool,
    pub reader: Pool,
}

/// A PostgreSQL pool. Its connections keep PostgreSQL's default plan
/// cache mode: a prepared statement is planned for its parameters a few
/// times, then runs one generic plan, remade whenever the tables'
/// statistics change. `planner_stats` keeps those statistics current while
/// a young database grows (plans made on its empty tables scanned
/// `task_stats` and `jobs` whole; docs/performance.md).
fn pg_pool() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
}

/// Opens the pools and brings the schema up to date (versioned migrations
/// per backend, `migrations/sqlite` and `migrations/postgres`).
pub(crate) async fn connect(url: &DatabaseUrl) -> Result<Pools> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let options = SqliteConnectOptions::from_str("sqlite:")?
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL in WAL mode survives a killed process (only a power
                // loss can drop the last transactions), and keeps commits fast.
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
            Ok(Pools {
                writer: Pool::Sqlite(writer),
                reader: Pool::Sqlite(reader),
            })
        }
        DatabaseUrl::Postgres(url) => {
            let options = PgConnectOptions::from_str(url)?;
            // One plain connection first: a server that is down or refuses
            // us is reported at once with its cause, not after the pool's
            // acquire timeout.
            let probe =
                <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&options).await?;
            sqlx::Connection::close(probe).await?;
            let writer = pg_pool().connect_with(options.clone()).await?;
            // Several coordinators may start at once: the migrator takes an
            // advisory lock, so one migrates and the others wait.
            sqlx::migrate!("./migrations/postgres").run(&writer).await?;
            let reader = pg_pool().connect_with(options).await?;
            Ok(Pools {
                writer: Pool::Postgres(writer),
                reader: Pool::Postgres(reader),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the unhurried transaction commits without waiting for the disk;
    /// the setting ends with it.
    #[tokio::test]
    async fn an_unhurried_transaction_alone_skips_the_wait_for_the_disk() {
        let Some(db) = testfleet_testkit::postgres::ScratchPg::create().await else {
            return;
        };
        let pool = Pool::Postgres(db.pool().await);
        let setting = "SELECT current_setting('synchronous_commit')";
        let mut tx = pool.begin_unhurried().await.unwrap();
        let inside: String =
            on_tx!(&mut tx, c => sqlx::query_scalar(setting).fetch_one(c).await).unwrap();
        tx.commit().await.unwrap();
        assert_eq!(inside, "off");
        let mut tx = pool.begin().await.unwrap();
        let plain: String =
            on_tx!(&mut tx, c => sqlx::query_scalar(setting).fetch_one(c).await).unwrap();
        tx.commit().await.unwrap();
        assert_eq!(plain, "on");
        pool.close().await;
    }
}

/// The steps of SQLite's `EXPLAIN QUERY PLAN` of `sql` (one `$1`, bound to
/// `arg`) on a fresh store: the store's tests check their plans with it.
#[cfg(test)]
pub(crate) async fn sqlite_plan(sql: &str, arg: i64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::Store::open(dir.path()).await.unwrap();
    let Pool::Sqlite(pool) = &store.reader else {
        panic!("Store::open opens SQLite");
    };
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .bind(arg)
            .fetch_all(pool)
            .await
            .unwrap();
    store.close().await;
    plan.into_iter().map(|(.., detail)| detail).collect()
}

#[cfg(test)]
mod sqlite_layout_tests {
    use super::*;

    /// Migration 0025 rebuilds `jobs` with the spec last: a store made
    /// before it keeps its jobs, their ids and what names them, and its
    /// foreign keys are enforced again afterwards.
    #[tokio::test]
    async fn sqlite_moves_a_jobs_spec_last_keeping_its_rows_and_references() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::from_str("sqlite:")
            .unwrap()
            .filename(dir.path().join("old.db"))
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.run_to(24, &pool).await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, name, queue, priority, spec, state, created_at, tasks_passed)
             VALUES (7, 'old', 'linux', 5, '{\"tasks\":[]}', 'passed', 1000, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO tasks (id, job_id, name, spec, priority, state, queued_at, updated_at)
             VALUES (3, 7, 't', '{}', 0, 'passed', 1000, 1000)",
        )
        .execute(&pool)
        .await
        .unwrap();

        migrator.run(&pool).await.unwrap();

        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('jobs') ORDER BY cid")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            columns.last().map(String::as_str),
            Some("spec"),
            "{columns:?}"
        );
        assert_eq!(columns.len(), 24, "{columns:?}");
        let job: (String, String, String, i64, Option<i64>) = sqlx::query_as(
            "SELECT name, spec, state, created_at, tasks_passed FROM jobs WHERE id = 7",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            job,
            (
                "old".into(),
                "{\"tasks\":[]}".into(),
                "passed".into(),
                1000,
                Some(1)
            )
        );
        let dangling: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(dangling.is_empty(), "{dangling:?}");
        let refused = sqlx::query(
            "INSERT INTO tasks (job_id, name, spec, priority, state, queued_at, updated_at)
             VALUES (99, 't', '{}', 0, 'queued', 1000, 1000)",
        )
        .execute(&pool)
        .await;
        assert!(
            refused.is_err(),
            "foreign keys are enforced again after the migration"
        );
        let index: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'jobs_by_finished_at'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(index, 1);
        pool.close().await;
    }
}
