//! The two migration folders describe one schema: a fresh SQLite store and a
//! fresh PostgreSQL database must have the same tables, columns, nullability,
//! defaults, keys, foreign keys and named indexes, with compatible types
//! (`INTEGER` ↔ `BIGINT` or `BOOLEAN`, `REAL` ↔ `DOUBLE PRECISION`, `TEXT`).
//!
//! Documented differences: `rdb_result_groups.id` and `rdb_result_data.id`
//! exist on PostgreSQL only (an identity that keeps insertion order, which
//! SQLite's rowid keeps there), and SQLite does not mark primary-key columns
//! NOT NULL (they are treated as such here).
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432`; when it is unreachable
//! the test kit's peer rule applies (skipped outside CI, a failure under it).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgPool, SqlitePool};
use testfleet_store::Store;
use testfleet_testkit::postgres::ScratchPg;

/// Columns that only PostgreSQL has: SQLite's rowid plays their part.
const POSTGRES_ONLY: &[(&str, &str)] = &[("rdb_result_groups", "id"), ("rdb_result_data", "id")];

/// A column type, as both engines can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// SQLite `INTEGER`: a PostgreSQL `BIGINT` or `BOOLEAN`.
    SqliteInteger,
    BigInt,
    Boolean,
    Real,
    Text,
    Other,
}

impl Ty {
    fn of(declared: &str) -> Ty {
        match declared.to_ascii_lowercase().as_str() {
            "integer" => Ty::SqliteInteger,
            "bigint" => Ty::BigInt,
            "boolean" => Ty::Boolean,
            "real" | "double precision" => Ty::Real,
            "text" => Ty::Text,
            _ => Ty::Other,
        }
    }

    fn compatible(sqlite: Ty, postgres: Ty) -> bool {
        matches!(
            (sqlite, postgres),
            (Ty::SqliteInteger, Ty::BigInt | Ty::Boolean)
                | (Ty::Real, Ty::Real)
                | (Ty::Text, Ty::Text)
        )
    }
}

#[derive(Debug, Clone)]
struct Column {
    ty: Ty,
    declared: String,
    not_null: bool,
    /// The default as written, normalized (`false` → `0`, casts dropped).
    default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Index {
    table: String,
    columns: Vec<String>,
    unique: bool,
    /// The partial index's condition, normalized.
    predicate: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Schema {
    columns: BTreeMap<String, BTreeMap<String, Column>>,
    /// Named indexes (not those behind PRIMARY KEY or UNIQUE).
    indexes: BTreeMap<String, Index>,
    /// (table, columns): primary keys and UNIQUE constraints.
    primary_keys: BTreeSet<(String, Vec<String>)>,
    unique: BTreeSet<(String, Vec<String>)>,
    /// (table, column, referenced table, referenced column).
    foreign_keys: BTreeSet<(String, String, String, String)>,
}

/// Lower case, no casts, no parentheses, single spaces: `(state = 'queued'::text)`
/// and `state = 'queued'` read the same.
fn normalize(sql: &str) -> String {
    let mut s = sql.to_ascii_lowercase();
    for cast in ["::text", "::bigint", "::integer", "::boolean"] {
        s = s.replace(cast, "");
    }
    s = s.replace(['(', ')'], " ");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.as_str() {
        "false" => "0".to_owned(),
        "true" => "1".to_owned(),
        _ => s,
    }
}

fn is_machinery(table: &str) -> bool {
    table == "_sqlx_migrations" || table.starts_with("sqlite_")
}

async fn sqlite_schema(pool: &SqlitePool) -> sqlx::Result<Schema> {
    let mut schema = Schema::default();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(pool)
            .await?;
    for table in tables.into_iter().filter(|t| !is_machinery(t)) {
        let columns: Vec<(String, String, bool, Option<String>, i64)> = sqlx::query_as(
            r#"SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info($1) ORDER BY cid"#,
        )
        .bind(&table)
        .fetch_all(pool)
        .await?;
        let mut pk: Vec<(i64, String)> = Vec::new();
        let entry = schema.columns.entry(table.clone()).or_default();
        for (name, declared, not_null, default, pk_position) in columns {
            if pk_position > 0 {
                pk.push((pk_position, name.clone()));
            }
            entry.insert(
                name,
                Column {
                    ty: Ty::of(&declared),
                    declared,
                    not_null: not_null || pk_position > 0,
                    default: default.as_deref().map(normalize),
                },
            );
        }
        pk.sort();
        // A table without one (rdb_result_data) is keyed by its rowid.
        if !pk.is_empty() {
            schema
                .primary_keys
                .insert((table.clone(), pk.into_iter().map(|(_, n)| n).collect()));
        }

        // UNIQUE constraints are indexes of origin `u`.
        let unique: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_index_list($1) WHERE origin = 'u' ORDER BY name",
        )
        .bind(&table)
        .fetch_all(pool)
        .await?;
        for index in unique {
            let columns = sqlite_index_columns(pool, &index).await?;
            schema.unique.insert((table.clone(), columns));
        }

        let keys: Vec<(String, String, String)> =
            sqlx::query_as(r#"SELECT "from", "table", "to" FROM pragma_foreign_key_list($1)"#)
                .bind(&table)
                .fetch_all(pool)
                .await?;
        for (column, ref_table, ref_column) in keys {
            schema
                .foreign_keys
                .insert((table.clone(), column, ref_table, ref_column));
        }
    }
    // Named indexes: those with SQL text (automatic ones have none).
    let indexes: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT name, tbl_name, sql FROM sqlite_master
         WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    for (name, table, sql) in indexes {
        let columns = sqlite_index_columns(pool, &name).await?;
        let upper = sql.to_ascii_uppercase();
        let predicate = upper
            .find(" WHERE ")
            .map(|at| normalize(&sql[at + " WHERE ".len()..]));
        schema.indexes.insert(
            name,
            Index {
                table,
                columns,
                unique: upper.starts_with("CREATE UNIQUE"),
                predicate,
            },
        );
    }
    Ok(schema)
}

async fn sqlite_index_columns(pool: &SqlitePool, index: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
        .bind(index)
        .fetch_all(pool)
        .await
}

async fn postgres_schema(pool: &PgPool) -> sqlx::Result<Schema> {
    let mut schema = Schema::default();
    let columns: Vec<(String, String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text,
                c.is_nullable = 'NO', c.column_default::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(pool)
    .await?;
    for (table, name, declared, not_null, default) in columns {
        if is_machinery(&table) {
            continue;
        }
        schema.columns.entry(table).or_default().insert(
            name,
            Column {
                ty: Ty::of(&declared),
                declared,
                not_null,
                default: default.as_deref().map(normalize),
            },
        );
    }

    let keys: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.relname::text, k.contype::text,
                ARRAY(SELECT a.attname::text
                      FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                      ORDER BY u.ord)
         FROM pg_constraint k
         JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = k.connamespace
         WHERE k.contype IN ('p', 'u') AND n.nspname = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    for (table, kind, columns) in keys {
        if is_machinery(&table) {
            continue;
        }
        if kind == "p" {
            schema.primary_keys.insert((table, columns));
        } else {
            schema.unique.insert((table, columns));
        }
    }

    let foreign: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, a.attname::text, r.relname::text, ra.attname::text
         FROM pg_constraint k
         JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_class r ON r.oid = k.confrelid
         JOIN pg_namespace n ON n.oid = k.connamespace
         JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
         JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = k.confkey[1]
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(pool)
    .await?;
    schema.foreign_keys.extend(foreign);

    // Named indexes: not those behind a PRIMARY KEY or UNIQUE constraint.
    let indexes: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.tablename::text, i.indexdef
         FROM pg_indexes i
         WHERE i.schemaname = current_schema()
           AND NOT EXISTS (
               SELECT 1 FROM pg_constraint k
               JOIN pg_namespace n ON n.oid = k.connamespace
               WHERE k.conname = i.indexname AND n.nspname = i.schemaname)
         ORDER BY i.indexname",
    )
    .fetch_all(pool)
    .await?;
    for (name, table, def) in indexes {
        if is_machinery(&table) {
            continue;
        }
        // `CREATE [UNIQUE] INDEX name ON schema.table USING btree (a, b) [WHERE (…)]`
        let (head, predicate) = match def.find(" WHERE ") {
            Some(at) => (&def[..at], Some(normalize(&def[at + " WHERE ".len()..]))),
            None => (def.as_str(), None),
        };
        let columns = head
            .find(" USING ")
            .and_then(|at| head[at..].find('(').map(|open| at + open))
            .map(|open| {
                head[open + 1..head.len() - 1]
                    .split(',')
                    .map(|c| c.trim().trim_matches('"').to_owned())
                    .collect()
            })
            .unwrap_or_default();
        schema.indexes.insert(
            name,
            Index {
                table,
                columns,
                unique: def.starts_with("CREATE UNIQUE"),
                predicate,
            },
        );
    }
    Ok(schema)
}

fn postgres_only(table: &str, column: &str) -> bool {
    POSTGRES_ONLY.contains(&(table, column))
}

/// Every difference between the two schemas that is not documented.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let tables_s: BTreeSet<_> = sqlite.columns.keys().collect();
    let tables_p: BTreeSet<_> = postgres.columns.keys().collect();
    for t in tables_s.difference(&tables_p) {
        out.push(format!("table `{t}` exists in SQLite only"));
    }
    for t in tables_p.difference(&tables_s) {
        out.push(format!("table `{t}` exists in PostgreSQL only"));
    }
    for (table, columns_s) in &sqlite.columns {
        let Some(columns_p) = postgres.columns.get(table) else {
            continue;
        };
        for (name, c) in columns_s {
            let Some(p) = columns_p.get(name) else {
                out.push(format!("`{table}.{name}` exists in SQLite only"));
                continue;
            };
            if !Ty::compatible(c.ty, p.ty) {
                out.push(format!(
                    "`{table}.{name}` is {} in SQLite but {} in PostgreSQL",
                    c.declared, p.declared
                ));
            }
            if c.not_null != p.not_null {
                out.push(format!(
                    "`{table}.{name}` is {} in SQLite but {} in PostgreSQL",
                    if c.not_null { "NOT NULL" } else { "nullable" },
                    if p.not_null { "NOT NULL" } else { "nullable" },
                ));
            }
            if c.default != p.default {
                out.push(format!(
                    "`{table}.{name}` defaults to {:?} in SQLite but {:?} in PostgreSQL",
                    c.default, p.default
                ));
            }
        }
        for (name, p) in columns_p {
            if columns_s.contains_key(name) {
                continue;
            }
            if postgres_only(table, name) {
                if !(p.ty == Ty::BigInt && p.not_null) {
                    out.push(format!(
                        "`{table}.{name}` (PostgreSQL only) should be a BIGINT identity, not {}",
                        p.declared
                    ));
                }
            } else {
                out.push(format!("`{table}.{name}` exists in PostgreSQL only"));
            }
        }
    }

    let without_pg_only =
        |set: &BTreeSet<(String, Vec<String>)>| -> BTreeSet<(String, Vec<String>)> {
            set.iter()
                .filter(|(t, cols)| !cols.iter().any(|c| postgres_only(t, c)))
                .cloned()
                .collect()
        };
    for (what, s, p) in [
        ("primary key", &sqlite.primary_keys, &postgres.primary_keys),
        ("UNIQUE constraint", &sqlite.unique, &postgres.unique),
    ] {
        let (s, p) = (without_pg_only(s), without_pg_only(p));
        for (t, cols) in s.difference(&p) {
            out.push(format!(
                "{what} {t}({}) exists in SQLite only",
                cols.join(", ")
            ));
        }
        for (t, cols) in p.difference(&s) {
            out.push(format!(
                "{what} {t}({}) exists in PostgreSQL only",
                cols.join(", ")
            ));
        }
    }
    for fk in sqlite.foreign_keys.difference(&postgres.foreign_keys) {
        out.push(format!("foreign key {fk:?} exists in SQLite only"));
    }
    for fk in postgres.foreign_keys.difference(&sqlite.foreign_keys) {
        out.push(format!("foreign key {fk:?} exists in PostgreSQL only"));
    }

    for (name, s) in &sqlite.indexes {
        match postgres.indexes.get(name) {
            None => out.push(format!("index `{name}` exists in SQLite only")),
            Some(p) if p != s => out.push(format!(
                "index `{name}` differs: SQLite {s:?}, PostgreSQL {p:?}"
            )),
            Some(_) => {}
        }
    }
    for name in postgres.indexes.keys() {
        if !sqlite.indexes.contains_key(name) {
            out.push(format!("index `{name}` exists in PostgreSQL only"));
        }
    }
    out
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_give_the_same_schema() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path())
        .await
        .expect("migrate a fresh SQLite store");
    store.close().await;
    let sqlite = SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("testfleet.db"))
            .read_only(true),
    )
    .await
    .expect("open the SQLite store");
    let sqlite = sqlite_schema(&sqlite)
        .await
        .expect("read the SQLite schema");
    assert!(
        sqlite.columns.contains_key("jobs") && sqlite.indexes.contains_key("tasks_queued"),
        "the SQLite schema was read: {sqlite:#?}"
    );

    let Some(db) = ScratchPg::create_named("tf_schema").await else {
        return;
    };
    // Migrated by opening a store on it; dropped with `db`, also when an
    // assertion below fails.
    db.store().await.close().await;
    let pool = db.pool().await;
    let postgres = postgres_schema(&pool)
        .await
        .expect("read the PostgreSQL schema");
    pool.close().await;
    db.remove().await.expect("drop the scratch database");

    let found = differences(&sqlite, &postgres);
    assert!(
        found.is_empty(),
        "the SQLite and PostgreSQL migrations disagree:\n  {}",
        found.join("\n  ")
    );
    assert!(!postgres.foreign_keys.is_empty() && !postgres.unique.is_empty());
    assert!(
        postgres.indexes.values().any(|i| i.predicate.is_some()),
        "partial indexes were read: {:#?}",
        postgres.indexes
    );

    // And the comparison does see a difference where there is one.
    let mut broken = postgres.clone();
    column_mut(&mut broken, "tasks", "flaky").default = None;
    column_mut(&mut broken, "jobs", "finished_at").not_null = true;
    column_mut(&mut broken, "task_stats", "mean_ms").ty = Ty::BigInt;
    broken
        .indexes
        .get_mut("tasks_queued")
        .expect("a known index")
        .predicate = Some("state = 'running'".into());
    broken.foreign_keys.pop_first();
    assert_eq!(
        differences(&sqlite, &broken).len(),
        5,
        "{:#?}",
        differences(&sqlite, &broken)
    );
}

fn column_mut<'s>(schema: &'s mut Schema, table: &str, column: &str) -> &'s mut Column {
    schema
        .columns
        .get_mut(table)
        .and_then(|t| t.get_mut(column))
        .expect("a known column")
}
