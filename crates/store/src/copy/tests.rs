//! The copier's tests: every row of a filled SQLite store copied to SQLite
//! and through PostgreSQL and back, and the refusals (a target with rows, an
//! unknown table, a missing source, the source itself).

use std::collections::BTreeMap;

use super::tables::MAX_PARAMS;
use super::*;
use crate::db::{Pool, on_pool};

/// The test server's maintenance database (trust authentication).
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Rows in every table, with the values a copy could get wrong: NULLs,
/// both flag values, fractions, integers past 2^53, non-ASCII text, the
/// `offset` column, result groups and data whose rowids are not in
/// insertion order, and enough log chunks for several pages.
const FILL: &[&str] = &[
    r#"INSERT INTO jobs (id, name, queue, priority, spec, state, created_at, finished_at,
            integration_id, tasks_queued, tasks_running, tasks_passed, tasks_failed,
            tasks_cancelled, outcomes_passed, outcomes_failed, outcomes_flaky, outcomes_timed_out,
            outcomes_stalled, outcomes_crashed, outcomes_infra_error, outcomes_cancelled,
            attempts_total, tasks_retried) VALUES
        (1, 'job-a', 'default', 5, '{"name":"job-a"}', 'passed', 1700000000000, 1700000001000, 'int-1',
         0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0),
        (2, 'jöb-b ✓', 'nightly', -3, '{}', 'running', 1700000002000, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#,
    r#"INSERT INTO tasks VALUES
        (1, 1, 't1', '{"name":"t1"}', 5, NULL, 'passed', 'done', 'passed', NULL, 'agent-a', 1, 1, 0, 0, 1, NULL, 10, 20, 'job-a/t1', 0),
        (2, 2, 't2', '{}', -3, 'agent-b', 'running', 'test', NULL, 'a message', 'agent-b', 2, 1, 0, 1, 0, 'agent-a', 30, 40, 'jöb-b ✓/t2', 2)"#,
    r#"INSERT INTO attempts VALUES
        (1, 1, 1, 'agent-a', 'done', 'passed', NULL, NULL, 10, 20, 15, '[{"suites":[]}]', NULL, '{"cores":8}'),
        (2, 2, 1, 'agent-b', 'test', NULL, 'lost', '{"k":1}', 30, NULL, NULL, NULL, 99999, NULL)"#,
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
    r#"INSERT INTO trigger_events VALUES
        (1, 'github', 'push', 'github.push', 'd-1', 'github:d-1', 100, '{"ref":"x"}', '["r"]', '[1]', 'queued', NULL),
        (2, 'github', 'push', 'github.push', 'd-1', NULL, 101, '{"ref":"x"}', '["r"]', '[1]', 'duplicate', 'duplicate of event 1')"#,
    r#"INSERT INTO bench_fingerprints VALUES ('0123456789abcdef', '{"cpu_model":"Xeon ✓"}')"#,
    r#"INSERT INTO bench_series VALUES
        (1, 'agent-a', 'tst_QString', 'bench', '', 'WalltimeMilliseconds', 'msecs', 2, 100, 200, 0.125),
        (3, 'agent-b', 'tst_QString', 'bench', 'hex', 'CPUTicks', 'ticks', 1, 300, 300, 1e300)"#,
    r#"INSERT INTO bench_points VALUES
        (1, 1, 1, 1, 1, 0, 0.25, 'abc', 'dev', 'int-1', '0123456789abcdef', 100),
        (2, 1, 1, 1, 1, 1, 0.125, NULL, NULL, NULL, 'unknown', 200),
        (5, 3, 2, 2, 2, 0, 1e300, NULL, 'dév', NULL, 'unknown', 300)"#,
    r#"INSERT INTO bench_acks VALUES
        (1, 1, 'abc', 'expected: new allocator', 'https://bugs.example/1', 'alice', 400),
        (2, 3, 'def', 'nöte', NULL, 'bob', 401)"#,
    r#"INSERT INTO bot_requests VALUES
        (1, 'gitlab', 'group/project', 4, 'aaa', 'bbb', 'reported', 9007199254740993, NULL, 500, 501, 'd1', 2),
        (2, 'github', 'o/r', 5, 'ccc', NULL, 'failed', NULL, 'no merge base: ü', 502, 503, NULL, 0)"#,
    r#"INSERT INTO bot_request_jobs VALUES (1, 'head', 1, 0), (1, 'base', 2, 1)"#,
    r#"INSERT INTO coordinators VALUES ('a:1:2', 2, 600, '[{"hostname":"agent-a","status":"tést"}]')"#,
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
