//! Read models: jobs, tasks, attempts, results, statistics.

use serde_json::json;
use testfleet_core::{AttemptOutcome, JobState, LabelSet};
use testfleet_store::{AttemptContext, Store, StoreError, TaskStats};
use testfleet_wire::api::{CaseCounts, MetricView};
use testfleet_wire::protocol::MachineInfo;
use testfleet_wire::reason::{ReasonData, StepRef};

use crate::support::{INTEGRATION, as_json, claim, parse, qtest_results, simple_job, submit};

contract_tests!(
    jobs_lists_newest_first_and_filters_by_state,
    results_are_counted_per_task_and_job,
    attempt_context_names_the_integration_and_machine,
    runtime_history_and_flaky_statistics,
    reason_data_reads_back_typed_and_old_rows_unchanged,
    threshold_statistics_group_stopped_attempts_by_kind,
);

async fn finish(store: &Store, attempt: i64, agent: &str, outcome: AttemptOutcome, now: i64) {
    store
        .finish_attempt(attempt, Some(agent), outcome, None, None, None, None, now)
        .await
        .unwrap();
}

async fn jobs_lists_newest_first_and_filters_by_state(store: Store) {
    assert!(store.jobs(10, None).await.unwrap().is_empty());
    let (first, q1) = submit(&store, &simple_job("first", 1, 0, 2), 1_000).await;
    let (second, _) = submit(&store, &parse(INTEGRATION), 2_000).await;
    let (third, _) = submit(&store, &simple_job("third", 3, 0, 2), 3_000).await;
    let ids =
        |jobs: Vec<testfleet_wire::api::JobSummary>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.jobs(10, None).await.unwrap()),
        vec![third, second, first]
    );
    assert_eq!(ids(store.jobs(2, None).await.unwrap()), vec![third, second]);
    let listed = store.jobs(10, None).await.unwrap();
    assert_eq!(listed[0].tasks.total, 3);
    assert_eq!(listed[0], store.job_summary(third).await.unwrap());

    let a = claim(&store, q1[0].id, "agent-1", 4_000)
        .await
        .attempt
        .attempt_id;
    assert_eq!(
        ids(store.jobs(10, Some(JobState::Running)).await.unwrap()),
        vec![first]
    );
    finish(&store, a, "agent-1", AttemptOutcome::Passed, 5_000).await;
    assert_eq!(
        ids(store.jobs(10, Some(JobState::Passed)).await.unwrap()),
        vec![first]
    );
    assert_eq!(
        ids(store.jobs(10, Some(JobState::Queued)).await.unwrap()),
        vec![third, second]
    );
    assert!(
        store
            .jobs(10, Some(JobState::Failed))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(matches!(
        store.job(999_999).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.task(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn results_are_counted_per_task_and_job(store: Store) {
    let (job_id, queued) = submit(&store, &simple_job("counted", 2, 0, 2), 1_000).await;
    let a = claim(&store, queued[0].id, "agent-1", 2_000)
        .await
        .attempt
        .attempt_id;
    let b = claim(&store, queued[1].id, "agent-2", 2_000)
        .await
        .attempt
        .attempt_id;
    let results = qtest_results();
    let effect = store
        .finish_attempt(
            a,
            Some("agent-1"),
            AttemptOutcome::Failed,
            Some("1 test failed"),
            None,
            Some(&results),
            None,
            5_000,
        )
        .await
        .unwrap();
    assert!(
        matches!(effect, testfleet_store::FinishEffect::TaskFinished { .. }),
        "{effect:?}"
    );
    finish(&store, b, "agent-2", AttemptOutcome::Passed, 5_000).await;

    let expected = CaseCounts {
        pass: 2,
        fail: 1,
        skip: 1,
        ..CaseCounts::default()
    };
    let task = store.task(queued[0].id).await.unwrap().task;
    assert_eq!(task.counts, expected);
    assert_eq!(
        task.metrics,
        vec![MetricView {
            suite: "tst_QString".into(),
            case: "benchQString".into(),
            data_tag: None,
            name: "WalltimeMilliseconds".into(),
            unit: "msecs".into(),
            value: 0.25,
            iterations: Some(64),
        }]
    );
    let job = store.job(job_id).await.unwrap();
    assert_eq!(job.counts, expected);
    assert_eq!(job.tasks[0].counts, expected);
    assert_eq!(job.tasks[1].counts, CaseCounts::default());

    assert_eq!(store.attempt_results(a).await.unwrap(), results);
    assert!(store.attempt_results(b).await.unwrap().is_empty());
    assert!(matches!(
        store.attempt_results(999_999).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.job_results(job_id).await.unwrap(),
        vec![("t0".to_owned(), "agent-1".to_owned(), results[0].clone())]
    );
    assert!(matches!(
        store.job_results(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn attempt_context_names_the_integration_and_machine(store: Store) {
    let machine = MachineInfo {
        arch: "aarch64".into(),
        cores: 8,
        ..MachineInfo::default()
    };
    store
        .agent_connected("arm-01", &LabelSet::new(), Some(&machine), 500)
        .await
        .unwrap();
    let (job_id, queued) = submit(&store, &parse(INTEGRATION), 1_000).await;
    let a = claim(&store, queued[1].id, "arm-01", 2_000)
        .await
        .attempt
        .attempt_id;
    let results = qtest_results();
    store
        .finish_attempt(
            a,
            Some("arm-01"),
            AttemptOutcome::Failed,
            None,
            None,
            Some(&results),
            None,
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(
        store.attempt_context(a).await.unwrap(),
        AttemptContext {
            attempt_id: a,
            agent: "arm-01".into(),
            job_id,
            task_name: "corelib-tests".into(),
            integration_id: "189470895".into(),
            integration_timestamp: 1_676_034_673_000,
            branch: "dev".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            machine: Some(machine),
            results,
        }
    );

    // Without an integration, an agent never seen and no results.
    let (plain, queued) = submit(&store, &simple_job("plain", 1, 0, 2), 4_000).await;
    let b = claim(&store, queued[0].id, "ghost", 5_000)
        .await
        .attempt
        .attempt_id;
    assert_eq!(
        store.attempt_context(b).await.unwrap(),
        AttemptContext {
            attempt_id: b,
            agent: "ghost".into(),
            job_id: plain,
            task_name: "t0".into(),
            integration_id: format!("tf-{plain}"),
            integration_timestamp: 4_000,
            branch: String::new(),
            sha: String::new(),
            machine: None,
            results: Vec::new(),
        }
    );
    assert!(matches!(
        store.attempt_context(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn runtime_history_and_flaky_statistics(store: Store) {
    assert_eq!(store.task_stats("stats/t0").await.unwrap(), None);
    assert_eq!(as_json(store.runtime_stats(10).await.unwrap()), json!([]));
    assert_eq!(as_json(store.flaky_stats(10).await.unwrap()), json!([]));
    let spec = simple_job("stats", 2, 1, 2);
    let (_, queued) = submit(&store, &spec, 1_000).await;
    // t0 fails once (2 s), then passes (1 s): flaky. t1 passes (5 s).
    let a = claim(&store, queued[0].id, "agent-1", 1_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, a, "agent-1", AttemptOutcome::Failed, 3_000).await;
    let b = claim(&store, queued[0].id, "agent-2", 4_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, b, "agent-2", AttemptOutcome::Passed, 5_000).await;
    let c = claim(&store, queued[1].id, "agent-1", 5_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, c, "agent-1", AttemptOutcome::Passed, 10_000).await;

    let t0 = TaskStats {
        runs: 2,
        mean_ms: 1_500.0,
        p95_ms: 2_000.0,
    };
    assert_eq!(
        store.task_stats("stats/t0").await.unwrap(),
        Some(t0.clone())
    );
    assert_eq!(
        as_json(store.runtime_stats(10).await.unwrap()),
        json!([
            {"task_key": "stats/t1", "runs": 1, "mean_ms": 5_000.0, "p95_ms": 5_000.0},
            {"task_key": "stats/t0", "runs": 2, "mean_ms": 1_500.0, "p95_ms": 2_000.0},
        ])
    );
    assert_eq!(
        as_json(store.runtime_stats(1).await.unwrap()),
        json!([{"task_key": "stats/t1", "runs": 1, "mean_ms": 5_000.0, "p95_ms": 5_000.0}])
    );
    assert_eq!(
        as_json(store.flaky_stats(10).await.unwrap()),
        json!([{"task_key": "stats/t0", "flaky": 1, "runs": 1}])
    );

    // The same job again: its tasks start with their history.
    let (_, again) = submit(&store, &spec, 20_000).await;
    assert_eq!(again[0].expected_ms, Some(1_500.0));
    assert_eq!(again[1].expected_ms, Some(5_000.0));
    let claimed = claim(&store, again[0].id, "agent-1", 21_000).await;
    assert_eq!(claimed.history, Some(t0));
    // Failed, then passed again: flaky twice out of two finished tasks.
    finish(
        &store,
        claimed.attempt.attempt_id,
        "agent-1",
        AttemptOutcome::Failed,
        22_000,
    )
    .await;
    let d = claim(&store, again[0].id, "agent-2", 23_000)
        .await
        .attempt
        .attempt_id;
    finish(&store, d, "agent-2", AttemptOutcome::Passed, 24_000).await;
    assert_eq!(
        as_json(store.flaky_stats(10).await.unwrap()),
        json!([{"task_key": "stats/t0", "flaky": 2, "runs": 2}])
    );
    assert_eq!(
        store.task_stats("stats/t0").await.unwrap().map(|s| s.runs),
        Some(4)
    );
}

async fn threshold_statistics_group_stopped_attempts_by_kind(store: Store) {
    assert_eq!(as_json(store.threshold_stats().await.unwrap()), json!([]));
    let (_, queued) = submit(&store, &simple_job("stopped", 6, 0, 0), 1_000).await;
    let stops = [
        (
            AttemptOutcome::Stalled,
            json!({"kind": "runtime_threshold", "elapsed_ms": 2_000, "limit_ms": 1_500, "basis": "p95", "agent_load": 1.5}),
            3_000,
        ),
        (
            AttemptOutcome::TimedOut,
            json!({"kind": "step_timeout", "agent_load": 0.5}),
            5_000,
        ),
        (
            AttemptOutcome::Stalled,
            json!({"kind": "runtime_threshold", "agent_load": 2.5}),
            2_000,
        ),
        (
            AttemptOutcome::InfraError,
            json!({"kind": "lease_expired"}),
            11_000,
        ),
        // Not a threshold: not counted.
        (
            AttemptOutcome::Failed,
            json!({"kind": "exit_status", "agent_load": 9.0}),
            2_000,
        ),
        (AttemptOutcome::Stalled, json!({"kind": "silence"}), 1_500),
    ];
    for ((outcome, data, at), task) in stops.iter().zip(&queued) {
        let a = claim(&store, task.id, "agent-1", 1_000)
            .await
            .attempt
            .attempt_id;
        store
            .finish_attempt(
                a,
                None,
                *outcome,
                Some("stopped"),
                // Most of these are shapes older versions wrote: kept as they were.
                Some(&reason(data)),
                None,
                None,
                *at,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        as_json(store.threshold_stats().await.unwrap()),
        json!([
            {"threshold": "lease_expired", "stopped_attempts": 1, "mean_runtime_ms": 10_000.0,
             "max_runtime_ms": 10_000, "mean_agent_load": null, "max_agent_load": null},
            {"threshold": "runtime_threshold", "stopped_attempts": 2, "mean_runtime_ms": 1_500.0,
             "max_runtime_ms": 2_000, "mean_agent_load": 2.0, "max_agent_load": 2.5},
            {"threshold": "silence", "stopped_attempts": 1, "mean_runtime_ms": 500.0,
             "max_runtime_ms": 500, "mean_agent_load": null, "max_agent_load": null},
            {"threshold": "step_timeout", "stopped_attempts": 1, "mean_runtime_ms": 4_000.0,
             "max_runtime_ms": 4_000, "mean_agent_load": 0.5, "max_agent_load": 0.5},
        ])
    );
}

fn reason(data: &serde_json::Value) -> ReasonData {
    serde_json::from_value(data.clone()).expect("any JSON object is reason data")
}

/// `reason_data` is typed by its `kind`; a row of a kind this version does not know,
/// or of a known kind in an older shape, still reads, and reads back as it was written.
async fn reason_data_reads_back_typed_and_old_rows_unchanged(store: Store) {
    let (_, queued) = submit(&store, &simple_job("reasons", 3, 0, 0), 1_000).await;
    let typed = ReasonData::ExitStatus {
        step: StepRef {
            step: 0,
            stage: "test".into(),
            command: "make check".into(),
        },
        exit_code: 2,
    };
    let unknown = json!({"kind": "from_the_future", "detail": {"a": [1, 2]}});
    let old_shape = json!({"kind": "runtime_threshold", "basis": "p95", "agent_load": 1.5});
    let written = [typed.clone(), reason(&unknown), reason(&old_shape)];
    for (data, task) in written.iter().zip(&queued) {
        let a = claim(&store, task.id, "agent-1", 1_000)
            .await
            .attempt
            .attempt_id;
        store
            .finish_attempt(
                a,
                None,
                AttemptOutcome::Failed,
                Some("failed"),
                Some(data),
                None,
                None,
                2_000,
            )
            .await
            .unwrap();
    }
    let mut read = Vec::new();
    for task in &queued {
        let detail = store.task(task.id).await.unwrap();
        read.push(
            detail.attempts_list[0]
                .reason_data
                .clone()
                .expect("reason data"),
        );
    }
    assert_eq!(read[0], typed);
    assert!(matches!(read[1], ReasonData::Other(_)), "{:?}", read[1]);
    assert_eq!(serde_json::to_value(&read[1]).unwrap(), unknown);
    assert_eq!(read[2].kind_str(), Some("runtime_threshold"));
    assert_eq!(serde_json::to_value(&read[2]).unwrap(), old_shape);
}
