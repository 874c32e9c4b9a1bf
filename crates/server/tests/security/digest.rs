//! Digest: failed logins slowed down, stale and replayed nonces, and real
//! clients (curl, Python requests).

use std::process::Command;
use std::time::Duration;

use testfleet_testkit::peer_python;

use crate::callers::{Caller, digest_authorization, digest_challenges, fresh_nonce, request};
use crate::{JOB, start};

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
