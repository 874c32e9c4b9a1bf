//! Finishing attempts: retries within their budgets, flaky passes, failures
//! past the budget, stale (foreign, late, duplicate) finishes and
//! re-triggers of known failures.

use testfleet_core::time_fmt::format_millis;
use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_store::{FinishEffect, RETRY_PRIORITY_BOOST, Store};
use testfleet_wire::reason::ReasonData;

use crate::support::{claim, simple_job, submit};

contract_tests!(
    failed_attempt_is_retried_within_budget_then_passes_flaky,
    failure_past_the_budget_fails_the_task_then_the_job,
    foreign_late_and_duplicate_finishes_are_stale,
    retrigger_requeues_a_failed_task_up_to_its_limit,
);

async fn failed_attempt_is_retried_within_budget_then_passes_flaky(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("retry", 1, 1, 1), 1_000).await;
    let id = queued[0].id;

    // A test failure within the test budget: back to the queue, boosted,
    // preferring another agent.
    let first = claim(&store, id, "agent-1", 2_000).await;
    let effect = store
        .finish_attempt(
            first.attempt.attempt_id,
            Some("agent-1"),
            AttemptOutcome::Failed,
            Some("exit status 1"),
            None,
            None,
            None,
            5_000,
        )
        .await
        .unwrap();
    let FinishEffect::Requeued(q) = effect else {
        panic!("expected a retry, got {effect:?}");
    };
    assert_eq!(q.id, id);
    assert_eq!(q.job_id, job_id);
    assert_eq!(q.priority, RETRY_PRIORITY_BOOST);
    assert_eq!(q.last_agent.as_deref(), Some("agent-1"));
    assert_eq!(q.queued_at, 5_000);
    assert_eq!(q.pinned_agent, None);
    assert_eq!(q.task_key, "retry/t0");
    assert_eq!(
        q.expected_ms,
        Some(3_000.0),
        "a failed run teaches the history"
    );
    let indexed = store.queued_tasks().await.unwrap();
    assert_eq!(indexed.len(), 1);
    assert_eq!(indexed[0].id, id);
    assert_eq!(indexed[0].priority, RETRY_PRIORITY_BOOST);
    assert_eq!(indexed[0].last_agent.as_deref(), Some("agent-1"));
    assert_eq!(indexed[0].expected_ms, Some(3_000.0));
    let view = store.task(id).await.unwrap().task;
    assert_eq!(view.state, TaskState::Queued);
    assert_eq!(view.outcome, Some(AttemptOutcome::Failed));
    assert_eq!(view.detail_message.as_deref(), Some("exit status 1"));
    assert_eq!(store.job(job_id).await.unwrap().state, JobState::Running);

    // An infrastructure failure draws on the infra budget.
    let second = claim(&store, id, "agent-2", 6_000).await;
    assert_eq!(second.history.as_ref().map(|h| h.runs), Some(1));
    let effect = store
        .finish_attempt(
            second.attempt.attempt_id,
            None,
            AttemptOutcome::InfraError,
            Some("lease expired"),
            Some(&ReasonData::LeaseExpired),
            None,
            None,
            7_000,
        )
        .await
        .unwrap();
    let FinishEffect::Requeued(q) = effect else {
        panic!("expected a retry, got {effect:?}");
    };
    assert_eq!(q.priority, 2 * RETRY_PRIORITY_BOOST);
    assert_eq!(q.last_agent.as_deref(), Some("agent-2"));
    assert_eq!(
        q.expected_ms,
        Some(3_000.0),
        "an infra error teaches nothing"
    );

    // The third attempt passes: the task passed, flaky (a test failure came first).
    let third = claim(&store, id, "agent-3", 8_000).await;
    let effect = store
        .finish_attempt(
            third.attempt.attempt_id,
            Some("agent-3"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            9_000,
        )
        .await
        .unwrap();
    assert_eq!(
        effect,
        FinishEffect::TaskFinished {
            task_id: id,
            job_id,
            state: TaskState::Passed,
            job_state: JobState::Passed,
        }
    );
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Passed);
    assert_eq!(detail.task.outcome, Some(AttemptOutcome::Flaky));
    assert!(detail.task.flaky);
    assert_eq!(detail.task.attempts, 3);
    let attempts: Vec<(i64, &str, Option<AttemptOutcome>)> = detail
        .attempts_list
        .iter()
        .map(|a| (a.number, a.agent.as_str(), a.outcome))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, "agent-1", Some(AttemptOutcome::Failed)),
            (2, "agent-2", Some(AttemptOutcome::InfraError)),
            (3, "agent-3", Some(AttemptOutcome::Passed)),
        ]
    );
    assert_eq!(
        detail.attempts_list[0].reason.as_deref(),
        Some("exit status 1")
    );
    assert_eq!(
        detail.attempts_list[0].finished_at,
        Some(format_millis(5_000))
    );
    assert_eq!(
        detail.attempts_list[1].reason_data,
        Some(ReasonData::LeaseExpired)
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Passed);
    assert_eq!(job.finished_at, Some(format_millis(9_000)));
    let stats = store.task_stats("retry/t0").await.unwrap().unwrap();
    assert_eq!(stats.runs, 2);
    assert!((stats.mean_ms - 2_000.0).abs() < 1e-9, "{stats:?}");
    assert!(store.running_attempts().await.unwrap().is_empty());
    assert!(store.queued_tasks().await.unwrap().is_empty());
}

async fn failure_past_the_budget_fails_the_task_then_the_job(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("strict", 2, 0, 0), 1_000).await;
    let a = claim(&store, queued[0].id, "agent-1", 2_000).await;
    let effect = store
        .finish_attempt(
            a.attempt.attempt_id,
            Some("agent-1"),
            AttemptOutcome::Crashed,
            Some("signal 11"),
            None,
            None,
            None,
            3_000,
        )
        .await
        .unwrap();
    // The other task is still queued: the job runs on.
    assert_eq!(
        effect,
        FinishEffect::TaskFinished {
            task_id: queued[0].id,
            job_id,
            state: TaskState::Failed,
            job_state: JobState::Running,
        }
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.finished_at, None);
    assert_eq!(job.tasks[0].state, TaskState::Failed);
    assert_eq!(job.tasks[0].outcome, Some(AttemptOutcome::Crashed));

    let b = claim(&store, queued[1].id, "agent-2", 4_000).await;
    let effect = store
        .finish_attempt(
            b.attempt.attempt_id,
            Some("agent-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(
        effect,
        FinishEffect::TaskFinished {
            task_id: queued[1].id,
            job_id,
            state: TaskState::Passed,
            job_state: JobState::Failed,
        }
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.finished_at, Some(format_millis(5_000)));
    assert!(!job.tasks[1].flaky);

    // An infra failure past its budget fails the task too.
    let (job2, queued) = submit(&store, &simple_job("infra", 1, 3, 0), 6_000).await;
    let c = claim(&store, queued[0].id, "agent-1", 6_500).await;
    let effect = store
        .finish_attempt(
            c.attempt.attempt_id,
            None,
            AttemptOutcome::InfraError,
            Some("checkout failed"),
            None,
            None,
            None,
            7_000,
        )
        .await
        .unwrap();
    assert_eq!(
        effect,
        FinishEffect::TaskFinished {
            task_id: queued[0].id,
            job_id: job2,
            state: TaskState::Failed,
            job_state: JobState::Failed,
        }
    );
}

async fn foreign_late_and_duplicate_finishes_are_stale(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("fence", 1, 0, 1), 1_000).await;
    let id = queued[0].id;
    let first = claim(&store, id, "agent-1", 2_000).await.attempt.attempt_id;

    // Another agent cannot end this attempt.
    let effect = store
        .finish_attempt(
            first,
            Some("agent-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(effect, FinishEffect::Stale);
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Running);
    assert_eq!(detail.attempts_list[0].outcome, None);
    assert_eq!(detail.attempts_list[0].finished_at, None);

    // The coordinator gives the attempt up (lease expired) and a new one starts.
    let effect = store
        .finish_attempt(
            first,
            None,
            AttemptOutcome::InfraError,
            Some("lease expired"),
            None,
            None,
            None,
            4_000,
        )
        .await
        .unwrap();
    assert!(matches!(effect, FinishEffect::Requeued(_)), "{effect:?}");
    let second = claim(&store, id, "agent-2", 5_000).await.attempt;

    // The first agent comes back and reports: its attempt was superseded.
    let effect = store
        .finish_attempt(
            first,
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            6_000,
        )
        .await
        .unwrap();
    assert_eq!(effect, FinishEffect::Stale);
    assert_eq!(
        store.running_attempts().await.unwrap(),
        vec![second.clone()]
    );
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Running);
    assert_eq!(detail.task.agent.as_deref(), Some("agent-2"));
    assert_eq!(
        detail.attempts_list[0].outcome,
        Some(AttemptOutcome::InfraError)
    );
    assert_eq!(
        detail.attempts_list[0].finished_at,
        Some(format_millis(4_000))
    );

    // The current attempt ends once; a repeated report changes nothing.
    let effect = store
        .finish_attempt(
            second.attempt_id,
            Some("agent-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            7_000,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            effect,
            FinishEffect::TaskFinished {
                state: TaskState::Passed,
                ..
            }
        ),
        "{effect:?}"
    );
    for outcome in [AttemptOutcome::Passed, AttemptOutcome::Failed] {
        let effect = store
            .finish_attempt(
                second.attempt_id,
                Some("agent-2"),
                outcome,
                Some("again"),
                None,
                None,
                None,
                8_000,
            )
            .await
            .unwrap();
        assert_eq!(effect, FinishEffect::Stale);
    }
    let effect = store
        .finish_attempt(
            999_999,
            None,
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            8_000,
        )
        .await
        .unwrap();
    assert_eq!(effect, FinishEffect::Stale);

    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Passed);
    assert_eq!(detail.task.outcome, Some(AttemptOutcome::Passed));
    assert_eq!(
        detail.attempts_list[1].outcome,
        Some(AttemptOutcome::Passed)
    );
    assert_eq!(detail.attempts_list[1].reason, None);
    assert_eq!(
        detail.attempts_list[1].finished_at,
        Some(format_millis(7_000))
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Passed);
    assert_eq!(job.finished_at, Some(format_millis(7_000)));
    assert_eq!(
        store.task_stats("fence/t0").await.unwrap().map(|s| s.runs),
        Some(1)
    );
}

async fn retrigger_requeues_a_failed_task_up_to_its_limit(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("known", 1, 0, 0), 1_000).await;
    let id = queued[0].id;
    let a = claim(&store, id, "agent-1", 2_000).await.attempt.attempt_id;
    let reason = "Segmentation fault in tst_qnetworkreply";
    let effect = store
        .finish_attempt(
            a,
            Some("agent-1"),
            AttemptOutcome::Failed,
            Some(reason),
            None,
            None,
            None,
            4_000,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            effect,
            FinishEffect::TaskFinished {
                state: TaskState::Failed,
                job_state: JobState::Failed,
                ..
            }
        ),
        "{effect:?}"
    );

    let q = store
        .retrigger(id, "Segmentation fault", 1, 5_000)
        .await
        .unwrap()
        .expect("a failed task is re-triggered");
    assert_eq!(q.id, id);
    assert_eq!(q.job_id, job_id);
    assert_eq!(q.priority, RETRY_PRIORITY_BOOST);
    assert_eq!(q.queued_at, 5_000);
    assert_eq!(q.task_key, "known/t0");
    assert_eq!(q.expected_ms, Some(2_000.0));
    assert_eq!(q.pinned_agent, None);
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.finished_at, None);
    assert_eq!(job.tasks[0].state, TaskState::Queued);
    assert_eq!(
        job.tasks[0].detail_message.as_deref(),
        Some("re-triggered: known failure `Segmentation fault`")
    );
    assert_eq!(
        store
            .queued_tasks()
            .await
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        vec![id]
    );
    // Only a failed task is re-triggered.
    assert_eq!(
        store
            .retrigger(id, "Segmentation fault", 5, 5_001)
            .await
            .unwrap(),
        None
    );

    // It fails again: the limit of one re-trigger is used up.
    let b = claim(&store, id, "agent-2", 6_000).await.attempt;
    assert_eq!(b.task_id, id);
    store
        .finish_attempt(
            b.attempt_id,
            Some("agent-2"),
            AttemptOutcome::Failed,
            Some(reason),
            None,
            None,
            None,
            7_000,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .retrigger(id, "Segmentation fault", 1, 8_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.job(job_id).await.unwrap().state, JobState::Failed);
    // A higher limit allows one more.
    assert!(
        store
            .retrigger(id, "Segmentation fault", 2, 8_001)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.task(id).await.unwrap().task.state, TaskState::Queued);

    // A passed task is never re-triggered; neither is an unknown one.
    let (_, queued) = submit(&store, &simple_job("fine", 1, 0, 0), 9_000).await;
    let c = claim(&store, queued[0].id, "agent-1", 9_100)
        .await
        .attempt
        .attempt_id;
    store
        .finish_attempt(
            c,
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            9_200,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .retrigger(queued[0].id, "anything", 9, 9_300)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .retrigger(999_999, "anything", 9, 9_300)
            .await
            .unwrap(),
        None
    );
}
