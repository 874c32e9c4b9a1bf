//! The agent's process handling, with real processes.

#[path = "agent/repeat.rs"]
mod repeat;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use testfleet_agent::process::{StepEnd, StepLimits, run_step};

fn limits(timeout_ms: u64, grace_ms: u64) -> StepLimits {
    StepLimits {
        timeout: Duration::from_millis(timeout_ms),
        silence: None,
        kill_grace: Duration::from_millis(grace_ms),
    }
}
use tokio::sync::{mpsc, watch};

fn alive(pid: i32) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn pids_in(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".pid") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            pids.push(text.trim().parse().unwrap());
        }
    }
    pids
}

/// A step that starts children (one in a new session, escaping the process
/// group) and outlives its timeout: every process of it is gone afterwards.
#[tokio::test]
async fn a_step_past_its_timeout_is_killed_with_all_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let script = "sleep 300 & echo $! > a.pid; \
                  sh -c 'sleep 300 & echo $! > b.pid; wait' & echo $! > c.pid; \
                  setsid sleep 300 & echo $! > d.pid; \
                  trap '' TERM; sleep 300";
    let (tx, mut rx) = mpsc::channel(16);
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let started = Instant::now();
    let end = run_step(
        script,
        dir.path(),
        &BTreeMap::new(),
        limits(700, 300),
        cancel_rx,
        tx,
    )
    .await;
    assert_eq!(end, StepEnd::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    while rx.try_recv().is_ok() {}
    let pids = pids_in(dir.path());
    assert_eq!(pids.len(), 4, "the script wrote its pids");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the timeout");
    }
}

#[tokio::test]
async fn cancel_kills_the_step_and_output_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let step = tokio::spawn({
        let cwd = dir.path().to_owned();
        async move {
            run_step(
                "echo hello; echo oops >&2; sleep 300",
                &cwd,
                &BTreeMap::new(),
                limits(60_000, 300),
                cancel_rx,
                tx,
            )
            .await
        }
    });
    let mut seen = String::new();
    while !(seen.contains("hello") && seen.contains("oops")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    cancel_tx.send(true).unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), step)
            .await
            .unwrap()
            .unwrap(),
        StepEnd::Cancelled
    );
}

#[tokio::test]
async fn exit_status_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let (_c, cancel_rx) = watch::channel(false);
    let end = run_step(
        "exit 7",
        dir.path(),
        &BTreeMap::new(),
        limits(10_000, 100),
        cancel_rx,
        tx,
    )
    .await;
    assert_eq!(end, StepEnd::Exited(7));
}

#[tokio::test]
async fn a_silent_step_is_stopped_while_a_chatty_one_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let silent = StepLimits {
        timeout: Duration::from_secs(30),
        silence: Some(Duration::from_millis(600)),
        kill_grace: Duration::from_millis(100),
    };
    let (tx, _rx) = mpsc::channel(64);
    let (_c, cancel_rx) = watch::channel(false);
    let started = Instant::now();
    let end = run_step(
        "echo start; sleep 30",
        dir.path(),
        &BTreeMap::new(),
        silent,
        cancel_rx,
        tx,
    )
    .await;
    assert_eq!(end, StepEnd::Silent);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Output every 200 ms keeps a 600 ms silence limit from firing.
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (_c, cancel_rx) = watch::channel(false);
    let end = run_step(
        "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.2; done",
        dir.path(),
        &BTreeMap::new(),
        silent,
        cancel_rx,
        tx,
    )
    .await;
    assert_eq!(end, StepEnd::Exited(0));
}
