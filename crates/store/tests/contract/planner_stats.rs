//! A young PostgreSQL database's planner statistics follow its growth: the
//! store analyses a hot table within seconds of its growing, rather than
//! leaving it to autovacuum's once-a-minute look (plans made on empty
//! tables would otherwise be kept as they grow).

use std::time::{Duration, Instant};

use crate::fixture::PgDatabase;
use crate::support::{simple_job, submit};

/// What PostgreSQL's planner believes `table` holds (-1: never analysed).
async fn planner_rows(pool: &sqlx::PgPool, table: &str) -> f32 {
    sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = $1 AND relkind = 'r'")
        .bind(table)
        .fetch_one(pool)
        .await
        .expect("reading pg_class")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_growing_tasks_table_is_analysed_within_seconds() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let pool = db.pool().await;
    // Only the store may analyse: autovacuum is off for the table.
    sqlx::query("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    let before = planner_rows(&pool, "tasks").await;
    assert!(before < 1.0, "a new table has no statistics yet: {before}");

    submit(&store, &simple_job("grow", 1_500, 0, 0), 1_000).await;

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut rows = planner_rows(&pool, "tasks").await;
    while rows < 1_500.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = planner_rows(&pool, "tasks").await;
    }
    assert_eq!(
        rows, 1_500.0,
        "the tasks table grew by 1,500 rows; the planner still believes {rows}"
    );
    // The analysis reset the table's change counter: the table is not
    // analysed again until it grows again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let analyses: i64 =
        sqlx::query_scalar("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'tasks'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(analyses, 1, "the grown table is analysed once");
    store.close().await;
    pool.close().await;
}

/// Connections of this database other than `pool`'s own.
async fn other_connections(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .expect("reading pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_keeper_goes_with_the_last_handle_of_its_store() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
        .max_connections(1)
        .connect(db.postgres_url())
        .await
        .unwrap();
    let store = db.store().await;
    let copy = store.clone();
    drop(store);
    // Let the keeper read the counters once, on a connection of its own.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(other_connections(&pool).await > 0, "the store is connected");
    drop(copy);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = other_connections(&pool).await;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = other_connections(&pool).await;
    }
    assert_eq!(
        left, 0,
        "a dropped store leaves no connection behind (its planner keeper included)"
    );
    pool.close().await;
}
