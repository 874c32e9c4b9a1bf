//! Security: every mutating endpoint and agent event against every kind of
//! caller (Basic, Digest, tokens, addresses), revoked agent secrets, real
//! Digest clients (curl, Python requests), and malformed or oversized input.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use md5::Md5;
use serde_json::json;
use sha2::{Digest, Sha256};
use testfleet_server::ServerConfig;
use testfleet_server::auth::{hash_secret, new_token, user_record};
use testfleet_sio::{Client, ConnectError, ConnectOptions, Incoming};
use testfleet_store::Store;
use testfleet_testkit::peer_python;
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    WrongPassword,
    UnknownToken,
    RevokedToken,
    ValidUser,
    ValidToken,
    /// Digest, SHA-256, answering the server's challenge.
    DigestValid,
    /// Digest, MD5, answering the server's challenge.
    DigestMd5Valid,
    /// Digest, SHA-256-sess (HA1 bound to the nonce and cnonce).
    DigestSha256SessValid,
    DigestWrongPassword,
    /// A right answer to a nonce the server issued 10 minutes ago.
    DigestStaleNonce,
    /// A wrong answer to an old nonce: refused, not `stale`.
    DigestStaleNonceWrongPassword,
    /// A right answer for another path, sent to this one.
    DigestTamperedUri,
    /// The header's `uri` changed to this path, the response left as is.
    DigestTamperedResponse,
    /// A nonce the server never issued.
    DigestForgedNonce,
    /// A user whose password was set before Digest support.
    DigestLegacyUser,
    /// The same user with Basic: still fine.
    LegacyBasic,
}

impl Caller {
    fn is_valid(self) -> bool {
        matches!(
            self,
            Caller::ValidUser
                | Caller::ValidToken
                | Caller::DigestValid
                | Caller::DigestMd5Valid
                | Caller::DigestSha256SessValid
                | Caller::LegacyBasic
        )
    }
}

fn hex_md5(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn hex_sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A Digest `Authorization` header computed as RFC 7616 §3.4.1 says, apart
/// from the server's code.
#[allow(clippy::too_many_arguments)]
fn digest_authorization(
    user: &str,
    password: &str,
    realm: &str,
    sha256: bool,
    nonce: &str,
    method: &str,
    signed_uri: &str,
    sent_uri: &str,
) -> String {
    let h = |s: &str| if sha256 { hex_sha256(s) } else { hex_md5(s) };
    let ha1 = h(&format!("{user}:{realm}:{password}"));
    let ha2 = h(&format!("{method}:{signed_uri}"));
    // Real clients draw a fresh cnonce per nonce; the server refuses an
    // (nonce, cnonce, nc) it has accepted before as a replay.
    let cnonce = fresh_cnonce();
    let nc = "00000001";
    let response = h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let algorithm = if sha256 { "SHA-256" } else { "MD5" };
    format!(
        r#"Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{sent_uri}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}""#
    )
}

/// A cnonce no other request of this test process has used.
fn fresh_cnonce() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "c{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The Digest challenges of a 401: (algorithm, nonce, stale) each.
fn digest_challenges(resp: &reqwest::Response) -> Vec<(String, String, bool)> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Digest "))
        .map(|v| {
            let param = |key: &str| {
                v.split(", ")
                    .find_map(|p| p.strip_prefix(&format!("{key}=")))
                    .map(|p| p.trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            (param("algorithm"), param("nonce"), param("stale") == "true")
        })
        .collect()
}

/// A nonce from the server's challenge for an unauthenticated request.
async fn fresh_nonce(h: &Harness, client: &reqwest::Client, path: &str) -> String {
    let resp = client
        .post(format!("{}{path}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenges = digest_challenges(&resp);
    assert_eq!(
        challenges.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["SHA-256", "MD5"],
        "Digest challenges, SHA-256 first"
    );
    assert!(
        resp.headers()
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("Basic realm=")),
        "Basic is offered alongside"
    );
    challenges[0].1.clone()
}

async fn request(
    h: &Harness,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    caller: Caller,
) -> reqwest::RequestBuilder {
    let realm = h.coordinator.config.auth.realm.clone();
    let digest = |user: &str, password: &str, sha256: bool, nonce: &str, signed: &str| {
        digest_authorization(
            user,
            password,
            &realm,
            sha256,
            nonce,
            method.as_str(),
            signed,
            path,
        )
    };
    let nonce = match caller {
        Caller::DigestStaleNonce | Caller::DigestStaleNonceWrongPassword => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            h.coordinator
                .config
                .auth
                .digest_key
                .nonce_at(&realm, now - 600)
        }
        Caller::DigestForgedNonce => format!("{:016x}{}", 1u64 << 40, "ab".repeat(16)),
        c if format!("{c:?}").starts_with("Digest") => fresh_nonce(h, client, path).await,
        _ => String::new(),
    };
    let req = client.request(method.clone(), format!("{}{path}", h.url));
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
        Caller::LegacyBasic => req.header("authorization", basic("legacy", "old password")),
        Caller::DigestSha256SessValid => {
            let (cnonce, nc) = (fresh_cnonce(), "00000001");
            let ha1 = hex_sha256(&format!("alice:{realm}:correct horse"));
            let ha1 = hex_sha256(&format!("{ha1}:{nonce}:{cnonce}"));
            let ha2 = hex_sha256(&format!("{}:{path}", method.as_str()));
            let response = hex_sha256(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
            req.header(
                "authorization",
                format!(
                    r#"Digest username="alice", realm="{realm}", nonce="{nonce}", uri="{path}", algorithm=SHA-256-sess, qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}""#
                ),
            )
        }
        Caller::DigestValid | Caller::DigestStaleNonce | Caller::DigestForgedNonce => req.header(
            "authorization",
            digest("alice", "correct horse", true, &nonce, path),
        ),
        Caller::DigestMd5Valid => req.header(
            "authorization",
            digest("alice", "correct horse", false, &nonce, path),
        ),
        Caller::DigestWrongPassword | Caller::DigestStaleNonceWrongPassword => req.header(
            "authorization",
            digest("alice", "wrong", true, &nonce, path),
        ),
        Caller::DigestTamperedUri => {
            // Right for another path and claiming it, sent to this one.
            let header = digest_authorization(
                "alice",
                "correct horse",
                &realm,
                true,
                &nonce,
                method.as_str(),
                "/api/v1/elsewhere",
                "/api/v1/elsewhere",
            );
            req.header("authorization", header)
        }
        Caller::DigestTamperedResponse => req.header(
            "authorization",
            digest("alice", "correct horse", true, &nonce, "/api/v1/other"),
        ),
        Caller::DigestLegacyUser => req.header(
            "authorization",
            digest("legacy", "old password", true, &nonce, path),
        ),
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
    .await
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
        (Caller::DigestValid, None),
        (Caller::DigestMd5Valid, None),
        (Caller::DigestSha256SessValid, None),
        (Caller::DigestWrongPassword, Some("wrong user or password")),
        (Caller::DigestStaleNonce, Some("nonce has expired")),
        (
            Caller::DigestStaleNonceWrongPassword,
            Some("wrong user or password"),
        ),
        (
            Caller::DigestTamperedUri,
            Some("`uri` does not match the request"),
        ),
        (
            Caller::DigestTamperedResponse,
            Some("wrong user or password"),
        ),
        (Caller::DigestForgedNonce, Some("invalid Digest nonce")),
        (Caller::DigestLegacyUser, Some("testfleet users add legacy")),
        (Caller::LegacyBasic, None),
    ];
    for (path, body, ok_status) in endpoints {
        for (caller, message) in callers {
            let content_type = if body.starts_with('{') {
                "application/json"
            } else {
                "application/toml"
            };
            let resp = request(&h, &http, reqwest::Method::POST, path, caller)
                .await
                .header("content-type", content_type)
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let expected = if caller.is_valid() { ok_status } else { 401 };
            if status == 401 {
                // Every refusal offers Digest (SHA-256, MD5) and Basic;
                // `stale=true` only for a right answer to an old nonce.
                let challenges = digest_challenges(&resp);
                assert_eq!(challenges.len(), 2, "POST {path} as {caller:?}");
                let stale = caller == Caller::DigestStaleNonce;
                assert!(
                    challenges.iter().all(|c| c.2 == stale),
                    "POST {path} as {caller:?}: stale should be {stale}: {challenges:?}"
                );
            }
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
    .await
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Who did what is in the audit log.
    let audit = h.store.audit_log(50).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "user:alice" && e.action == "submit"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "token:ci" && e.action == "cancel"),
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
        .await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_digest_logins_are_slowed_down() {
    let h = start(|_| {}).await;
    let http = reqwest::Client::new();
    let mut last = Duration::ZERO;
    for _ in 0..8 {
        let req = request(
            &h,
            &http,
            reqwest::Method::POST,
            "/api/v1/jobs",
            Caller::DigestWrongPassword,
        )
        .await;
        let started = std::time::Instant::now();
        let resp = req.body(JOB).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        last = started.elapsed();
    }
    assert!(
        last >= Duration::from_millis(400),
        "the 8th failure answered in {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_answers_to_stale_nonces_are_not_slowed_down() {
    let h = start(|_| {}).await;
    let http = reqwest::Client::new();
    // Counted as failures, the 6th to 8th would wait 200 + 400 + 800 ms.
    let started = std::time::Instant::now();
    for _ in 0..8 {
        let req = request(
            &h,
            &http,
            reqwest::Method::POST,
            "/api/v1/jobs",
            Caller::DigestStaleNonce,
        )
        .await;
        let resp = req.body(JOB).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(digest_challenges(&resp).iter().all(|c| c.2), "stale=true");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1400),
        "stale nonces counted as failed logins (8 answers took {took:?})"
    );
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

/// `curl --digest`: (HTTP status, body, curl's verbose log).
fn curl_digest(url: &str, user: &str, password: &str, body: &str) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let config = dir.path().join("curlrc");
    // Credentials through a config file, not argv.
    std::fs::write(&config, format!("user = \"{user}:{password}\"\n")).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-v", "--digest", "-K"])
        .arg(&config)
        .args(["-X", "POST", "-H", "content-type: application/toml"])
        .args(["--data-binary", body, "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}", url])
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_digest_answer_is_refused_as_stale() {
    let h = start(|_| {}).await;
    let client = reqwest::Client::new();
    let path = "/api/v1/jobs";
    let realm = h.coordinator.config.auth.realm.clone();
    let nonce = fresh_nonce(&h, &client, path).await;
    let answer = digest_authorization(
        "alice",
        "correct horse",
        &realm,
        true,
        &nonce,
        "POST",
        path,
        path,
    );
    let send = || {
        client
            .post(format!("{}{path}", h.url))
            .header("authorization", &answer)
            .body(JOB)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(
        first.status().as_u16(),
        201,
        "{}",
        first.text().await.unwrap()
    );
    // The same answer again, as a captured request replayed.
    let replay = send().await.unwrap();
    assert_eq!(replay.status().as_u16(), 401);
    assert!(
        digest_challenges(&replay).iter().all(|c| c.2),
        "a replay is answered stale=true, so honest clients retry with a fresh nonce"
    );
    let jobs = h.coordinator.views().jobs(10, None).await.unwrap();
    assert_eq!(jobs.len(), 1, "the replay submitted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_authenticates_with_digest_sha256() {
    let h = start(|_| {}).await;
    let url = format!("{}/api/v1/jobs", h.url);
    let (url2, job) = (url.clone(), JOB.to_owned());
    let (status, body, log) =
        tokio::task::spawn_blocking(move || curl_digest(&url2, "alice", "correct horse", &job))
            .await
            .unwrap();
    assert_eq!(status, 201, "{body}\n{log}");
    assert!(
        log.contains("Authorization: Digest username=\"alice\"")
            && log.contains("algorithm=SHA-256"),
        "curl answered the SHA-256 challenge: {log}"
    );
    let audit = h.store.audit_log(5).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "user:alice" && e.action == "submit"),
        "{audit:#?}"
    );

    let (url2, job) = (url.clone(), JOB.to_owned());
    let (status, body, log) =
        tokio::task::spawn_blocking(move || curl_digest(&url2, "alice", "wrong horse", &job))
            .await
            .unwrap();
    assert_eq!(status, 401, "{body}\n{log}");
    assert!(body.contains("wrong user or password"), "{body}");

    let (url2, job) = (url.clone(), JOB.to_owned());
    let (status, body, _) =
        tokio::task::spawn_blocking(move || curl_digest(&url2, "legacy", "old password", &job))
            .await
            .unwrap();
    assert_eq!(status, 401);
    assert!(
        body.contains("no Digest credentials") && body.contains("testfleet users add legacy"),
        "{body}"
    );
}

const PY_DIGEST: &str = r#"
import sys, requests
from requests.auth import HTTPDigestAuth
url, user, password, body = sys.argv[1:5]
r = requests.post(url, data=body.encode(), auth=HTTPDigestAuth(user, password),
                  headers={"content-type": "application/toml"}, timeout=10)
sent = r.request.headers.get("Authorization", "")
print(r.status_code)
print(sent.split("algorithm=")[1].split(",")[0].strip('"') if "algorithm=" in sent else "-")
print(r.text)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_authenticates_with_digest() {
    let Some(python) = peer_python() else { return };
    let h = start(|_| {}).await;
    let url = format!("{}/api/v1/jobs", h.url);
    let run = |user: &'static str, password: &'static str| {
        let (python, url) = (python.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(python)
                .args(["-c", PY_DIGEST, &url, user, password, JOB])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
    };
    let out = run("alice", "correct horse").await.unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("201"), "{out}");
    let algorithm = lines.next().unwrap_or_default();
    println!("requests answered the {algorithm} challenge");
    assert!(
        ["MD5", "SHA-256"].contains(&algorithm),
        "requests answered a Digest challenge: {out}"
    );
    let audit = h.store.audit_log(5).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "user:alice" && e.action == "submit"),
        "{audit:#?}"
    );
    let out = run("alice", "not it").await.unwrap();
    assert!(out.starts_with("401\n"), "{out}");
    assert!(out.contains("wrong user or password"), "{out}");
}

const PY_DIGEST_STALE: &str = r#"
import sys, time, requests
from requests.auth import HTTPDigestAuth
url, user, password, body = sys.argv[1:5]
s = requests.Session()
s.auth = HTTPDigestAuth(user, password)
h = {"content-type": "application/toml"}
r1 = s.post(url, data=body.encode(), headers=h, timeout=10)
time.sleep(2.5)
# Sent with the first nonce, now expired: 401 stale=true, then a retry.
r2 = s.post(url, data=body.encode(), headers=h, timeout=10)
stale = any("stale=true" in x.headers.get("www-authenticate", "") for x in r2.history)
print(r1.status_code, r2.status_code, "stale" if stale else "fresh", len(r2.history))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_retries_after_a_stale_nonce() {
    let Some(python) = peer_python() else { return };
    let h = start(|c| c.auth.digest_nonce_lifetime = Duration::from_secs(1)).await;
    let url = format!("{}/api/v1/jobs", h.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", PY_DIGEST_STALE, &url, "alice", "correct horse", JOB])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "201 201 stale 1", "{stdout}");
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
    let store = &h.store;
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
    // The agent HTTP routes (inputs, artifacts) take the same secret; a blob
    // that is not there is a 404 once the agent is recognised.
    let http = reqwest::Client::new();
    let blob_status = || {
        let http = http.clone();
        let url = format!("{}/api/v1/agent/blobs/{}", h.url, "0".repeat(64));
        async move {
            http.get(url)
                .header("x-testfleet-host", "bench1")
                .header("x-testfleet-secret", "own-secret")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(blob_status().await, 404);

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
    // The HTTP routes stop trusting their cached check as soon as the
    // revocation is noticed, not when the cache entry would have expired.
    assert_eq!(blob_status().await, 401);
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
    .await
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
    .await
    .body(JOB)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (_again, _) = connect(&h.url, "after", "shared").await.unwrap();
}
