//! Several coordinators on one PostgreSQL database: each has its own `Store`
//! (its own pools and batch writer), so only the SQL keeps them apart.
//! SQLite has one writer per file and is not shared this way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use testfleet_core::AttemptOutcome;
use testfleet_store::{FinishEffect, RETRY_PRIORITY_BOOST, Store};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::fixture::PgDatabase;
use crate::support::{catch_up, pass, passing_results, simple_job, submit};

const COORDINATORS: usize = 8;
const TASKS: usize = 200;

/// A task as the claim race left it.
#[derive(sqlx::FromRow)]
struct TaskRow {
    id: i64,
    state: String,
    agent: Option<String>,
    current_attempt: Option<i64>,
    attempts: i64,
}

/// Opens `n` stores at once (their migrations race too).
async fn coordinators(db: &PgDatabase, n: usize) -> Vec<Store> {
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let url = db.url();
        opening.spawn(async move { Store::connect(&url).await });
    }
    let mut stores = Vec::new();
    while let Some(opened) = opening.join_next().await {
        stores.push(
            opened
                .unwrap()
                .expect("a coordinator opens the shared store"),
        );
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_coordinators_racing_claim_each_task_once() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let stores = coordinators(&db, COORDINATORS).await;
    let (_, queued) = submit(&stores[0], &simple_job("race", TASKS, 0, 2), 1_000).await;
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();

    // Each coordinator tries every task for its own agent, ten claims in
    // flight at a time (as dispatch does); half go forwards, half backwards.
    let start = Arc::new(Barrier::new(COORDINATORS));
    let mut racers = JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        let (store, start) = (store.clone(), start.clone());
        let mut order = ids.clone();
        if i % 2 == 1 {
            order.reverse();
        }
        racers.spawn(async move {
            let agent = format!("agent-{i}");
            let mut won = Vec::new();
            let mut errors = Vec::new();
            start.wait().await;
            for chunk in order.chunks(10) {
                let mut claims = JoinSet::new();
                for &task in chunk {
                    let (store, agent) = (store.clone(), agent.clone());
                    claims.spawn(async move { (task, store.claim(task, &agent, 2_000).await) });
                }
                while let Some(done) = claims.join_next().await {
                    match done.unwrap() {
                        (task, Ok(Some(c))) => {
                            won.push((task, agent.clone(), c.attempt.attempt_id))
                        }
                        (_, Ok(None)) => {}
                        (task, Err(e)) => errors.push(format!("{agent} task {task}: {e:?}")),
                    }
                }
            }
            (won, errors)
        });
    }
    let mut won = Vec::new();
    let mut errors = Vec::new();
    while let Some(done) = racers.join_next().await {
        let (w, e) = done.unwrap();
        won.extend(w);
        errors.extend(e);
    }
    // Every finding is collected before failing, so one run shows them all.
    let mut problems: Vec<String> = errors
        .iter()
        .map(|e| format!("claim failed instead of answering: {e}"))
        .collect();
    let mut per_task: HashMap<i64, Vec<&str>> = HashMap::new();
    for (task, agent, _) in &won {
        per_task.entry(*task).or_default().push(agent);
    }
    for (task, agents) in &per_task {
        if agents.len() > 1 {
            problems.push(format!(
                "task {task} claimed {} times: {agents:?}",
                agents.len()
            ));
        }
    }
    if per_task.len() != TASKS {
        problems.push(format!("{} of {TASKS} tasks claimed", per_task.len()));
    }

    // The tables agree: one attempt per task, the winner's.
    let pool = db.pool().await;
    let attempts: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, task_id, agent FROM attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    if attempts.len() != TASKS {
        problems.push(format!("{} attempt rows for {TASKS} tasks", attempts.len()));
    }
    let mut rows_per_task: HashMap<i64, usize> = HashMap::new();
    for (_, task, _) in &attempts {
        *rows_per_task.entry(*task).or_default() += 1;
    }
    for (task, n) in &rows_per_task {
        if *n != 1 {
            problems.push(format!("task {task} has {n} attempt rows"));
        }
    }
    let winners: HashMap<i64, (&str, i64)> = won
        .iter()
        .map(|(task, agent, attempt)| (*task, (agent.as_str(), *attempt)))
        .collect();
    let tasks: Vec<TaskRow> =
        sqlx::query_as("SELECT id, state, agent, current_attempt, attempts FROM tasks ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    for t in &tasks {
        let Some(&(winner, attempt)) = winners.get(&t.id) else {
            problems.push(format!("task {} ({}) was claimed by nobody", t.id, t.state));
            continue;
        };
        if (
            t.state.as_str(),
            t.agent.as_deref(),
            t.current_attempt,
            t.attempts,
        ) != ("running", Some(winner), Some(attempt), 1)
        {
            problems.push(format!(
                "task {}: state {}, agent {:?}, current attempt {:?}, {} attempts; the claim said {winner}, attempt {attempt}",
                t.id, t.state, t.agent, t.current_attempt, t.attempts
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );

    assert_eq!(stores[3].running_attempts().await.unwrap().len(), TASKS);
    assert!(stores[5].queued_tasks().await.unwrap().is_empty());
    // How evenly the work spread, for the log.
    let agents: HashSet<&str> = won.iter().map(|(_, a, _)| a.as_str()).collect();
    eprintln!("{} of {COORDINATORS} coordinators won claims", agents.len());

    pool.close().await;
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_coordinators_racing_finish_end_each_attempt_once() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let stores = coordinators(&db, 2).await;
    let (a, b) = (stores[0].clone(), stores[1].clone());
    const ROUNDS: usize = 30;
    let (_, queued) = submit(&a, &simple_job("finish-race", ROUNDS, 1, 1), 1_000).await;
    let mut attempts = Vec::new();
    for q in &queued {
        let c = a.claim(q.id, "agent-1", 2_000).await.unwrap().unwrap();
        attempts.push((q.id, c.attempt.attempt_id));
    }

    // Both coordinators end every attempt at once, each with its own reason.
    let start = Arc::new(Barrier::new(2));
    let mut finishers = JoinSet::new();
    for (store, reason) in [(a.clone(), "from a"), (b.clone(), "from b")] {
        let (start, attempts) = (start.clone(), attempts.clone());
        finishers.spawn(async move {
            start.wait().await;
            let mut pending = JoinSet::new();
            for (task, attempt) in attempts {
                let store = store.clone();
                pending.spawn(async move {
                    let results = passing_results("tst_race", "once");
                    let effect = store
                        .finish_attempt(
                            attempt,
                            Some("agent-1"),
                            AttemptOutcome::Failed,
                            Some(reason),
                            None,
                            Some(&results),
                            None,
                            5_000,
                        )
                        .await;
                    (task, attempt, reason, effect)
                });
            }
            let mut out = Vec::new();
            while let Some(done) = pending.join_next().await {
                out.push(done.unwrap());
            }
            out
        });
    }
    let mut effects: HashMap<i64, Vec<(&str, FinishEffect)>> = HashMap::new();
    let mut errors = Vec::new();
    while let Some(done) = finishers.join_next().await {
        for (_, attempt, reason, effect) in done.unwrap() {
            match effect {
                Ok(e) => effects.entry(attempt).or_default().push((reason, e)),
                Err(e) => errors.push(format!("{reason}, attempt {attempt}: {e:?}")),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "finishes failed instead of answering Stale: {errors:#?}"
    );

    // Both coordinators build the ResultsDB view at once: each event is
    // mapped once.
    let mut mappers = JoinSet::new();
    for store in [a.clone(), b.clone()] {
        mappers.spawn(async move { catch_up(&store).await });
    }
    let mut mapped = 0;
    while let Some(done) = mappers.join_next().await {
        mapped += done.unwrap();
    }
    assert_eq!(
        mapped, ROUNDS,
        "events mapped by the two coordinators together"
    );

    let pool = db.pool().await;
    for (task, attempt) in &attempts {
        let answers = &effects[attempt];
        let movers: Vec<&(&str, FinishEffect)> = answers
            .iter()
            .filter(|(_, e)| *e != FinishEffect::Stale)
            .collect();
        assert_eq!(
            movers.len(),
            1,
            "attempt {attempt}: exactly one finish applies, got {answers:?}"
        );
        let (winner, effect) = movers[0];
        let FinishEffect::Requeued(q) = effect else {
            panic!("attempt {attempt}: expected a retry, got {effect:?}");
        };
        assert_eq!(q.priority, RETRY_PRIORITY_BOOST, "attempt {attempt}");

        // The attempt has one outcome: the winner's.
        let (outcome, reason): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT outcome, reason FROM attempts WHERE id = $1")
                .bind(attempt)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(outcome.as_deref(), Some("failed"), "attempt {attempt}");
        assert_eq!(
            reason.as_deref(),
            Some(*winner),
            "attempt {attempt}: the losing finish wrote over the winner's"
        );
        // The task moved on once.
        let (state, test_failures, priority, current): (String, i64, i64, Option<i64>) =
            sqlx::query_as(
                "SELECT state, test_failures, priority, current_attempt FROM tasks WHERE id = $1",
            )
            .bind(task)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(state, "queued", "task {task}");
        assert_eq!(test_failures, 1, "task {task}: counted once");
        assert_eq!(
            priority,
            i64::from(RETRY_PRIORITY_BOOST),
            "task {task}: boosted once"
        );
        assert_eq!(current, None, "task {task}");
        // Its results were exported and mapped once.
        let (events,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM export_events WHERE attempt_id = $1")
                .bind(attempt)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(events, 1, "attempt {attempt}: export events");
        let (mapped,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM rdb_results WHERE attempt_id = $1")
                .bind(attempt)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(mapped, 1, "attempt {attempt}: ResultsDB results");
    }
    let (runs,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(runs), 0) AS BIGINT) FROM task_stats")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(runs, ROUNDS as i64, "each attempt's runtime recorded once");
    assert_eq!(a.queued_tasks().await.unwrap().len(), ROUNDS);

    pool.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cancel_racing_claims_leaves_no_running_attempt() {
    // Dispatch ten at a time; the cancel comes once twenty claims went
    // through, while the others are still being made.
    cancel_race(10, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cancel_racing_the_first_claims_of_a_job() {
    // Every task claimed at once (200 idle agents) while the job is still
    // queued: the cancel meets the claims' first batch.
    cancel_race(TASKS, 0).await;
}

/// One coordinator claims every task of a job, `chunk` claims in flight at
/// a time, while another cancels the job once `cancel_after` claims won.
async fn cancel_race(chunk: usize, cancel_after: usize) {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let stores = coordinators(&db, 2).await;
    let (claimer, canceller) = (stores[0].clone(), stores[1].clone());
    let (job_id, queued) = submit(&claimer, &simple_job("cancel-race", TASKS, 0, 2), 1_000).await;

    let won_so_far = Arc::new(AtomicUsize::new(0));
    let claims = {
        let (won_so_far, ids) = (
            won_so_far.clone(),
            queued.iter().map(|q| q.id).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let mut won = Vec::new();
            let mut errors = Vec::new();
            for chunk in ids.chunks(chunk) {
                let mut pending = JoinSet::new();
                for &task in chunk {
                    let store = claimer.clone();
                    pending.spawn(async move { (task, store.claim(task, "agent-1", 2_000).await) });
                }
                while let Some(done) = pending.join_next().await {
                    match done.unwrap() {
                        (_, Ok(Some(c))) => {
                            won.push(c.attempt.attempt_id);
                            won_so_far.fetch_add(1, Ordering::SeqCst);
                        }
                        (_, Ok(None)) => {}
                        (task, Err(e)) => errors.push(format!("claim of task {task}: {e:?}")),
                    }
                }
            }
            (won, errors)
        })
    };
    if cancel_after == 0 {
        // Let the claims reach the store first.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    while won_so_far.load(Ordering::SeqCst) < cancel_after {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let cancelled = canceller.cancel_job(job_id, 2_500).await;
    let (won, mut problems) = claims.await.unwrap();
    eprintln!("{} of {TASKS} claims won before the cancel", won.len());
    let stopped = match cancelled {
        Ok(stopped) => stopped,
        Err(e) => {
            problems.push(format!("cancel_job failed: {e:?}"));
            Vec::new()
        }
    };
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );

    // Every claim that succeeded came before the cancel, and is in its
    // answer (so its agent is told to stop); none came after it.
    let stopped: HashSet<i64> = stopped.iter().map(|r| r.attempt_id).collect();
    let missed: Vec<&i64> = won.iter().filter(|a| !stopped.contains(a)).collect();
    assert!(
        missed.is_empty(),
        "attempts claimed but not stopped by the cancel: {missed:?}"
    );
    assert!(won.len() >= cancel_after, "claims won: {}", won.len());
    assert!(canceller.running_attempts().await.unwrap().is_empty());
    let job = canceller.job(job_id).await.unwrap();
    assert_eq!(job.state, testfleet_core::JobState::Cancelled);
    assert!(
        job.tasks
            .iter()
            .all(|t| t.state == testfleet_core::TaskState::Cancelled)
    );
    canceller.close().await;
    stores[0].close().await;
}

/// Two coordinators ending the tasks of the same jobs at once, half each:
/// every job ends once every task did, with its counts, however the two
/// coordinators' batches and settles interleave (a settle that leaves a
/// running job running reads without the job's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_coordinators_ending_a_jobs_tasks_together_end_the_job() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let stores = coordinators(&db, 2).await;
    const JOBS: usize = 20;
    const TASKS_PER_JOB: usize = 6;
    let mut jobs = Vec::new();
    let mut work = Vec::new();
    for j in 0..JOBS {
        let (job, queued) = submit(
            &stores[0],
            &simple_job(&format!("end-race-{j}"), TASKS_PER_JOB, 0, 0),
            1_000,
        )
        .await;
        jobs.push(job);
        for (i, q) in queued.iter().enumerate() {
            let store = &stores[i % 2];
            let agent = format!("agent-{j}-{i}");
            let c = store.claim(q.id, &agent, 2_000).await.unwrap().unwrap();
            work.push((i % 2, agent, c.attempt.attempt_id));
        }
    }
    let start = Arc::new(Barrier::new(work.len()));
    let mut finishers = JoinSet::new();
    for (side, agent, attempt) in work {
        let (store, start) = (stores[side].clone(), start.clone());
        finishers.spawn(async move {
            start.wait().await;
            pass(&store, attempt, &agent, 3_000).await
        });
    }
    while let Some(done) = finishers.join_next().await {
        let effect = done.unwrap().expect("a finish is recorded");
        assert!(
            matches!(effect, FinishEffect::TaskFinished { .. }),
            "{effect:?}"
        );
    }
    for job in jobs {
        let summary = stores[1].job_summary(job).await.expect("the job is there");
        assert_eq!(
            (
                summary.state,
                summary.tasks.passed,
                summary.finished_at.is_some()
            ),
            (testfleet_core::JobState::Passed, TASKS_PER_JOB as u64, true),
            "job {job}: {summary:?}"
        );
    }
    for store in stores {
        store.close().await;
    }
}

/// Coordinators that know of each other commit with one writer each; while
/// they switch between one writer and all of theirs, claims and finishes
/// racing from both are each recorded once.
#[tokio::test]
async fn postgres_shared_coordinators_switching_writers_lose_nothing() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let stores = coordinators(&db, 2).await;
    const TASKS: usize = 200;
    let (job, queued) = submit(
        &stores[0],
        &simple_job("shared-writers", TASKS, 0, 0),
        1_000,
    )
    .await;
    let mut racers = JoinSet::new();
    for (i, q) in queued.into_iter().enumerate() {
        let store = stores[i % 2].clone();
        racers.spawn(async move {
            // Half-way through, each store switches between its writers.
            store.set_shared(i % 4 < 2);
            let agent = format!("agent-{i}");
            let claimed = store.claim(q.id, &agent, 2_000).await.expect("claim");
            let attempt = claimed.expect("nobody else claims this task");
            pass(&store, attempt.attempt.attempt_id, &agent, 3_000)
                .await
                .expect("finish")
        });
    }
    while let Some(done) = racers.join_next().await {
        let effect = done.expect("no racer panics");
        assert!(
            matches!(effect, FinishEffect::TaskFinished { .. }),
            "{effect:?}"
        );
    }
    let summary = stores[1].job_summary(job).await.expect("the job is there");
    assert_eq!(
        (summary.state, summary.tasks.passed),
        (testfleet_core::JobState::Passed, TASKS as u64),
        "{summary:?}"
    );
    for store in stores {
        store.close().await;
    }
}

/// A claim committed in the same batch as a finish that ends a job is
/// answered at the commit: it does not wait for the job's state to be
/// settled (on PostgreSQL, a second transaction that may wait on the job's
/// row).
#[tokio::test]
async fn postgres_a_claim_does_not_wait_for_the_settling_of_a_job() {
    use sqlx::Connection;
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = Store::connect(&db.url()).await.expect("store");
    // One writer: the claim and the finish below go in one batch.
    store.set_shared(true);
    let (ending, queued) = submit(&store, &simple_job("ending", 1, 0, 0), 1_000).await;
    let running = store
        .claim(queued[0].id, "a", 2_000)
        .await
        .unwrap()
        .unwrap();
    let (_, waiting) = submit(&store, &simple_job("waiting", 1, 0, 0), 1_000).await;

    // Another session holds the ending job's row: settling it must wait.
    let mut other = sqlx::PgConnection::connect(db.postgres_url())
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(ending)
        .execute(&mut other)
        .await
        .expect("lock");

    let finish = pass(&store, running.attempt.attempt_id, "a", 3_000);
    let claim = store.claim(waiting[0].id, "b", 3_000);
    tokio::pin!(finish);
    tokio::pin!(claim);
    // Both are queued before the writer runs (this test's runtime has one thread).
    let claimed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::select! {
            claimed = &mut claim => claimed,
            ended = &mut finish => panic!("the finish could not settle its job yet: {ended:?}"),
        }
    })
    .await
    .expect("the claim is answered while the job's row is held")
    .expect("claim");
    assert!(claimed.is_some(), "the waiting task was claimed");

    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
    let ended = finish.await.expect("finish");
    assert!(
        matches!(
            ended,
            FinishEffect::TaskFinished {
                job_state: testfleet_core::JobState::Passed,
                ..
            }
        ),
        "{ended:?}"
    );
    store.close().await;
}
