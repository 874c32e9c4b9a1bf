//! PostgreSQL's plans for the hot batch statements, on a database whose
//! statistics lag behind its queue: the state the store is in whenever the
//! queue grew since the last ANALYZE (a new database, a burst of
//! submissions). The statements know their rows' keys, so every plan must
//! read `tasks` by key: a plan that reads every queued task, or compares
//! every task with every row of the batch, costs milliseconds per batch and
//! grows with the queue (docs/performance.md, "Plans that read by key").

use serde_json::Value;
use testfleet_core::JobSpec;
use testfleet_testkit::postgres::ScratchPg;

use crate::{NewTask, Store};

/// A job of `n` one-step tasks.
fn job(name: &str, n: usize) -> (JobSpec, Vec<NewTask>) {
    let mut toml = format!("name = \"{name}\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"./run {i}\" }}]\n"
        ));
    }
    let spec = JobSpec::from_toml(&toml).unwrap();
    let tasks = NewTask::plain(&spec);
    (spec, tasks)
}

/// Every plan node of an `EXPLAIN (FORMAT JSON)` answer.
fn nodes(plan: &Value, out: &mut Vec<serde_json::Map<String, Value>>) {
    if let Some(node) = plan.as_object() {
        if node.contains_key("Node Type") {
            out.push(node.clone());
        }
        for value in node.values() {
            nodes(value, out);
        }
    } else if let Some(items) = plan.as_array() {
        for item in items {
            nodes(item, out);
        }
    }
}

/// Whether the plan node reads `relation`.
fn on_relation(node: &serde_json::Map<String, Value>, relation: &str) -> bool {
    node.get("Relation Name").and_then(Value::as_str) == Some(relation)
}

/// The plan of `sql` with the five stage columns or the four claim columns
/// bound, as its nodes.
async fn explain(
    pool: &sqlx::PgPool,
    sql: &str,
    bind: impl FnOnce(
        sqlx::query::QueryScalar<'_, sqlx::Postgres, Value, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<
        '_,
        sqlx::Postgres,
        Value,
        sqlx::postgres::PgArguments,
    >,
) -> Vec<serde_json::Map<String, Value>> {
    let text = format!("EXPLAIN (FORMAT JSON) {sql}");
    let plan = bind(sqlx::query_scalar(sqlx::AssertSqlSafe(text)))
        .fetch_one(pool)
        .await
        .unwrap();
    let mut out = Vec::new();
    nodes(&plan, &mut out);
    out
}

/// A store with 4,000 finished tasks its statistics know of, then 1,500
/// queued ones they do not (too few for the planner keeper to analyse),
/// 50 of them claimed. Returns the store, a pool, the still queued ids and
/// the running attempts.
async fn lagging_statistics(db: &ScratchPg) -> (Store, sqlx::PgPool, Vec<i64>, Vec<i64>) {
    // The test kit's `store()` is of the crate as a dependency; this
    // test needs the crate under test.
    let url = crate::DatabaseUrl::Postgres(db.postgres_url().to_owned());
    let store = Store::connect(&url).await.unwrap();
    let pool = db.pool().await;
    sqlx::query("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    let (spec, tasks) = job("old", 4_000);
    store.submit_job(&spec, tasks, 1_000).await.unwrap();
    sqlx::query("UPDATE tasks SET state = 'passed', outcome = 'passed'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE tasks").execute(&pool).await.unwrap();
    let (spec, tasks) = job("new", 1_500);
    let (_, queued) = store.submit_job(&spec, tasks, 2_000).await.unwrap();
    let mut attempts = Vec::new();
    for task in &queued[..50] {
        let claimed = store.claim(task.id, "agent", 3_000).await.unwrap().unwrap();
        attempts.push(claimed.attempt.attempt_id);
    }
    let still: Vec<i64> = queued[50..].iter().map(|t| t.id).collect();
    (store, pool, still, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch_statements_read_tasks_by_key_while_statistics_lag() {
    let Some(db) = ScratchPg::create().await else {
        return;
    };
    let (store, pool, queued, attempts) = lagging_statistics(&db).await;

    let ids: Vec<i64> = queued[..60].to_vec();
    let claim = explain(&pool, crate::batch_pg::CLAIM_MANY, |q| {
        q.bind(ids.clone())
            .bind(vec!["agent"; ids.len()])
            .bind(vec![4_000_i64; ids.len()])
            .bind(vec![14_000_i64; ids.len()])
    })
    .await;
    let indexes: Vec<&str> = claim
        .iter()
        .filter(|n| on_relation(n, "tasks"))
        .filter_map(|n| n.get("Index Name").and_then(Value::as_str))
        .collect();
    assert_eq!(
        indexes,
        ["tasks_pkey"],
        "the claim reads its tasks by key, not the queue: {claim:#?}"
    );
    let claim_filters: Vec<&Value> = claim.iter().filter_map(|n| n.get("Join Filter")).collect();
    assert!(
        claim_filters.is_empty(),
        "the claim finds its starting jobs by key, not by comparing every job with every task: \
         {claim:#?}"
    );

    let n = attempts.len();
    let stages = explain(&pool, crate::progress_pg::STAGE_TASKS, |q| {
        q.bind(attempts.clone())
            .bind(vec!["test"; n])
            .bind(vec![Some("running"); n])
            .bind(vec![5_000_i64; n])
            .bind(vec![Some(5_000_i64); n])
    })
    .await;
    let filters: Vec<&Value> = stages.iter().filter_map(|n| n.get("Join Filter")).collect();
    assert!(
        filters.is_empty(),
        "the stage update joins its rows by key, not every task with every row: {stages:#?}"
    );

    // The job of 4,000 tasks: each state is one probe of the index.
    let old_job: i64 = sqlx::query_scalar("SELECT job_id FROM tasks ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let states = explain(&pool, crate::attempts::JOB_TASK_STATES, |q| q.bind(old_job)).await;
    let reads: Vec<(&str, Option<&str>)> = states
        .iter()
        .filter(|n| on_relation(n, "tasks"))
        .map(|n| {
            (
                n["Node Type"].as_str().unwrap_or(""),
                n.get("Index Cond").and_then(Value::as_str),
            )
        })
        .collect();
    assert!(
        !reads.is_empty()
            && reads
                .iter()
                .all(|(_, cond)| cond.is_some_and(|c| c.contains("state ="))),
        "a job's task states are probed by (job, state), not read task by task: {states:#?}"
    );
    store.close().await;
    pool.close().await;
    db.remove().await.unwrap();
}

/// A finish reads the runtime histories of its tasks' keys by key while
/// `task_stats` grew since its last ANALYZE (each run of new tasks adds
/// keys), not by a scan of every key ever run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runtime_histories_are_read_by_key_while_statistics_lag() {
    let Some(db) = ScratchPg::create().await else {
        return;
    };
    let url = crate::DatabaseUrl::Postgres(db.postgres_url().to_owned());
    let store = Store::connect(&url).await.unwrap();
    let pool = db.pool().await;
    let grow = |from: i64, to: i64| {
        sqlx::query(
            "INSERT INTO task_stats (task_key, runs, mean_ms, p95_ms, recent)
             SELECT 'job/t' || g, 1, 10, 10, '[10]' FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(from)
        .bind(to)
    };
    sqlx::query("ALTER TABLE task_stats SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    grow(1, 100).execute(&pool).await.unwrap();
    sqlx::query("ANALYZE task_stats")
        .execute(&pool)
        .await
        .unwrap();
    grow(101, 3_000).execute(&pool).await.unwrap();

    let mut keys: Vec<String> = (2_000..2_025).map(|i| format!("job/t{i}")).collect();
    keys.sort_unstable();
    let plan = explain(&pool, crate::batch_pg::RUNTIMES_FOR_UPDATE, |q| {
        q.bind(keys.clone())
    })
    .await;
    let reads: Vec<(&str, Option<&str>)> = plan
        .iter()
        .filter(|n| on_relation(n, "task_stats"))
        .map(|n| {
            (
                n["Node Type"].as_str().unwrap_or(""),
                n.get("Index Name").and_then(Value::as_str),
            )
        })
        .collect();
    assert_eq!(
        reads,
        [("Index Scan", Some("task_stats_pkey"))],
        "the histories are read by key: {plan:#?}"
    );
    store.close().await;
    pool.close().await;
    db.remove().await.unwrap();
}
