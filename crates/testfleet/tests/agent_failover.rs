//! An agent that knows several coordinators (docs/configuration.md, "An
//! agent with several coordinators"): it skips one it cannot reach without
//! waiting, moves to the next when its coordinator dies, sends inputs and
//! artifacts to the coordinator it is connected to, and refuses a bad list
//! before it starts. Two independent coordinators are enough here: what the
//! coordinators share (one PostgreSQL store, an attempt adopted by another
//! coordinator) is tested on the coordinator's side.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_core::JobState;
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::process::{KillOnDrop, ServerProcess, free_port};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::wait::{wait_agents, wait_job};

const SECRET: &str = "failover-secret";

/// Far longer than any wait the tests allow: an agent that backed off
/// before trying its next coordinator would fail them.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A job of one task that writes `out.txt` and keeps it as an artifact.
const JOB: &str = r#"
name = "failover"
[[task]]
name = "t"
steps = [{ stage = "test", run = "echo fine > out.txt" }]
artifacts = { always = ["out.txt"] }
"#;

/// A URL nobody listens on: connecting is refused at once.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn live_server() -> TestServer {
    TestServer::in_tempdir(|config| config.agent_secret = Some(SECRET.into())).await
}

/// A `testfleet server` process (killed with SIGKILL when dropped).
fn server_process(data_dir: &Path) -> ServerProcess {
    ServerProcess::start(
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--agent-secret", SECRET]),
    )
}

/// An agent in this process for `servers`, in that order.
fn start_agent(servers: &[&str], name: &str, work_dir: &Path) -> TestAgent {
    let (first, rest) = servers.split_first().expect("at least one coordinator");
    TestAgent::start(first, name, work_dir, |config| {
        config.fallback_servers = rest.iter().map(|s| (*s).to_owned()).collect();
        config.secret = Some(SECRET.into());
        config.max_backoff = MAX_BACKOFF;
        config.kill_grace = Duration::from_millis(300);
    })
}

async fn online_agents(api: &ApiClient) -> Vec<String> {
    api.agents()
        .await
        .expect("the agents' list")
        .into_iter()
        .filter(|a| a.online)
        .map(|a| a.hostname)
        .collect()
}

/// Submits [`JOB`] to `api`, waits until it has passed, and checks that its
/// artifact reached that coordinator.
async fn run_job(api: &ApiClient) {
    let job = api.submit(JOB).await.expect("the job is accepted");
    let done = wait_job(api, job.id, Duration::from_secs(20)).await;
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let artifacts = api
        .job_artifacts(job.id)
        .await
        .expect("the job's artifacts");
    assert!(
        artifacts.iter().any(|a| a.path == "out.txt"),
        "the artifact went to the coordinator the agent is connected to: {artifacts:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_cannot_be_reached_is_skipped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_server().await;
    // Five dead coordinators first: an agent that waited even the shortest
    // backoff before each next one (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s) would be
    // too late.
    let mut servers: Vec<String> = (0..5).map(|_| dead_url()).collect();
    servers.push(live.url.clone());
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let started = Instant::now();
    let agent = start_agent(&servers, "skips-dead", dir.path());
    wait_agents(&live.api, 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the agent reached the live coordinator after {:?}",
        started.elapsed()
    );
    run_job(&live.api).await;
    agent.stop().await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_coordinator_dies_moves_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = server_process(&dir.path().join("first"));
    let first_api = ApiClient::new(first.url());
    let second = live_server().await;
    let agent = start_agent(&[first.url(), &second.url], "moves-on", dir.path());
    wait_agents(&first_api, 1).await;
    assert_eq!(
        online_agents(&second.api).await,
        Vec::<String>::new(),
        "the agent connects to the first coordinator of its list"
    );

    drop(first); // SIGKILL: the agent's connection breaks
    let killed = Instant::now();
    wait_agents(&second.api, 1).await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "the agent reached the second coordinator {:?} after the first died",
        killed.elapsed()
    );
    assert_eq!(online_agents(&second.api).await, ["moves-on"]);
    run_job(&second.api).await;
    agent.stop().await;
    second.stop().await;
}

/// `testfleet agent` with `args` and the config file `config`; it is
/// expected to exit by itself (a bad list), within 10 s.
fn agent_refused(dir: &Path, args: &[&str], config: &str) -> String {
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = KillOnDrop::spawn(
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .arg("agent")
            .args(args)
            .args(["--hostname", "refused", "--work-dir"])
            .arg(dir.join("work"))
            .arg("--config")
            .arg(&config_file)
            .env_remove("TESTFLEET_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not exit: {args:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    stderr
}

#[test]
fn a_bad_coordinator_list_is_refused_naming_the_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["--server", "http://127.0.0.1:1,ftp://elsewhere:21"],
            "",
            "--server/TESTFLEET_SERVER: the coordinator URL `ftp://elsewhere:21` must start with http://, https://, ws:// or wss://",
        ),
        (
            &["--server", "http://127.0.0.1:1, ,http://127.0.0.1:2"],
            "",
            "--server/TESTFLEET_SERVER: coordinator 2 of the list is empty",
        ),
        (
            &["--server", "http://127.0.0.1:1,http://127.0.0.1:2/socket"],
            "",
            "the coordinator URL `http://127.0.0.1:2/socket` must not have a path",
        ),
        (
            &[],
            "[agent]\nserver = \"http://127.0.0.1:1,http:///\"\n",
            "config `agent.server`: the coordinator URL `http:///` has no host",
        ),
        (
            &[],
            "[agent]\nservers = [\"http://127.0.0.1:1\", \"http://127.0.0.1:1\"]\n",
            "config `agent.servers`: the coordinator URL `http://127.0.0.1:1` is listed twice",
        ),
        (
            &[],
            "[agent]\nserver = \"http://127.0.0.1:1\"\nservers = [\"http://127.0.0.1:2\"]\n",
            "config `agent`: give the coordinators in `server` or in `servers`, not both",
        ),
    ];
    for (args, config, expected) in cases {
        let stderr = agent_refused(dir.path(), args, config);
        assert!(stderr.contains(expected), "{args:?} {config:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_agent_takes_its_coordinators_from_the_config_file_list() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_server().await;
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        format!(
            "[agent]\nservers = [\"{}\", \"{}\"]\nsecret = \"{SECRET}\"\n",
            dead_url(),
            live.url
        ),
    )
    .unwrap();
    let agent = KillOnDrop::spawn(
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .args(["agent", "--hostname", "from-config", "--config"])
            .arg(&config_file)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env_remove("TESTFLEET_SERVER")
            .env_remove("TESTFLEET_AGENT_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_agents(&live.api, 1).await;
    assert_eq!(online_agents(&live.api).await, ["from-config"]);
    run_job(&live.api).await;
    drop(agent);
    live.stop().await;
}
