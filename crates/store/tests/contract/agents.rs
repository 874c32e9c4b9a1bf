//! Agents: connections, labels, machines, retirement.

use testfleet_core::LabelSet;
use testfleet_store::{Store, StoredAgent};
use testfleet_wire::protocol::MachineInfo;

contract_tests!(
    agents_connect_retire_and_come_back,
    agents_seen_since_are_the_fan_out_targets
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
