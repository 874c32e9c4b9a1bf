//! End-to-end tests of the spine: a real coordinator and real agents over
//! socket.io on 127.0.0.1, third-party socket.io peers in Python, and the
//! `testfleet` binary killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testfleet_testpeers::{peer_python, workspace_root};

use testfleet_client::ApiClient;
use testfleet_core::{JobState, TaskState};
use testfleet_server::{Server, ServerConfig};
use testfleet_wire::api::JobView;
use tokio::sync::watch;

const SECRET: &str = "s3cret-for-tests";

/// A coordinator running in this process.
struct TestServer {
    url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(data_dir: &Path, dev: bool) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServerConfig::new(addr, data_dir.to_owned());
        config.agent_secret = Some(SECRET.into());
        config.dev = dev;
        config.lease_timeout = Duration::from_secs(3);
        let server = Server::build(config).await.unwrap();
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
                .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// An agent running in this process.
fn start_agent(
    url: &str,
    name: &str,
    work_dir: &Path,
    labels: &[(&str, &str)],
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let mut config = testfleet_agent::AgentConfig::new(url, name, work_dir.join(name));
    config.secret = Some(SECRET.into());
    config.kill_grace = Duration::from_millis(300);
    for (k, v) in labels {
        config.labels.insert((*k).into(), (*v).into());
    }
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        testfleet_agent::run(config, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

async fn wait_job(api: &ApiClient, id: i64, timeout: Duration) -> JobView {
    let deadline = Instant::now() + timeout;
    loop {
        let job = api.job(id).await.unwrap();
        if job.state.is_terminal() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish in {timeout:?}: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_agents(api: &ApiClient, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .agents()
        .await
        .map(|a| a.iter().filter(|a| a.online).count())
        .unwrap_or(0)
        < n
    {
        assert!(Instant::now() < deadline, "agents did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_checks_out_runs_reports_and_streams_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let (stop_agent, agent) = start_agent(&server.url, "agent-a", dir.path(), &[("pool", "bench")]);
    wait_agents(&api, 1).await;

    let repo = git_repo(dir.path());
    let job = format!(
        r#"
name = "e2e"
[source]
repo = "{}"
rev = "main"
[integration]
id = "189470895"
timestamp = "2023-02-10T13:11:13Z"
branch = "dev"
[[task]]
name = "check"
requires = {{ pool = "bench" }}
steps = [
  {{ stage = "configure", run = "cat hello.txt", timeout = "30s" }},
  {{ stage = "build", run = "echo building; echo to-stderr >&2", timeout = "30s" }},
  {{ stage = "test", run = "mkdir -p results && cp t/ok.tap t/bench.json results/", timeout = "30s" }},
]
results = [{{ path = "results/*.tap", format = "tap" }}, {{ path = "results/bench.json" }}]
"#,
        repo.display()
    );
    let submitted = Instant::now();
    let view = api.submit(&job).await.unwrap();
    assert_eq!(view.tasks.len(), 1);
    let done = wait_job(&api, view.id, Duration::from_secs(30)).await;
    let elapsed = submitted.elapsed();
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let task = &done.tasks[0];
    assert_eq!(task.agent.as_deref(), Some("agent-a"));
    assert_eq!(
        task.counts.pass, 3,
        "the TAP and benchmark results were parsed and stored: {task:?}"
    );
    let metric = task
        .metrics
        .iter()
        .find(|m| m.name == "real_time")
        .expect("the benchmark value is shown");
    assert_eq!(
        (metric.case.as_str(), metric.value, metric.iterations),
        ("BM_Concat/64", 16.352, Some(200))
    );
    // The idle agent got the work through the long poll, not its 30 s poll.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    let log = api.task_log(task.id, 0).await.unwrap();
    assert!(log.complete);
    for needle in [
        "hello from the repo",
        "building",
        "to-stderr",
        "$ cat hello.txt",
        "checked out",
    ] {
        assert!(
            log.data.contains(needle),
            "log lacks {needle:?}:\n{}",
            log.data
        );
    }
    let detail = api.task(task.id).await.unwrap();
    assert_eq!(detail.attempts_list.len(), 1);
    assert_eq!(detail.attempts_list[0].stage.as_deref(), Some("done"));

    // The seed-000 run summary of the attempt.
    let summary = api
        .attempt_summary(detail.attempts_list[0].id)
        .await
        .unwrap();
    assert_eq!(summary.integration_id, "189470895");
    assert_eq!(summary.integration_timestamp, "2023-02-10T13:11:13.000Z");
    assert_eq!(summary.hostname, "agent-a");
    assert!(
        !summary.platform.is_empty(),
        "the agent's fingerprint gives the platform"
    );
    let bench = summary
        .executed_tests
        .iter()
        .find(|t| t.test_function == "BM_Concat/64" && t.result == serde_json::json!(16.352));
    assert!(bench.is_some(), "{summary:#?}");
    assert!(
        summary
            .executed_tests
            .iter()
            .any(|t| t.test_function == "first" && t.result == "pass"),
        "{summary:#?}"
    );
    // One merged JUnit report and Taskotron-style TAP for the job.
    let junit = api.job_report(view.id, "junit").await.unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("name=\"second\""),
        "{junit}"
    );
    let tap = api.job_report(view.id, "tap").await.unwrap();
    assert!(
        tap.starts_with("TAP version 13") && tap.contains("outcome: PASSED"),
        "{tap}"
    );
    assert!(api.job_report(view.id, "pdf").await.is_err());

    // The seed-000 run summary of the attempt.
    let summary = api
        .attempt_summary(detail.attempts_list[0].id)
        .await
        .unwrap();
    assert_eq!(summary.integration_id, "189470895");
    assert_eq!(summary.integration_timestamp, "2023-02-10T13:11:13.000Z");
    assert_eq!(summary.hostname, "agent-a");
    assert!(
        !summary.platform.is_empty(),
        "the agent's fingerprint gives the platform"
    );
    let bench = summary
        .executed_tests
        .iter()
        .find(|t| t.test_function == "BM_Concat/64" && t.result == serde_json::json!(16.352));
    assert!(bench.is_some(), "{summary:#?}");
    assert!(
        summary
            .executed_tests
            .iter()
            .any(|t| t.test_function == "first" && t.result == "pass"),
        "{summary:#?}"
    );
    // One merged JUnit report and Taskotron-style TAP for the job.
    let junit = api.job_report(view.id, "junit").await.unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("name=\"second\""),
        "{junit}"
    );
    let tap = api.job_report(view.id, "tap").await.unwrap();
    assert!(
        tap.starts_with("TAP version 13") && tap.contains("outcome: PASSED"),
        "{tap}"
    );
    assert!(api.job_report(view.id, "pdf").await.is_err());

    let _ = stop_agent.send(true);
    let _ = agent.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_timed_out_steps_end_the_task_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let (stop_agent, agent) = start_agent(&server.url, "agent-b", dir.path(), &[]);
    wait_agents(&api, 1).await;

    let job = r#"
name = "fails"
[[task]]
name = "exit-3"
steps = [{ stage = "build", run = "echo about to fail; exit 3" }]
[[task]]
name = "sleeps"
steps = [{ stage = "test", run = "sleep 60", timeout = "1s" }]
"#;
    let view = api.submit(job).await.unwrap();
    let done = wait_job(&api, view.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Failed);
    let by_name = |n: &str| done.tasks.iter().find(|t| t.name == n).unwrap().clone();
    let failed = by_name("exit-3");
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.outcome, Some(testfleet_core::AttemptOutcome::Failed));
    assert!(
        failed
            .detail_message
            .as_deref()
            .unwrap_or("")
            .contains("exited with status 3"),
        "{failed:?}"
    );
    let slept = by_name("sleeps");
    assert_eq!(
        slept.outcome,
        Some(testfleet_core::AttemptOutcome::TimedOut)
    );
    assert!(
        slept
            .detail_message
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{slept:?}"
    );

    let _ = stop_agent.send(true);
    let _ = agent.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_and_drops_queued_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let (stop_agent, agent) = start_agent(&server.url, "agent-c", dir.path(), &[]);
    wait_agents(&api, 1).await;
    let marker = dir.path().join("still-running");
    let job = format!(
        "name = \"long\"\n[[task]]\nname = \"a\"\nsteps = [{{ stage = \"test\", run = \"sleep 30; touch {m}\" }}]\n[[task]]\nname = \"b\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n",
        m = marker.display()
    );
    let view = api.submit(&job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .job(view.id)
        .await
        .unwrap()
        .tasks
        .iter()
        .all(|t| t.state != TaskState::Running)
    {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            api.job(view.id).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = api.cancel(view.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        cancelled
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Cancelled),
        "{cancelled:#?}"
    );
    // The agent is free again: a new job runs.
    let next = api.submit("name = \"after\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n").await.unwrap();
    assert_eq!(
        wait_job(&api, next.id, Duration::from_secs(20)).await.state,
        JobState::Passed
    );
    assert!(!marker.exists(), "the cancelled step kept running");

    let _ = stop_agent.send(true);
    let _ = agent.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_name_line_and_field_and_queue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let cases: &[(&str, &str, Option<usize>, Option<&str>)] = &[
        (
            "missing field",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\" }]\n",
            Some(4),
            Some("task[0].steps[0]"),
        ),
        (
            "unknown stage",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"deploy\", run = \"true\" }]\n",
            Some(4),
            Some("task[0].steps[0].stage"),
        ),
        (
            "bad duration",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\", timeout = \"soon\" }]\n",
            Some(4),
            Some("task[0].steps[0].timeout"),
        ),
        ("bad toml", "name = \"x\"\n[[task]\n", Some(2), None),
    ];
    for (what, body, line, field) in cases {
        let err = api.submit(body).await.unwrap_err();
        let testfleet_client::ClientError::Api {
            status,
            body: Some(body),
            message,
        } = err
        else {
            panic!("{what}: unexpected error {err:?}");
        };
        assert_eq!(status, 422, "{what}");
        assert_eq!(body.line, *line, "{what}: {message}");
        assert_eq!(body.field.as_deref(), *field, "{what}: {message}");
        assert!(
            message.starts_with("invalid job file: line"),
            "{what}: {message}"
        );
    }
    assert!(
        api.jobs(10, None).await.unwrap().is_empty(),
        "a refused job was queued"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_fans_out_to_known_agents_and_offline_work_waits_for_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let (stop1, a1) = start_agent(&server.url, "bench-1", dir.path(), &[("pool", "benchmark")]);
    let (stop3, a3) = start_agent(
        &server.url,
        "bench-retired",
        dir.path(),
        &[("pool", "benchmark")],
    );
    let (stop4, a4) = start_agent(&server.url, "other", dir.path(), &[("pool", "other")]);
    let spawn_bench2 = || {
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .args([
                "agent",
                "--server",
                &server.url,
                "--hostname",
                "bench-2",
                "--secret",
                SECRET,
                "--labels",
                "pool=benchmark",
            ])
            .arg("--work-dir")
            .arg(dir.path().join("bench-2"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut bench2 = spawn_bench2();
    wait_agents(&api, 4).await;
    // bench-2 is lost (SIGKILL, not a shutdown): its fan-out work waits for it.
    bench2.kill().unwrap();
    bench2.wait().unwrap();
    // bench-retired shuts down cleanly, so it is retired and gets nothing.
    let _ = stop3.send(true);
    let _ = a3.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let agents = api.agents().await.unwrap();
        let retired = agents
            .iter()
            .any(|a| a.hostname == "bench-retired" && a.retired);
        let lost = agents
            .iter()
            .any(|a| a.hostname == "bench-2" && !a.online && !a.retired);
        if retired && lost {
            break;
        }
        assert!(Instant::now() < deadline, "{agents:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = "name = \"fan\"\n[[task]]\nname = \"bench\"\nrequires = { pool = \"benchmark\" }\neach_agent = true\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
    let view = api.submit(job).await.unwrap();
    let mut names: Vec<_> = view.tasks.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["bench@bench-1", "bench@bench-2"], "{view:#?}");
    // bench-1 finishes its part; bench-2's waits in its queue, durably.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = api.job(view.id).await.unwrap();
        let mine = job
            .tasks
            .iter()
            .find(|t| t.name == "bench@bench-1")
            .unwrap();
        if mine.state == TaskState::Passed {
            let theirs = job
                .tasks
                .iter()
                .find(|t| t.name == "bench@bench-2")
                .unwrap();
            assert_eq!(theirs.state, TaskState::Queued);
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bench2 = spawn_bench2();
    let done = wait_job(&api, view.id, Duration::from_secs(20)).await;
    assert_eq!(done.state, JobState::Passed);
    let theirs = done
        .tasks
        .iter()
        .find(|t| t.name == "bench@bench-2")
        .unwrap();
    assert_eq!(theirs.agent.as_deref(), Some("bench-2"));
    bench2.kill().unwrap();
    bench2.wait().unwrap();
    for (stop, task) in [(stop1, a1), (stop4, a4)] {
        let _ = stop.send(true);
        let _ = task.await;
    }
    server.stop().await;
}

// ----- third-party peers (Python) and the binary ---------------------------

/// A `testfleet server` process.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(data_dir: &Path, listen: &str, dev: bool) -> ServerProcess {
        ServerProcess::start_on(data_dir, listen, dev, None)
    }

    /// A server on `database` (`None`: SQLite in `data_dir`).
    fn start_on(data_dir: &Path, listen: &str, dev: bool, database: Option<&str>) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
        cmd.args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(["--agent-secret", SECRET])
            .env("TESTFLEET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if dev {
            cmd.arg("--dev");
        }
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        ServerProcess { child, url }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_socketio_client_written_from_the_spec_passes() {
    let Some(python) = peer_python() else { return };
    for dev in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(dir.path(), "127.0.0.1:0", dev);
        let out = Command::new(&python)
            .arg(workspace_root().join("tests/peers/spec_client.py"))
            .args([
                "--url",
                &server.url,
                "--secret",
                SECRET,
                "--mode",
                if dev { "dev" } else { "prod" },
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "spec_client failed in {} mode",
            if dev { "dev" } else { "prod" }
        );
        assert!(stdout.contains(", 0 failed"), "{stdout}");
    }
}

#[test]
fn testfleet_agent_works_against_a_minimal_spec_host() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let work = dir.path().join("work.json");
    let item = |id: &str, run: &str| {
        serde_json::json!({
            "integrationId": id, "integrationURL": null, "integrationTimestamp": "2023-02-10T13:11:13.000Z",
            "integrationData": [], "branch": "dev", "sha": "69609f0b3575c571fff4564f6f16cbca9c7d81f6",
            "steps": [{"stage": "test", "run": run, "timeout": "30s"}]
        })
    };
    std::fs::write(
        &work,
        serde_json::json!({"qt-host-agent": [item("1001", "echo one")]}).to_string(),
    )
    .unwrap();
    let mut host = Command::new(&python)
        .arg(workspace_root().join("tests/peers/minimal_host.py"))
        .args(["--port", "0", "--secret", SECRET, "--work"])
        .arg(&work)
        .arg("--record")
        .arg(&record)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap()
        .parse()
        .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--hostname",
            "qt-host-agent",
            "--secret",
            SECRET,
        ])
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .args(["--poll-interval", "1s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let statuses = |rec: &[serde_json::Value], id: &str| -> Vec<String> {
        rec.iter()
            .filter(|r| r["event"] == "statusUpdate" && r["data"]["integrationId"] == id)
            .map(|r| r["data"]["status"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let wait_done = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rec = read();
            if statuses(&rec, id)
                .iter()
                .any(|s| s == "done" || s == "error")
            {
                return rec;
            }
            assert!(Instant::now() < deadline, "no done for {id}: {rec:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let rec = wait_done("1001");
    assert_eq!(statuses(&rec, "1001"), ["new", "test", "done"], "{rec:#?}");
    // Every status carries Qt's keys and a strictly increasing updateTimestamp.
    let updates: Vec<_> = rec
        .iter()
        .filter(|r| r["event"] == "statusUpdate")
        .collect();
    assert_eq!(
        updates[0]["data"]["status"], "idle",
        "first status after connect is idle"
    );
    let stamps: Vec<&str> = updates
        .iter()
        .map(|r| r["data"]["updateTimestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");

    // The host never answers an empty fetch; work queued later is picked up by
    // the agent's periodic poll.
    let body = serde_json::json!({"hostname": "qt-host-agent", "item": item("1002", "echo two")})
        .to_string();
    let post = format!(
        "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{port}/enqueue', data=sys.argv[1].encode(), headers={{'content-type': 'application/json'}}))"
    );
    let status = Command::new(&python)
        .args(["-c", &post, &body])
        .status()
        .unwrap();
    assert!(status.success());
    let rec = wait_done("1002");
    assert_eq!(statuses(&rec, "1002"), ["new", "test", "done"]);
    let fetches = rec.iter().filter(|r| r["event"] == "fetchWork").count();
    assert!(fetches >= 3, "the idle agent keeps polling: {fetches}");

    let _ = agent.kill();
    let _ = agent.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = host.wait();
}

#[test]
fn coordinator_killed_with_sigkill_restarts_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = ServerProcess::start(&data, "127.0.0.1:0", false);
    let port = server.port();
    let url = server.url.clone();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &url,
            "--hostname",
            "survivor",
            "--secret",
            SECRET,
        ])
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, 1));
    let job = "name = \"survive\"\n[[task]]\nname = \"slow\"\nsteps = [{ stage = \"test\", run = \"echo start; sleep 3; echo end\" }]\n[[task]]\nname = \"after\"\nsteps = [{ stage = \"test\", run = \"echo second\" }]\n";
    let view = rt.block_on(api.submit(job)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(server); // SIGKILL while the first task runs and the second is queued

    let server = ServerProcess::start(&data, &format!("127.0.0.1:{port}"), false);
    let done = rt.block_on(wait_job(&api, view.id, Duration::from_secs(60)));
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let slow = done.tasks.iter().find(|t| t.name == "slow").unwrap();
    assert_eq!(
        slow.attempts, 1,
        "the running attempt survived the restart: {slow:?}"
    );
    let log = rt.block_on(api.task_log(slow.id, 0)).unwrap();
    assert!(
        log.data.contains("start") && log.data.contains("end"),
        "{}",
        log.data
    );
    let _ = agent.kill();
    let _ = agent.wait();
    drop(server);
}

#[test]
fn cli_refuses_a_bad_job_file_with_its_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("server"), "127.0.0.1:0", false);
    let job = dir.path().join("bad.toml");
    std::fs::write(
        &job,
        "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"deploy\", run = \"true\" }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args(["--server", &server.url, "submit"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml: invalid job file: line 4"),
        "{stderr}"
    );
    assert!(stderr.contains("task[0].steps[0].stage"), "{stderr}");
    assert!(stderr.contains("unknown variant `deploy`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_queue_does_not_starve_a_small_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let (stop1, a1) = start_agent(&server.url, "fs-1", dir.path(), &[]);
    let (stop2, a2) = start_agent(&server.url, "fs-2", dir.path(), &[]);
    wait_agents(&api, 2).await;
    let mut flood = String::from("name = \"flood\"\nqueue = \"flood\"\n");
    for i in 0..300 {
        flood.push_str(&format!(
            "[[task]]\nname = \"f{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    let flood = api.submit(&flood).await.unwrap();
    let mut small = String::from("name = \"small\"\nqueue = \"small\"\n");
    for i in 0..3 {
        small.push_str(&format!(
            "[[task]]\nname = \"s{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    let small = api.submit(&small).await.unwrap();
    let small_done = wait_job(&api, small.id, Duration::from_secs(60)).await;
    assert_eq!(small_done.state, JobState::Passed);
    let flood_now = api.job(flood.id).await.unwrap();
    let flood_finished = flood_now
        .tasks
        .iter()
        .filter(|t| t.state.is_terminal())
        .count();
    assert!(
        flood_finished < 100,
        "the small queue waited behind the flood: {flood_finished} flood tasks ran first"
    );
    assert_eq!(
        wait_job(&api, flood.id, Duration::from_secs(120))
            .await
            .state,
        JobState::Passed
    );
    for (stop, task) in [(stop1, a1), (stop2, a2)] {
        let _ = stop.send(true);
        let _ = task.await;
    }
    server.stop().await;
}

#[test]
fn twenty_sigkills_during_ten_thousand_tasks_complete_every_task_exactly_once() {
    twenty_sigkills(None);
}

#[test]
fn twenty_sigkills_during_ten_thousand_tasks_on_postgres_complete_every_task_exactly_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(scratch_postgres("tf_sigkill")) else {
        return;
    };
    let url = match db.url() {
        testfleet_store::DatabaseUrl::Postgres(url) => url.clone(),
        other => panic!("not PostgreSQL: {other}"),
    };
    twenty_sigkills(Some(&url));
    rt.block_on(db.drop()).unwrap();
}

/// A fresh PostgreSQL database on 127.0.0.1:5432; `None` (with a notice)
/// when no server answers outside CI, a failure under `CI=true`.
async fn scratch_postgres(prefix: &str) -> Option<testfleet_store::ScratchDatabase> {
    match testfleet_store::ScratchDatabase::create(
        "postgres://postgres@127.0.0.1:5432/postgres",
        prefix,
    )
    .await
    {
        Ok(db) => Some(db),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("notice: skipped, no PostgreSQL on 127.0.0.1:5432 ({e})");
            None
        }
        Err(e) => panic!("PostgreSQL on 127.0.0.1:5432 is needed under CI: {e}"),
    }
}

/// 20 SIGKILLs of the coordinator at seeded random moments of a
/// 10,000-task run; every task completes exactly once.
fn twenty_sigkills(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = ServerProcess::start_on(&data, "127.0.0.1:0", false, database);
    let port = server.port();
    let url = server.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut config = testfleet_agent::AgentConfig::new(
            url.clone(),
            format!("kill-{i}"),
            dir.path().join(format!("agent-{i}")),
        );
        config.secret = Some(SECRET.into());
        config.max_backoff = Duration::from_millis(200);
        let (stop, mut rx) = watch::channel(false);
        let task = rt.spawn(async move {
            let _ = testfleet_agent::run(config, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await;
        });
        agents.push((stop, task));
    }
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, 4));
    let mut jobs = Vec::new();
    // The issue's target: 20 SIGKILLs at random moments of a 10,000-task run.
    for j in 0..100 {
        let mut text = format!("name = \"kill-{j}\"\n");
        for i in 0..100 {
            text.push_str(&format!(
                "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
            ));
        }
        jobs.push(rt.block_on(api.submit(&text)).unwrap().id);
    }
    let mut rng = testfleet_loadgen::Rng::new(0x5EED);
    let started = Instant::now();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200 + rng.below(2800)));
        drop(server); // SIGKILL
        server = ServerProcess::start_on(&data, &format!("127.0.0.1:{port}"), false, database);
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
    for (stop, task) in agents {
        let _ = stop.send(true);
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_loses_it_to_another_agent_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &server.url,
            "--hostname",
            "doomed",
            "--secret",
            SECRET,
        ])
        .arg("--work-dir")
        .arg(dir.path().join("doomed"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_agents(&api, 1).await;
    let job = api
        .submit("name = \"survive-agent\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"sleep 1; echo finished\" }]\n")
        .await
        .unwrap();
    let task = job.tasks[0].id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.task(task).await.unwrap().task.stage.as_deref() != Some("test") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().unwrap(); // SIGKILL mid-task
    doomed.wait().unwrap();
    let killed_at = Instant::now();
    let (stop, other) = start_agent(&server.url, "rescuer", dir.path(), &[]);
    let done = wait_job(&api, job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Passed);
    // The lease (3 s in this test) re-queued it well within 10 s.
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed_at.elapsed()
    );
    let detail = api.task(task).await.unwrap();
    let summary: Vec<_> = detail
        .attempts_list
        .iter()
        .map(|a| (a.agent.as_str(), a.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("doomed", Some(testfleet_core::AttemptOutcome::InfraError)),
            ("rescuer", Some(testfleet_core::AttemptOutcome::Passed))
        ]
    );
    let _ = stop.send(true);
    let _ = other.await;
    server.stop().await;
}

/// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=testfleet-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        // A server certificate, not a CA: rustls refuses a CA used as an end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (`cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn tls_end_to_end_client_agent_and_a_third_party_socketio_client() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut server = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-secret",
            SECRET,
            "--data-dir",
        ])
        .arg(dir.path().join("server"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();

    // Without the CA the client refuses the server's certificate.
    let out = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args(["--server", &url, "jobs"])
        .env_remove("TESTFLEET_CA_CERT")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut agent = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &url,
            "--hostname",
            "tls-agent",
            "--secret",
            SECRET,
        ])
        .arg("--ca-cert")
        .arg(&cert)
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "name = \"over-tls\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"echo secure\" }]\n").unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_testfleet"))
        .args(["--server", &url, "submit", "--wait"])
        .arg(&job)
        .env("TESTFLEET_CA_CERT", &cert)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");

    // A third-party socket.io client over TLS: the browser view, and a refusal.
    if let Some(python) = peer_python() {
        let script = r#"
import sys, socketio
url, secret = sys.argv[1], sys.argv[2]
got = {}
b = socketio.Client()
@b.on("agentData")
def on_agents(data):
    got["agents"] = data
b.connect(url, auth={"clientType": "browser"}, wait_timeout=10)
b.emit("getAgents")
for _ in range(200):  # up to 20 s on a loaded machine
    if "agents" in got:
        break
    b.sleep(0.1)
b.disconnect()
assert any(a["agent"] == "tls-agent" and a["online"] for a in got["agents"]), got
bad = socketio.Client()
errors = []
bad.on("connect_error", lambda data: errors.append(data))
try:
    bad.connect(url, auth={"clientType": "agent", "hostname": "x", "secret": "wrong"}, wait_timeout=10)
    sys.exit("connected with a wrong secret")
except socketio.exceptions.ConnectionError:
    pass
assert any("secret" in str(e) for e in errors), errors
print("tls peer: 2 passed, 0 failed")
"#;
        let out = Command::new("timeout")
            .arg("60")
            .arg(&python)
            .args(["-c", script, &url, SECRET])
            .env("SSL_CERT_FILE", &cert)
            .env("REQUESTS_CA_BUNDLE", &cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = server.kill();
    let _ = server.wait();
}
