//! Benchmark host preparation against a fake sysfs tree: every change and
//! its undo, steps the machine cannot do, a journal-driven restore after a
//! crash, the busy-host wait, and a step that really runs pinned and niced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testfleet_agent::prep::helper::{self, HelperPlan};
use testfleet_agent::prep::sysfs::Sysfs;
use testfleet_agent::prep::{self, PrepSettings};
use testfleet_agent::runner::{RunnerConfig, RunnerEvent, run_work};
use testfleet_core::AttemptOutcome;
use testfleet_core::job::BenchSpec;
use testfleet_testkit::sysfs::{Turbo, fake_cpu_tree, read_cpu};
use testfleet_wire::protocol::{
    AttemptReport, MachineInfo, PrepAction, PrepStatus, PrepStep, WorkItem,
};
use tokio::sync::{mpsc, watch};

fn fake_sysfs(root: &Path, amd: bool) {
    let turbo = if amd {
        Turbo::Boost
    } else {
        Turbo::IntelPstate
    };
    fake_cpu_tree(root, turbo).unwrap();
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    testfleet_testkit::sysfs::snapshot(root).unwrap()
}

fn read(root: &Path, rel: &str) -> String {
    read_cpu(root, rel)
}

fn settings(dir: &Path) -> PrepSettings {
    let mut s = PrepSettings::new(dir.join("host-prep.journal"));
    s.sysfs_root = dir.join("sys");
    s.loadavg = dir.join("loadavg");
    s.load_poll = Duration::from_millis(20);
    std::fs::write(&s.loadavg, "0.10 0.20 0.30 1/100 4242\n").unwrap();
    s
}

fn bench(json: serde_json::Value) -> BenchSpec {
    serde_json::from_value(json).unwrap()
}

fn step<'a>(steps: &'a [PrepStep], action: PrepAction, target: &str) -> &'a PrepStep {
    steps
        .iter()
        .find(|s| s.step == action && s.target == target)
        .unwrap_or_else(|| panic!("no {action:?} step for {target}: {steps:#?}"))
}

#[tokio::test]
async fn every_change_is_made_and_every_change_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    let before = snapshot(&s.sysfs_root);
    let spec = bench(serde_json::json!({
        "cpus": "0-1", "governor": "performance", "turbo": false, "siblings_offline": true,
    }));
    let (_tx, cancel) = watch::channel(false);
    let prepared = prep::prepare(&s, Some(&spec), cancel).await.unwrap();
    let root = &s.sysfs_root;
    assert_eq!(read(root, "intel_pstate/no_turbo"), "1");
    assert_eq!(read(root, "cpu0/cpufreq/scaling_governor"), "performance");
    assert_eq!(read(root, "cpu1/cpufreq/scaling_governor"), "performance");
    // Only the pinned CPUs' governors change; their siblings go offline.
    assert_eq!(read(root, "cpu2/cpufreq/scaling_governor"), "powersave");
    assert_eq!(read(root, "cpu2/online"), "0");
    assert_eq!(read(root, "cpu3/online"), "0");
    assert_eq!(read(root, "cpu1/online"), "1");
    let steps = &prepared.steps;
    for (action, target) in [
        (PrepAction::Turbo, "turbo (intel_pstate/no_turbo)"),
        (PrepAction::Governor, "cpu0"),
        (PrepAction::Governor, "cpu1"),
        (PrepAction::SiblingOffline, "cpu2"),
        (PrepAction::SiblingOffline, "cpu3"),
    ] {
        assert_eq!(step(steps, action, target).status, PrepStatus::Applied);
    }
    assert_eq!(
        step(steps, PrepAction::Governor, "cpu0").detail,
        "powersave -> performance"
    );
    assert!(prepared.changed_host);
    assert!(s.journal.exists());

    let undone = prep::restore(&s).await.unwrap();
    assert_eq!(undone.len(), 5, "{undone:#?}");
    assert!(undone.iter().all(|u| u.status == PrepStatus::Applied));
    // Undone in reverse: the siblings come back first, turbo last.
    assert_eq!(undone[0].step, PrepAction::SiblingOffline);
    assert_eq!(undone[4].step, PrepAction::Turbo);
    assert_eq!(snapshot(&s.sysfs_root), before);
    assert!(!s.journal.exists());
}

#[tokio::test]
async fn turbo_goes_through_cpufreq_boost_where_intel_pstate_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, true);
    let before = snapshot(&s.sysfs_root);
    let (_tx, cancel) = watch::channel(false);
    let spec = bench(serde_json::json!({"turbo": false}));
    let prepared = prep::prepare(&s, Some(&spec), cancel).await.unwrap();
    assert_eq!(read(&s.sysfs_root, "cpufreq/boost"), "0");
    assert_eq!(
        step(&prepared.steps, PrepAction::Turbo, "turbo (cpufreq/boost)").status,
        PrepStatus::Applied
    );
    prep::restore(&s).await.unwrap();
    assert_eq!(snapshot(&s.sysfs_root), before);
}

#[tokio::test]
async fn steps_the_machine_cannot_do_are_recorded_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    // Two CPUs, no cpufreq at all, no turbo knob, cpu1 has a sibling cpu0
    // (which has no `online` file: it cannot go offline).
    let cpu = s.sysfs_root.join("devices/system/cpu");
    for n in 0..2 {
        std::fs::create_dir_all(cpu.join(format!("cpu{n}/topology"))).unwrap();
        std::fs::write(
            cpu.join(format!("cpu{n}/topology/thread_siblings_list")),
            "0-1",
        )
        .unwrap();
    }
    std::fs::write(cpu.join("cpu1/online"), "1\n").unwrap();
    let spec = bench(serde_json::json!({
        "cpus": "1", "governor": "performance", "turbo": false, "siblings_offline": true,
    }));
    let (_tx, cancel) = watch::channel(false);
    let prepared = prep::prepare(&s, Some(&spec), cancel).await.unwrap();
    let steps = &prepared.steps;
    assert_eq!(
        step(steps, PrepAction::Turbo, "turbo").status,
        PrepStatus::Unsupported
    );
    let gov = step(steps, PrepAction::Governor, "cpu1");
    assert_eq!(gov.status, PrepStatus::Unsupported, "{gov:?}");
    let sib = step(steps, PrepAction::SiblingOffline, "cpu0");
    assert_eq!(sib.status, PrepStatus::Unsupported, "{sib:?}");
    // Nothing changed, so nothing is journaled.
    assert!(!s.journal.exists());

    // A governor the CPU does not offer is not written.
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = settings(dir2.path());
    fake_sysfs(&s2.sysfs_root, false);
    let spec = bench(serde_json::json!({"cpus": "0", "governor": "ondemand"}));
    let (_tx, cancel) = watch::channel(false);
    let prepared = prep::prepare(&s2, Some(&spec), cancel).await.unwrap();
    let gov = step(&prepared.steps, PrepAction::Governor, "cpu0");
    assert_eq!(gov.status, PrepStatus::Unsupported);
    assert!(gov.detail.contains("performance powersave"), "{gov:?}");
    assert_eq!(
        read(&s2.sysfs_root, "cpu0/cpufreq/scaling_governor"),
        "powersave"
    );
}

#[tokio::test]
async fn a_host_left_prepared_by_a_crash_is_restored_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    let before = snapshot(&s.sysfs_root);
    let sysfs = Sysfs::new(&s.sysfs_root);
    let plan = HelperPlan {
        cpus: Some(testfleet_core::job::bench::CpuList::parse("1").unwrap()),
        governor: Some(testfleet_core::job::bench::Governor::parse("performance").unwrap()),
        turbo: Some(false),
        siblings_offline: true,
    };
    helper::apply(&sysfs, &s.journal, &plan).unwrap();
    assert_ne!(snapshot(&s.sysfs_root), before);
    // The process dies here. A second preparation is refused while the
    // journal holds changes not undone...
    assert!(helper::apply(&sysfs, &s.journal, &plan).is_err());
    // ...and the next start restores the host from it.
    prep::recover(&s).await;
    assert_eq!(snapshot(&s.sysfs_root), before);
    assert!(!s.journal.exists());
}

#[tokio::test]
async fn a_change_journaled_but_never_made_restores_harmlessly() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    let before = snapshot(&s.sysfs_root);
    // The agent died between the journal's sync and the write.
    std::fs::write(
        &s.journal,
        "{\"knob\":{\"knob\":\"no_turbo\"},\"old\":\"0\",\"new\":\"1\"}\n",
    )
    .unwrap();
    let undone = prep::restore(&s).await.unwrap();
    assert_eq!(undone.len(), 1);
    assert_eq!(snapshot(&s.sysfs_root), before);
}

fn item(bench: serde_json::Value, run: &str) -> WorkItem {
    serde_json::from_value(serde_json::json!({
        "integrationId": "prep", "integrationURL": null,
        "integrationTimestamp": "2024-01-02T03:04:05.000Z",
        "integrationData": [], "branch": "dev", "sha": "abc",
        "steps": [{"stage": "test", "run": run, "timeout": "20s"}],
        "bench": bench,
    }))
    .unwrap()
}

async fn run(item: WorkItem, work: &Path, s: PrepSettings) -> (AttemptReport, String) {
    let mut config = RunnerConfig::new(work.to_owned(), Duration::from_millis(200));
    config.prep = Some(s);
    config.machine = Some(MachineInfo {
        cpu_model: "Fake CPU".into(),
        ..MachineInfo::default()
    });
    let (tx, mut rx) = mpsc::channel(1024);
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let collect = tokio::spawn(async move {
        let mut log = String::new();
        while let Some(e) = rx.recv().await {
            if let RunnerEvent::Output { data, .. } = e {
                log.push_str(&data);
            }
        }
        log
    });
    let report = run_work(item, config, tx, cancel_rx).await;
    (report, collect.await.unwrap())
}

/// The CPU list and niceness the step's own processes see.
const SHOW: &str = "grep Cpus_allowed_list /proc/self/status; \
     echo \"nice=$(cut -d' ' -f19 /proc/self/stat)\"; echo \"io=$(ionice -p $$)\"";

#[tokio::test]
async fn a_prepared_step_runs_pinned_and_niced_and_the_attempt_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    let before = snapshot(&s.sysfs_root);
    let bench = serde_json::json!({
        "cpus": "0", "nice": 7, "ionice": "idle", "turbo": false, "max_load": 4.0,
    });
    let (report, log) = run(item(bench, SHOW), &dir.path().join("work"), s.clone()).await;
    assert_eq!(report.outcome, AttemptOutcome::Passed, "{log}");
    assert!(log.contains("Cpus_allowed_list:\t0\n"), "{log}");
    assert!(log.contains("nice=7\n"), "{log}");
    assert!(log.contains("io=idle\n"), "{log}");
    assert!(log.contains("host prep: turbo"), "{log}");
    // Undone after the attempt.
    assert_eq!(snapshot(&s.sysfs_root), before);
    assert!(!s.journal.exists());
    // The attempt's fingerprint: the agent's, with every step.
    let machine = report
        .machine
        .expect("a prepared attempt reports its machine");
    assert_eq!(machine.cpu_model, "Fake CPU");
    let steps = &machine.prep;
    assert_eq!(
        step(steps, PrepAction::Pin, "cpus 0").status,
        PrepStatus::Applied
    );
    assert_eq!(
        step(steps, PrepAction::Nice, "steps").status,
        PrepStatus::Applied
    );
    assert_eq!(
        step(steps, PrepAction::Ionice, "steps").status,
        PrepStatus::Applied
    );
    assert_eq!(
        step(steps, PrepAction::Load, "loadavg").status,
        PrepStatus::Applied
    );
    assert_eq!(
        step(steps, PrepAction::Turbo, "turbo (intel_pstate/no_turbo)").status,
        PrepStatus::Applied
    );
}

#[tokio::test]
async fn an_unprepared_step_runs_as_before_and_reports_no_machine() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    let (report, log) = run(
        item(serde_json::Value::Null, SHOW),
        &dir.path().join("work"),
        s,
    )
    .await;
    assert_eq!(report.outcome, AttemptOutcome::Passed, "{log}");
    assert!(!log.contains("Cpus_allowed_list:\t0\n"), "{log}");
    assert!(!log.contains("host prep"), "{log}");
    assert!(report.machine.is_none());
}

#[tokio::test]
async fn a_host_that_stays_busy_fails_the_attempt_as_infrastructure_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_load_wait = Duration::from_millis(200);
    std::fs::write(&s.loadavg, "9.50 9.00 8.00 3/300 999\n").unwrap();
    fake_sysfs(&s.sysfs_root, false);
    let before = snapshot(&s.sysfs_root);
    let bench = serde_json::json!({"max_load": 1.5, "turbo": false});
    let (report, log) = run(
        item(bench, "touch ran"),
        &dir.path().join("work"),
        s.clone(),
    )
    .await;
    assert_eq!(report.outcome, AttemptOutcome::InfraError, "{log}");
    let reason = report.reason.unwrap_or_default();
    assert!(reason.contains("above max_load 1.5"), "{reason}");
    assert!(reason.contains("9.50"), "{reason}");
    let data = serde_json::to_value(report.reason_data).unwrap();
    assert_eq!(data["kind"], "host_load");
    assert_eq!(snapshot(&s.sysfs_root), before);
    assert!(
        !dir.path()
            .join("work/runs/integration-prep/src/ran")
            .exists()
    );
}

#[tokio::test]
async fn a_quieter_host_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_load_wait = Duration::from_secs(20);
    std::fs::write(&s.loadavg, "9.50 9.00 8.00 3/300 999\n").unwrap();
    let loadavg = s.loadavg.clone();
    let quiet = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&loadavg, "0.50 9.00 8.00 3/300 999\n").unwrap();
    });
    let spec = bench(serde_json::json!({"max_load": 1.5}));
    let (_tx, cancel) = watch::channel(false);
    let prepared = prep::prepare(&s, Some(&spec), cancel).await.unwrap();
    quiet.await.unwrap();
    let load = step(&prepared.steps, PrepAction::Load, "loadavg");
    assert_eq!(load.status, PrepStatus::Applied);
    assert!(load.detail.starts_with("load 0.50 <= 1.5"), "{load:?}");
}

#[tokio::test]
async fn the_agent_default_applies_and_a_task_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    fake_sysfs(&s.sysfs_root, false);
    s.defaults = bench(serde_json::json!({"cpus": "1", "governor": "performance"}));
    let spec = bench(serde_json::json!({"cpus": "0"}));
    let (_tx, cancel) = watch::channel(false);
    prep::prepare(&s, Some(&spec), cancel).await.unwrap();
    assert_eq!(
        read(&s.sysfs_root, "cpu0/cpufreq/scaling_governor"),
        "performance"
    );
    assert_eq!(
        read(&s.sysfs_root, "cpu1/cpufreq/scaling_governor"),
        "powersave"
    );
    prep::restore(&s).await.unwrap();
    assert_eq!(
        read(&s.sysfs_root, "cpu0/cpufreq/scaling_governor"),
        "powersave"
    );
}
