//! `testfleet bench` against spawned coordinators (`--coordinators 2` on a
//! fresh PostgreSQL database): here because spawning needs the `testfleet`
//! binary, which only this crate's tests can name.

use std::time::Duration;

use testfleet_loadgen::{BenchConfig, BenchReport, Workload};
use testfleet_testkit::postgres::{SERVER, ScratchPg};

fn two_coordinators(agents: usize, tasks: usize) -> BenchConfig {
    let mut config = BenchConfig::new(agents, tasks, Workload::Noop);
    config.coordinators = 2;
    config.server_program = Some(env!("CARGO_BIN_EXE_testfleet").into());
    config.database = Some(SERVER.parse().expect("the test server's URL parses"));
    config.batch = 20;
    // No `requestStatus` timer: its idle race re-runs a task now and then
    // (see crates/loadgen/tests/bench.rs), and this test counts attempts.
    config.status_requests = false;
    config.timeout = Duration::from_secs(90);
    config
}

/// Two coordinators sharing one queue: every task passes exactly once, the
/// agents are split between them, their memory is read and their logs hold
/// no ERROR line; then 50 agents leave and come back at once, and every
/// retirement and every reconnection is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spawned_coordinators_run_every_task_once_and_record_a_storm() {
    // The peer rule: no PostgreSQL, no test (the bench makes its own database).
    let Some(probe) = ScratchPg::create_named("tf_bench_fleet_probe").await else {
        return;
    };
    probe.remove().await.expect("probe database dropped");

    let report = testfleet_loadgen::run(two_coordinators(20, 200))
        .await
        .expect("bench runs");
    let BenchReport::Single(r) = &report else {
        panic!("expected a single run: {report:?}");
    };
    let json = serde_json::to_string_pretty(&report).expect("serializes");
    assert_eq!(r.finished, 200, "{json}");
    assert_eq!(r.lost, 0, "{json}");
    assert_eq!(r.not_submitted, 0, "{json}");
    assert_eq!(r.duplicated, 0, "{json}");
    assert_eq!(r.server_not_passed, Some(0), "{json}");
    assert_eq!(r.server_extra_attempts, Some(0), "{json}");
    assert_eq!(r.report_errors, 0, "{json}");
    assert_eq!(r.protocol_violations, 0, "{json}");
    assert!(!r.timed_out, "{json}");
    let fleet = r.fleet.as_ref().expect("spawned coordinators' figures");
    assert_eq!(fleet.coordinators.len(), 2, "{json}");
    assert!(fleet.cluster, "{json}");
    assert_eq!(fleet.store, "postgres", "{json}");
    assert!(fleet.coordinators.iter().all(|c| c.agents == 10), "{json}");
    assert!(
        fleet
            .coordinators
            .iter()
            .all(|c| c.rss_idle_kib.is_some() && c.rss_connected_kib.is_some()),
        "{json}"
    );
    assert!(fleet.memory_per_agent_kib.is_some(), "{json}");
    assert_eq!(fleet.error_lines, 0, "{json}");
    assert!(report.is_clean(), "{json}");

    let mut storm = two_coordinators(50, 100);
    storm.storm = true;
    let report = testfleet_loadgen::run(storm)
        .await
        .expect("storm bench runs");
    let BenchReport::Single(r) = &report else {
        panic!("expected a single run: {report:?}");
    };
    let json = serde_json::to_string_pretty(&report).expect("serializes");
    let s = r.storm.as_ref().expect("storm figures");
    assert_eq!(s.retired, 50, "{json}");
    assert_eq!(s.online, 50, "{json}");
    assert!(s.complete, "{json}");
    assert!(s.leave_s.is_some() && s.rejoin_s.is_some(), "{json}");
    // The fleet that came back still runs every task once.
    assert_eq!(r.finished, 100, "{json}");
    assert_eq!(r.server_not_passed, Some(0), "{json}");
    assert_eq!(r.duplicated, 0, "{json}");
    assert_eq!(r.fleet.as_ref().map(|f| f.error_lines), Some(0), "{json}");
}
