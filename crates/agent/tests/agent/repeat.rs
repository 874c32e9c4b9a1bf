//! `repeat = N`: one attempt runs its test steps N times, with real processes,
//! and each repetition's result files are parsed once, tagged with its number.

use std::path::Path;
use std::time::Duration;

use testfleet_agent::runner::{RunnerConfig, RunnerEvent, run_work};
use testfleet_core::{AttemptOutcome, Stage};
use testfleet_wire::protocol::{AttemptReport, WorkItem};
use tokio::sync::{mpsc, watch};

/// A build step that counts its runs, then a test step that counts its own
/// and writes a TAP file naming its run; `fail_on` makes that run exit 1.
fn item(repeat: u32, test_step: &str) -> WorkItem {
    serde_json::from_value(serde_json::json!({
        "integrationId": "repeat", "integrationURL": null,
        "integrationTimestamp": "2024-01-02T03:04:05.000Z",
        "integrationData": [], "branch": "dev", "sha": "abc",
        "steps": [
            {"stage": "build", "run": "echo built >> builds.txt"},
            {"stage": "test", "run": test_step, "timeout": "2s"},
        ],
        "results": [{"path": "results/*.tap"}],
        "repeat": repeat,
    }))
    .unwrap()
}

const COUNTING: &str = "echo run >> runs.txt; n=$(wc -l < runs.txt); mkdir -p results; \
     printf 'TAP version 13\\n1..1\\nok 1 - run %s\\n' \"$n\" > results/out.tap; \
     [ \"$n\" != \"$FAIL_ON\" ]";

async fn run(item: WorkItem, work: &Path) -> (AttemptReport, Vec<RunnerEvent>) {
    let mut config = RunnerConfig::new(work.to_owned(), Duration::from_millis(200));
    config.keep_run_dir = true;
    let (tx, mut rx) = mpsc::channel(1024);
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let report = run_work(item, config, tx, cancel_rx).await;
    (report, collect.await.unwrap())
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

/// (repetition, case names) of each result set.
fn cases(report: &AttemptReport) -> Vec<(u32, Vec<String>)> {
    report
        .results
        .iter()
        .map(|r| (r.repetition, r.cases().map(|c| c.name.clone()).collect()))
        .collect()
}

fn log_of(events: &[RunnerEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Output { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn repeat_runs_the_test_steps_n_times_and_tags_each_result_set() {
    let work = tempfile::tempdir().unwrap();
    let item = item(3, &COUNTING.replace("$FAIL_ON", "none"));
    let (report, events) = run(item, work.path()).await;
    assert_eq!(report.outcome, AttemptOutcome::Passed, "{report:?}");
    // Three result sets, each read once: run n's file in repetition n - 1.
    assert_eq!(
        cases(&report),
        vec![
            (0, vec!["run 1".to_owned()]),
            (1, vec!["run 2".to_owned()]),
            (2, vec!["run 3".to_owned()]),
        ]
    );
    let run_dir = work.path().join("runs/integration-repeat");
    assert_eq!(
        lines(&run_dir.join("src/builds.txt")),
        1,
        "the build runs once"
    );
    assert_eq!(lines(&run_dir.join("src/runs.txt")), 3);
    // Earlier repetitions' files are set aside beside the checkout.
    for (rep, run) in [(0, "run 1"), (1, "run 2")] {
        let kept = run_dir.join(format!("repetitions/{rep}/results/out.tap"));
        assert!(
            std::fs::read_to_string(&kept).unwrap().contains(run),
            "{kept:?}"
        );
    }
    // The work log names each repetition; the stage reaches `results` once, at the end.
    let stages: Vec<(Stage, String)> = events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Stage { stage, detail } => Some((*stage, detail.clone())),
            _ => None,
        })
        .collect();
    for n in 1..=3 {
        let want = format!("repetition {n}/3: step 2/2:");
        assert!(
            stages
                .iter()
                .any(|(s, d)| *s == Stage::Test && d.starts_with(&want)),
            "{want} in {stages:?}"
        );
    }
    let results_at = stages.iter().position(|(s, _)| *s == Stage::Results);
    assert_eq!(results_at, Some(stages.len() - 1), "{stages:?}");
    assert!(log_of(&events).contains("[testfleet] repetition 2/3\n"));
}

#[tokio::test]
async fn the_worst_repetition_decides_and_every_repetition_runs() {
    let work = tempfile::tempdir().unwrap();
    let item = item(3, &COUNTING.replace("$FAIL_ON", "2"));
    let (report, _) = run(item, work.path()).await;
    assert_eq!(report.outcome, AttemptOutcome::Failed, "{report:?}");
    let reason = report.reason.clone().unwrap();
    assert!(reason.starts_with("repetition 2/3: step `"), "{reason}");
    assert!(reason.ends_with("exited with status 1"), "{reason}");
    assert_eq!(cases(&report).len(), 3, "{report:?}");
}

#[tokio::test]
async fn a_repetition_stopped_by_its_timeout_ends_the_attempt() {
    let work = tempfile::tempdir().unwrap();
    let step = "echo run >> runs.txt; [ $(wc -l < runs.txt) = 2 ] && sleep 30; true";
    let (report, _) = run(item(4, step), work.path()).await;
    assert_eq!(report.outcome, AttemptOutcome::TimedOut, "{report:?}");
    let runs = work.path().join("runs/integration-repeat/src/runs.txt");
    assert_eq!(
        lines(&runs),
        2,
        "no repetition after the one that timed out"
    );
}

#[tokio::test]
async fn without_repeat_nothing_changes() {
    let work = tempfile::tempdir().unwrap();
    let (report, events) = run(item(1, &COUNTING.replace("$FAIL_ON", "none")), work.path()).await;
    assert_eq!(report.outcome, AttemptOutcome::Passed, "{report:?}");
    assert_eq!(cases(&report), vec![(0, vec!["run 1".to_owned()])]);
    assert!(!log_of(&events).contains("repetition"));
}
