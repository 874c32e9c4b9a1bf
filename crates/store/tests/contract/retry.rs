//! `retry_job` and `retry_task`: failed tasks queued again on a user's
//! request, and the refusals (unknown, still running, nothing failed).

use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_store::{Missing, NewTask, RETRY_PRIORITY_BOOST, Store, StoreError};

use crate::support::{claim, simple_job, submit};

contract_tests!(
    retry_job_queues_the_failed_tasks_of_a_finished_job_again,
    retry_job_refuses_unknown_running_and_passed_jobs,
    retry_task_queues_one_failed_task_even_in_a_running_job,
    a_task_is_queued_again_once_by_concurrent_retries,
    rerun_tasks_queues_finished_tasks_once_more_and_keeps_pins,
);

/// Claims `task` on `agent` and ends its attempt with `outcome`.
async fn run(store: &Store, task: i64, agent: &str, outcome: AttemptOutcome, now: i64) {
    let a = claim(store, task, agent, now).await.attempt.attempt_id;
    store
        .finish_attempt(
            a,
            Some(agent),
            outcome,
            Some("exit code 1"),
            None,
            None,
            None,
            now + 500,
        )
        .await
        .expect("finish_attempt");
}

fn conflict(e: StoreError) -> String {
    match e {
        StoreError::Conflict(msg) => msg,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn retry_job_queues_the_failed_tasks_of_a_finished_job_again(store: Store) {
    // No retry budget: a failure ends the task at once.
    let (job_id, queued) = submit(&store, &simple_job("nightly", 3, 0, 0), 1_000).await;
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
    run(&store, ids[0], "agent-1", AttemptOutcome::Failed, 2_000).await;
    run(&store, ids[1], "agent-1", AttemptOutcome::Passed, 3_000).await;
    run(&store, ids[2], "agent-2", AttemptOutcome::Crashed, 4_000).await;
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.finished_at.is_some());

    let retried = store.retry_job(job_id, 10_000).await.unwrap();
    assert_eq!(retried.job_id, job_id);
    assert_eq!(retried.job_state, JobState::Queued);
    let again: Vec<i64> = retried.tasks.iter().map(|t| t.id).collect();
    assert_eq!(
        again,
        vec![ids[0], ids[2]],
        "the failed ones, not the passed one"
    );
    for t in &retried.tasks {
        assert_eq!(t.job_id, job_id);
        assert_eq!(t.priority, RETRY_PRIORITY_BOOST, "boosted as retries are");
        assert_eq!(t.queued_at, 10_000);
    }
    assert_eq!(
        retried.tasks[1].last_agent.as_deref(),
        Some("agent-2"),
        "a retry prefers another agent than the one that failed"
    );

    // The store says the same: queued again, the job no longer finished.
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.finished_at, None);
    let states: Vec<TaskState> = job.tasks.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        vec![TaskState::Queued, TaskState::Passed, TaskState::Queued]
    );
    assert_eq!(
        job.tasks[0].detail_message.as_deref(),
        Some("queued again: retry requested")
    );
    let indexed: Vec<i64> = store
        .queued_tasks()
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(indexed, vec![ids[0], ids[2]]);

    // New attempts: the second run of each task; passing now makes it flaky.
    let second = claim(&store, ids[0], "agent-2", 11_000).await;
    assert_eq!(second.attempt.task_id, ids[0]);
    assert_eq!(store.job(job_id).await.unwrap().state, JobState::Running);
    store
        .finish_attempt(
            second.attempt.attempt_id,
            Some("agent-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            12_000,
        )
        .await
        .unwrap();
    run(&store, ids[2], "agent-1", AttemptOutcome::Passed, 13_000).await;
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Passed, "{job:#?}");
    assert!(job.finished_at.is_some());
    assert_eq!(job.tasks[0].attempts, 2);
    assert!(job.tasks[0].flaky, "failed, then passed on retry");
    let detail = store.task(ids[0]).await.unwrap();
    let numbers: Vec<i64> = detail.attempts_list.iter().map(|a| a.number).collect();
    assert_eq!(numbers.len(), 2);
    assert!(numbers.contains(&1) && numbers.contains(&2), "{numbers:?}");

    // Nothing failed any more.
    let msg = conflict(store.retry_job(job_id, 14_000).await.unwrap_err());
    assert!(msg.contains("no failed task to retry"), "{msg}");
    assert!(msg.contains("every task passed"), "{msg}");
}

async fn retry_job_refuses_unknown_running_and_passed_jobs(store: Store) {
    match store.retry_job(4242, 1_000).await {
        Err(StoreError::NotFound(Missing::Job(4242))) => {}
        other => panic!("expected job 4242 not found, got {other:?}"),
    }

    let (job_id, queued) = submit(&store, &simple_job("busy", 2, 0, 0), 1_000).await;
    run(
        &store,
        queued[0].id,
        "agent-1",
        AttemptOutcome::Failed,
        2_000,
    )
    .await;
    // The second task is still queued: the job has not finished.
    let msg = conflict(store.retry_job(job_id, 3_000).await.unwrap_err());
    assert!(msg.contains("still running"), "{msg}");
    assert!(
        msg.contains("--task"),
        "points to the retry of one task: {msg}"
    );
    assert_eq!(
        store.job(job_id).await.unwrap().tasks[0].state,
        TaskState::Failed,
        "a refused retry changes nothing"
    );
    // Running counts as unfinished too.
    let _running = claim(&store, queued[1].id, "agent-2", 4_000).await;
    let msg = conflict(store.retry_job(job_id, 5_000).await.unwrap_err());
    assert!(msg.contains("still running"), "{msg}");

    let (passed, q) = submit(&store, &simple_job("green", 1, 0, 0), 6_000).await;
    run(&store, q[0].id, "agent-1", AttemptOutcome::Passed, 7_000).await;
    let msg = conflict(store.retry_job(passed, 8_000).await.unwrap_err());
    assert!(msg.contains("no failed task"), "{msg}");

    // A cancelled job whose tasks never failed has nothing to retry.
    let (cancelled, _) = submit(&store, &simple_job("stop", 1, 0, 0), 9_000).await;
    store.cancel_job(cancelled, 9_500).await.unwrap();
    let msg = conflict(store.retry_job(cancelled, 10_000).await.unwrap_err());
    assert!(msg.contains("cancelled before any task failed"), "{msg}");
}

async fn retry_task_queues_one_failed_task_even_in_a_running_job(store: Store) {
    match store.retry_task(4242, 1_000).await {
        Err(StoreError::NotFound(Missing::Task(4242))) => {}
        other => panic!("expected task 4242 not found, got {other:?}"),
    }
    let (job_id, queued) = submit(&store, &simple_job("one", 3, 0, 0), 1_000).await;
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
    let msg = conflict(store.retry_task(ids[0], 1_500).await.unwrap_err());
    assert!(msg.contains("is queued"), "{msg}");
    assert!(msg.contains("only a failed task"), "{msg}");

    run(&store, ids[0], "agent-1", AttemptOutcome::TimedOut, 2_000).await;
    run(&store, ids[1], "agent-1", AttemptOutcome::Passed, 3_000).await;
    let msg = conflict(store.retry_task(ids[1], 3_500).await.unwrap_err());
    assert!(msg.contains("passed"), "{msg}");
    // ids[2] is still queued, so the job runs; one failed task may go again.
    let retried = store.retry_task(ids[0], 4_000).await.unwrap();
    assert_eq!(retried.job_id, job_id);
    assert_eq!(retried.job_state, JobState::Queued);
    assert_eq!(retried.tasks.len(), 1);
    assert_eq!(retried.tasks[0].id, ids[0]);
    assert_eq!(retried.tasks[0].priority, RETRY_PRIORITY_BOOST);
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.tasks[0].state, TaskState::Queued);
    assert_eq!(job.tasks[1].state, TaskState::Passed);
    let msg = conflict(store.retry_task(ids[0], 4_500).await.unwrap_err());
    assert!(
        msg.contains("is queued"),
        "a second retry is refused: {msg}"
    );
}

async fn a_task_is_queued_again_once_by_concurrent_retries(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("race", 1, 0, 0), 1_000).await;
    run(
        &store,
        queued[0].id,
        "agent-1",
        AttemptOutcome::Failed,
        2_000,
    )
    .await;
    let (a, b, c) = tokio::join!(
        store.retry_job(job_id, 3_000),
        store.retry_job(job_id, 3_000),
        store.retry_task(queued[0].id, 3_000),
    );
    let won = [a.is_ok(), b.is_ok(), c.is_ok()]
        .iter()
        .filter(|ok| **ok)
        .count();
    assert_eq!(
        won, 1,
        "exactly one retry queues the task: {a:?} {b:?} {c:?}"
    );
    assert_eq!(store.queued_tasks().await.unwrap().len(), 1);
}

async fn rerun_tasks_queues_finished_tasks_once_more_and_keeps_pins(store: Store) {
    // Four tasks: passed, failed, still queued, and pinned to `bench-1` (passed).
    let spec = simple_job("bench", 4, 0, 0);
    let tasks: Vec<NewTask> = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| NewTask {
            name: t.name.clone(),
            spec: t.clone(),
            priority: 0,
            pinned_agent: (i == 3).then(|| "bench-1".to_owned()),
        })
        .collect();
    let (job_id, queued) = store.submit_job(&spec, tasks, 1_000).await.unwrap();
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
    run(&store, ids[0], "bench-2", AttemptOutcome::Passed, 2_000).await;
    run(&store, ids[1], "bench-2", AttemptOutcome::Failed, 3_000).await;
    run(&store, ids[3], "bench-1", AttemptOutcome::Passed, 4_000).await;

    // Unknown ids, duplicates and the queued task are left alone.
    let again = store
        .rerun_tasks(&[ids[3], ids[0], ids[0], ids[1], ids[2], 4242], 10_000)
        .await
        .unwrap();
    let moved: Vec<i64> = again.iter().map(|t| t.id).collect();
    assert_eq!(moved, vec![ids[0], ids[1], ids[3]]);
    for t in &again {
        assert_eq!(t.job_id, job_id);
        assert_eq!(t.priority, RETRY_PRIORITY_BOOST);
        assert_eq!(t.queued_at, 10_000);
        assert_eq!(t.last_agent, None, "a re-run does not avoid its host");
    }
    assert_eq!(again[2].pinned_agent.as_deref(), Some("bench-1"));
    let job = store.job(job_id).await.unwrap();
    let states: Vec<TaskState> = job.tasks.iter().map(|t| t.state).collect();
    assert_eq!(states, vec![TaskState::Queued; 4]);
    assert_eq!(
        job.tasks[0].detail_message.as_deref(),
        Some("queued again: re-run to confirm a comparison")
    );
    let mut indexed: Vec<i64> = store
        .queued_tasks()
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    indexed.sort_unstable();
    assert_eq!(indexed, ids);

    // Queued tasks are not queued twice.
    assert!(store.rerun_tasks(&ids, 11_000).await.unwrap().is_empty());

    // The second attempt of a passed task: a new attempt number, and the job
    // finishes again once every task has.
    let second = claim(&store, ids[0], "bench-2", 12_000).await;
    assert_eq!(second.attempt.task_id, ids[0]);
    assert_eq!(store.job(job_id).await.unwrap().state, JobState::Running);
    store
        .finish_attempt(
            second.attempt.attempt_id,
            Some("bench-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            13_000,
        )
        .await
        .unwrap();
    run(&store, ids[1], "bench-2", AttemptOutcome::Passed, 14_000).await;
    run(&store, ids[2], "bench-2", AttemptOutcome::Passed, 15_000).await;
    run(&store, ids[3], "bench-1", AttemptOutcome::Passed, 16_000).await;
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Passed, "{job:#?}");
    assert_eq!(job.tasks[0].attempts, 2);
    assert!(!job.tasks[0].flaky, "passed twice");

    // Concurrent re-runs queue a task once.
    let first = [ids[0]];
    let (a, b) = tokio::join!(
        store.rerun_tasks(&first, 20_000),
        store.rerun_tasks(&first, 20_000),
    );
    let total = a.unwrap().len() + b.unwrap().len();
    assert_eq!(total, 1, "exactly one re-run queues the task");
}
