//! The CLI's fixes of issue 17, end to end through the real binary:
//!
//! - a reader that goes away (`| head`) ends a command quietly, exit 0,
//!   no panic and no "Broken pipe";
//! - `bench` prints a table, or JSON with `--json`;
//! - a job file whose artifact or result globs leave the checkout is
//!   refused at submit (422, line and field) and nothing is stored;
//! - `testfleet retry JOB|--task TASK` re-runs failed tasks on a real
//!   coordinator and agents, with write access only, and says why not
//!   when it cannot;
//! - `why` and `exporters` reach the CLI as typed answers.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::{ApiClient, ClientError, Credentials};
use testfleet_core::{JobState, TaskState};
use testfleet_server::{Server, ServerConfig};
use testfleet_wire::api::{ExportersView, JobView, RetryView, WhyView};
use tokio::sync::watch;

const SECRET: &str = "cli-fixes-secret";

/// A coordinator in this process; writes need a token (no open network).
struct TestServer {
    url: String,
    data_dir: std::path::PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(data_dir: &Path) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServerConfig::new(addr, data_dir.to_owned());
        config.agent_secret = Some(SECRET.into());
        config.lease_timeout = Duration::from_secs(3);
        config.auth.allowed_cidrs.clear();
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
            data_dir: data_dir.to_owned(),
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn start_agent(url: &str, name: &str, work_dir: &Path) -> watch::Sender<bool> {
    let mut config = testfleet_agent::AgentConfig::new(url, name, work_dir.join(name));
    config.secret = Some(SECRET.into());
    config.kill_grace = Duration::from_millis(300);
    let (stop, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = testfleet_agent::run(config, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await;
    });
    stop
}

/// The binary with no configuration or credentials from the environment.
fn testfleet(dir: &Path) -> Command {
    let config = dir.join("empty-config.toml");
    if !config.exists() {
        std::fs::write(&config, "").expect("write an empty config file");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.current_dir(dir)
        .env("TESTFLEET_CONFIG", &config)
        .env("RUST_BACKTRACE", "1")
        .env_remove("TESTFLEET_TOKEN")
        .env_remove("TESTFLEET_USER")
        .env_remove("TESTFLEET_PASSWORD")
        .env_remove("TESTFLEET_SERVER");
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run testfleet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` with its stdout a pipe whose reader reads at most `keep`
/// bytes and then goes away; returns the exit code and stderr.
fn with_closed_stdout(mut cmd: Command, keep: usize) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn testfleet");
    let mut stdout = child.stdout.take().expect("piped stdout");
    if keep > 0 {
        let mut buf = vec![0; keep];
        let _ = stdout.read_exact(&mut buf);
    }
    drop(stdout);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait for testfleet");
    (status.code(), stderr)
}

fn assert_quiet(what: &str, (code, stderr): (Option<i32>, String)) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: {stderr}"
    );
    assert!(!stderr.contains("error:"), "{what}: {stderr}");
    assert_eq!(code, Some(0), "{what}: {stderr}");
}

/// A TAP file of `n` passing tests: its JSON model is far larger than a
/// pipe's buffer.
fn big_tap(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut tap = format!("TAP version 13\n1..{n}\n");
    for i in 1..=n {
        tap.push_str(&format!("ok {i} - case number {i} of the big suite\n"));
    }
    let path = dir.join("big.tap");
    std::fs::write(&path, tap).unwrap();
    path
}

#[test]
fn parse_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let file = big_tap(dir.path(), 20_000);
    for args in [vec!["--json"], vec![]] {
        for keep in [0, 64] {
            let mut cmd = testfleet(dir.path());
            cmd.arg("parse").arg(&file).args(&args);
            assert_quiet(
                &format!("parse {args:?}, reader gone after {keep} bytes"),
                with_closed_stdout(cmd, keep),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_into_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server")).await;
    let token = create_token(&server, dir.path()).await;
    let api = ApiClient::new(&server.url).with_credentials(Credentials::Token(token));
    let job = api
        .submit("name = \"quiet\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n")
        .await
        .unwrap();
    let id = job.id.to_string();
    let task = job.tasks[0].id.to_string();
    let commands: [&[&str]; 5] = [
        &["show", &id],
        &["show", &id, "--json"],
        &["jobs", "--json"],
        &["why", &task],
        &["exporters", "--json"],
    ];
    for args in commands {
        let mut cmd = testfleet(dir.path());
        cmd.args(args).args(["--server", &server.url]);
        let result = tokio::task::spawn_blocking(move || with_closed_stdout(cmd, 0))
            .await
            .unwrap();
        assert_quiet(&format!("{args:?}"), result);
    }
    server.stop().await;
}

#[test]
fn bench_prints_a_table_and_json_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |json: bool| {
        let mut cmd = testfleet(dir.path());
        cmd.args(["bench", "--agents", "2", "--tasks", "20", "--batch", "10"]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run bench")
    };
    let table = bench(false);
    assert_eq!(table.status.code(), Some(0), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_err(),
        "piped without --json, bench prints a table, not JSON: {out}"
    );
    assert!(out.contains("throughput"), "{out}");
    assert!(out.contains("tasks/s"), "{out}");
    assert!(out.contains("20 finished, 0 lost"), "{out}");
    assert!(out.contains("verdict: clean"), "{out}");

    let json = bench(true);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json is JSON");
    assert_eq!(report["finished"], 20, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["tasks_per_second"].as_f64().is_some(), "{report}");
}

async fn create_token(server: &TestServer, dir: &Path) -> String {
    let mut cmd = testfleet(dir);
    cmd.args(["tokens", "create", "ci", "--data-dir"])
        .arg(&server.data_dir);
    let out = output(cmd).await;
    assert!(out.status.success(), "tokens create: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_globs_that_leave_the_checkout_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server")).await;
    let token = create_token(&server, dir.path()).await;
    let api = ApiClient::new(&server.url).with_credentials(Credentials::Token(token.clone()));
    let job_file = |glob: &str| {
        format!(
            "name = \"hostile\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\nartifacts = {{ always = [\"out/*\"], on_failure = [\"{glob}\"] }}\n"
        )
    };
    for glob in ["../../etc/passwd", "/etc/shadow", "out/../../../x"] {
        match api.submit(&job_file(glob)).await {
            Err(ClientError::Api {
                status,
                message,
                body: Some(body),
            }) => {
                assert_eq!(status, 422, "{glob}: {message}");
                assert_eq!(
                    body.field.as_deref(),
                    Some("task[0].artifacts.on_failure[0]"),
                    "{glob}: {message}"
                );
                assert_eq!(body.line, Some(5), "{glob}: {message}");
                assert!(message.contains(&format!("`{glob}`")), "{message}");
            }
            other => panic!("{glob}: expected a 422, got {other:?}"),
        }
    }
    // A result glob is held to the same rule.
    let results = "name = \"hostile\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\nresults = [{ path = \"/var/log/*.xml\" }]\n";
    match api.submit(results).await {
        Err(ClientError::Api {
            status: 422,
            body: Some(body),
            ..
        }) => {
            assert_eq!(body.field.as_deref(), Some("task[0].results[0].path"));
        }
        other => panic!("expected a 422, got {other:?}"),
    }

    // The CLI names the file, the line and the field; exit code 2.
    std::fs::write(dir.path().join("job.toml"), job_file("../../etc/passwd")).unwrap();
    let mut cmd = testfleet(dir.path());
    cmd.args(["submit", "job.toml", "--server", &server.url])
        .env("TESTFLEET_TOKEN", &token);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("job.toml: invalid job file: line 5, column"),
        "{err}"
    );
    assert!(
        err.contains("field `task[0].artifacts.on_failure[0]`: artifact glob `../../etc/passwd` leaves the checkout"),
        "{err}"
    );

    assert!(
        api.jobs(10, None).await.unwrap().is_empty(),
        "a refused job was stored"
    );
    server.stop().await;
}

async fn wait_job(api: &ApiClient, id: i64, until: impl Fn(&JobView) -> bool) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = api.job(id).await.unwrap();
        if until(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} timed out: {job:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_failed_tasks_until_the_job_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server")).await;
    let token = create_token(&server, dir.path()).await;
    let api = ApiClient::new(&server.url).with_credentials(Credentials::Token(token.clone()));
    let agents = [
        start_agent(&server.url, "agent-a", dir.path()),
        start_agent(&server.url, "agent-b", dir.path()),
    ];
    let marker = dir.path().join("fixed");
    let job = format!(
        "name = \"retry-e2e\"\n[[task]]\nname = \"ok\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n[[task]]\nname = \"flaky\"\nsteps = [{{ stage = \"test\", run = \"test -f '{}'\" }}]\nretries = {{ tests = 0, infra = 0 }}\n",
        marker.display()
    );
    let view = api.submit(&job).await.unwrap();
    let id = view.id;
    let done = wait_job(&api, id, |j| j.state.is_terminal()).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");

    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = testfleet(dir.path());
        cmd.args(args).args(["--server", &server.url]);
        if let Some(t) = token {
            cmd.env("TESTFLEET_TOKEN", t);
        }
        output(cmd)
    };
    let id_arg = id.to_string();

    // Without credentials: refused, and nothing changes.
    let out = cli(&["retry", &id_arg], None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("authentication required"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(api.job(id).await.unwrap().state, JobState::Failed);
    // An unknown job.
    let out = cli(&["retry", "9999"], Some(&token)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("job 9999 not found"),
        "{}",
        text(&out.stderr)
    );

    // The fix lands; the failed task runs again and the job passes.
    std::fs::write(&marker, "").unwrap();
    let out = cli(&["retry", &id_arg, "--wait"], Some(&token)).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let flaky_id = done.tasks.iter().find(|t| t.name == "flaky").unwrap().id;
    assert!(
        stdout.contains(&format!(
            "job {id}: 1 failed task(s) queued again: flaky (task {flaky_id})"
        )),
        "{stdout}"
    );
    let after = api.job(id).await.unwrap();
    assert_eq!(after.state, JobState::Passed, "{after:#?}");
    let flaky = after.tasks.iter().find(|t| t.name == "flaky").unwrap();
    assert_eq!(flaky.state, TaskState::Passed);
    assert_eq!(flaky.attempts, 2, "a new attempt, the first one kept");
    assert!(flaky.flaky, "failed, then passed on retry");
    let ok = after.tasks.iter().find(|t| t.name == "ok").unwrap();
    assert_eq!(ok.attempts, 1, "the passed task is not run again");

    // Nothing failed any more.
    let out = cli(&["retry", &id_arg], Some(&token)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("job {id} has no failed task to retry")),
        "{}",
        text(&out.stderr)
    );

    // A running job is not retried whole; one failed task of it is. The
    // retry avoids the agent where it failed while the other one fits, so
    // it runs when `slow` ends there (SPEC §5): `slow` lasts long enough for
    // the refusal below, and well under `wait_job`'s deadline.
    let busy = api
        .submit("name = \"busy\"\n[[task]]\nname = \"slow\"\nsteps = [{ stage = \"test\", run = \"sleep 8\" }]\n[[task]]\nname = \"bad\"\nsteps = [{ stage = \"test\", run = \"false\" }]\nretries = { tests = 0, infra = 0 }\n")
        .await
        .unwrap();
    let bad = busy.tasks.iter().find(|t| t.name == "bad").unwrap().id;
    wait_job(&api, busy.id, |j| {
        j.tasks
            .iter()
            .any(|t| t.id == bad && t.state == TaskState::Failed)
            && j.tasks
                .iter()
                .any(|t| t.name == "slow" && t.state == TaskState::Running)
    })
    .await;
    let out = cli(&["retry", &busy.id.to_string()], Some(&token)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is still running"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &["retry", "--task", &bad.to_string(), "--json"],
        Some(&token),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let retried: RetryView = serde_json::from_slice(&out.stdout).expect("--json is a RetryView");
    assert_eq!(retried.retried, vec![bad]);
    assert_eq!(retried.job.id, busy.id);
    let agent_of = |j: &JobView, name: &str| {
        j.tasks
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.agent.clone())
    };
    let before = api.job(busy.id).await.unwrap();
    let done = wait_job(&api, busy.id, |j| {
        j.tasks
            .iter()
            .any(|t| t.id == bad && t.attempts == 2 && t.state.is_terminal())
    })
    .await;
    assert_ne!(
        agent_of(&done, "bad"),
        agent_of(&before, "bad"),
        "the retry ran on the other agent: {done:#?}"
    );
    assert_eq!(agent_of(&done, "bad"), agent_of(&before, "slow"));

    for stop in agents {
        let _ = stop.send(true);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_and_exporters_reach_the_cli_typed_with_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server")).await;
    let token = create_token(&server, dir.path()).await;
    let api = ApiClient::new(&server.url).with_credentials(Credentials::Token(token));
    // No agent: the task waits, and why says so.
    let job = api
        .submit("name = \"waits\"\n[[task]]\nname = \"t\"\nrequires = { pool = \"nowhere\" }\nsteps = [{ stage = \"test\", run = \"true\" }]\n")
        .await
        .unwrap();
    let task = job.tasks[0].id;

    let why: WhyView = api.why(task).await.unwrap();
    assert_eq!(why.task_id, task);
    assert!(!why.reasons.is_empty());
    // `--json` prints what the handler's `json!` map printed: same keys, same order.
    let mut cmd = testfleet(dir.path());
    cmd.args(["why", &task.to_string(), "--json", "--server", &server.url]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = serde_json::json!({"task_id": task, "reasons": why.reasons});
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", serde_json::to_string_pretty(&before).unwrap())
    );

    let mut cmd = testfleet(dir.path());
    cmd.args(["why", &task.to_string(), "--server", &server.url]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    assert!(human.starts_with(&format!("task {task}:\n  - ")), "{human}");
    assert!(human.contains(&why.reasons[0]), "{human}");

    let mut cmd = testfleet(dir.path());
    cmd.args(["exporters", "--json", "--server", &server.url]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let view: ExportersView = serde_json::from_slice(&out.stdout).expect("an ExportersView");
    assert_eq!(view, api.exporters().await.unwrap());
    let mut cmd = testfleet(dir.path());
    cmd.args(["exporters", "--server", &server.url]);
    let out = output(cmd).await;
    let human = text(&out.stdout);
    assert!(
        human.starts_with("NAME") || human.starts_with("no exporters configured"),
        "{human}"
    );
    server.stop().await;
}

#[test]
fn typed_answers_serialize_as_the_maps_they_replaced() {
    let status = testfleet_wire::api::ExporterStatus {
        configured: true,
        delivered: 24,
        dropped: 1,
        failures: 2,
        last_error: Some("connection refused".into()),
        last_error_at: Some("2024-01-01T00:00:00.000Z".into()),
        last_success_at: None,
        name: "influxdb".into(),
        pending: 3,
        url: Some("http://127.0.0.1:8086".into()),
    };
    let before = serde_json::json!({
        "name": "influxdb",
        "configured": true,
        "url": "http://127.0.0.1:8086",
        "pending": 3,
        "delivered": 24,
        "dropped": 1,
        "failures": 2,
        "last_error": "connection refused",
        "last_error_at": "2024-01-01T00:00:00.000Z",
        "last_success_at": null,
    });
    let view = ExportersView {
        exporters: vec![status],
    };
    assert_eq!(
        serde_json::to_string(&view).unwrap(),
        serde_json::json!({ "exporters": [before] }).to_string()
    );
    let why = WhyView {
        reasons: vec!["no agent matches".into()],
        task_id: 7,
    };
    assert_eq!(
        serde_json::to_string(&why).unwrap(),
        serde_json::json!({"task_id": 7, "reasons": ["no agent matches"]}).to_string()
    );
}
