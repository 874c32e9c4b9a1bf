//! `testfleet store copy`: a whole store moved from one database into a new,
//! empty one (SQLite → PostgreSQL is the usual way; every direction works),
//! ids kept.
//!
//! The copier knows the schema as [`TABLES`]: every table in foreign-key
//! order, every column with its kind. Before anything is written both
//! databases are checked against that list, so a table or column that a later
//! migration adds makes the copy fail loudly instead of being left behind.
//! The source is read in one snapshot (one read transaction, page by page
//! along the primary key); the target is written in one transaction, so a
//! copy that fails leaves it empty. Values pass through typed [`Cell`]s: an
//! SQLite 0/1 flag becomes a PostgreSQL `BOOLEAN` and back, `INTEGER` ↔
//! `BIGINT`, `REAL` ↔ `DOUBLE PRECISION`, `TEXT` ↔ `TEXT`.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::query_builder::Separated;
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use crate::db::{Backend, Pool, Tx, on_pool, on_tx};
use crate::{DatabaseUrl, Store, StoreError};

/// How a column's values are decoded from the source and bound to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `INTEGER` in SQLite, `BIGINT` in PostgreSQL.
    Int,
    /// `INTEGER` 0/1 in SQLite, `BOOLEAN` in PostgreSQL.
    Bool,
    /// `REAL` in SQLite, `DOUBLE PRECISION` in PostgreSQL.
    Real,
    Text,
}

impl Kind {
    /// Whether a declared column type (SQLite's declaration, PostgreSQL's
    /// `information_schema.columns.data_type`) holds this kind.
    fn accepts(self, declared: &str) -> bool {
        let declared = declared.to_ascii_lowercase();
        match self {
            Kind::Int => declared == "integer" || declared == "bigint",
            Kind::Bool => declared == "integer" || declared == "boolean",
            Kind::Real => declared == "real" || declared == "double precision",
            Kind::Text => declared == "text",
        }
    }
}

#[derive(Debug)]
struct Column {
    name: &'static str,
    kind: Kind,
    nullable: bool,
}

const fn int(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        nullable: false,
    }
}

const fn flag(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Bool,
        nullable: false,
    }
}

const fn real(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Real,
        nullable: false,
    }
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable: false,
    }
}

/// The column, allowing NULL.
const fn null(c: Column) -> Column {
    Column {
        nullable: true,
        ..c
    }
}

#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: &'static [Column],
    /// The primary key: rows are read in its order, page by page after the
    /// last key read.
    key: &'static [&'static str],
    /// SQLite has no `id` column here: `id` is its rowid (rdb_result_groups
    /// and rdb_result_data, whose PostgreSQL `id` keeps the insertion order
    /// that the rowid keeps in SQLite). Copying the rowid as `id` and back
    /// keeps that order.
    sqlite_rowid_id: bool,
}

/// Every table of the schema (`migrations/sqlite`, `migrations/postgres`),
/// parents before the tables that reference them.
static TABLES: &[Table] = &[
    Table {
        name: "jobs",
        columns: &[
            int("id"),
            text("name"),
            text("queue"),
            int("priority"),
            text("spec"),
            text("state"),
            int("created_at"),
            null(int("finished_at")),
            null(text("integration_id")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "tasks",
        columns: &[
            int("id"),
            int("job_id"),
            text("name"),
            text("spec"),
            int("priority"),
            null(text("pinned_agent")),
            text("state"),
            null(text("stage")),
            null(text("outcome")),
            null(text("detail_message")),
            null(text("agent")),
            null(int("current_attempt")),
            int("attempts"),
            int("test_failures"),
            int("infra_failures"),
            flag("flaky"),
            null(text("last_agent")),
            int("queued_at"),
            int("updated_at"),
            text("task_key"),
            int("retriggers"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "attempts",
        columns: &[
            int("id"),
            int("task_id"),
            int("number"),
            text("agent"),
            null(text("stage")),
            null(text("outcome")),
            null(text("reason")),
            null(text("reason_data")),
            int("started_at"),
            null(int("finished_at")),
            null(int("last_update_ts")),
            null(text("results")),
            null(int("lease_expires_at")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "log_chunks",
        columns: &[int("attempt_id"), int("offset"), text("data")],
        key: &["attempt_id", "offset"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "agents",
        columns: &[
            text("hostname"),
            text("labels"),
            int("first_seen"),
            int("last_connected"),
            flag("retired"),
            null(text("status")),
            null(text("machine")),
        ],
        key: &["hostname"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "work_log",
        columns: &[
            int("id"),
            text("hostname"),
            null(int("attempt_id")),
            null(text("integration_id")),
            text("status"),
            null(text("detail")),
            int("at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "task_stats",
        columns: &[
            text("task_key"),
            int("runs"),
            real("mean_ms"),
            real("p95_ms"),
            text("recent"),
        ],
        key: &["task_key"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "export_events",
        columns: &[int("id"), int("attempt_id"), int("created_at")],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "export_sinks",
        columns: &[
            text("name"),
            int("cursor"),
            int("delivered"),
            int("dropped"),
            int("failures"),
            null(text("last_error")),
            null(int("last_error_at")),
            null(int("last_success_at")),
        ],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_testcases",
        columns: &[text("name"), null(text("ref_url"))],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_groups",
        columns: &[
            int("id"),
            text("uuid"),
            null(text("description")),
            null(text("ref_url")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_results",
        columns: &[
            int("id"),
            text("testcase"),
            text("outcome"),
            null(text("note")),
            null(text("ref_url")),
            int("submit_time"),
            null(int("attempt_id")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "rdb_result_groups",
        columns: &[int("id"), int("result_id"), text("group_uuid")],
        key: &["id"],
        sqlite_rowid_id: true,
    },
    Table {
        name: "rdb_result_data",
        columns: &[int("id"), int("result_id"), text("key"), text("value")],
        key: &["id"],
        sqlite_rowid_id: true,
    },
    Table {
        name: "users",
        columns: &[
            text("name"),
            text("password_hash"),
            flag("admin"),
            int("created_at"),
            null(text("digest_realm")),
            null(text("digest_ha1_md5")),
            null(text("digest_ha1_sha256")),
        ],
        key: &["name"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "api_tokens",
        columns: &[
            int("id"),
            text("name"),
            text("token_hash"),
            flag("admin"),
            int("created_at"),
            null(int("revoked_at")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "agent_secrets",
        columns: &[
            text("hostname"),
            text("secret_hash"),
            int("created_at"),
            null(int("revoked_at")),
        ],
        key: &["hostname"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "audit_log",
        columns: &[
            int("id"),
            int("at"),
            text("actor"),
            null(text("peer")),
            text("action"),
            null(text("target")),
            null(text("detail")),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
    Table {
        name: "artifacts",
        columns: &[
            int("id"),
            int("attempt_id"),
            int("task_id"),
            int("job_id"),
            text("path"),
            text("kind"),
            text("digest"),
            int("size"),
            int("created_at"),
        ],
        key: &["id"],
        sqlite_rowid_id: false,
    },
];

/// Tables that belong to the database's machinery, not to the store: each
/// database keeps its own migration history.
fn is_machinery(table: &str) -> bool {
    table == "_sqlx_migrations" || table.starts_with("sqlite_")
}

/// Most parameters bound in one statement, under SQLite's 32766 and
/// PostgreSQL's 65535.
const MAX_PARAMS: usize = 30_000;
/// Most rows read (and then written in one INSERT) at once.
const MAX_PAGE_ROWS: usize = 1000;
/// The first page of a table; later pages are sized from the rows seen so
/// far, so pages of large rows (logs, results) stay near [`PAGE_BYTES`].
const FIRST_PAGE_ROWS: usize = 64;
const PAGE_BYTES: usize = 8 << 20;

impl Table {
    fn column_sql(&self, column: &Column, backend: Backend) -> String {
        if self.sqlite_rowid_id && column.name == "id" && backend == Backend::Sqlite {
            "rowid".to_owned()
        } else {
            format!("\"{}\"", column.name)
        }
    }

    fn column_list(&self, backend: Backend) -> String {
        self.columns
            .iter()
            .map(|c| self.column_sql(c, backend))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.key.iter().map(|k| {
            self.columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == *k)
                .expect("every key column is a column of its table")
        })
    }

    fn key_list(&self, backend: Backend) -> String {
        self.key_columns()
            .map(|(_, c)| self.column_sql(c, backend))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns a database must have for this table (SQLite does not
    /// list a rowid among its columns).
    fn stored_columns(&self, backend: Backend) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(move |c| {
            !(self.sqlite_rowid_id && c.name == "id" && backend == Backend::Sqlite)
        })
    }

    fn max_page_rows(&self) -> usize {
        (MAX_PARAMS / self.columns.len()).clamp(1, MAX_PAGE_ROWS)
    }
}

/// One value on its way from the source to the target.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(Option<i64>),
    Bool(Option<bool>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl Cell {
    /// Roughly what the value weighs, to size pages.
    fn weight(&self) -> usize {
        match self {
            Cell::Text(Some(s)) => s.len() + 8,
            _ => 8,
        }
    }
}

/// Decodes one source row by the table's column kinds.
fn decode_row<'r, R>(row: &'r R, columns: &[Column]) -> Result<Vec<Cell>, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<bool>: Decode<'r, R::Database> + Type<R::Database>,
    Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.kind {
                Kind::Int => Cell::Int(row.try_get(i)?),
                Kind::Bool => Cell::Bool(row.try_get(i)?),
                Kind::Real => Cell::Real(row.try_get(i)?),
                Kind::Text => Cell::Text(row.try_get(i)?),
            })
        })
        .collect()
}

/// Binds one value as the target's type of its kind.
fn push_cell<DB>(list: &mut Separated<'_, DB, &'static str>, cell: Cell)
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    match cell {
        Cell::Int(v) => list.push_bind(v),
        Cell::Bool(v) => list.push_bind(v),
        Cell::Real(v) => list.push_bind(v),
        Cell::Text(v) => list.push_bind(v),
    };
}

/// `SELECT columns FROM table [WHERE (key) > (last key)] ORDER BY key LIMIT rows`.
fn select_page<DB>(
    table: &Table,
    backend: Backend,
    after: Option<Vec<Cell>>,
    rows: usize,
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let key = table.key_list(backend);
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM \"{}\"",
        table.column_list(backend),
        table.name
    ));
    if let Some(after) = after {
        // A row-value comparison: both engines walk the primary key's index.
        q.push(format!(" WHERE ({key}) > ("));
        let mut list = q.separated(", ");
        for cell in after {
            push_cell(&mut list, cell);
        }
        q.push(")");
    }
    q.push(format!(" ORDER BY {key} LIMIT {rows}"));
    q
}

/// One multi-row `INSERT` of `rows` (non-empty).
fn insert_rows<DB>(table: &Table, backend: Backend, rows: Vec<Vec<Cell>>) -> QueryBuilder<DB>
where
    DB: Database,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO \"{}\" ({}) ",
        table.name,
        table.column_list(backend)
    ));
    q.push_values(rows, |mut list, row| {
        for cell in row {
            push_cell(&mut list, cell);
        }
    });
    q
}

/// Rows of one table: copied so far of how many in the source's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableProgress {
    pub table: &'static str,
    pub copied: u64,
    pub total: u64,
}

/// The rows of one table, counted in the target after the copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: u64,
}

/// What [`copy_store`] copied, table by table in copy order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
}

impl CopyReport {
    /// Rows copied in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why a copy failed. Nothing was written to the target (its schema may
/// have been brought up to date).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source and the target are the same database ({0})")]
    SameDatabase(String),
    #[error("the source {0} does not exist")]
    NoSource(String),
    #[error("failed to open the {side} {url}")]
    Open {
        side: &'static str,
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the target {url} is not empty: table `{table}` has rows; copy into a new, empty database"
    )]
    NotEmpty { url: String, table: &'static str },
    #[error(
        "the {side} database has a table `{table}` that this version of testfleet does not know; refusing to copy part of the store"
    )]
    UnknownTable { side: &'static str, table: String },
    #[error("the {side} database has no table `{table}`")]
    MissingTable {
        side: &'static str,
        table: &'static str,
    },
    #[error(
        "table `{table}` of the {side} database is not the schema this version of testfleet knows: {detail}"
    )]
    Columns {
        side: &'static str,
        table: &'static str,
        detail: String,
    },
    #[error("table `{table}` references `{references}`, which the copier copies later")]
    Order { table: String, references: String },
    #[error("failed to copy table `{table}`")]
    Table {
        table: &'static str,
        #[source]
        source: StoreError,
    },
    #[error(
        "table `{table}`: the source has {source_rows} rows but the target {target_rows} after the copy"
    )]
    Count {
        table: &'static str,
        source_rows: u64,
        target_rows: u64,
    },
    #[error("failed to read the {side} database")]
    Read {
        side: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("failed to move the target's id sequences past the copied ids")]
    Sequences(#[source] StoreError),
    #[error("failed to commit the copy")]
    Commit(#[source] StoreError),
}

/// Copies every table of the store at `from` into the store at `to`, keeping
/// ids. The target is opened through [`Store::connect`] (so its schema is
/// migrated first) and must be empty; a SQLite source must exist. The source
/// should not be written meanwhile (stop its coordinator): the copy reads one
/// snapshot, and anything written after it stays behind.
///
/// `progress` is called when a table starts (`copied` 0) and after each page
/// of rows. Row counts are checked in the target before the commit; on
/// PostgreSQL every identity sequence is moved past the copied ids.
pub async fn copy_store(
    from: &DatabaseUrl,
    to: &DatabaseUrl,
    mut progress: impl FnMut(TableProgress),
) -> Result<CopyReport, CopyError> {
    if from == to {
        return Err(CopyError::SameDatabase(from.to_string()));
    }
    if let DatabaseUrl::Sqlite(path) = from
        && !path.is_file()
    {
        return Err(CopyError::NoSource(from.to_string()));
    }
    // The source is brought up to date too, as its coordinator would at start.
    let source = Store::connect(from)
        .await
        .map_err(|source| CopyError::Open {
            side: "source",
            url: from.to_string(),
            source,
        })?;
    let target = match Store::connect(to).await {
        Ok(target) => target,
        Err(e) => {
            source.close().await;
            return Err(CopyError::Open {
                side: "target",
                url: to.to_string(),
                source: e,
            });
        }
    };
    let copied = copy_between(&source, &target, &to.to_string(), &mut progress).await;
    source.close().await;
    target.close().await;
    copied
}

async fn copy_between(
    source: &Store,
    target: &Store,
    target_url: &str,
    progress: &mut impl FnMut(TableProgress),
) -> Result<CopyReport, CopyError> {
    check_schema(&source.reader, "source").await?;
    check_schema(&target.reader, "target").await?;

    // One snapshot of the source: SQLite's read transaction sees the
    // database as of its first read; PostgreSQL needs REPEATABLE READ.
    let mut src = source.reader.begin().await.map_err(|e| CopyError::Read {
        side: "source",
        source: e,
    })?;
    if src.backend() == Backend::Postgres {
        on_tx!(&mut src, c => sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(c)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| CopyError::Read {
            side: "source",
            source: e.into(),
        })?;
    }
    let mut dst = target.writer.begin().await.map_err(|e| CopyError::Read {
        side: "target",
        source: e,
    })?;
    for table in TABLES {
        let has_rows = on_tx!(&mut dst, c => sqlx::query_scalar::<_, bool>(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM \"{}\")",
            table.name
        )))
        .fetch_one(c)
        .await)
        .map_err(|e| CopyError::Read {
            side: "target",
            source: e.into(),
        })?;
        if has_rows {
            return Err(CopyError::NotEmpty {
                url: target_url.to_owned(),
                table: table.name,
            });
        }
    }

    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let failed = |source: StoreError| CopyError::Table {
            table: table.name,
            source,
        };
        let total = count_rows(&mut src, table).await.map_err(failed)?;
        progress(TableProgress {
            table: table.name,
            copied: 0,
            total,
        });
        let copied = copy_table(&mut src, &mut dst, table, total, progress)
            .await
            .map_err(failed)?;
        let stored = count_rows(&mut dst, table).await.map_err(failed)?;
        if copied != total || stored != total {
            return Err(CopyError::Count {
                table: table.name,
                source_rows: total,
                target_rows: stored,
            });
        }
        tables.push(TableCount {
            table: table.name,
            rows: stored,
        });
    }
    if dst.backend() == Backend::Postgres {
        reset_identities(&mut dst)
            .await
            .map_err(CopyError::Commit)?;
    }
    dst.commit().await.map_err(CopyError::Commit)?;
    Ok(CopyReport { tables })
}

async fn count_rows(tx: &mut Tx, table: &Table) -> Result<u64, StoreError> {
    let n = on_tx!(tx, c => sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM \"{}\"",
        table.name
    )))
    .fetch_one(c)
    .await)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count of {}", table.name)))
}

/// Copies one table page by page; returns the rows written.
async fn copy_table(
    src: &mut Tx,
    dst: &mut Tx,
    table: &Table,
    total: u64,
    progress: &mut impl FnMut(TableProgress),
) -> Result<u64, StoreError> {
    let (from, to) = (src.backend(), dst.backend());
    let key: Vec<usize> = table.key_columns().map(|(i, _)| i).collect();
    let max_rows = table.max_page_rows();
    let mut page_rows = FIRST_PAGE_ROWS.min(max_rows);
    let mut after: Option<Vec<Cell>> = None;
    let mut copied = 0u64;
    loop {
        let rows: Vec<Vec<Cell>> = on_tx!(&mut *src, c => {
            let mut q = select_page(table, from, after.take(), page_rows);
            let rows = q.build().fetch_all(&mut *c).await?;
            rows.iter()
                .map(|row| decode_row(row, table.columns))
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        let Some(last) = rows.last() else {
            break;
        };
        let full = rows.len() == page_rows;
        after = Some(key.iter().map(|&i| last[i].clone()).collect());
        let weight: usize = rows.iter().flatten().map(Cell::weight).sum();
        let n = rows.len();
        on_tx!(&mut *dst, c => {
            let mut q = insert_rows(table, to, rows);
            q.build().execute(&mut *c).await.map(|r| r.rows_affected())
        })?;
        copied += n as u64;
        progress(TableProgress {
            table: table.name,
            copied,
            total,
        });
        if !full {
            break;
        }
        page_rows = (PAGE_BYTES / (weight / n).max(1)).clamp(1, max_rows);
    }
    Ok(copied)
}

/// Moves every identity sequence past the largest copied id, so rows added
/// later do not collide with copied ones.
async fn reset_identities(tx: &mut Tx) -> Result<(), StoreError> {
    #[derive(sqlx::FromRow)]
    struct Identity {
        table_name: String,
        column_name: String,
    }
    let identities = on_tx!(&mut *tx, c => sqlx::query_as::<_, Identity>(
        "SELECT table_name::text AS table_name, column_name::text AS column_name
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND is_identity = 'YES'
         ORDER BY table_name",
    )
    .fetch_all(c)
    .await)?;
    for Identity {
        table_name,
        column_name,
    } in identities
    {
        if !TABLES.iter().any(|t| t.name == table_name) {
            continue;
        }
        on_tx!(&mut *tx, c => sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX(\"{column_name}\"), 1), MAX(\"{column_name}\") IS NOT NULL) FROM \"{table_name}\""
        )))
        .bind(&table_name)
        .bind(&column_name)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// One column as a database declares it.
#[derive(Debug, sqlx::FromRow)]
struct DeclaredColumn {
    table_name: String,
    column_name: String,
    declared: String,
    not_null: bool,
}

/// A foreign key: `table_name` references `ref_table`.
#[derive(Debug, sqlx::FromRow)]
struct ForeignKey {
    table_name: String,
    ref_table: String,
}

/// Checks that the database holds exactly the tables and columns of
/// [`TABLES`], with compatible types, and that [`TABLES`] lists every table
/// after the tables it references.
async fn check_schema(pool: &Pool, side: &'static str) -> Result<(), CopyError> {
    let read_failed = |e: sqlx::Error| CopyError::Read {
        side,
        source: e.into(),
    };
    let backend = pool.backend();
    let (columns_sql, keys_sql) = match backend {
        Backend::Sqlite => (
            "SELECT m.name AS table_name, p.name AS column_name, p.type AS declared,
                    (p.\"notnull\" <> 0 OR p.pk > 0) AS not_null
             FROM sqlite_master m JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table'
             ORDER BY m.name, p.cid",
            "SELECT m.name AS table_name, f.\"table\" AS ref_table
             FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
             WHERE m.type = 'table'",
        ),
        Backend::Postgres => (
            "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name,
                    c.data_type::text AS declared, (c.is_nullable = 'NO') AS not_null
             FROM information_schema.columns c
             JOIN information_schema.tables t
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
             ORDER BY c.table_name, c.ordinal_position",
            "SELECT t.relname::text AS table_name, r.relname::text AS ref_table
             FROM pg_constraint k
             JOIN pg_class t ON t.oid = k.conrelid
             JOIN pg_class r ON r.oid = k.confrelid
             JOIN pg_namespace n ON n.oid = k.connamespace
             WHERE k.contype = 'f' AND n.nspname = current_schema()",
        ),
    };
    let declared =
        on_pool!(pool, p => sqlx::query_as::<_, DeclaredColumn>(columns_sql).fetch_all(p).await)
            .map_err(read_failed)?;
    let keys = on_pool!(pool, p => sqlx::query_as::<_, ForeignKey>(keys_sql).fetch_all(p).await)
        .map_err(read_failed)?;

    let mut stored: BTreeMap<String, BTreeMap<String, DeclaredColumn>> = BTreeMap::new();
    for c in declared {
        if is_machinery(&c.table_name) {
            continue;
        }
        stored
            .entry(c.table_name.clone())
            .or_default()
            .insert(c.column_name.clone(), c);
    }
    if let Some(unknown) = stored
        .keys()
        .find(|name| !TABLES.iter().any(|t| t.name == name.as_str()))
    {
        return Err(CopyError::UnknownTable {
            side,
            table: unknown.clone(),
        });
    }
    for table in TABLES {
        let Some(columns) = stored.get(table.name) else {
            return Err(CopyError::MissingTable {
                side,
                table: table.name,
            });
        };
        let mut problems = Vec::new();
        let expected: BTreeSet<&str> = table.stored_columns(backend).map(|c| c.name).collect();
        for name in columns.keys() {
            if !expected.contains(name.as_str()) {
                problems.push(format!("unknown column `{name}`"));
            }
        }
        for column in table.stored_columns(backend) {
            match columns.get(column.name) {
                None => problems.push(format!("no column `{}`", column.name)),
                Some(d) if !column.kind.accepts(&d.declared) => problems.push(format!(
                    "column `{}` is {}, expected {:?}",
                    column.name, d.declared, column.kind
                )),
                Some(d) if d.not_null == column.nullable => problems.push(format!(
                    "column `{}` is {}",
                    column.name,
                    if d.not_null { "NOT NULL" } else { "nullable" }
                )),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(CopyError::Columns {
                side,
                table: table.name,
                detail: problems.join(", "),
            });
        }
    }
    let position = |name: &str| TABLES.iter().position(|t| t.name == name);
    for key in keys {
        if is_machinery(&key.table_name) {
            continue;
        }
        if let (Some(table), Some(referenced)) =
            (position(&key.table_name), position(&key.ref_table))
            && referenced > table
        {
            return Err(CopyError::Order {
                table: key.table_name,
                references: key.ref_table,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test server's maintenance database (trust authentication).
    const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// Rows in every table, with the values a copy could get wrong: NULLs,
    /// both flag values, fractions, integers past 2^53, non-ASCII text, the
    /// `offset` column, result groups and data whose rowids are not in
    /// insertion order, and enough log chunks for several pages.
    const FILL: &[&str] = &[
        r#"INSERT INTO jobs VALUES
            (1, 'job-a', 'default', 5, '{"name":"job-a"}', 'passed', 1700000000000, 1700000001000, 'int-1'),
            (2, 'jöb-b ✓', 'nightly', -3, '{}', 'running', 1700000002000, NULL, NULL)"#,
        r#"INSERT INTO tasks VALUES
            (1, 1, 't1', '{"name":"t1"}', 5, NULL, 'passed', 'done', 'passed', NULL, 'agent-a', 1, 1, 0, 0, 1, NULL, 10, 20, 'job-a/t1', 0),
            (2, 2, 't2', '{}', -3, 'agent-b', 'running', 'test', NULL, 'a message', 'agent-b', 2, 1, 0, 1, 0, 'agent-a', 30, 40, 'jöb-b ✓/t2', 2)"#,
        r#"INSERT INTO attempts VALUES
            (1, 1, 1, 'agent-a', 'done', 'passed', NULL, NULL, 10, 20, 15, '[{"suites":[]}]', NULL),
            (2, 2, 1, 'agent-b', 'test', NULL, 'lost', '{"k":1}', 30, NULL, NULL, NULL, 99999)"#,
        r#"INSERT INTO log_chunks (attempt_id, "offset", data) VALUES (1, 0, 'hello
'), (1, 6, 'wörld ✓'), (2, 0, '')"#,
        r#"INSERT INTO log_chunks (attempt_id, "offset", data)
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
            SELECT 2, i * 10, 'line ' || i FROM n"#,
        r#"INSERT INTO agents VALUES
            ('agent-a', '{"os":"linux"}', 1, 2, 0, 'idle', '{"cpu":"x"}'),
            ('agent-b', '{}', 3, 4, 1, NULL, NULL)"#,
        r#"INSERT INTO work_log VALUES
            (1, 'agent-a', 1, 'int-1', 'test', 'detail', 5),
            (2, 'agent-b', NULL, NULL, 'idle', NULL, 6)"#,
        r#"INSERT INTO task_stats VALUES
            ('job-a/t1', 3, 12.5, 20.25, '[10.0,12.5]'),
            ('x', 1, 0.1, 1234567.891, '[]')"#,
        "INSERT INTO export_events VALUES (1, 1, 20), (2, 2, 40)",
        r#"INSERT INTO export_sinks VALUES
            ('influxdb', 1, 10, 0, 0, NULL, NULL, 25),
            ('resultsdb', 0, 0, 2, 3, 'HTTP 500', 30, NULL)"#,
        "INSERT INTO rdb_testcases VALUES ('tc.a', NULL), ('tc.b', 'http://x')",
        "INSERT INTO rdb_groups VALUES (1, 'uuid-1', 'desc', NULL), (4, 'uuid-4', NULL, 'http://g')",
        r#"INSERT INTO rdb_results VALUES
            (1, 'tc.a', 'PASSED', NULL, NULL, 100, 1),
            (2, 'tc.b', 'FAILED', 'note', 'http://r', 200, NULL)"#,
        r#"INSERT INTO rdb_result_groups (rowid, result_id, group_uuid) VALUES
            (5, 1, 'uuid-1'), (2, 2, 'uuid-4'), (8, 2, 'uuid-1')"#,
        r#"INSERT INTO rdb_result_data (rowid, result_id, key, value) VALUES
            (7, 1, 'k', 'second'), (3, 1, 'k', 'first'), (9, 2, 'arch', 'x86_64')"#,
        r#"INSERT INTO users VALUES
            ('alice', '$argon2id$v=19$x', 1, 50, 'testfleet', 'md5', 'sha'),
            ('bob', 'h', 0, 51, NULL, NULL, NULL)"#,
        r#"INSERT INTO api_tokens VALUES
            (1, 'ci', 'hash1', 0, 60, NULL),
            (2, 'adm', 'hash2', 1, 61, 62)"#,
        "INSERT INTO agent_secrets VALUES ('agent-a', 'sh', 70, NULL), ('agent-b', 'sh2', 71, 72)",
        r#"INSERT INTO audit_log VALUES
            (1, 80, 'admin:cli', NULL, 'user add', 'alice', NULL),
            (2, 81, 'alice', '127.0.0.1', 'token create', 'ci', '{"x":1}')"#,
        r#"INSERT INTO artifacts VALUES
            (1, 1, 1, 1, 'out/r.txt', 'always', 'sha256:ab', 9007199254740993, 90)"#,
    ];

    async fn filled_sqlite(dir: &std::path::Path) -> DatabaseUrl {
        let url = DatabaseUrl::Sqlite(dir.join("source.db"));
        let store = Store::connect(&url).await.expect("open the source");
        for sql in FILL {
            on_pool!(&store.writer, p => sqlx::query(*sql).execute(p).await.map(|_| ()))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        store.close().await;
        url
    }

    /// Every row of every table, read as the copier reads them.
    async fn dump(url: &DatabaseUrl) -> BTreeMap<&'static str, Vec<Vec<Cell>>> {
        let store = Store::connect(url).await.expect("open the store");
        let backend = store.backend();
        let mut out = BTreeMap::new();
        for table in TABLES {
            let rows = on_pool!(&store.reader, p => {
                let mut q = select_page(table, backend, None, 1_000_000);
                let rows = q.build().fetch_all(p).await.expect("read the table");
                rows.iter()
                    .map(|row| decode_row(row, table.columns).expect("decode a row"))
                    .collect::<Vec<_>>()
            });
            out.insert(table.name, rows);
        }
        store.close().await;
        out
    }

    async fn copy(from: &DatabaseUrl, to: &DatabaseUrl) -> Result<CopyReport, CopyError> {
        let mut last: BTreeMap<&str, TableProgress> = BTreeMap::new();
        let report = copy_store(from, to, |p| {
            assert!(p.copied <= p.total, "{p:?}");
            last.insert(p.table, p);
        })
        .await?;
        for count in &report.tables {
            let p = last[count.table];
            assert_eq!((p.copied, p.total), (count.rows, count.rows), "{p:?}");
        }
        Ok(report)
    }

    /// A scratch PostgreSQL database, or `None` (after a notice) when the
    /// server is unreachable outside CI.
    async fn scratch_postgres() -> Option<crate::ScratchDatabase> {
        match crate::ScratchDatabase::create(PG_SERVER, "tf_copy").await {
            Ok(db) => Some(db),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL at {PG_SERVER} is unreachable ({e}); CI must start it"
                );
                eprintln!("skipping: PostgreSQL at {PG_SERVER} is unreachable ({e})");
                None
            }
        }
    }

    #[test]
    fn every_key_column_is_a_column_and_pages_fit_the_parameter_limits() {
        for table in TABLES {
            assert_eq!(table.key_columns().count(), table.key.len());
            assert!(table.max_page_rows() * table.columns.len() <= MAX_PARAMS);
        }
    }

    #[tokio::test]
    async fn a_fresh_sqlite_store_has_the_known_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        check_schema(&store.reader, "source").await.unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_to_sqlite_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let from = filled_sqlite(dir.path()).await;
        let to = DatabaseUrl::Sqlite(dir.path().join("copy.db"));
        let report = copy(&from, &to).await.unwrap();
        let names: Vec<_> = report.tables.iter().map(|t| t.table).collect();
        assert_eq!(names, TABLES.iter().map(|t| t.name).collect::<Vec<_>>());
        assert!(
            report.tables.iter().all(|t| t.rows > 0),
            "FILL covers every table: {report:?}"
        );
        assert_eq!(
            report
                .tables
                .iter()
                .find(|t| t.table == "log_chunks")
                .map(|t| t.rows),
            Some(2503)
        );
        assert_eq!(dump(&from).await, dump(&to).await);
    }

    #[tokio::test]
    async fn refuses_a_target_with_rows_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let from = filled_sqlite(dir.path()).await;
        let to = DatabaseUrl::Sqlite(dir.path().join("copy.db"));
        let store = Store::connect(&to).await.unwrap();
        on_pool!(&store.writer, p => sqlx::query(
            "INSERT INTO users VALUES ('carol', 'h', 0, 1, NULL, NULL, NULL)"
        )
        .execute(p)
        .await
        .map(|_| ()))
        .unwrap();
        store.close().await;
        let before = dump(&to).await;
        let err = copy(&from, &to).await.unwrap_err();
        assert!(
            matches!(err, CopyError::NotEmpty { table: "users", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("table `users` has rows"), "{err}");
        assert_eq!(dump(&to).await, before);
    }

    #[tokio::test]
    async fn refuses_a_source_with_a_table_it_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let from = filled_sqlite(dir.path()).await;
        let store = Store::connect(&from).await.unwrap();
        on_pool!(&store.writer, p => sqlx::query("CREATE TABLE later_feature (id INTEGER PRIMARY KEY)")
            .execute(p)
            .await
            .map(|_| ()))
        .unwrap();
        store.close().await;
        let to = DatabaseUrl::Sqlite(dir.path().join("copy.db"));
        let err = copy(&from, &to).await.unwrap_err();
        assert!(
            matches!(&err, CopyError::UnknownTable { side: "source", table } if table == "later_feature"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn refuses_a_missing_source_and_itself() {
        let dir = tempfile::tempdir().unwrap();
        let missing = DatabaseUrl::Sqlite(dir.path().join("nothing-here.db"));
        let to = DatabaseUrl::Sqlite(dir.path().join("copy.db"));
        let err = copy(&missing, &to).await.unwrap_err();
        assert!(matches!(err, CopyError::NoSource(_)), "{err:?}");
        assert!(!dir.path().join("nothing-here.db").exists());
        let from = filled_sqlite(dir.path()).await;
        let err = copy(&from, &from).await.unwrap_err();
        assert!(matches!(err, CopyError::SameDatabase(_)), "{err:?}");
    }

    #[tokio::test]
    async fn sqlite_to_postgres_and_back_keeps_every_row() {
        let Some(pg) = scratch_postgres().await else {
            return;
        };
        // Run in a task of its own so the database is dropped when it fails.
        let outcome = tokio::spawn(postgres_round_trip(pg.url().clone())).await;
        pg.drop().await.unwrap();
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    async fn postgres_round_trip(pg: DatabaseUrl) {
        let dir = tempfile::tempdir().unwrap();
        let from = filled_sqlite(dir.path()).await;
        copy(&from, &pg).await.unwrap();
        let source = dump(&from).await;
        assert_eq!(dump(&pg).await, source, "SQLite → PostgreSQL");

        let store = Store::connect(&pg).await.unwrap();
        check_schema(&store.reader, "target").await.unwrap();
        // Flags are BOOLEAN there, and new rows get ids past the copied ones.
        let Pool::Postgres(p) = &store.writer else {
            unreachable!("a PostgreSQL store")
        };
        let flaky: Vec<bool> = sqlx::query_scalar("SELECT flaky FROM tasks ORDER BY id")
            .fetch_all(p)
            .await
            .unwrap();
        assert_eq!(flaky, [true, false]);
        let job: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (name, queue, priority, spec, state, created_at)
             VALUES ('new', 'default', 0, '{}', 'queued', 1) RETURNING id",
        )
        .fetch_one(p)
        .await
        .unwrap();
        assert_eq!(job, 3);
        let data: i64 = sqlx::query_scalar(
            "INSERT INTO rdb_result_data (result_id, key, value) VALUES (2, 'k', 'v') RETURNING id",
        )
        .fetch_one(p)
        .await
        .unwrap();
        assert_eq!(data, 10);
        sqlx::query("DELETE FROM rdb_result_data WHERE id = 10")
            .execute(p)
            .await
            .unwrap();
        sqlx::query("DELETE FROM jobs WHERE id = 3")
            .execute(p)
            .await
            .unwrap();
        store.close().await;

        let back = DatabaseUrl::Sqlite(dir.path().join("back.db"));
        copy(&pg, &back).await.unwrap();
        assert_eq!(dump(&back).await, source, "PostgreSQL → SQLite");
        // A second copy into the now non-empty PostgreSQL database is refused.
        let err = copy(&from, &pg).await.unwrap_err();
        assert!(
            matches!(err, CopyError::NotEmpty { table: "jobs", .. }),
            "{err:?}"
        );
    }
}
