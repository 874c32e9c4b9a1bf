//! Security: every mutating endpoint and agent event against every kind of
//! caller (Basic, Digest, tokens, addresses), revoked agent secrets, real
//! Digest clients (curl, Python requests), and malformed or oversized input.

use std::time::Duration;

use testfleet_server::ServerConfig;
use testfleet_server::auth::{hash_secret, new_token, user_record};
use testfleet_store::Store;
use testfleet_testkit::server::TestServer;

const JOB: &str =
    "name = \"sec\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

/// A coordinator with users `alice` (argon2 and Digest) and `legacy`
/// (argon2 only), a token and a revoked token.
struct Harness {
    server: TestServer,
    /// A handle of its own on the coordinator's database, as `testfleet
    /// admin` opens one: the coordinator keeps its store to itself.
    store: Store,
    token: String,
    revoked_token: String,
}

impl std::ops::Deref for Harness {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let server = TestServer::in_tempdir(|config| {
        config.agent_secret = Some("shared".into());
        // No address is trusted unless a case says so.
        config.auth.allowed_cidrs.clear();
        tweak(config);
    })
    .await;
    let store = Store::connect(&server.coordinator.config.database_url())
        .await
        .unwrap();
    let realm = server.coordinator.config.auth.realm.clone();
    store
        .save_user(
            &user_record("alice", "correct horse", false, &realm).unwrap(),
            0,
        )
        .await
        .unwrap();
    // A user from before Digest support: an argon2 hash only.
    store
        .put_user("legacy", &hash_secret("old password").unwrap(), false, 0)
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
    Harness {
        server,
        store,
        token,
        revoked_token,
    }
}

mod agents;
mod callers;
mod digest;

use callers::{Caller, request};

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
    .await
    .body(JOB)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let audit = h.store.audit_log(5).await.unwrap();
    assert_eq!(audit[0].actor, "ip:127.0.0.1");

    let h = start(|c| c.auth.read_open = false).await;
    let resp = request(
        &h,
        &http,
        reqwest::Method::GET,
        "/api/v1/jobs",
        Caller::Anonymous,
    )
    .await
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
    .await
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body) from
/// `conn`; `None` if the connection closes first.
async fn read_response(conn: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_with_a_late_body_leaves_the_connection_usable() {
    // Digest and Basic clients answer a 401 on the same connection; Python's
    // http.client sends a POST's body apart from its headers.
    use tokio::io::AsyncWriteExt;
    let h = start(|_| {}).await;
    let addr = h.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/toml\r\ncontent-length: {}\r\n\r\n",
        JOB.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.write_all(JOB.as_bytes()).await.unwrap();
    let first = read_response(&mut conn).await.expect("a 401");
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    let closes = first.to_lowercase().contains("connection: close");
    let second = format!(
        "GET /api/v1/jobs HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
        h.token
    );
    let sent = conn.write_all(second.as_bytes()).await;
    let answer = match sent {
        Ok(()) => read_response(&mut conn).await,
        Err(_) => None,
    };
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
            || closes,
        "the connection was closed without `connection: close`: {first}"
    );
    assert!(
        !closes,
        "a small body is read, and the connection kept: {first}"
    );
}
