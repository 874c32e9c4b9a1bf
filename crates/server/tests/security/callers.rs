//! Every mutating endpoint against every kind of caller, and the Digest
//! answers the callers send, computed apart from the server's code.

use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::{Harness, JOB, start};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Caller {
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
    pub(crate) fn is_valid(self) -> bool {
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

pub(crate) fn hex_md5(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

pub(crate) fn hex_sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A Digest `Authorization` header computed as RFC 7616 §3.4.1 says, apart
/// from the server's code.
#[allow(clippy::too_many_arguments)]
pub(crate) fn digest_authorization(
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
pub(crate) fn fresh_cnonce() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "c{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The Digest challenges of a 401: (algorithm, nonce, stale) each.
pub(crate) fn digest_challenges(resp: &reqwest::Response) -> Vec<(String, String, bool)> {
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
pub(crate) async fn fresh_nonce(h: &Harness, client: &reqwest::Client, path: &str) -> String {
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

pub(crate) async fn request(
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
