//! The scheduling operations: submit, claim, cancel, running attempts and
//! leases (finishing and retries are in `finish`).

use std::time::Duration;

use testfleet_core::time_fmt::format_millis;
use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_store::{FinishEffect, NewTask, Store, StoreError, task_key};

use crate::support::{INTEGRATION, claim, parse, simple_job, submit};

contract_tests!(
    submit_job_queues_every_task_in_order,
    submit_job_keeps_pins_and_ids_in_order_across_chunks,
    claim_starts_an_attempt_and_hands_out_the_work_item,
    claim_of_a_task_that_is_not_queued_is_none,
    cancel_then_claim_claims_nothing,
    claim_then_cancel_returns_the_running_attempt,
    running_attempts_lists_unfinished_attempts,
    leases_expire_unless_renewed,
);

async fn submit_job_queues_every_task_in_order(store: Store) {
    assert!(store.queued_tasks().await.unwrap().is_empty());
    let spec = parse(INTEGRATION);
    let (job_id, queued) = submit(&store, &spec, 1_000).await;
    assert!(job_id > 0);
    assert_eq!(queued.len(), 2);

    let build = &queued[0];
    assert_eq!(build.job_id, job_id);
    assert_eq!(build.queue, "linux");
    assert_eq!(build.priority, 5, "the job's priority");
    assert_eq!(build.pinned_agent, None);
    assert_eq!(build.last_agent, None);
    assert_eq!(build.queued_at, 1_000);
    assert_eq!(build.task_key, "qtbase-dev/build");
    assert_eq!(build.expected_ms, None);
    let tests = &queued[1];
    assert_eq!(tests.priority, 7, "the task's own priority");
    assert_eq!(tests.requires, spec.tasks[1].requires);
    assert_eq!(tests.task_key, task_key("qtbase-dev", "corelib-tests"));
    assert!(build.id < tests.id);

    // What the scheduler indexes at start-up is what submit returned.
    assert_eq!(store.queued_tasks().await.unwrap(), queued);

    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.id, job_id);
    assert_eq!(job.name, "qtbase-dev");
    assert_eq!(job.queue, "linux");
    assert_eq!(job.priority, 5);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.created_at, format_millis(1_000));
    assert_eq!(job.finished_at, None);
    assert_eq!(job.integration_id.as_deref(), Some("189470895"));
    let names: Vec<(i64, &str)> = job.tasks.iter().map(|t| (t.id, t.name.as_str())).collect();
    assert_eq!(
        names,
        vec![(build.id, "build"), (tests.id, "corelib-tests")]
    );
    for t in &job.tasks {
        assert_eq!(t.job_id, job_id);
        assert_eq!(t.state, TaskState::Queued);
        assert_eq!(t.stage, None);
        assert_eq!(t.outcome, None);
        assert_eq!(t.agent, None);
        assert_eq!(t.attempts, 0);
        assert!(!t.flaky);
    }

    // A second job queues after the first.
    let (second, more) = submit(&store, &simple_job("nightly", 1, 0, 2), 2_000).await;
    assert!(second > job_id);
    assert_eq!(more[0].queue, "default");
    assert_eq!(store.queued_tasks().await.unwrap().len(), 3);
}

async fn submit_job_keeps_pins_and_ids_in_order_across_chunks(store: Store) {
    // Fan-out copies are pinned to their agent.
    let spec = simple_job("fanout", 1, 0, 2);
    let tasks = ["host-a", "host-b"]
        .iter()
        .map(|host| NewTask {
            name: format!("t0@{host}"),
            spec: spec.tasks[0].clone(),
            priority: 3,
            pinned_agent: Some((*host).to_owned()),
        })
        .collect();
    let (job_id, queued) = store.submit_job(&spec, tasks, 1_000).await.unwrap();
    let pins: Vec<Option<&str>> = queued.iter().map(|q| q.pinned_agent.as_deref()).collect();
    assert_eq!(pins, vec![Some("host-a"), Some("host-b")]);
    assert!(queued.iter().all(|q| q.task_key == "fanout/t0"));
    let job = store.job(job_id).await.unwrap();
    let view: Vec<(i64, &str, Option<&str>)> = job
        .tasks
        .iter()
        .map(|t| (t.id, t.name.as_str(), t.pinned_agent.as_deref()))
        .collect();
    assert_eq!(
        view,
        vec![
            (queued[0].id, "t0@host-a", Some("host-a")),
            (queued[1].id, "t0@host-b", Some("host-b")),
        ]
    );

    // More tasks than one multi-row insert takes: every returned id still
    // names the task at the same position.
    let big = simple_job("big", 2_500, 0, 2);
    let (big_id, queued) = submit(&store, &big, 2_000).await;
    assert_eq!(queued.len(), 2_500);
    let job = store.job(big_id).await.unwrap();
    assert_eq!(job.tasks.len(), 2_500);
    let by_id: std::collections::HashMap<i64, &str> =
        job.tasks.iter().map(|t| (t.id, t.name.as_str())).collect();
    for (i, q) in queued.iter().enumerate() {
        assert_eq!(
            by_id.get(&q.id).copied(),
            Some(format!("t{i}").as_str()),
            "task {i}"
        );
        assert_eq!(q.task_key, format!("big/t{i}"));
    }
    let ids: std::collections::HashSet<i64> = queued.iter().map(|q| q.id).collect();
    assert_eq!(ids.len(), 2_500);
}

async fn claim_starts_an_attempt_and_hands_out_the_work_item(store: Store) {
    let spec = parse(INTEGRATION);
    let (job_id, queued) = submit(&store, &spec, 1_000).await;
    let task = &queued[1];
    let claimed = claim(&store, task.id, "agent-1", 2_000).await;

    let attempt = &claimed.attempt;
    assert!(attempt.attempt_id > 0);
    assert_eq!(attempt.task_id, task.id);
    assert_eq!(attempt.job_id, job_id);
    assert_eq!(attempt.agent, "agent-1");
    assert_eq!(attempt.integration_id, "189470895");
    assert_eq!(attempt.last_update_ts, None);
    assert_eq!(attempt.queue, "linux");
    assert_eq!(attempt.task_key, "qtbase-dev/corelib-tests");
    assert_eq!(attempt.started_at, 2_000);
    assert_eq!(claimed.max_runtime, Some(Duration::from_secs(20 * 60)));
    assert_eq!(claimed.history, None);

    let work = &claimed.work;
    assert_eq!(work.integration_id, "189470895");
    assert_eq!(work.integration_timestamp, "2023-02-10T13:11:13.000Z");
    assert_eq!(work.branch, "dev");
    assert_eq!(work.sha, "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(work.job_id, Some(job_id));
    assert_eq!(work.task_id, Some(task.id));
    assert_eq!(work.attempt_id, Some(attempt.attempt_id));
    assert_eq!(work.job_name.as_deref(), Some("qtbase-dev"));
    assert_eq!(work.task_name.as_deref(), Some("corelib-tests"));
    assert_eq!(work.steps, spec.tasks[1].steps);
    assert_eq!(work.results, spec.tasks[1].results);
    assert_eq!(
        work.env.get("QT_QPA_PLATFORM").map(String::as_str),
        Some("offscreen")
    );
    assert_eq!(work.source, spec.source);

    // queryWork and re-sends build the same item.
    let again = store
        .work_item_for_task(task.id, Some(attempt.attempt_id))
        .await
        .unwrap();
    assert_eq!(&again, work);
    assert!(matches!(
        store.work_item_for_task(999_999, None).await,
        Err(StoreError::NotFound(_))
    ));

    // The task left the queue; task and job are running.
    let left: Vec<i64> = store
        .queued_tasks()
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(left, vec![queued[0].id]);
    assert_eq!(
        store.running_attempts().await.unwrap(),
        vec![attempt.clone()]
    );
    let detail = store.task(task.id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Running);
    assert_eq!(detail.task.stage.as_deref(), Some("new"));
    assert_eq!(detail.task.agent.as_deref(), Some("agent-1"));
    assert_eq!(detail.task.attempts, 1);
    assert_eq!(detail.attempts_list.len(), 1);
    let a = &detail.attempts_list[0];
    assert_eq!(
        (a.id, a.task_id, a.number, a.agent.as_str()),
        (attempt.attempt_id, task.id, 1, "agent-1")
    );
    assert_eq!(a.outcome, None);
    assert_eq!(a.started_at, format_millis(2_000));
    assert_eq!(a.finished_at, None);
    assert_eq!(store.job(job_id).await.unwrap().state, JobState::Running);

    // A job without an integration is named after its id.
    let (plain, queued) = submit(&store, &simple_job("plain", 1, 0, 2), 3_000).await;
    let claimed = claim(&store, queued[0].id, "agent-2", 3_500).await;
    assert_eq!(claimed.attempt.integration_id, format!("tf-{plain}"));
    assert_eq!(claimed.work.integration_id, format!("tf-{plain}"));
    let running = store.running_attempts().await.unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(running[1], claimed.attempt);
}

async fn claim_of_a_task_that_is_not_queued_is_none(store: Store) {
    let (_, queued) = submit(&store, &simple_job("once", 1, 0, 2), 1_000).await;
    let id = queued[0].id;
    let first = claim(&store, id, "agent-1", 2_000).await;
    // Already running: a second dispatcher's claim gets nothing.
    assert!(store.claim(id, "agent-2", 2_001).await.unwrap().is_none());
    assert!(store.claim(id, "agent-1", 2_002).await.unwrap().is_none());
    // Finished: nothing either.
    store
        .finish_attempt(
            first.attempt.attempt_id,
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            3_000,
        )
        .await
        .unwrap();
    assert!(store.claim(id, "agent-2", 3_001).await.unwrap().is_none());
    // Unknown task.
    assert!(
        store
            .claim(999_999, "agent-1", 3_002)
            .await
            .unwrap()
            .is_none()
    );
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.attempts_list.len(), 1, "no attempt was added");
    assert_eq!(detail.task.agent.as_deref(), Some("agent-1"));
}

async fn cancel_then_claim_claims_nothing(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("doomed", 2, 0, 2), 1_000).await;
    let running = store.cancel_job(job_id, 2_000).await.unwrap();
    assert!(running.is_empty(), "{running:?}");
    for q in &queued {
        assert!(store.claim(q.id, "agent-1", 2_001).await.unwrap().is_none());
    }
    assert!(store.queued_tasks().await.unwrap().is_empty());
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.finished_at, Some(format_millis(2_000)));
    for t in &job.tasks {
        assert_eq!(t.state, TaskState::Cancelled);
        assert_eq!(t.outcome, Some(AttemptOutcome::Cancelled));
        assert_eq!(t.detail_message.as_deref(), Some("cancelled by user"));
        assert_eq!(t.attempts, 0);
    }
    assert!(matches!(
        store.cancel_job(999_999, 2_002).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn claim_then_cancel_returns_the_running_attempt(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("stop", 2, 0, 2), 1_000).await;
    let claimed = claim(&store, queued[0].id, "agent-1", 2_000).await;
    let running = store.cancel_job(job_id, 3_000).await.unwrap();
    // The agent has to be told to stop this attempt.
    assert_eq!(running, vec![claimed.attempt.clone()]);
    assert!(store.running_attempts().await.unwrap().is_empty());
    assert!(
        store
            .claim(queued[1].id, "agent-2", 3_001)
            .await
            .unwrap()
            .is_none()
    );

    let detail = store.task(queued[0].id).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Cancelled);
    let attempt = &detail.attempts_list[0];
    assert_eq!(attempt.outcome, Some(AttemptOutcome::Cancelled));
    assert_eq!(attempt.reason.as_deref(), Some("cancelled by user"));
    assert_eq!(attempt.finished_at, Some(format_millis(3_000)));

    // Reports arriving after the cancel change nothing.
    let id = claimed.attempt.attempt_id;
    let late = store
        .finish_attempt(
            id,
            Some("agent-1"),
            AttemptOutcome::Failed,
            Some("killed"),
            None,
            None,
            None,
            3_500,
        )
        .await
        .unwrap();
    assert_eq!(late, FinishEffect::Stale);
    let late = store
        .finish_attempt(
            id,
            None,
            AttemptOutcome::Cancelled,
            Some("job cancelled before the work was sent"),
            None,
            None,
            None,
            3_600,
        )
        .await
        .unwrap();
    assert_eq!(late, FinishEffect::Stale);
    let detail = store.task(queued[0].id).await.unwrap();
    assert_eq!(
        detail.attempts_list[0].outcome,
        Some(AttemptOutcome::Cancelled)
    );
    assert_eq!(
        detail.attempts_list[0].reason.as_deref(),
        Some("cancelled by user")
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.tasks.iter().all(|t| t.state == TaskState::Cancelled));

    // Cancelling again finds nothing running.
    assert!(store.cancel_job(job_id, 4_000).await.unwrap().is_empty());
}

async fn running_attempts_lists_unfinished_attempts(store: Store) {
    assert!(store.running_attempts().await.unwrap().is_empty());
    let spec = parse(INTEGRATION);
    let (job_a, qa) = store
        .submit_job(&spec, NewTask::plain(&spec), 1_000)
        .await
        .unwrap();
    let (job_b, qb) = submit(&store, &simple_job("other", 2, 0, 2), 1_500).await;
    let one = claim(&store, qa[0].id, "agent-1", 2_000).await.attempt;
    let two = claim(&store, qb[1].id, "agent-2", 2_100).await.attempt;
    let three = claim(&store, qa[1].id, "agent-3", 2_200).await.attempt;
    assert_eq!(
        store.running_attempts().await.unwrap(),
        vec![one.clone(), two.clone(), three.clone()]
    );
    assert_eq!(
        (one.job_id, two.job_id, three.job_id),
        (job_a, job_b, job_a)
    );
    assert_eq!(two.queue, "default");
    assert_eq!(two.task_key, "other/t1");
    assert_eq!(two.integration_id, format!("tf-{job_b}"));

    store
        .finish_attempt(
            two.attempt_id,
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
    assert_eq!(
        store.running_attempts().await.unwrap(),
        vec![one.clone(), three.clone()]
    );
    store.cancel_job(job_a, 4_000).await.unwrap();
    assert!(store.running_attempts().await.unwrap().is_empty());
}

async fn leases_expire_unless_renewed(store: Store) {
    store.set_lease(Duration::from_secs(30));
    let (_, queued) = submit(&store, &simple_job("leased", 2, 0, 1), 1_000).await;
    let a = claim(&store, queued[0].id, "agent-1", 2_000).await.attempt;
    let b = claim(&store, queued[1].id, "agent-2", 3_000).await.attempt;
    assert!(
        store.expired_leases(32_000).await.unwrap().is_empty(),
        "the first lease runs until 32 000"
    );
    assert_eq!(store.expired_leases(32_001).await.unwrap(), vec![a.clone()]);
    assert_eq!(
        store.expired_leases(33_001).await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    // The coordinator that holds agent-1 renews its attempts.
    assert_eq!(
        store
            .renew_leases(&["agent-1".to_owned()], 60_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.expired_leases(33_001).await.unwrap(), vec![b.clone()]);
    assert_eq!(
        store.expired_leases(60_001).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(store.renew_leases(&[], 90_000).await.unwrap(), 0);
    assert_eq!(
        store
            .renew_leases(&["nobody".to_owned()], 90_000)
            .await
            .unwrap(),
        0
    );

    // The reaper ends the expired attempt; an ended attempt has no lease.
    let effect = store
        .finish_attempt(
            b.attempt_id,
            None,
            AttemptOutcome::InfraError,
            Some("lease expired"),
            Some(&testfleet_wire::reason::ReasonData::LeaseExpired),
            None,
            None,
            33_001,
        )
        .await
        .unwrap();
    assert!(matches!(effect, FinishEffect::Requeued(_)), "{effect:?}");
    assert_eq!(store.expired_leases(60_001).await.unwrap(), vec![a.clone()]);
    assert_eq!(
        store
            .renew_leases(&["agent-1".to_owned(), "agent-2".to_owned()], 90_000)
            .await
            .unwrap(),
        1
    );

    // A new lease length applies to later claims.
    store.set_lease(Duration::from_secs(5));
    let c = claim(&store, queued[1].id, "agent-3", 40_000).await.attempt;
    assert_eq!(store.expired_leases(45_001).await.unwrap(), vec![c.clone()]);
    assert!(store.expired_leases(45_000).await.unwrap().is_empty());
    assert_eq!(store.expired_leases(90_001).await.unwrap(), vec![a, c]);
}
