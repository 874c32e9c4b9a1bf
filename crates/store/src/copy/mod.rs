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

mod check;
mod rows;
mod tables;
#[cfg(test)]
mod tests;

use sqlx::AssertSqlSafe;

use self::check::check_schema;
use self::rows::{Cell, decode_row, insert_rows, select_page};
use self::tables::{TABLES, Table};
use crate::db::{Backend, Tx, on_tx};
use crate::{DatabaseUrl, Store, StoreError};

/// The first page of a table; later pages are sized from the rows seen so
/// far, so pages of large rows (logs, results) stay near [`PAGE_BYTES`].
const FIRST_PAGE_ROWS: usize = 64;
const PAGE_BYTES: usize = 8 << 20;

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
