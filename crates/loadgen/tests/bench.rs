//! A small bench end to end: an in-process coordinator, ten simulated agents
//! over real socket.io, 300 no-op tasks submitted over REST.

use std::time::Duration;

use testfleet_loadgen::{BenchConfig, BenchReport, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_noop_bench_loses_and_duplicates_nothing() {
    let mut config = BenchConfig::new(10, 300, Workload::Noop);
    config.batch = 50;
    config.timeout = Duration::from_secs(30);
    // See `with_status_requests_only_the_idle_race_reruns_tasks` for why.
    config.status_requests = false;
    let report = testfleet_loadgen::run(config).await.expect("bench runs");
    let BenchReport::Single(r) = &report else {
        panic!("expected a single run: {report:?}");
    };
    let json = serde_json::to_string_pretty(&report).expect("serializes");
    assert_eq!(r.lost, 0, "{json}");
    assert_eq!(r.duplicated, 0, "{json}");
    assert_eq!(r.duplicate_deliveries, 0, "{json}");
    assert_eq!(r.finished, 300, "{json}");
    assert_eq!(r.not_submitted, 0, "{json}");
    assert_eq!(r.protocol_violations, 0, "{json}");
    assert_eq!(r.report_errors, 0, "{json}");
    assert_eq!(r.server_not_passed, Some(0), "{json}");
    assert_eq!(r.server_extra_attempts, Some(0), "{json}");
    assert!(!r.timed_out, "{json}");
    assert!(r.tasks_per_second > 0.0, "{json}");
    assert!(report.is_clean(), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    for key in [
        "agents",
        "tasks",
        "workload",
        "tasks_per_second",
        "submit_to_start_ms",
        "makespan_s",
        "lower_bound_s",
        "makespan_ratio",
        "lost",
        "duplicated",
    ] {
        assert!(v.get(key).is_some(), "report lacks `{key}`: {json}");
    }
    assert_eq!(v["workload"], "noop");
}

/// With the coordinator's default `requestStatus` timer, an agent may answer
/// `idle` to a request sent while its previous attempt ran, after it already
/// fetched again: the coordinator then ends the fresh attempt as
/// `infra_error` and re-runs the task. Nothing is lost; any re-run must have
/// that cause and no other, and at most one per agent happens in a short run
/// (the first request goes out at once, the next after 60 s). A task can be
/// hit more than once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_status_requests_only_the_idle_race_reruns_tasks() {
    let mut config = BenchConfig::new(10, 200, Workload::Noop);
    config.timeout = Duration::from_secs(30);
    let report = testfleet_loadgen::run(config).await.expect("bench runs");
    let BenchReport::Single(r) = &report else {
        panic!("expected a single run: {report:?}");
    };
    let json = serde_json::to_string_pretty(&report).expect("serializes");
    assert_eq!(r.lost, 0, "{json}");
    assert_eq!(r.finished, 200, "{json}");
    assert!(r.duplicate_deliveries <= 10, "{json}");
    assert_eq!(
        r.server_extra_attempts,
        Some(r.duplicate_deliveries as i64),
        "{json}"
    );
    for reason in r.server_retry_reasons.keys() {
        assert!(reason.contains("reported idle"), "{json}");
    }
}
