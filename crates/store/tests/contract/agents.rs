//! Agents: connections, labels, machines, retirement.

use std::time::{Duration, Instant};

use testfleet_core::LabelSet;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{Store, StoredAgent};
use testfleet_wire::protocol::MachineInfo;
use tokio::task::JoinSet;

contract_tests!(
    agents_connect_retire_and_come_back,
    agents_seen_since_are_the_fan_out_targets,
    agent_storms,
    agent_writes_keep_their_order
);

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn machine() -> MachineInfo {
    MachineInfo {
        platform: "Debian GNU/Linux 12 (bookworm)".into(),
        os_version: "12".into(),
        kernel: "6.1.0-18-amd64".into(),
        arch: "x86_64".into(),
        cpu_model: "AMD EPYC 7763".into(),
        cores: 16,
        compiler: "gcc 12.2.0".into(),
        prep: Vec::new(),
    }
}

async fn agents_connect_retire_and_come_back(store: Store) {
    assert!(store.agents().await.unwrap().is_empty());
    let linux = labels(&[("os", "linux"), ("cores", "16")]);
    let windows = labels(&[("os", "windows")]);
    store
        .agent_connected("linux-01", &linux, Some(&machine()), 1_000)
        .await
        .unwrap();
    store
        .agent_connected("build-win", &windows, None, 2_000)
        .await
        .unwrap();
    assert_eq!(
        store.agents().await.unwrap(),
        vec![
            StoredAgent {
                hostname: "build-win".into(),
                labels: windows.clone(),
                last_connected: 2_000,
                retired: false,
                machine: None,
            },
            StoredAgent {
                hostname: "linux-01".into(),
                labels: linux.clone(),
                last_connected: 1_000,
                retired: false,
                machine: Some(machine()),
            },
        ]
    );

    // Shut down on purpose: retired until it connects again.
    store.retire_agent("linux-01").await.unwrap();
    let agents = store.agents().await.unwrap();
    assert!(agents[1].retired);
    assert!(!agents[0].retired);
    // Retiring an unknown host is harmless.
    store.retire_agent("never-seen").await.unwrap();
    assert_eq!(store.agents().await.unwrap().len(), 2);

    // It comes back with other labels and no machine report.
    let relabelled = labels(&[("os", "linux"), ("cores", "32")]);
    store
        .agent_connected("linux-01", &relabelled, None, 3_000)
        .await
        .unwrap();
    let agents = store.agents().await.unwrap();
    assert_eq!(
        agents[1],
        StoredAgent {
            hostname: "linux-01".into(),
            labels: relabelled,
            last_connected: 3_000,
            retired: false,
            machine: None,
        }
    );
}

async fn agents_seen_since_are_the_fan_out_targets(store: Store) {
    let a = labels(&[("pool", "benchmark")]);
    let b = labels(&[("pool", "benchmark"), ("gpu", "yes")]);
    store
        .agent_connected("bench-b", &b, None, 5_000)
        .await
        .unwrap();
    store
        .agent_connected("bench-a", &a, None, 1_000)
        .await
        .unwrap();
    store
        .agent_connected("bench-c", &a, Some(&machine()), 9_000)
        .await
        .unwrap();
    assert_eq!(
        store.agents_seen_since(0).await.unwrap(),
        vec![
            ("bench-a".to_owned(), a.clone()),
            ("bench-b".to_owned(), b.clone()),
            ("bench-c".to_owned(), a.clone()),
        ]
    );
    // Since is inclusive.
    assert_eq!(
        store.agents_seen_since(5_000).await.unwrap(),
        vec![
            ("bench-b".to_owned(), b.clone()),
            ("bench-c".to_owned(), a.clone())
        ]
    );
    store.retire_agent("bench-c").await.unwrap();
    assert_eq!(
        store.agents_seen_since(5_000).await.unwrap(),
        vec![("bench-b".to_owned(), b)]
    );
    assert!(store.agents_seen_since(10_000).await.unwrap().is_empty());
}

/// Agents in each storm of [`agent_storms`].
const STORM: usize = 2_000;

/// How long one storm may take before the test fails.
const STORM_LIMIT: Duration = Duration::from_secs(120);

fn storm_host(i: usize) -> String {
    format!("storm-{i:05}")
}

/// The storm's phases: every agent connects, or retires.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Connect(UnixMillis),
    Retire,
}

/// Runs one phase for [`STORM`] hosts at once; fails on any error or when
/// it takes longer than [`STORM_LIMIT`]. Returns how long it took.
async fn storm(store: &Store, phase: Phase) -> Duration {
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..STORM {
        let store = store.clone();
        calls.spawn(async move {
            let host = storm_host(i);
            let done = match phase {
                Phase::Connect(now) => {
                    let labels = labels(&[("pool", "storm")]);
                    store.agent_connected(&host, &labels, None, now).await
                }
                Phase::Retire => store.retire_agent(&host).await,
            };
            done.map_err(|e| format!("{phase:?} of {host} failed: {e}"))
        });
    }
    let all = async {
        let mut failures = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Err(e) = done.expect("storm call panicked") {
                failures.push(e);
            }
        }
        failures
    };
    let failures = tokio::time::timeout(STORM_LIMIT, all)
        .await
        .unwrap_or_else(|_| panic!("{phase:?} storm took longer than {STORM_LIMIT:?}"));
    assert!(
        failures.is_empty(),
        "{} of {STORM} calls failed, first: {}",
        failures.len(),
        failures[0]
    );
    let took = started.elapsed();
    eprintln!(
        "agent_storms on {}: {phase:?} of {STORM} agents took {took:?}",
        store.backend().as_str()
    );
    took
}

/// Checks that every storm host is stored once, with `retired` and
/// `last_connected` as expected.
async fn assert_storm_rows(store: &Store, retired: bool, last_connected: UnixMillis) {
    let agents = store.agents().await.unwrap();
    assert_eq!(agents.len(), STORM, "every agent has its row");
    for (i, agent) in agents.iter().enumerate() {
        assert_eq!(agent.hostname, storm_host(i));
        assert_eq!(agent.retired, retired, "{} retired", agent.hostname);
        assert_eq!(agent.last_connected, last_connected, "{}", agent.hostname);
    }
}

/// Issue #12: thousands of agents connecting or leaving at once queued on
/// the writer, and some of their writes failed. Every call must succeed,
/// and the table must show every one of them.
async fn agent_storms(store: Store) {
    let connect = storm(&store, Phase::Connect(1_000)).await;
    assert_storm_rows(&store, false, 1_000).await;
    let retire = storm(&store, Phase::Retire).await;
    assert_storm_rows(&store, true, 1_000).await;
    let reconnect = storm(&store, Phase::Connect(2_000)).await;
    assert_storm_rows(&store, false, 2_000).await;
    eprintln!(
        "agent_storms on {}: total {:?}",
        store.backend().as_str(),
        connect + retire + reconnect
    );
}

/// Writes of one host sent concurrently take effect in the order they were
/// sent: connect, retire, connect leaves the host serving; retire, connect,
/// retire leaves it retired.
async fn agent_writes_keep_their_order(store: Store) {
    let linux = labels(&[("os", "linux")]);
    let reported = machine();
    store
        .agent_connected("settled", &linux, None, 500)
        .await
        .unwrap();
    for round in 0..50 {
        let now = 1_000 + round;
        let host = format!("ordered-{round:02}");
        // `biased` polls the three in order, so they are sent in order;
        // they then wait for their answers together.
        let (first, retired, again) = tokio::join!(
            biased;
            store.agent_connected(&host, &linux, None, now),
            store.retire_agent(&host),
            store.agent_connected(&host, &linux, Some(&reported), now + 1),
        );
        first.unwrap();
        retired.unwrap();
        again.unwrap();
        let (retired, back, last) = tokio::join!(
            biased;
            store.retire_agent("settled"),
            store.agent_connected("settled", &linux, None, now),
            store.retire_agent("settled"),
        );
        retired.unwrap();
        back.unwrap();
        last.unwrap();
        let agents = store.agents().await.unwrap();
        let ordered = agents.iter().find(|a| a.hostname == host).unwrap();
        assert!(!ordered.retired, "{host} connected last, so it serves");
        assert_eq!(ordered.last_connected, now + 1);
        assert_eq!(ordered.machine, Some(machine()));
        let settled = agents.iter().find(|a| a.hostname == "settled").unwrap();
        assert!(settled.retired, "settled retired last (round {round})");
        assert_eq!(settled.last_connected, now);
    }
    assert_eq!(store.agents().await.unwrap().len(), 51);
}
