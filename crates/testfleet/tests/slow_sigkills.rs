//! The slow group: 20 SIGKILLs of the `testfleet server` process at seeded
//! random moments of a 10,000-task run, on SQLite and on PostgreSQL; every
//! task completes exactly once.
//!
//! Ignored by a plain `cargo test`; `cargo xtask test` runs them (not with
//! `--fast`), as does `cargo test -p testfleet --test slow_sigkills -- --ignored`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_core::JobState;
use testfleet_testkit::Rng;
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::postgres::ScratchPg;
use testfleet_testkit::process::ServerProcess;
use testfleet_testkit::wait::{wait_agents, wait_job};

const SECRET: &str = "s3cret-for-tests";

/// A `testfleet server` process on `listen`, on `database` (`None`: SQLite
/// in `data_dir`).
fn server_process(data_dir: &Path, listen: &str, database: Option<&str>) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.args(["server", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(["--agent-secret", SECRET])
        .env("TESTFLEET_LOG", "info");
    if let Some(url) = database {
        cmd.args(["--database", url]);
    }
    ServerProcess::start(&mut cmd)
}

#[test]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_sigkills -- --ignored)"]
fn twenty_sigkills_during_ten_thousand_tasks_complete_every_task_exactly_once() {
    twenty_sigkills(None);
}

#[test]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_sigkills -- --ignored)"]
fn twenty_sigkills_during_ten_thousand_tasks_on_postgres_complete_every_task_exactly_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(ScratchPg::create_named("tf_sigkill")) else {
        return;
    };
    twenty_sigkills(Some(db.postgres_url()));
    rt.block_on(db.remove()).unwrap();
}

/// 20 SIGKILLs of the coordinator at seeded random moments of a
/// 10,000-task run; every task completes exactly once.
fn twenty_sigkills(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = server_process(&data, "127.0.0.1:0", database);
    let port = server.port();
    let url = server.url().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agents: Vec<TestAgent> = (0..4)
        .map(|i| {
            TestAgent::start_on(
                rt.handle(),
                &url,
                &format!("kill-{i}"),
                dir.path(),
                |config| {
                    config.secret = Some(SECRET.into());
                    config.max_backoff = Duration::from_millis(200);
                },
            )
        })
        .collect();
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, 4));
    let mut jobs = Vec::new();
    // The target: 20 SIGKILLs at random moments of a 10,000-task run.
    for j in 0..100 {
        let mut text = format!("name = \"kill-{j}\"\n");
        for i in 0..100 {
            text.push_str(&format!(
                "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
            ));
        }
        jobs.push(rt.block_on(api.submit(&text)).unwrap().id);
    }
    let mut rng = Rng::new(0x5EED);
    let started = Instant::now();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200 + rng.below(2800)));
        drop(server); // SIGKILL
        server = server_process(&data, &format!("127.0.0.1:{port}"), database);
    }
    eprintln!("20 SIGKILLs in {:?}", started.elapsed());
    let mut passed = 0;
    for id in jobs {
        let job = rt.block_on(wait_job(&api, id, Duration::from_secs(600)));
        assert_eq!(job.state, JobState::Passed, "{job:#?}");
        for t in &job.tasks {
            let detail = rt.block_on(api.task(t.id)).unwrap();
            let successes = detail
                .attempts_list
                .iter()
                .filter(|a| a.outcome.is_some_and(|o| o.is_success()))
                .count();
            assert_eq!(
                successes, 1,
                "task {} completed {successes} times: {detail:#?}",
                t.id
            );
            assert!(
                detail.attempts_list.iter().all(|a| a.outcome.is_some()),
                "an attempt was left open: {detail:#?}"
            );
            passed += 1;
        }
    }
    assert_eq!(passed, 10_000);
    eprintln!(
        "10,000 tasks, each completed once, in {:?}",
        started.elapsed()
    );
    for agent in agents {
        rt.block_on(agent.stop());
    }
    drop(server);
}
