//! A finished job's counts are stored with its terminal state and read from
//! its row; a job queued again has them cleared and is counted live.
//!
//! Each test gets a store and a plain pool on the same database (SQLite and
//! PostgreSQL), to read the stored columns, to clear them (the list then
//! counts live: both paths compared on the same data), to change them (the
//! list shows the change: it reads them) and to leave a database as a crash
//! or an older version would.

use std::future::Future;

use sqlx::Row;
use testfleet_core::{AttemptOutcome, JobState};
use testfleet_store::{Backend, DatabaseUrl, FinishEffect, Store, StoreError};
use testfleet_wire::api::JobSummary;

use super::{counted_from_tasks, finish};
use crate::fixture::PgDatabase;
use crate::support::{claim, simple_job, submit};

/// The stored counts, in the migration's order.
const COLUMNS: [&str; 15] = [
    "tasks_queued",
    "tasks_running",
    "tasks_passed",
    "tasks_failed",
    "tasks_cancelled",
    "outcomes_passed",
    "outcomes_failed",
    "outcomes_flaky",
    "outcomes_timed_out",
    "outcomes_stalled",
    "outcomes_crashed",
    "outcomes_infra_error",
    "outcomes_cancelled",
    "attempts_total",
    "tasks_retried",
];

/// Runs each test on SQLite (`stored::sqlite::name`) and PostgreSQL
/// (`stored::postgres::name`) with a [`Db`].
macro_rules! stored_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )+
        }
    };
}

stored_tests!(
    finished_jobs_store_counts_equal_to_the_live_count,
    the_list_reads_a_finished_jobs_stored_counts,
    queuing_a_task_again_clears_the_counts_and_finishing_stores_them_anew,
    a_job_repaired_at_start_up_stores_its_counts,
    the_migration_backfills_jobs_finished_before_it,
);

/// A plain pool on the store's database.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn execute(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
            Raw::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The job's stored counts, one per [`COLUMNS`].
    async fn stored(&self, job_id: i64) -> Vec<Option<i64>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE id = {job_id}",
            COLUMNS.join(", ")
        );
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            Raw::Sqlite(p) => {
                let row = sqlx::query(sql).fetch_one(p).await.expect("read the job");
                (0..COLUMNS.len())
                    .map(|i| row.try_get::<Option<i64>, _>(i).expect("a count"))
                    .collect()
            }
            Raw::Postgres(p) => {
                let row = sqlx::query(sql).fetch_one(p).await.expect("read the job");
                (0..COLUMNS.len())
                    .map(|i| row.try_get::<Option<i64>, _>(i).expect("a count"))
                    .collect()
            }
        }
    }

    /// Whether the job has stored counts (all of them) or none.
    async fn has_counts(&self, job_id: i64) -> bool {
        let stored = self.stored(job_id).await;
        let set = stored.iter().filter(|v| v.is_some()).count();
        assert!(
            set == 0 || set == COLUMNS.len(),
            "job {job_id} stores some counts only: {stored:?}"
        );
        set == COLUMNS.len()
    }

    /// Clears every job's stored counts: the list then counts every job live.
    async fn clear_counts(&self) {
        let set: Vec<String> = COLUMNS.iter().map(|c| format!("{c} = NULL")).collect();
        self.execute(&format!("UPDATE jobs SET {}", set.join(", ")))
            .await;
    }
}

/// A store, a plain pool on its database, and what keeps the database.
struct Db {
    store: Store,
    raw: Raw,
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = DatabaseUrl::in_dir(dir.path());
    let store = Store::connect(&url).await.expect("open the SQLite store");
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("testfleet.db"));
    let raw = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("a plain pool on the store's file");
    test(Db {
        store,
        raw: Raw::Sqlite(raw),
        url,
        _dir: Some(dir),
        _pg: None,
    })
    .await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let store = pg.store().await;
    let raw = pg.pool().await;
    test(Db {
        store,
        raw: Raw::Postgres(raw),
        url: pg.url(),
        _dir: None,
        _pg: Some(pg),
    })
    .await;
}

/// Claims `task` and ends its attempt with `outcome`.
async fn run(store: &Store, task: i64, outcome: AttemptOutcome, now: i64) -> FinishEffect {
    let attempt = claim(store, task, "agent-1", now).await.attempt.attempt_id;
    finish(store, attempt, "agent-1", outcome, now + 1).await
}

/// The list's answer for every job, by id.
async fn listed(store: &Store) -> Vec<JobSummary> {
    store.jobs(100, None).await.expect("the jobs list")
}

/// The summary's counts equal those counted from the job's tasks one by one.
async fn assert_counts_match_tasks(store: &Store, summary: &JobSummary) {
    assert_eq!(
        (
            summary.tasks.clone(),
            summary.outcomes.clone(),
            summary.attempts,
            summary.retried
        ),
        counted_from_tasks(store, summary.id).await,
        "job {} ({})",
        summary.id,
        summary.name
    );
}

/// Jobs in every terminal state, with flaky retries, infra retries and a
/// cancel, and one unfinished: what the stored counts must say.
async fn mixed_jobs(store: &Store) -> [i64; 4] {
    // Failed: t0 passes, t1 fails then passes (flaky), t2 fails twice.
    let (failed, q) = submit(store, &simple_job("failed", 3, 1, 0), 1_000).await;
    run(store, q[0].id, AttemptOutcome::Passed, 2_000).await;
    let effect = run(store, q[1].id, AttemptOutcome::Failed, 2_100).await;
    assert!(matches!(effect, FinishEffect::Requeued(_)), "{effect:?}");
    run(store, q[1].id, AttemptOutcome::Passed, 2_200).await;
    run(store, q[2].id, AttemptOutcome::Failed, 2_300).await;
    run(store, q[2].id, AttemptOutcome::TimedOut, 2_400).await;
    // Passed: an infra error retried, then a pass.
    let (passed, q) = submit(store, &simple_job("passed", 2, 0, 1), 3_000).await;
    run(store, q[0].id, AttemptOutcome::InfraError, 3_100).await;
    run(store, q[0].id, AttemptOutcome::Passed, 3_200).await;
    run(store, q[1].id, AttemptOutcome::Passed, 3_300).await;
    // Cancelled: one failed, one running, one queued when cancelled.
    let (cancelled, q) = submit(store, &simple_job("cancelled", 3, 0, 0), 4_000).await;
    run(store, q[0].id, AttemptOutcome::Failed, 4_100).await;
    claim(store, q[1].id, "agent-2", 4_200).await;
    store.cancel_job(cancelled, 4_300).await.expect("cancel");
    // Unfinished: one passed, one queued.
    let (running, q) = submit(store, &simple_job("running", 2, 0, 0), 5_000).await;
    run(store, q[0].id, AttemptOutcome::Passed, 5_100).await;
    [failed, passed, cancelled, running]
}

async fn finished_jobs_store_counts_equal_to_the_live_count(db: Db) {
    let (store, raw) = (&db.store, &db.raw);
    let [failed, passed, cancelled, running] = mixed_jobs(store).await;
    let states: Vec<(i64, JobState)> = listed(store)
        .await
        .iter()
        .map(|j| (j.id, j.state))
        .collect();
    assert_eq!(
        states,
        vec![
            // A passed task and a queued one: queued (JobState::from_tasks).
            (running, JobState::Queued),
            (cancelled, JobState::Cancelled),
            (passed, JobState::Passed),
            (failed, JobState::Failed),
        ]
    );
    for id in [failed, passed, cancelled] {
        assert!(
            raw.has_counts(id).await,
            "finished job {id} stores no counts"
        );
    }
    assert!(
        !raw.has_counts(running).await,
        "a running job stores counts"
    );

    // The stored path, then the live path on the same data.
    let stored = listed(store).await;
    let one_by_one = store.job_summary(failed).await.expect("the failed job");
    raw.clear_counts().await;
    let live = listed(store).await;
    assert_eq!(stored, live);
    assert_eq!(one_by_one, store.job_summary(failed).await.expect("again"));
    for job in &stored {
        assert_counts_match_tasks(store, job).await;
    }

    // What they say, spelled out for the failed job.
    let f = &stored[3];
    assert_eq!(
        (f.tasks.total, f.tasks.passed, f.tasks.failed),
        (3, 2, 1),
        "{f:?}"
    );
    assert_eq!(
        (f.outcomes.passed, f.outcomes.flaky, f.outcomes.timed_out),
        (1, 1, 1),
        "{f:?}"
    );
    assert_eq!((f.attempts, f.retried), (5, 2));
    let c = &stored[1];
    assert_eq!((c.tasks.failed, c.tasks.cancelled), (1, 2), "{c:?}");
    assert_eq!((c.outcomes.failed, c.outcomes.cancelled), (1, 2), "{c:?}");
    assert_eq!((c.attempts, c.retried), (2, 0));
}

async fn the_list_reads_a_finished_jobs_stored_counts(db: Db) {
    let (store, raw) = (&db.store, &db.raw);
    let [failed, _, _, running] = mixed_jobs(store).await;
    let before = store.job_summary(failed).await.expect("the failed job");
    raw.execute(&format!(
        "UPDATE jobs SET tasks_passed = tasks_passed + 1000, attempts_total = 77 WHERE id = {failed}"
    ))
    .await;
    // Both answers read the row: the total follows the stored states.
    for after in [
        store.job_summary(failed).await.expect("the failed job"),
        listed(store)
            .await
            .into_iter()
            .find(|j| j.id == failed)
            .expect("listed"),
    ] {
        assert_eq!(after.tasks.passed, before.tasks.passed + 1000);
        assert_eq!(after.tasks.total, before.tasks.total + 1000);
        assert_eq!(after.attempts, 77);
        assert_eq!(after.outcomes, before.outcomes);
    }
    // A row with some counts missing (edited by hand) is counted live.
    raw.execute(&format!(
        "UPDATE jobs SET tasks_failed = NULL WHERE id = {failed}"
    ))
    .await;
    assert_eq!(store.job_summary(failed).await.expect("live"), before);
    // A negative count is refused with the job and column named.
    raw.execute(&format!(
        "UPDATE jobs SET tasks_failed = -1 WHERE id = {failed}"
    ))
    .await;
    let err = store
        .job_summary(failed)
        .await
        .expect_err("a negative count");
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains(&format!("job {failed}")) && m.contains("tasks_failed")),
        "{err:?}"
    );
    // A running job is counted live whatever its row says.
    let live = store.job_summary(running).await.expect("the running job");
    assert_eq!((live.tasks.total, live.tasks.queued), (2, 1));
}

async fn queuing_a_task_again_clears_the_counts_and_finishing_stores_them_anew(db: Db) {
    let (store, raw) = (&db.store, &db.raw);
    let (job, q) = submit(store, &simple_job("again", 3, 0, 0), 1_000).await;
    run(store, q[0].id, AttemptOutcome::Passed, 2_000).await;
    run(store, q[1].id, AttemptOutcome::Failed, 2_100).await;
    run(store, q[2].id, AttemptOutcome::Failed, 2_200).await;
    let first = store.job_summary(job).await.expect("finished");
    assert_eq!(first.state, JobState::Failed);
    assert!(raw.has_counts(job).await);

    // The whole job again: both failed tasks queued, the counts cleared.
    let retried = store.retry_job(job, 3_000).await.expect("retry_job");
    assert_eq!(retried.tasks.len(), 2);
    assert!(!raw.has_counts(job).await, "a retried job keeps its counts");
    let queued = store.job_summary(job).await.expect("retried");
    // A passed task and queued ones: queued (JobState::from_tasks).
    assert_eq!(
        (retried.job_state, queued.state),
        (JobState::Queued, JobState::Queued)
    );
    assert_eq!((queued.tasks.queued, queued.tasks.failed), (2, 0));
    assert_counts_match_tasks(store, &queued).await;

    // One passes (flaky now), one fails again: finished again, counted anew.
    run(store, q[1].id, AttemptOutcome::Passed, 3_100).await;
    assert!(
        !raw.has_counts(job).await,
        "counts stored before the job ended"
    );
    run(store, q[2].id, AttemptOutcome::Failed, 3_200).await;
    assert!(raw.has_counts(job).await);
    let second = store.job_summary(job).await.expect("finished again");
    assert_eq!(second.state, JobState::Failed);
    assert_eq!(
        (
            second.tasks.passed,
            second.tasks.failed,
            second.outcomes.flaky
        ),
        (2, 1, 1)
    );
    assert_eq!((second.attempts, second.retried), (5, 2));
    assert_counts_match_tasks(store, &second).await;

    // One task again (`retry_task`), then a known-failure re-trigger: each
    // clears the counts, each finish stores them anew.
    let one = store.retry_task(q[2].id, 4_000).await.expect("retry_task");
    assert_eq!(one.job_state, JobState::Queued);
    assert!(!raw.has_counts(job).await, "retry_task kept the counts");
    run(store, q[2].id, AttemptOutcome::Failed, 4_100).await;
    assert!(raw.has_counts(job).await);
    let third = store.job_summary(job).await.expect("finished a third time");
    assert_counts_match_tasks(store, &third).await;
    assert_eq!(third.attempts, 6);

    let again = store
        .retrigger(q[2].id, "known-crash", 3, 5_000)
        .await
        .expect("retrigger")
        .expect("a failed task is re-triggered");
    assert_eq!(again.id, q[2].id);
    assert!(!raw.has_counts(job).await, "retrigger kept the counts");
    let requeued = store.job_summary(job).await.expect("re-triggered");
    assert_eq!(
        (
            requeued.state,
            requeued.finished_at.as_deref(),
            requeued.tasks.queued
        ),
        (JobState::Running, None, 1)
    );
    assert_counts_match_tasks(store, &requeued).await;
    run(store, q[2].id, AttemptOutcome::Passed, 5_100).await;
    let fourth = store
        .job_summary(job)
        .await
        .expect("finished a fourth time");
    assert_eq!(fourth.state, JobState::Passed);
    assert!(raw.has_counts(job).await);
    assert_eq!(
        (
            fourth.tasks.passed,
            fourth.outcomes.passed,
            fourth.outcomes.flaky
        ),
        (3, 1, 2)
    );
    assert_counts_match_tasks(store, &fourth).await;
    raw.clear_counts().await;
    assert_eq!(store.job_summary(job).await.expect("live"), fourth);
}

async fn a_job_repaired_at_start_up_stores_its_counts(db: Db) {
    let (store, raw) = (&db.store, &db.raw);
    let (job, q) = submit(store, &simple_job("repaired", 2, 0, 0), 1_000).await;
    run(store, q[0].id, AttemptOutcome::Passed, 2_000).await;
    run(store, q[1].id, AttemptOutcome::Crashed, 2_100).await;
    let finished = store.job_summary(job).await.expect("finished");
    // A coordinator killed between the task's end and the job's (PostgreSQL
    // settles the job in a second transaction) leaves it running, uncounted.
    raw.execute(&format!(
        "UPDATE jobs SET state = 'running', finished_at = NULL WHERE id = {job}"
    ))
    .await;
    raw.clear_counts().await;
    assert_eq!(store.repair_job_states(3_000).await.expect("repair"), 1);
    assert!(
        raw.has_counts(job).await,
        "the repaired job stores no counts"
    );
    let repaired = store.job_summary(job).await.expect("repaired");
    assert_eq!(repaired.state, JobState::Failed);
    assert_eq!(
        (&repaired.tasks, &repaired.outcomes, repaired.attempts),
        (&finished.tasks, &finished.outcomes, finished.attempts)
    );
    assert_eq!(repaired.outcomes.crashed, 1);
}

async fn the_migration_backfills_jobs_finished_before_it(db: Db) {
    let [failed, passed, cancelled, running] = mixed_jobs(&db.store).await;
    let expected = listed(&db.store).await;
    db.store.close().await;
    // The database as the version before the counts left it: no columns,
    // the migration not applied.
    let version = match db.raw {
        Raw::Sqlite(_) => 16,
        Raw::Postgres(_) => 4,
    };
    for column in COLUMNS {
        db.raw
            .execute(&format!("ALTER TABLE jobs DROP COLUMN {column}"))
            .await;
    }
    db.raw
        .execute(&format!(
            "DELETE FROM _sqlx_migrations WHERE version = {version}"
        ))
        .await;

    let store = Store::connect(&db.url).await.expect("migrate again");
    assert_eq!(
        store.backend(),
        match db.raw {
            Raw::Sqlite(_) => Backend::Sqlite,
            Raw::Postgres(_) => Backend::Postgres,
        }
    );
    for id in [failed, passed, cancelled] {
        assert!(db.raw.has_counts(id).await, "job {id} was not backfilled");
    }
    assert!(!db.raw.has_counts(running).await);
    assert_eq!(listed(&store).await, expected);
    // The backfilled counts are the ones the list reads.
    db.raw.clear_counts().await;
    assert_eq!(listed(&store).await, expected);
    store.close().await;
}

/// Two coordinators on one PostgreSQL database end, retry and cancel tasks
/// of the same jobs at once: whatever order their transactions commit in,
/// a finished job's stored counts are those of its tasks, and a job queued
/// again has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writers_racing_leave_counts_equal_to_the_tasks() {
    const TASKS: usize = 24;
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let raw = Raw::Postgres(pg.pool().await);
    let (a, b) = (pg.store().await, pg.store().await);
    let (job, q) = submit(&a, &simple_job("raced", TASKS, 0, 0), 1_000).await;
    let ids: Vec<i64> = q.iter().map(|t| t.id).collect();

    /// Each store runs every other task of `ids` to an outcome.
    async fn run_half(store: Store, ids: Vec<i64>, agent: &'static str, now: i64) {
        for (k, id) in ids.into_iter().enumerate() {
            let outcome = if k % 3 == 0 {
                AttemptOutcome::Failed
            } else {
                AttemptOutcome::Passed
            };
            let claimed = store
                .claim(id, agent, now)
                .await
                .expect("claim")
                .expect("claimable");
            finish(&store, claimed.attempt.attempt_id, agent, outcome, now + 1).await;
        }
    }
    let halves = |ids: &[i64], parity: usize| -> Vec<i64> {
        ids.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, id)| *id)
            .collect()
    };

    for round in 0..4_i64 {
        let now = 10_000 * (round + 1);
        let open: Vec<i64> = match round {
            0 => ids.clone(),
            _ => {
                // Both re-open failed tasks at once: a job's retry from one
                // coordinator, a re-trigger of one task from the other.
                let failed = counted_failed(&a, job).await;
                let retrigger = b.retrigger(failed[0], "race", 10, now);
                let retry = a.retry_job(job, now);
                let (re, rj) = tokio::join!(retrigger, retry);
                re.expect("retrigger");
                match rj {
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("retry_job: {e}"),
                }
                assert!(
                    !raw.has_counts(job).await,
                    "round {round}: a re-opened job keeps counts"
                );
                let view = a.job(job).await.expect("the job");
                view.tasks
                    .iter()
                    .filter(|t| t.state == testfleet_core::TaskState::Queued)
                    .map(|t| t.id)
                    .collect()
            }
        };
        tokio::join!(
            run_half(a.clone(), halves(&open, 0), "agent-a", now + 100),
            run_half(b.clone(), halves(&open, 1), "agent-b", now + 100),
        );
        assert!(raw.has_counts(job).await, "round {round}: no counts stored");
        let stored = a.job_summary(job).await.expect("stored");
        assert!(stored.state.is_terminal(), "round {round}: {stored:?}");
        assert_counts_match_tasks(&a, &stored).await;
        assert_eq!(stored.tasks.total, TASKS as u64);
    }

    // A cancel racing finishes: cancelled, with the counts of what each
    // task ended as (passed, failed or cancelled).
    let (cancelled, q) = submit(&a, &simple_job("cancel-raced", TASKS, 0, 0), 90_000).await;
    let ids: Vec<i64> = q.iter().map(|t| t.id).collect();
    let finishing = async {
        for (k, &id) in ids.iter().enumerate() {
            // Claims find nothing once the cancel committed.
            let Some(claimed) = b.claim(id, "agent-b", 90_100).await.expect("claim") else {
                break;
            };
            let outcome = if k % 3 == 0 {
                AttemptOutcome::Failed
            } else {
                AttemptOutcome::Passed
            };
            finish(&b, claimed.attempt.attempt_id, "agent-b", outcome, 90_101).await;
        }
    };
    let cancelling = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        a.cancel_job(cancelled, 90_200).await
    };
    let ((), cancel) = tokio::join!(finishing, cancelling);
    cancel.expect("cancel");
    assert!(raw.has_counts(cancelled).await);
    let summary = a.job_summary(cancelled).await.expect("cancelled");
    // Cancelled, or failed when every finish came first.
    assert!(summary.state.is_terminal(), "{summary:?}");
    assert_counts_match_tasks(&a, &summary).await;
    a.close().await;
    b.close().await;
}

/// The failed tasks of `job`, in id order.
async fn counted_failed(store: &Store, job: i64) -> Vec<i64> {
    store
        .job(job)
        .await
        .expect("the job")
        .tasks
        .iter()
        .filter(|t| t.state == testfleet_core::TaskState::Failed)
        .map(|t| t.id)
        .collect()
}
