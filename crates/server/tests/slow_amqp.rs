//! The slow group's AMQP figures: messages per second consumed into
//! committed one-task jobs (a backlog of fedora-messaging messages waiting
//! in the queue), and the time from a message's arrival to its committed
//! job while fedora-messaging publishes as fast as it can, on SQLite and on
//! PostgreSQL. Targets (issue 13): 1,000 messages/s, p99 < 50 ms.
//!
//! Ignored by a plain `cargo test`; `cargo xtask test` runs them, as does
//! `cargo test -p testfleet-server --test slow_amqp -- --ignored --nocapture`.

#[path = "amqp/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BUILD_TOPIC, Fm, Running, Vhost};
use serde_json::json;
use testfleet_server::triggers::amqp::AmqpConfig;
use testfleet_store::DatabaseUrl;
use testfleet_testkit::postgres::ScratchPg;

type Message = (String, serde_json::Value, Option<String>);

fn messages(prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            (
                BUILD_TOPIC.to_owned(),
                json!({"name": format!("{prefix}-{i}"), "build_id": i}),
                Some(format!("{prefix}-{i}")),
            )
        })
        .collect()
}

/// Backlog throughput, then live latency, on `database` (`None`: SQLite).
async fn figures(label: &str, database: Option<DatabaseUrl>) {
    let Some(vhost) = Vhost::create("figures") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let fm = Arc::new(fm);
    let dir = tempfile::tempdir().unwrap();

    // A backlog: the queue exists and holds every message before the
    // coordinator starts.
    let n = 5_000;
    let p = fm.clone();
    tokio::task::spawn_blocking(move || {
        p.declare("testfleet", "org.fedoraproject.#");
        p.publish(&messages("backlog", n));
    })
    .await
    .unwrap();
    let db = database.clone();
    let started = Instant::now();
    let running = Running::start(dir.path(), AmqpConfig::new(vhost.url()), move |c| {
        c.database = db;
    })
    .await;
    let n64 = u64::try_from(n).unwrap();
    running
        .until("the backlog is consumed", Duration::from_secs(120), |s| {
            s.queued >= n64
        })
        .await;
    let took = started.elapsed();
    let backlog = running.amqp.stats();
    running.stop().await;
    let rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "AMQP {label}: backlog of {n} messages into one-task jobs in {took:.2?} (start-up included): {rate:.0} messages/s; received → committed p50 {:?}, p99 {:?}, max {:?}",
        backlog.p50, backlog.p99, backlog.max
    );
    assert_eq!(backlog.queued, n64);
    assert_eq!(backlog.duplicates + backlog.store_errors, 0);

    // Live: fedora-messaging publishes while the coordinator consumes.
    let dir = tempfile::tempdir().unwrap();
    let db = database.clone();
    let running = Running::start(dir.path(), AmqpConfig::new(vhost.url()), move |c| {
        c.database = db;
    })
    .await;
    running.connected().await;
    let live = 3_000;
    let p = fm.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || p.publish(&messages("live", live)))
        .await
        .unwrap();
    let published = started.elapsed();
    let live64 = u64::try_from(live).unwrap();
    running
        .until(
            "the live messages are consumed",
            Duration::from_secs(60),
            |s| s.queued >= live64,
        )
        .await;
    let stats = running.amqp.stats();
    running.stop().await;
    eprintln!(
        "AMQP {label}: {live} messages published by fedora-messaging in {published:.2?} ({:.0}/s): received → committed p50 {:?}, p99 {:?}, max {:?}",
        live as f64 / published.as_secs_f64(),
        stats.p50,
        stats.p99,
        stats.max
    );
    assert_eq!(stats.queued, live64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_amqp -- --ignored)"]
async fn amqp_throughput_and_latency_on_sqlite() {
    figures("SQLite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_amqp -- --ignored)"]
async fn amqp_throughput_and_latency_on_postgres() {
    let Some(db) = ScratchPg::create_named("tf_amqp").await else {
        return;
    };
    figures("PostgreSQL", Some(db.url())).await;
    db.remove().await.unwrap();
}
