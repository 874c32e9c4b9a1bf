//! What the public contract cannot show: an event whose chunks were cut
//! short (a crash between two transactions) is mapped again without a point
//! twice, and the counters on the series rows stay those of their points;
//! a cursor moved back maps nothing new. Run on SQLite and on a scratch
//! PostgreSQL database.

use testfleet_core::{AttemptOutcome, JobSpec};
use testfleet_wire::results::{Case, CaseOutcome, Metric, Results, Suite};

use super::map::{SQLITE_CHUNK, add_points, points_of};
use crate::db::on_pool;
use crate::{DatabaseUrl, NewTask, SERIES_VIEW, SeriesFilter, Store};

/// The test server's maintenance database (trust authentication).
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Cases in the report: more than two SQLite chunks of points.
const CASES: usize = SQLITE_CHUNK * 2 + 50;

fn report(cases: usize) -> Vec<Results> {
    let cases = (0..cases)
        .map(|i| {
            let mut c = Case::new(format!("bench{i}"), None);
            c.outcome = CaseOutcome::Pass;
            c.metrics.push(Metric {
                name: "WalltimeMilliseconds".into(),
                unit: "msecs".into(),
                value: i as f64 / 8.0,
                total: None,
                iterations: Some(1),
                variance: None,
            });
            c
        })
        .collect();
    vec![Results {
        format: "qtest-xml".into(),
        suites: vec![Suite {
            name: "tst_large".into(),
            cases,
            ..Suite::default()
        }],
        complete: true,
        ..Results::default()
    }]
}

/// Submits a one-task job at `at`, runs it on `host` and finishes it with
/// `results`; returns the attempt.
pub(crate) async fn finished_attempt(
    store: &Store,
    host: &str,
    at: i64,
    results: &[Results],
) -> i64 {
    let spec = JobSpec::from_toml(
        "name = \"bench\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"./b\" }]\n",
    )
    .unwrap();
    let (_, queued) = store
        .submit_job(&spec, NewTask::plain(&spec), at)
        .await
        .unwrap();
    let claimed = store
        .claim(queued[0].id, host, at + 1)
        .await
        .unwrap()
        .unwrap();
    let attempt = claimed.attempt.attempt_id;
    store
        .finish_attempt(
            attempt,
            Some(host),
            AttemptOutcome::Passed,
            None,
            None,
            Some(results),
            None,
            at + 2,
        )
        .await
        .unwrap();
    attempt
}

/// Every series' counters, checked against its points.
async fn assert_counters_match_points(store: &Store) {
    let all = store
        .list_series(&SeriesFilter {
            limit: 100_000,
            ..SeriesFilter::default()
        })
        .await
        .unwrap();
    for s in all {
        let points = store.series_points(s.id, None, 100_000).await.unwrap();
        assert_eq!(s.points, points.len() as i64, "{s:?}");
        let first = points.first().unwrap();
        let last = points.last().unwrap();
        assert_eq!(
            (s.first_at, s.last_at, s.last_value),
            (first.at, last.at, last.value),
            "{s:?}"
        );
    }
}

async fn total_points(store: &Store) -> i64 {
    on_pool!(&store.reader, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM bench_points")
        .fetch_one(p)
        .await)
    .unwrap()
}

async fn interrupted_and_repeated_mapping_adds_each_point_once(store: Store) {
    let first = finished_attempt(&store, "h", 1_000, &report(CASES)).await;
    // A crash after the first chunk: its points are in, the cursor is not.
    let (ctx, facts) = store.attempt_context_facts(first).await.unwrap();
    let points = points_of(&ctx, &facts, "unknown");
    assert_eq!(points.len(), CASES);
    let mut tx = store.writer.begin().await.unwrap();
    add_points(&mut tx, &points[..SQLITE_CHUNK]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(total_points(&store).await, SQLITE_CHUNK as i64);
    assert!(!store.series_caught_up().await.unwrap());

    assert_eq!(store.map_series_pending(10).await.unwrap(), 1);
    assert!(store.series_caught_up().await.unwrap());
    assert_eq!(total_points(&store).await, CASES as i64);
    assert_counters_match_points(&store).await;

    // A second attempt adds one point to each series, and the cursor moved
    // back maps both events again without adding anything.
    finished_attempt(&store, "h", 2_000, &report(CASES)).await;
    assert_eq!(store.map_series_pending(10).await.unwrap(), 1);
    assert_eq!(total_points(&store).await, 2 * CASES as i64);
    on_pool!(&store.writer, p => sqlx::query("UPDATE export_sinks SET cursor = 0 WHERE name = $1")
        .bind(SERIES_VIEW)
        .execute(p)
        .await
        .map(|_| ()))
    .unwrap();
    assert_eq!(store.map_series_pending(10).await.unwrap(), 2);
    assert_eq!(total_points(&store).await, 2 * CASES as i64);
    assert_counters_match_points(&store).await;
    let one = store.series(1).await.unwrap();
    assert_eq!((one.points, one.last_at), (2, 2_002));
}

/// Two mappers at once (two loops of one process, or two coordinators on
/// one PostgreSQL) still add each point once.
async fn concurrent_mappers_add_each_point_once(store: Store) {
    for i in 0..4 {
        finished_attempt(&store, "h", 1_000 * (i + 1), &report(SQLITE_CHUNK + 10)).await;
    }
    let (a, b) = tokio::join!(store.map_series_pending(10), store.map_series_pending(10));
    a.unwrap();
    b.unwrap();
    assert!(store.series_caught_up().await.unwrap());
    assert_eq!(total_points(&store).await, 4 * (SQLITE_CHUNK as i64 + 10));
    assert_counters_match_points(&store).await;
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    test(store.clone()).await;
    store.close().await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let db = match crate::ScratchDatabase::create(PG_SERVER, "tf_series").await {
        Ok(db) => db,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL at {PG_SERVER} is unreachable ({e}); CI must start it"
            );
            eprintln!("skipping: PostgreSQL at {PG_SERVER} is unreachable ({e})");
            return;
        }
    };
    let url: DatabaseUrl = db.url().clone();
    // In a task of its own, so the database is dropped when the test fails.
    let outcome = tokio::spawn(async move {
        let store = Store::connect(&url).await.unwrap();
        test(store.clone()).await;
        store.close().await;
    })
    .await;
    db.drop().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn sqlite_interrupted_and_repeated_mapping_adds_each_point_once() {
    on_sqlite(interrupted_and_repeated_mapping_adds_each_point_once).await;
}

#[tokio::test]
async fn postgres_interrupted_and_repeated_mapping_adds_each_point_once() {
    on_postgres(interrupted_and_repeated_mapping_adds_each_point_once).await;
}

#[tokio::test]
async fn sqlite_concurrent_mappers_add_each_point_once() {
    on_sqlite(concurrent_mappers_add_each_point_once).await;
}

#[tokio::test]
async fn postgres_concurrent_mappers_add_each_point_once() {
    on_postgres(concurrent_mappers_add_each_point_once).await;
}
