//! Security: every mutating endpoint and agent event against every kind of
//! caller, revoked agent secrets, and malformed or oversized input.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use testfleet_server::auth::{hash_secret, new_token};
use testfleet_server::{Server, ServerConfig};
use testfleet_sio::{Client, ConnectError, ConnectOptions, Incoming};

const JOB: &str =
    "name = \"sec\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

struct Harness {
    url: String,
    coordinator: std::sync::Arc<testfleet_server::Coordinator>,
    token: String,
    revoked_token: String,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::new(addr, dir.path().to_owned());
    config.agent_secret = Some("shared".into());
    // No address is trusted unless a case says so.
    config.auth.allowed_cidrs.clear();
    tweak(&mut config);
    let server = Server::build(config).await.unwrap();
    let coordinator = server.coordinator.clone();
    let store = &coordinator.store;
    store
        .put_user("alice", &hash_secret("correct horse").unwrap(), false, 0)
        .await
        .unwrap();
    let (token, token_hash) = new_token().unwrap();
    store.add_token("ci", &token_hash, false, 0).await.unwrap();
    let (revoked_token, revoked_hash) = new_token().unwrap();
    store
        .add_token("old", &revoked_hash, false, 0)
        .await
        .unwrap();
    store.revoke_token("old", 1).await.unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    Harness {
        url: format!("http://{addr}"),
        coordinator,
        token,
        revoked_token,
        _dir: dir,
    }
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    WrongPassword,
    UnknownToken,
    RevokedToken,
    ValidUser,
    ValidToken,
}

fn request(
    h: &Harness,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    caller: Caller,
) -> reqwest::RequestBuilder {
    let req = client.request(method, format!("{}{path}", h.url));
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    match caller {
        Caller::Anonymous => req,
        Caller::WrongPassword => req.header("authorization", basic("alice", "wrong")),
        Caller::UnknownToken => req.bearer_auth("tf_not_a_token"),
        Caller::RevokedToken => req.bearer_auth(&h.revoked_token),
        Caller::ValidUser => req.header("authorization", basic("alice", "correct horse")),
        Caller::ValidToken => req.bearer_auth(&h.token),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_endpoint_answers_each_caller_as_intended() {
    let h = start(|_| {}).await;
    let http = reqwest::Client::new();
    // A job to cancel.
    let job: serde_json::Value = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .body(JOB)
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let job_id = job["id"].as_i64().unwrap();
    let cancel = format!("/api/v1/jobs/{job_id}/cancel");
    let endpoints: [(&str, &str, u16); 3] = [
        ("/api/v1/jobs", JOB, 201),
        (&cancel, "", 200),
        ("/api/v2.0/testcases", r#"{"name": "sec.case"}"#, 201),
    ];
    let callers = [
        (Caller::Anonymous, None),
        (Caller::WrongPassword, Some("wrong user or password")),
        (Caller::UnknownToken, Some("unknown token")),
        (Caller::RevokedToken, Some("revoked")),
        (Caller::ValidUser, None),
        (Caller::ValidToken, None),
    ];
    for (path, body, ok_status) in endpoints {
        for (caller, message) in callers {
            let content_type = if body.starts_with('{') {
                "application/json"
            } else {
                "application/toml"
            };
            let resp = request(&h, &http, reqwest::Method::POST, path, caller)
                .header("content-type", content_type)
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let expected = if matches!(caller, Caller::ValidUser | Caller::ValidToken) {
                ok_status
            } else {
                401
            };
            let text = resp.text().await.unwrap();
            assert_eq!(status, expected, "POST {path} as {caller:?}: {text}");
            if let Some(m) = message {
                assert!(text.contains(m), "POST {path} as {caller:?}: {text}");
            }
            if status == 401 {
                assert!(!text.contains(&h.token), "a secret leaked into an answer");
            }
        }
    }
    // Reads stay open.
    let resp = request(
        &h,
        &http,
        reqwest::Method::GET,
        "/api/v1/jobs",
        Caller::Anonymous,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Who did what is in the audit log.
    let audit = h.coordinator.store.audit_log(50).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == "user:alice" && e["action"] == "submit"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == "token:ci" && e["action"] == "cancel"),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_network_writes_without_credentials_and_closed_reads_need_them() {
    let h = start(|c| {
        c.auth.allowed_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
        c.auth.read_open = false;
    })
    .await;
    let http = reqwest::Client::new();
    let resp = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::Anonymous,
    )
    .body(JOB)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let audit = h.coordinator.store.audit_log(5).await.unwrap();
    assert_eq!(audit[0]["actor"], "ip:127.0.0.1");

    let h = start(|c| c.auth.read_open = false).await;
    let resp = request(
        &h,
        &http,
        reqwest::Method::GET,
        "/api/v1/jobs",
        Caller::Anonymous,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = request(
        &h,
        &http,
        reqwest::Method::GET,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_slowed_down() {
    let h = start(|_| {}).await;
    let http = reqwest::Client::new();
    let mut last = Duration::ZERO;
    for _ in 0..8 {
        let started = std::time::Instant::now();
        let resp = request(
            &h,
            &http,
            reqwest::Method::POST,
            "/api/v1/jobs",
            Caller::WrongPassword,
        )
        .body(JOB)
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        last = started.elapsed();
    }
    assert!(
        last >= Duration::from_millis(400),
        "the 8th failure answered in {last:?}"
    );
}

async fn connect(
    url: &str,
    host: &str,
    secret: &str,
) -> Result<(Client, testfleet_sio::EventStream), ConnectError> {
    let auth = json!({"clientType": "agent", "hostname": host, "secret": secret});
    Client::connect(url, ConnectOptions::default().with_auth(auth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_revoked_secret_is_disconnected_and_cannot_fetch_work() {
    let h = start(|_| {}).await;
    let store = &h.coordinator.store;
    store
        .put_agent_secret("bench1", &hash_secret("own-secret").unwrap(), 0)
        .await
        .unwrap();
    // Its own secret wins over the shared one.
    let err = connect(&h.url, "bench1", "shared")
        .await
        .err()
        .unwrap_or_else(|| panic!("shared secret refused for bench1"));
    assert!(
        matches!(&err, ConnectError::Rejected { message, .. } if message.contains("wrong secret")),
        "{err}"
    );
    let (client, mut events) = connect(&h.url, "bench1", "own-secret").await.unwrap();
    client
        .emit("statusUpdate", json!({"status": "idle"}))
        .await
        .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store.revoke_agent_secret("bench1", now + 1).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("not disconnected in time")
        {
            Some(Incoming::Disconnected { .. }) | None => break,
            Some(_) => continue,
        }
    }
    let err = connect(&h.url, "bench1", "own-secret")
        .await
        .err()
        .unwrap_or_else(|| panic!("a revoked secret is refused"));
    assert!(
        matches!(&err, ConnectError::Rejected { message, .. } if message.contains("revoked")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_gets_clear_errors_and_the_server_keeps_serving() {
    let h = start(|c| {
        c.max_body_bytes = 64 * 1024;
        c.max_socket_payload = 64 * 1024;
    })
    .await;
    let http = reqwest::Client::new();
    // An oversized HTTP body.
    let big = "x".repeat(200 * 1024);
    let resp = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .body(big)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Malformed socket.io events get an `error` event.
    let (client, mut events) = connect(&h.url, "fuzz", "shared").await.unwrap();
    client
        .emit("statusUpdate", json!({"status": 42}))
        .await
        .unwrap();
    client
        .emit("tf:log", json!({"nonsense": true}))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut errors = 0;
    while errors < 1 {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap();
        if let Some(Incoming::Event { name, .. }) = event
            && name == "error"
        {
            errors += 1;
        }
    }
    // An oversized socket.io packet drops that connection only.
    let (big_client, _big_events) = connect(&h.url, "big", "shared").await.unwrap();
    let _ = big_client
        .emit(
            "statusUpdate",
            json!({"status": "idle", "detailMessage": "y".repeat(200 * 1024)}),
        )
        .await;
    // Others are still served.
    let resp = request(
        &h,
        &http,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Caller::ValidToken,
    )
    .body(JOB)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (_again, _) = connect(&h.url, "after", "shared").await.unwrap();
}
