//! Claims and finishes that arrive together and are committed in one batch
//! (on PostgreSQL, grouped into a few statements for the whole batch): each
//! is answered as it would be alone, those that lose (a task no longer
//! queued, an attempt already ended or run by another agent) included.

use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_store::{Claimed, FinishEffect, Store};
use tokio::task::JoinSet;

use crate::support::{claim, pass, simple_job, submit};

contract_tests!(
    claims_and_finishes_together_some_losing,
    one_task_claimed_twice_together_goes_to_one_agent,
    one_attempt_finished_twice_together_ends_once,
);

/// What one write of a concurrent burst answered.
enum Answer {
    Claim(usize, Option<Box<Claimed>>),
    Finish(usize, FinishEffect),
}

async fn claims_and_finishes_together_some_losing(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("together", 20, 1, 1), 1_000).await;
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
    // Tasks 0..3 run already.
    let mut running = Vec::new();
    for (i, &id) in ids.iter().take(3).enumerate() {
        running.push(claim(&store, id, &format!("first-{i}"), 2_000).await);
    }

    // Sent before the writer takes any of them: they make one batch.
    let mut burst = JoinSet::new();
    for (i, &id) in ids.iter().enumerate() {
        let store = store.clone();
        burst.spawn(async move {
            let agent = format!("b-{i}");
            Answer::Claim(
                i,
                store.claim(id, &agent, 3_000).await.unwrap().map(Box::new),
            )
        });
    }
    // Task 0 passes, task 1 fails within its budget, task 2's finish comes
    // from an agent that does not run it.
    for (i, (agent, outcome)) in [
        ("first-0", AttemptOutcome::Passed),
        ("first-1", AttemptOutcome::Failed),
        ("intruder", AttemptOutcome::Passed),
    ]
    .into_iter()
    .enumerate()
    {
        let (store, attempt) = (store.clone(), running[i].attempt.attempt_id);
        burst.spawn(async move {
            let effect = store
                .finish_attempt(attempt, Some(agent), outcome, None, None, None, None, 4_000)
                .await
                .unwrap();
            Answer::Finish(i, effect)
        });
    }

    let mut attempts = std::collections::HashSet::new();
    for answer in burst.join_all().await {
        match answer {
            Answer::Claim(i, claimed) if i < 3 => {
                assert!(claimed.is_none(), "task {i} was running: its claim loses");
            }
            Answer::Claim(i, claimed) => {
                let claimed = claimed.unwrap_or_else(|| panic!("task {i} was queued"));
                assert_eq!(claimed.attempt.task_id, ids[i]);
                assert_eq!(claimed.attempt.agent, format!("b-{i}"));
                assert_eq!(claimed.attempt.job_id, job_id);
                assert_eq!(claimed.attempt.started_at, 3_000);
                assert!(
                    attempts.insert(claimed.attempt.attempt_id),
                    "attempt ids differ"
                );
            }
            Answer::Finish(0, effect) => assert!(
                matches!(effect, FinishEffect::TaskFinished { task_id, state: TaskState::Passed, .. } if task_id == ids[0]),
                "task 0 passes: {effect:?}"
            ),
            Answer::Finish(1, effect) => {
                let FinishEffect::Requeued(q) = effect else {
                    panic!("task 1 is retried: {effect:?}");
                };
                assert_eq!(q.id, ids[1]);
                assert_eq!(q.last_agent.as_deref(), Some("first-1"));
                assert_eq!(q.expected_ms, Some(2_000.0), "the run taught the history");
            }
            Answer::Finish(_, effect) => {
                assert_eq!(
                    effect,
                    FinishEffect::Stale,
                    "another agent's finish is stale"
                );
            }
        }
    }
    assert_eq!(attempts.len(), 17);

    let task = |i: usize| {
        let store = store.clone();
        let id = ids[i];
        async move { store.task(id).await.unwrap().task }
    };
    assert_eq!(task(0).await.state, TaskState::Passed);
    let retried = task(1).await;
    assert_eq!(retried.state, TaskState::Queued);
    assert_eq!(retried.outcome, Some(AttemptOutcome::Failed));
    let untouched = task(2).await;
    assert_eq!(untouched.state, TaskState::Running);
    assert_eq!(untouched.agent.as_deref(), Some("first-2"));
    assert_eq!(task(7).await.agent.as_deref(), Some("b-7"));
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Running);

    // The re-queued task is claimable again; the intruder's attempt still
    // ends for its own agent.
    let again = claim(&store, ids[1], "b-again", 5_000).await;
    assert_eq!(again.attempt.task_id, ids[1]);
    let effect = store
        .finish_attempt(
            running[2].attempt.attempt_id,
            Some("first-2"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            6_000,
        )
        .await
        .unwrap();
    assert!(matches!(effect, FinishEffect::TaskFinished { .. }));
}

async fn one_task_claimed_twice_together_goes_to_one_agent(store: Store) {
    let (_, queued) = submit(&store, &simple_job("twice", 4, 0, 0), 1_000).await;
    let mut burst = JoinSet::new();
    for agent in ["a", "b", "c"] {
        for q in &queued {
            let (store, id) = (store.clone(), q.id);
            burst.spawn(async move { (id, store.claim(id, agent, 2_000).await.unwrap()) });
        }
    }
    let mut winners = std::collections::HashMap::new();
    for (id, claimed) in burst.join_all().await {
        if let Some(c) = claimed {
            assert!(
                winners.insert(id, c.attempt.agent).is_none(),
                "task {id} claimed twice"
            );
        }
    }
    assert_eq!(winners.len(), queued.len(), "every task is claimed once");
    for q in &queued {
        let task = store.task(q.id).await.unwrap();
        assert_eq!(task.task.attempts, 1);
        assert_eq!(task.task.agent.as_ref(), winners.get(&q.id));
        assert_eq!(task.attempts_list.len(), 1);
    }
}

async fn one_attempt_finished_twice_together_ends_once(store: Store) {
    let (_, queued) = submit(&store, &simple_job("ends", 2, 0, 0), 1_000).await;
    let a = claim(&store, queued[0].id, "agent-a", 2_000).await;
    let b = claim(&store, queued[1].id, "agent-b", 2_000).await;
    // A foreign finish first, then the right one, then a duplicate; and a
    // finish of the other attempt beside them.
    let mut burst = JoinSet::new();
    for (n, (attempt, agent)) in [
        (a.attempt.attempt_id, "agent-b"),
        (a.attempt.attempt_id, "agent-a"),
        (a.attempt.attempt_id, "agent-a"),
        (b.attempt.attempt_id, "agent-b"),
    ]
    .into_iter()
    .enumerate()
    {
        let store = store.clone();
        burst.spawn(async move {
            let effect = pass(&store, attempt, agent, 3_000).await.unwrap();
            (n, effect)
        });
    }
    let mut ended = 0;
    for (n, effect) in burst.join_all().await {
        match n {
            0 => assert_eq!(effect, FinishEffect::Stale, "agent-b does not run it"),
            3 => assert!(matches!(effect, FinishEffect::TaskFinished { .. })),
            _ => {
                if matches!(effect, FinishEffect::TaskFinished { .. }) {
                    ended += 1;
                } else {
                    assert_eq!(effect, FinishEffect::Stale);
                }
            }
        }
    }
    assert_eq!(ended, 1, "the attempt ends once");
    let detail = store.task(queued[0].id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Passed);
    assert_eq!(detail.attempts_list.len(), 1);
}
