//! The slow group: two coordinators on one PostgreSQL database, one of them
//! SIGKILLed 10 times at seeded random moments of a 5,000-task run with
//! agents on both. Every task completes exactly once, and after each kill
//! the agents that know the other coordinator work again within 10 s.
//!
//! Ignored by a plain `cargo test`; `cargo xtask test` runs it (not with
//! `--fast`), as does `cargo test -p testfleet --test slow_cluster -- --ignored`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testfleet_client::ApiClient;
use testfleet_core::JobState;
use testfleet_testkit::Rng;
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::postgres::ScratchPg;
use testfleet_testkit::process::ServerProcess;
use testfleet_testkit::wait::{wait_agents, wait_job};

const SECRET: &str = "s3cret-for-tests";

/// Coordinator `name` on `listen`, sharing `database`.
fn coordinator(dir: &Path, name: &str, listen: &str, database: &str) -> ServerProcess {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("[server.cluster]\nname = \"{name}\"\npoll_interval = \"1s\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.args(["server", "--listen", listen, "--data-dir"])
        .arg(dir.join(name))
        .args(["--agent-secret", SECRET, "--database", database, "--config"])
        .arg(&config)
        .env("TESTFLEET_LOG", "info");
    ServerProcess::start(&mut cmd)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_cluster -- --ignored)"]
fn ten_sigkills_of_one_of_two_coordinators_during_five_thousand_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(ScratchPg::create_named("tf_cluster_kill")) else {
        return;
    };
    let pool = rt.block_on(db.pool());
    let dir = tempfile::tempdir().unwrap();
    let url = db.postgres_url().to_owned();
    let mut servers = [
        Some(coordinator(dir.path(), "a", "127.0.0.1:0", &url)),
        Some(coordinator(dir.path(), "b", "127.0.0.1:0", &url)),
    ];
    let urls: Vec<String> = servers
        .iter()
        .flatten()
        .map(|s| s.url().to_owned())
        .collect();
    let ports: Vec<String> = urls
        .iter()
        .map(|u| u.rsplit(':').next().unwrap().to_owned())
        .collect();
    // Who knows whom: [A], [B], [A, B], [B, A] (first tried first).
    let plan: [(&str, &[usize]); 6] = [
        ("only-a", &[0]),
        ("only-b", &[1]),
        ("ab-0", &[0, 1]),
        ("ab-1", &[0, 1]),
        ("ba-0", &[1, 0]),
        ("ba-1", &[1, 0]),
    ];
    let agents: Vec<TestAgent> = plan
        .iter()
        .map(|(name, order)| {
            let first = urls[order[0]].clone();
            let rest: Vec<String> = order[1..].iter().map(|i| urls[*i].clone()).collect();
            TestAgent::start_on(rt.handle(), &first, name, dir.path(), move |config| {
                config.secret = Some(SECRET.into());
                config.max_backoff = Duration::from_millis(200);
                config.fallback_servers = rest;
            })
        })
        .collect();
    let apis = [ApiClient::new(&urls[0]), ApiClient::new(&urls[1])];
    rt.block_on(wait_agents(&apis[0], plan.len()));
    let mut jobs = Vec::new();
    for j in 0..50 {
        let mut text = format!("name = \"kill-{j}\"\n");
        for i in 0..100 {
            text.push_str(&format!(
                "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
            ));
        }
        // Half through each coordinator.
        jobs.push(rt.block_on(apis[j % 2].submit(&text)).unwrap().id);
    }
    let mut rng = Rng::new(0xC1A5);
    let started = Instant::now();
    let mut back_within = Vec::new();
    for kill in 0..10 {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        let victim = rng.below(2) as usize;
        let survivor = 1 - victim;
        let killed_at = now_ms();
        drop(servers[victim].take()); // SIGKILL
        // Agents that know the survivor work again there.
        let movers: Vec<&str> = plan
            .iter()
            .filter(|(_, order)| order.contains(&survivor))
            .map(|(name, _)| *name)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let back = loop {
            let latest: BTreeMap<String, i64> = rt
                .block_on(
                    sqlx::query_as::<_, (String, i64)>(
                        "SELECT agent, MAX(started_at) FROM attempts GROUP BY agent",
                    )
                    .fetch_all(&pool),
                )
                .unwrap()
                .into_iter()
                .collect();
            if movers
                .iter()
                .all(|m| latest.get(*m).is_some_and(|t| *t > killed_at))
            {
                break Duration::from_millis((now_ms() - killed_at) as u64);
            }
            assert!(
                Instant::now() < deadline,
                "kill {kill}: agents {movers:?} not at work again 20 s after coordinator {victim} was killed: {latest:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        back_within.push(back);
        // The victim comes back on its port for the agents that know only it.
        servers[victim] = Some(coordinator(
            dir.path(),
            ["a", "b"][victim],
            &format!("127.0.0.1:{}", ports[victim]),
            &url,
        ));
    }
    eprintln!(
        "10 SIGKILLs in {:?}; agents back at work after each within {:?}",
        started.elapsed(),
        back_within
    );
    let slowest = back_within.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(10),
        "agents took {slowest:?} to work again after a kill: {back_within:?}"
    );
    for id in &jobs {
        let job = rt.block_on(wait_job(&apis[0], *id, Duration::from_secs(600)));
        assert_eq!(job.state, JobState::Passed, "{job:#?}");
    }
    let (tasks, once, open): (i64, i64, i64) = rt
        .block_on(
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM tasks),
                        (SELECT COUNT(*) FROM (SELECT task_id FROM attempts WHERE outcome = 'passed'
                          GROUP BY task_id HAVING COUNT(*) = 1) s),
                        (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL)",
            )
            .fetch_one(&pool),
        )
        .unwrap();
    assert_eq!(tasks, 5_000);
    assert_eq!(once, 5_000, "tasks that passed exactly once");
    assert_eq!(open, 0, "attempts left open");
    eprintln!(
        "5,000 tasks, each completed once, in {:?}",
        started.elapsed()
    );
    for agent in agents {
        rt.block_on(agent.stop());
    }
    drop(servers);
    rt.block_on(db.remove()).unwrap();
}
