//! The schema checks run against both databases before anything is
//! written: each must hold exactly the tables and columns of [`TABLES`], with
//! compatible types, and [`TABLES`] must list every table after the tables it
//! references.

use std::collections::{BTreeMap, BTreeSet};

use super::CopyError;
use super::tables::TABLES;
use crate::db::{Backend, Pool, on_pool};

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

/// Tables that belong to the database's machinery, not to the store: each
/// database keeps its own migration history.
fn is_machinery(table: &str) -> bool {
    table == "_sqlx_migrations" || table.starts_with("sqlite_")
}

/// Checks that the database holds exactly the tables and columns of
/// [`TABLES`], with compatible types, and that [`TABLES`] lists every table
/// after the tables it references.
pub(super) async fn check_schema(pool: &Pool, side: &'static str) -> Result<(), CopyError> {
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
