//! Third-party socket.io peers written from SPEC §3 alone (tests/peers):
//! a conformance client against `testfleet server`, `testfleet agent`
//! against a minimal host, and TLS end to end with a third-party client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfleet_testkit::{peer_python, workspace_root};

use testfleet_testkit::process::ServerProcess;

use crate::{SECRET, server_process};

#[test]
fn python_socketio_client_written_from_the_spec_passes() {
    let Some(python) = peer_python() else { return };
    for dev in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = server_process(dir.path(), "127.0.0.1:0", dev, None);
        let out = Command::new(&python)
            .arg(workspace_root().join("tests/peers/spec_client.py"))
            .args([
                "--url",
                server.url(),
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
    let server = ServerProcess::start(
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
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
            .arg(&key),
    );
    let url = server.url().to_owned();
    assert!(url.starts_with("https://"), "{url}");

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
    drop(server);
}
