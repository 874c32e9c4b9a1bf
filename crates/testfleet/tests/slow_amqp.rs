//! The slow group: 10,000 fedora-messaging messages consumed by a real
//! `testfleet server` process while the broker is restarted
//! (`rabbitmqctl stop_app` / `start_app`) and the coordinator is SIGKILLed
//! and started again: exactly 10,000 jobs, each message id queued once.
//!
//! Ignored by a plain `cargo test`; `cargo xtask test` runs it, as does
//! `cargo test -p testfleet --test slow_amqp -- --ignored`.

#[path = "../../server/tests/amqp/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BUILD_TOPIC, Fm, Vhost, write_rules};
use serde_json::json;
use testfleet_client::ApiClient;
use testfleet_store::{DatabaseUrl, EventFilter, Store};
use testfleet_testkit::process::ServerProcess;
use testfleet_wire::events::EventOutcome;

const N: usize = 10_000;

fn server_process(config: &Path, data_dir: &Path, listen: &str) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.arg("--config")
        .arg(config)
        .args(["server", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .arg("--allow-any-agent")
        // The consumer's sessions, for a failing run's message.
        .env(
            "TESTFLEET_LOG",
            "warn,testfleet_server::triggers::amqp=info",
        );
    ServerProcess::start_capturing(&mut cmd)
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest job's id (ids count up from 1 on SQLite), 0 before any.
fn newest_job(rt: &tokio::runtime::Runtime, api: &ApiClient) -> i64 {
    rt.block_on(api.jobs(1, None))
        .ok()
        .and_then(|j| j.first().map(|j| j.id))
        .unwrap_or(0)
}

/// Waits until there are `n` jobs; on timeout, fails with what `state`
/// says of the broker, the publisher and the coordinator.
fn wait_for_jobs(
    rt: &tokio::runtime::Runtime,
    api: &ApiClient,
    n: i64,
    timeout: Duration,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let newest = newest_job(rt, api);
        if newest >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{newest} jobs, fewer than {n}, in {timeout:?}\n{}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tail of what a server printed.
fn tail(output: &str) -> &str {
    let start = output.len().saturating_sub(4000);
    let start = (start..output.len())
        .find(|i| output.is_char_boundary(*i))
        .unwrap_or(output.len());
    &output[start..]
}

#[test]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_amqp -- --ignored)"]
fn ten_thousand_messages_across_a_broker_restart_and_a_sigkill_become_ten_thousand_jobs() {
    let Some(vhost) = Vhost::create("sigkill") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = Arc::new(fm);
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let config = dir.path().join("testfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntrigger_rules = \"{}\"\n[server.amqp]\nurl = \"{}\"\nprefetch = 100\n",
            rules.display(),
            vhost.url()
        ),
    )
    .unwrap();
    // The queue exists from the start, so nothing published while the
    // coordinator is down is lost.
    fm.declare("testfleet", "org.fedoraproject.#");
    let data = dir.path().join("server");
    let server = server_process(&config, &data, "127.0.0.1:0");
    let port = server.port();
    let listen = format!("127.0.0.1:{port}");
    let api = ApiClient::new(server.url());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // fedora-messaging publishes in chunks; a chunk that fails (the broker
    // is restarting) is published again whole, as a publisher retrying
    // would: the same message ids.
    let done = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let fm = fm.clone();
        let done = done.clone();
        let published = published.clone();
        std::thread::spawn(move || {
            let mut retries = 0;
            for chunk in (0..N).collect::<Vec<_>>().chunks(250) {
                let messages: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        (
                            BUILD_TOPIC.to_owned(),
                            json!({"name": format!("pkg-{i}")}),
                            Some(format!("m-{i}")),
                        )
                    })
                    .collect();
                while let Err(e) = fm.try_publish(&messages) {
                    retries += 1;
                    assert!(retries < 60, "publishing keeps failing: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                published.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
            retries
        })
    };
    let started = Instant::now();
    let state = |server: &ServerProcess| {
        format!(
            "published {} of {N}; queue: {}\nthe coordinator printed:\n{}",
            published.load(Ordering::SeqCst),
            vhost.describe("testfleet"),
            tail(&server.output_so_far())
        )
    };

    wait_for_jobs(&rt, &api, 2_000, Duration::from_secs(120), || {
        state(&server)
    });
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl(&["start_app"]);

    wait_for_jobs(&rt, &api, 5_000, Duration::from_secs(180), || {
        state(&server)
    });
    drop(server); // SIGKILL
    std::thread::sleep(Duration::from_millis(500));
    let server = server_process(&config, &data, &listen);

    let retries = publisher.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    wait_for_jobs(
        &rt,
        &api,
        i64::try_from(N).unwrap(),
        Duration::from_secs(180),
        || state(&server),
    );
    // Let the last acknowledgements and any redelivery settle.
    let deadline = Instant::now() + Duration::from_secs(30);
    while vhost.ready("testfleet") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "messages left in the queue\n{}",
            state(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = started.elapsed();
    server.stop();

    let store = rt
        .block_on(Store::connect(&DatabaseUrl::in_dir(&data)))
        .unwrap();
    let jobs = rt.block_on(store.jobs(100_000, None)).unwrap();
    let mut per_name: BTreeMap<String, usize> = BTreeMap::new();
    for j in &jobs {
        *per_name.entry(j.name.clone()).or_default() += 1;
    }
    assert_eq!(jobs.len(), N, "exactly one job per message");
    assert_eq!(per_name.len(), N);
    assert!(per_name.values().all(|n| *n == 1));
    let events = rt
        .block_on(store.list_events(&EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        }))
        .unwrap();
    let mut queued: BTreeMap<String, usize> = BTreeMap::new();
    let mut other = std::collections::HashMap::<EventOutcome, usize>::new();
    for e in &events {
        if e.outcome == EventOutcome::Queued {
            *queued
                .entry(e.delivery_id.clone().unwrap_or_default())
                .or_default() += 1;
        } else {
            *other.entry(e.outcome).or_default() += 1;
        }
    }
    assert_eq!(queued.len(), N, "every message id queued");
    assert!(queued.values().all(|n| *n == 1), "each message id once");
    assert!(
        other.keys().all(|o| *o == EventOutcome::Duplicate),
        "{other:?}"
    );
    eprintln!(
        "AMQP: {N} messages → {N} jobs in {elapsed:.1?} across a broker restart and a SIGKILL ({} redeliveries recorded as duplicates, {retries} publisher chunk retries)",
        other.get(&EventOutcome::Duplicate).copied().unwrap_or(0)
    );
    rt.block_on(store.close());
}
