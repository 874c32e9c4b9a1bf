//! `testfleet server` refuses to start open to any agent: without an agent
//! secret it exits with a usage error that says how to set one, unless
//! `--allow-any-agent` (flag, `TESTFLEET_ALLOW_ANY_AGENT`, or `[server]
//! allow_any_agent`) says so.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testfleet_sio::{Client, ConnectError, ConnectOptions};

/// The binary with no configuration inherited from the environment.
fn testfleet(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESTFLEET_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("TESTFLEET_LOG", "warn");
    cmd
}

fn server_args(cmd: &mut Command, data: &Path) {
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data);
}

/// Runs a server that must refuse to start; its exit status and stderr.
fn refused(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// A server process, killed on drop.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a server that must start; its URL once it listens.
fn started(mut cmd: Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let running = Running {
        url: line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_default(),
        child,
    };
    assert!(
        !running.url.is_empty(),
        "the server did not start: {line:?}"
    );
    running
}

/// Connects as agent `host`, with `secret` when given.
async fn connect_agent(url: &str, host: &str, secret: Option<&str>) -> Result<(), ConnectError> {
    let mut auth = json!({"clientType": "agent", "hostname": host});
    if let Some(secret) = secret {
        auth["secret"] = json!(secret);
    }
    let (client, _events) = Client::connect(url, ConnectOptions::default().with_auth(auth)).await?;
    drop(client);
    Ok(())
}

#[test]
fn without_an_agent_secret_the_server_refuses_to_start_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = testfleet(dir.path());
    server_args(&mut cmd, &data);
    let (code, stderr) = refused(cmd);
    assert_eq!(code, Some(2), "a usage error; stderr: {stderr}");
    for hint in [
        "no agent secret is configured",
        "--agent-secret",
        "TESTFLEET_AGENT_SECRET",
        "[server]",
        "host_secrets",
        "testfleet agents secret",
        "--allow-any-agent",
    ] {
        assert!(stderr.contains(hint), "`{hint}` missing from: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !data.exists(),
        "nothing is created by a refused start: {}",
        data.display()
    );

    // `false` in the file and in the environment is no permission either.
    let config = dir.path().join("closed.toml");
    std::fs::write(&config, "[server]\nallow_any_agent = false\n").unwrap();
    let mut cmd = testfleet(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .env("TESTFLEET_ALLOW_ANY_AGENT", "false");
    server_args(&mut cmd, &data);
    let (code, stderr) = refused(cmd);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--allow-any-agent"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_agent_lets_an_agent_in_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = testfleet(dir.path());
    server_args(&mut cmd, &dir.path().join("flag"));
    cmd.arg("--allow-any-agent");
    let server = started(cmd);
    connect_agent(&server.url, "open-1", None)
        .await
        .expect("any agent may connect with --allow-any-agent");
    drop(server);

    // The same from the environment and from the config file.
    let mut cmd = testfleet(dir.path());
    server_args(&mut cmd, &dir.path().join("env"));
    cmd.env("TESTFLEET_ALLOW_ANY_AGENT", "1");
    let server = started(cmd);
    connect_agent(&server.url, "open-2", None).await.unwrap();
    drop(server);

    let config = dir.path().join("open.toml");
    std::fs::write(&config, "[server]\nallow_any_agent = true\n").unwrap();
    let mut cmd = testfleet(dir.path());
    cmd.arg("--config").arg(&config);
    server_args(&mut cmd, &dir.path().join("file"));
    let server = started(cmd);
    connect_agent(&server.url, "open-3", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_the_server_starts_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = testfleet(dir.path());
    server_args(&mut cmd, &dir.path().join("flag"));
    cmd.args(["--agent-secret", "start-secret"]);
    let server = started(cmd);
    connect_agent(&server.url, "bench1", Some("start-secret"))
        .await
        .unwrap();
    match connect_agent(&server.url, "bench2", None).await {
        Err(ConnectError::Rejected { message, .. }) => {
            assert!(message.contains("missing secret"), "{message}")
        }
        other => panic!("an agent without the secret got in: {other:?}"),
    }
    drop(server);

    // The shared secret from the environment, per-host secrets from the file.
    let mut cmd = testfleet(dir.path());
    server_args(&mut cmd, &dir.path().join("env"));
    cmd.env("TESTFLEET_AGENT_SECRET", "env-secret");
    let server = started(cmd);
    connect_agent(&server.url, "bench1", Some("env-secret"))
        .await
        .unwrap();
    drop(server);

    let config = dir.path().join("hosts.toml");
    std::fs::write(&config, "[server.host_secrets]\nbench1 = \"own-secret\"\n").unwrap();
    let mut cmd = testfleet(dir.path());
    cmd.arg("--config").arg(&config);
    server_args(&mut cmd, &dir.path().join("file"));
    let server = started(cmd);
    connect_agent(&server.url, "bench1", Some("own-secret"))
        .await
        .unwrap();
    assert!(
        matches!(
            connect_agent(&server.url, "unlisted", None).await,
            Err(ConnectError::Rejected { .. })
        ),
        "per-host secrets only: an unlisted host is refused"
    );
}
