//! No secret reaches a log: a real `testfleet server` at the most verbose
//! level (`TESTFLEET_LOG=trace`) sees Basic logins (right and wrong), Digest
//! logins, an API token created, used and revoked, agents with right and
//! wrong secrets (stored per-host, per-host from the config file, shared)
//! and submitted jobs run by a real agent. Then none of the passwords,
//! tokens, agent secrets, Basic headers or Digest HA1 values may appear in
//! its output, in the admin commands' and the agent's output, in the audit
//! log, or anywhere in the database files.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use testfleet_core::JobState;
use testfleet_sio::{Client, ConnectError, ConnectOptions};
use testfleet_testkit::process::ServerProcess;

const SHARED_SECRET: &str = "shared-SeCrEt-4f9c2e81";
const CONFIG_HOST_SECRET: &str = "cfghost-SeCrEt-71ab0c55";
const OWN_SECRET: &str = "bench1-SeCrEt-93de4a10";
const WRONG_SECRET: &str = "wrong-SeCrEt-6e2a9b37";
const PASSWORD: &str = "alice-PaSsWoRd-5c1e8d";
const WRONG_PASSWORD: &str = "wrong-PaSsWoRd-0d7b3f";
const JOB: &str =
    "name = \"logs\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

fn testfleet(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.arg("--config")
        .arg(config)
        .env("TESTFLEET_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env_remove("TESTFLEET_TOKEN")
        .env_remove("TESTFLEET_USER")
        .env_remove("TESTFLEET_PASSWORD")
        .env_remove("TESTFLEET_AGENT_SECRET")
        .env_remove("TESTFLEET_SERVER");
    cmd
}

/// Everything a command printed, and its exit status.
fn run(cmd: &mut Command, captured: &mut String) -> Output {
    let out = cmd.output().expect("testfleet runs");
    captured.push_str(&String::from_utf8_lossy(&out.stdout));
    captured.push_str(&String::from_utf8_lossy(&out.stderr));
    out
}

/// A server process whose stdout and stderr are kept for the check.
fn start_server(config: &Path, data: &Path) -> ServerProcess {
    ServerProcess::start_capturing(
        testfleet(config)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("TESTFLEET_AGENT_SECRET", SHARED_SECRET),
    )
}

/// `curl --digest` (credentials through a config file, not argv): the
/// HTTP status.
fn curl_digest(dir: &Path, url: &str, user: &str, password: &str) -> u16 {
    let curlrc = dir.join("curlrc");
    std::fs::write(&curlrc, format!("user = \"{user}:{password}\"\n")).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--digest", "-K"])
        .arg(&curlrc)
        .args(["-X", "POST", "-H", "content-type: application/toml"])
        .args([
            "--data-binary",
            JOB,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("{url}/api/v1/jobs"))
        .output()
        .expect("curl runs");
    let _ = std::fs::remove_file(&curlrc);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A socket.io agent handshake: `Ok` if accepted (it then reports idle and
/// leaves), else the refusal.
async fn agent_handshake(url: &str, host: &str, secret: &str) -> Result<(), String> {
    let auth = json!({"clientType": "agent", "hostname": host, "secret": secret});
    match Client::connect(url, ConnectOptions::default().with_auth(auth)).await {
        Ok((client, _events)) => {
            client
                .emit("statusUpdate", json!({"status": "idle"}))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(client);
            Ok(())
        }
        Err(ConnectError::Rejected { message, .. }) => Err(message),
        Err(e) => panic!("handshake of {host} failed: {e}"),
    }
}

fn to_hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Where `needle` occurs in `haystack`, with some context, for the message.
fn find(haystack: &[u8], needle: &str) -> Option<String> {
    haystack
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map(|at| {
            let from = at.saturating_sub(200);
            let to = (at + needle.len() + 200).min(haystack.len());
            String::from_utf8_lossy(&haystack[from..to]).into_owned()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_the_audit_log_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server.auth]\nallowed_cidrs = []\n\n[server.host_secrets]\ncfghost = \"{CONFIG_HOST_SECRET}\"\n"
        ),
    )
    .unwrap();
    let server = start_server(&config, &data);
    let url = server.url().to_owned();
    // Output of the CLI, the admin commands and the agent (all at trace).
    let mut others = String::new();

    // Administration: a user, a token, a host's own secret.
    let out = run(
        testfleet(&config)
            .args(["users", "add", "alice", "--data-dir"])
            .arg(&data)
            .env("TESTFLEET_PASSWORD", PASSWORD),
        &mut others,
    );
    assert!(out.status.success(), "{others}");
    let out = testfleet(&config)
        .args(["tokens", "create", "ci", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The token is printed once on stdout, by design; the rest is checked.
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("tf_"), "{token}");
    others.push_str(&String::from_utf8_lossy(&out.stderr));
    let out = run(
        testfleet(&config)
            .args(["agents", "secret", "set", "bench1", "--data-dir"])
            .arg(&data)
            .env("TESTFLEET_AGENT_SECRET", OWN_SECRET),
        &mut others,
    );
    assert!(out.status.success(), "{others}");

    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, JOB).unwrap();
    let submit = |envs: &[(&str, &str)], captured: &mut String| {
        let mut cmd = testfleet(&config);
        cmd.args(["--server", &url, "submit"]).arg(&job_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run(&mut cmd, captured).status
    };

    // Basic: right, then wrong.
    assert!(
        submit(
            &[
                ("TESTFLEET_USER", "alice"),
                ("TESTFLEET_PASSWORD", PASSWORD)
            ],
            &mut others
        )
        .success(),
        "{others}"
    );
    assert!(
        !submit(
            &[
                ("TESTFLEET_USER", "alice"),
                ("TESTFLEET_PASSWORD", WRONG_PASSWORD)
            ],
            &mut others
        )
        .success()
    );
    // Digest: right, then wrong.
    assert_eq!(curl_digest(dir.path(), &url, "alice", PASSWORD), 201);
    assert_eq!(curl_digest(dir.path(), &url, "alice", WRONG_PASSWORD), 401);
    // A token: used, revoked, refused.
    assert!(
        submit(&[("TESTFLEET_TOKEN", &token)], &mut others).success(),
        "{others}"
    );
    let out = run(
        testfleet(&config)
            .args(["tokens", "revoke", "ci", "--data-dir"])
            .arg(&data),
        &mut others,
    );
    assert!(out.status.success(), "{others}");
    assert!(!submit(&[("TESTFLEET_TOKEN", &token)], &mut others).success());

    // Agents: each kind of secret, right and wrong.
    for (host, right, wrongs) in [
        ("bench1", OWN_SECRET, [SHARED_SECRET, WRONG_SECRET]),
        ("cfghost", CONFIG_HOST_SECRET, [SHARED_SECRET, WRONG_SECRET]),
        (
            "plainhost",
            SHARED_SECRET,
            [CONFIG_HOST_SECRET, WRONG_SECRET],
        ),
    ] {
        agent_handshake(&url, host, right)
            .await
            .unwrap_or_else(|e| panic!("{host} with its secret: {e}"));
        for wrong in wrongs {
            let refused = agent_handshake(&url, host, wrong).await;
            assert!(
                refused.as_ref().is_err_and(|m| m.contains("wrong secret")),
                "{host} with a wrong secret: {refused:?}"
            );
        }
    }
    // The real agent with a wrong secret is refused and stops.
    let work = dir.path().join("work");
    let out = run(
        testfleet(&config)
            .args([
                "--server",
                &url,
                "agent",
                "--hostname",
                "bench1",
                "--work-dir",
            ])
            .arg(&work)
            .env("TESTFLEET_AGENT_SECRET", WRONG_SECRET),
        &mut others,
    );
    assert!(!out.status.success(), "{others}");

    // The real agent with its own secret runs the three submitted jobs.
    let agent_log = dir.path().join("agent.log");
    let mut agent = testfleet(&config)
        .args([
            "--server",
            &url,
            "agent",
            "--hostname",
            "bench1",
            "--work-dir",
        ])
        .arg(&work)
        .args(["--poll-interval", "1s"])
        .env("TESTFLEET_AGENT_SECRET", OWN_SECRET)
        .stdout(File::create(&agent_log).unwrap())
        .stderr(Stdio::from(
            File::options().append(true).open(&agent_log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let api = testfleet_client::ApiClient::new(&url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = api.jobs(20, None).await.unwrap();
        let states: Vec<JobState> = jobs.iter().map(|j| j.state).collect();
        if jobs.len() == 3 && states.iter().all(|s| *s == JobState::Passed) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not pass: {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    others.push_str(&std::fs::read_to_string(&agent_log).unwrap());

    let server_output = server.stop();

    println!(
        "searched {} bytes of server output and {} bytes of CLI and agent output",
        server_output.len(),
        others.len()
    );
    // The output is really verbose, and about what happened.
    for expected in [
        "TRACE",
        "DEBUG",
        "wrong user or password",
        "wrong secret for host `bench1`",
        "wrong secret for host `cfghost`",
        "wrong secret for host `plainhost`",
        "the token has been revoked",
    ] {
        assert!(
            server_output.contains(expected),
            "the server's output lacks {expected:?}"
        );
    }
    let store = testfleet_store::Store::open(&data).await.unwrap();
    let audit = serde_json::to_string(&store.audit_log(10_000).await.unwrap()).unwrap();
    for expected in ["user:alice", "token:ci", "token create", "agent secret set"] {
        assert!(
            audit.contains(expected),
            "the audit log lacks {expected}: {audit}"
        );
    }
    store.close().await;
    let mut database = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            database.extend(std::fs::read(&path).unwrap());
        }
    }

    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let (ha1_md5, ha1_sha256) = testfleet_server::auth::digest_ha1("alice", "testfleet", PASSWORD);
    let clear = [
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        token.clone(),
        SHARED_SECRET.to_owned(),
        CONFIG_HOST_SECRET.to_owned(),
        OWN_SECRET.to_owned(),
        WRONG_SECRET.to_owned(),
    ];
    // The clear secrets, also as hex (frame dumps) and the Basic headers.
    let mut secrets: Vec<String> = clear.to_vec();
    secrets.extend(clear.iter().map(|c| to_hex(c)));
    secrets.push(b64(format!("alice:{PASSWORD}")));
    secrets.push(b64(format!("alice:{WRONG_PASSWORD}")));
    let stored_in_clear = secrets.len();
    secrets.push(ha1_md5);
    secrets.push(ha1_sha256);
    for secret in &secrets {
        for (place, text) in [
            ("the server's output", server_output.as_bytes()),
            ("the CLI's and the agent's output", others.as_bytes()),
            ("the audit log", audit.as_bytes()),
        ] {
            if let Some(context) = find(text, secret) {
                panic!("a secret leaked into {place}: …{context}…");
            }
        }
    }
    // The database keeps hashes only (HA1 values are stored by design).
    for secret in &secrets[..stored_in_clear] {
        if let Some(context) = find(&database, secret) {
            panic!("a secret is stored in clear: …{context}…");
        }
    }
}
