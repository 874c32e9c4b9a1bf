//! The jobs list carries counts, not tasks; a job's tasks come a page at a time.
//!
//! A finished job's counts are stored on its row and read from there; the
//! tests in `stored` look at those columns with a plain pool on the same
//! database, and compare them with the live count by clearing them.

use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_store::{FinishEffect, Store, StoreError};
use testfleet_wire::api::{JobSummary, OutcomeCounts, TaskStateCounts};

use crate::support::{claim, simple_job, submit};

mod stored;

contract_tests!(
    summaries_count_tasks_per_state_and_outcome,
    summaries_count_cancelled_tasks,
    summaries_follow_limit_and_state,
    task_pages_walk_a_job_in_id_order,
);

async fn finish(
    store: &Store,
    attempt: i64,
    agent: &str,
    outcome: AttemptOutcome,
    now: i64,
) -> FinishEffect {
    store
        .finish_attempt(attempt, Some(agent), outcome, None, None, None, None, now)
        .await
        .unwrap()
}

/// Counts the tasks of `job_id` from the job's full view: the summary must
/// agree with it.
async fn counted_from_tasks(
    store: &Store,
    job_id: i64,
) -> (TaskStateCounts, OutcomeCounts, u64, u64) {
    let job = store.job(job_id).await.unwrap();
    let (mut states, mut outcomes, mut attempts, mut retried) =
        (TaskStateCounts::default(), OutcomeCounts::default(), 0, 0);
    for t in &job.tasks {
        states.add(t.state, 1);
        if let Some(o) = t.outcome {
            outcomes.add(o, 1);
        }
        attempts += u64::try_from(t.attempts).unwrap();
        retried += u64::from(t.attempts > 1);
    }
    (states, outcomes, attempts, retried)
}

fn listed(jobs: &[JobSummary], id: i64) -> JobSummary {
    jobs.iter()
        .find(|j| j.id == id)
        .unwrap_or_else(|| panic!("job {id} is not listed"))
        .clone()
}

async fn summaries_count_tasks_per_state_and_outcome(store: Store) {
    // Five tasks, one retry of each kind: passed; failed then passed on the
    // retry; infra error, back in the queue; running; never run.
    let (job_id, q) = submit(&store, &simple_job("mixed", 5, 1, 1), 1_000).await;
    let a = claim(&store, q[0].id, "agent-1", 2_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, a, "agent-1", AttemptOutcome::Passed, 3_000).await;
    let b = claim(&store, q[1].id, "agent-1", 3_100)
        .await
        .attempt
        .attempt_id;
    let effect = finish(&store, b, "agent-1", AttemptOutcome::Failed, 4_000).await;
    assert!(matches!(effect, FinishEffect::Requeued(_)), "{effect:?}");
    let b2 = claim(&store, q[1].id, "agent-2", 4_100)
        .await
        .attempt
        .attempt_id;
    finish(&store, b2, "agent-2", AttemptOutcome::Passed, 5_000).await;
    let c = claim(&store, q[2].id, "agent-1", 5_100)
        .await
        .attempt
        .attempt_id;
    let effect = finish(&store, c, "agent-1", AttemptOutcome::InfraError, 6_000).await;
    assert!(matches!(effect, FinishEffect::Requeued(_)), "{effect:?}");
    claim(&store, q[3].id, "agent-3", 6_100).await;

    let jobs = store.jobs(10, None).await.unwrap();
    let summary = listed(&jobs, job_id);
    assert_eq!(summary.name, "mixed");
    assert_eq!(
        summary.tasks,
        TaskStateCounts {
            total: 5,
            queued: 2,
            running: 1,
            passed: 2,
            failed: 0,
            cancelled: 0,
        }
    );
    // The retried task passed on its second attempt: flaky.
    assert_eq!(
        summary.outcomes,
        OutcomeCounts {
            passed: 1,
            flaky: 1,
            infra_error: 1,
            ..OutcomeCounts::default()
        }
    );
    assert_eq!(summary.attempts, 5);
    assert_eq!(summary.retried, 1);
    assert_eq!(
        (
            summary.tasks.clone(),
            summary.outcomes.clone(),
            summary.attempts,
            summary.retried
        ),
        counted_from_tasks(&store, job_id).await
    );
    assert_eq!(store.job_summary(job_id).await.unwrap(), summary);
    let view = store.job(job_id).await.unwrap();
    assert_eq!(
        (
            summary.queue.as_str(),
            summary.priority,
            &summary.created_at
        ),
        (view.queue.as_str(), view.priority, &view.created_at)
    );

    // The serialized list names no task.
    let text = serde_json::to_string(&jobs).unwrap();
    assert!(
        !text.contains("\"t0\"") && !text.contains("job_id"),
        "{text}"
    );

    assert!(matches!(
        store.job_summary(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn summaries_count_cancelled_tasks(store: Store) {
    let (job_id, q) = submit(&store, &simple_job("stopped", 3, 0, 0), 1_000).await;
    let a = claim(&store, q[0].id, "agent-1", 2_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, a, "agent-1", AttemptOutcome::Failed, 3_000).await;
    claim(&store, q[1].id, "agent-2", 3_100).await;
    store.cancel_job(job_id, 4_000).await.unwrap();

    let summary = store.job_summary(job_id).await.unwrap();
    assert_eq!(summary.state, JobState::Cancelled);
    assert_eq!(
        summary.tasks,
        TaskStateCounts {
            total: 3,
            failed: 1,
            cancelled: 2,
            ..TaskStateCounts::default()
        }
    );
    assert_eq!(summary.tasks.finished(), 3);
    // The running task's attempt and the queued task both end cancelled.
    assert_eq!(
        summary.outcomes,
        OutcomeCounts {
            failed: 1,
            cancelled: 2,
            ..OutcomeCounts::default()
        }
    );
    assert_eq!((summary.attempts, summary.retried), (2, 0));
    assert_eq!(
        (
            summary.tasks.clone(),
            summary.outcomes.clone(),
            summary.attempts,
            summary.retried
        ),
        counted_from_tasks(&store, job_id).await
    );
}

async fn summaries_follow_limit_and_state(store: Store) {
    assert!(store.jobs(10, None).await.unwrap().is_empty());
    let (first, q) = submit(&store, &simple_job("first", 2, 0, 0), 1_000).await;
    let (second, _) = submit(&store, &simple_job("second", 3, 0, 0), 2_000).await;
    let (third, _) = submit(&store, &simple_job("third", 4, 0, 0), 3_000).await;
    let a = claim(&store, q[0].id, "agent-1", 4_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, a, "agent-1", AttemptOutcome::Passed, 5_000).await;
    let b = claim(&store, q[1].id, "agent-1", 5_100)
        .await
        .attempt
        .attempt_id;
    finish(&store, b, "agent-1", AttemptOutcome::Passed, 6_000).await;

    let two = store.jobs(2, None).await.unwrap();
    assert_eq!(
        two.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![third, second]
    );
    assert_eq!(
        two.iter().map(|j| j.tasks.total).collect::<Vec<_>>(),
        vec![4, 3]
    );
    assert!(two.iter().all(|j| j.tasks.queued == j.tasks.total));
    assert!(two.iter().all(|j| j.outcomes == OutcomeCounts::default()));

    let passed = store.jobs(10, Some(JobState::Passed)).await.unwrap();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].id, first);
    assert_eq!(passed[0].tasks.passed, 2);
    assert_eq!(passed[0].outcomes.passed, 2);
    assert!(
        store
            .jobs(10, Some(JobState::Failed))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn task_pages_walk_a_job_in_id_order(store: Store) {
    let (before, _) = submit(&store, &simple_job("before", 2, 0, 0), 1_000).await;
    let (job_id, q) = submit(&store, &simple_job("paged", 7, 0, 0), 2_000).await;
    let (after_job, _) = submit(&store, &simple_job("after", 2, 0, 0), 3_000).await;
    let ids: Vec<i64> = q.iter().map(|t| t.id).collect();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.job_tasks(job_id, cursor, 3).await.unwrap();
        pages += 1;
        assert_eq!((page.job_id, page.total), (job_id, 7));
        assert!(page.tasks.len() <= 3);
        assert!(page.tasks.iter().all(|t| t.job_id == job_id));
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_after {
            Some(next) => {
                assert_eq!(Some(next), page.tasks.last().map(|t| t.id));
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    // An exact fit has no next page; a cursor past the end is an empty page.
    let all = store.job_tasks(job_id, None, 7).await.unwrap();
    assert_eq!(all.tasks.len(), 7);
    assert_eq!(all.next_after, None);
    assert_eq!(all.tasks[0].name, "t0");
    assert_eq!(all.tasks[0].state, TaskState::Queued);
    let past = store
        .job_tasks(job_id, ids.last().copied(), 3)
        .await
        .unwrap();
    assert!(past.tasks.is_empty());
    assert_eq!((past.total, past.next_after), (7, None));
    // Limits are clamped to at least one task.
    assert_eq!(
        store.job_tasks(job_id, None, 0).await.unwrap().tasks.len(),
        1
    );
    // Neighbouring jobs' tasks stay out.
    assert_eq!(
        store
            .job_tasks(before, None, 100)
            .await
            .unwrap()
            .tasks
            .len(),
        2
    );
    assert_eq!(
        store
            .job_tasks(after_job, None, 100)
            .await
            .unwrap()
            .tasks
            .len(),
        2
    );

    assert!(matches!(
        store.job_tasks(999_999, None, 10).await,
        Err(StoreError::NotFound(_))
    ));
}
