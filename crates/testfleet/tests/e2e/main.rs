//! End-to-end tests of the spine: a real coordinator and real agents over
//! socket.io on 127.0.0.1 (`spine`), third-party socket.io peers in Python
//! and TLS (`peers`), and the `testfleet` binary killed with SIGKILL
//! (`restart`). The 10,000-task SIGKILL runs are in the slow group
//! (`slow_sigkills.rs`).

mod peers;
mod restart;
mod spine;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::process::ServerProcess;
use testfleet_testkit::server::TestServer;

const SECRET: &str = "s3cret-for-tests";

/// A coordinator in this process with the tests' agent secret and a 3 s
/// lease.
async fn start_server(data_dir: &Path, dev: bool) -> TestServer {
    TestServer::start(data_dir, |config| {
        config.agent_secret = Some(SECRET.into());
        config.dev = dev;
        config.lease_timeout = Duration::from_secs(3);
    })
    .await
}

/// An agent in this process with the tests' secret and `labels`.
fn start_agent(url: &str, name: &str, work_dir: &Path, labels: &[(&str, &str)]) -> TestAgent {
    TestAgent::start(url, name, work_dir, |config| {
        config.secret = Some(SECRET.into());
        config.kill_grace = Duration::from_millis(300);
        for (k, v) in labels {
            config.labels.insert((*k).into(), (*v).into());
        }
    })
}

/// A `testfleet server` process on `listen` with the tests' agent secret,
/// on `database` (`None`: SQLite in `data_dir`).
fn server_process(
    data_dir: &Path,
    listen: &str,
    dev: bool,
    database: Option<&str>,
) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.args(["server", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(["--agent-secret", SECRET])
        .env("TESTFLEET_LOG", "info");
    if dev {
        cmd.arg("--dev");
    }
    if let Some(url) = database {
        cmd.args(["--database", url]);
    }
    ServerProcess::start(&mut cmd)
}

fn git_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("t")).unwrap();
    std::fs::write(repo.join("hello.txt"), "hello from the repo\n").unwrap();
    std::fs::write(
        repo.join("t/ok.tap"),
        "TAP version 13\n1..2\nok 1 - first\nok 2 - second\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("t/bench.json"),
        r#"{"context": {"date": "2026-01-01T00:00:00+00:00", "num_cpus": 2},
            "benchmarks": [{"name": "BM_Concat/64", "run_name": "BM_Concat/64", "run_type": "iteration",
              "repetitions": 1, "repetition_index": 0, "threads": 1, "iterations": 200,
              "real_time": 16.352, "cpu_time": 16.1, "time_unit": "ns"}]}"#,
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "--initial-branch=main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "init"]);
    repo
}
