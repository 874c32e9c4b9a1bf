//! Who sent a webhook, checked without IO: GitHub's `X-Hub-Signature-256`
//! (hex HMAC-SHA256 of the raw body), GitLab's `X-Gitlab-Token` (the
//! configured secret) or its signing token's `webhook-signature` (Standard
//! Webhooks: `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`),
//! Gerrit's secret in the URL and its allowed networks. Every comparison of
//! a secret or a signature takes the same time whatever matched.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook was refused (401; nothing is stored). Messages name the
/// header that failed, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("the {0} does not match")]
    Mismatch(&'static str),
    #[error("the webhook-timestamp is {0}s away from the coordinator's clock (at most {1}s)")]
    Stale(u64, u64),
    #[error("missing `secret` query parameter")]
    MissingSecret,
    #[error("the address {0} is not allowed to send this hook")]
    Address(String),
}

/// Compares without an early exit, so timing does not tell how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
pub fn github(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
    const NAME: &str = "X-Hub-Signature-256";
    let header = header.ok_or(Refusal::MissingHeader(NAME))?;
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Refusal::MalformedHeader(NAME))?;
    let expected = hmac_sha256(secret, &[body]);
    if constant_time_eq(&given, &expected) {
        Ok(())
    } else {
        Err(Refusal::Mismatch("X-Hub-Signature-256 signature"))
    }
}

/// GitLab's plain secret token: `X-Gitlab-Token` equals it.
pub fn gitlab_token(secret: &str, header: Option<&str>) -> Result<(), Refusal> {
    let given = header.ok_or(Refusal::MissingHeader("X-Gitlab-Token"))?;
    if constant_time_eq(given.as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch("X-Gitlab-Token"))
    }
}

/// The Standard Webhooks headers GitLab's signing tokens send.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// GitLab's signing token (Standard Webhooks): one of the space-separated
/// `v1,<base64>` signatures is the HMAC-SHA256 under `key` of
/// `{webhook-id}.{webhook-timestamp}.{body}`, and the timestamp (Unix
/// seconds) is within `tolerance` of `now_secs`.
pub fn standard_webhook(
    key: &[u8],
    headers: SignedHeaders<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), Refusal> {
    let id = headers.id.ok_or(Refusal::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .ok_or(Refusal::MissingHeader("webhook-timestamp"))?;
    let signature = headers
        .signature
        .ok_or(Refusal::MissingHeader("webhook-signature"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::MalformedHeader("webhook-timestamp"))?;
    let skew = now_secs.abs_diff(at);
    if skew > tolerance.as_secs() {
        return Err(Refusal::Stale(skew, tolerance.as_secs()));
    }
    let expected = hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    let mut any = false;
    let mut matched = false;
    for entry in signature.split_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        any = true;
        matched |= constant_time_eq(&given, &expected);
    }
    if !any {
        return Err(Refusal::MalformedHeader("webhook-signature"));
    }
    if matched {
        Ok(())
    } else {
        Err(Refusal::Mismatch("webhook-signature"))
    }
}

/// Gerrit: the configured secret in the URL (`?secret=`), and the sender
/// in one of `allowed` (either check only when configured).
pub fn gerrit(
    secret: Option<&str>,
    allowed: &[IpNet],
    given: Option<&str>,
    peer: Option<IpAddr>,
) -> Result<(), Refusal> {
    if !allowed.is_empty() {
        let ok = peer.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip)));
        if !ok {
            return Err(Refusal::Address(
                peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            ));
        }
    }
    if let Some(secret) = secret {
        let given = given.ok_or(Refusal::MissingSecret)?;
        if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            return Err(Refusal::Mismatch("secret"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: secret "It's a Secret to Everybody",
    /// payload "Hello, World!".
    #[test]
    fn github_documented_example_verifies() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            github(
                b"It's a Secret to Everybody",
                Some(header),
                b"Hello, World!"
            ),
            Ok(())
        );
        assert_eq!(
            github(
                b"It's a Secret to Everybody",
                Some(header),
                b"Hello, World?"
            ),
            Err(Refusal::Mismatch("X-Hub-Signature-256 signature"))
        );
        assert_eq!(
            github(b"x", None, b""),
            Err(Refusal::MissingHeader("X-Hub-Signature-256"))
        );
        assert_eq!(
            github(b"x", Some("sha1=abc"), b""),
            Err(Refusal::MalformedHeader("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn standard_webhook_signatures_and_timestamps() {
        let key = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"object_kind":"push"}"#;
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
            key,
            &[b"msg_1", b".", b"1700000000", b".", body],
        ));
        let good = format!("v1,bm90IGl0 v1,{sig}");
        let headers = SignedHeaders {
            id: Some("msg_1"),
            timestamp: Some("1700000000"),
            signature: Some(&good),
        };
        let tol = Duration::from_secs(300);
        assert_eq!(
            standard_webhook(key, headers, body, 1_700_000_100, tol),
            Ok(())
        );
        assert_eq!(
            standard_webhook(key, headers, body, 1_700_000_400, tol),
            Err(Refusal::Stale(400, 300))
        );
        assert_eq!(
            standard_webhook(key, headers, b"{}", 1_700_000_000, tol),
            Err(Refusal::Mismatch("webhook-signature"))
        );
        let other_id = SignedHeaders {
            id: Some("msg_2"),
            ..headers
        };
        assert!(standard_webhook(key, other_id, body, 1_700_000_000, tol).is_err());
        let garbage = SignedHeaders {
            signature: Some("v2,zzz"),
            ..headers
        };
        assert_eq!(
            standard_webhook(key, garbage, body, 1_700_000_000, tol),
            Err(Refusal::MalformedHeader("webhook-signature"))
        );
    }

    #[test]
    fn gerrit_checks_what_is_configured() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "192.168.1.1".parse().unwrap();
        assert_eq!(gerrit(Some("s"), &nets, Some("s"), Some(inside)), Ok(()));
        assert!(gerrit(Some("s"), &nets, Some("s"), Some(outside)).is_err());
        assert_eq!(
            gerrit(Some("s"), &[], None, Some(outside)),
            Err(Refusal::MissingSecret)
        );
        assert!(gerrit(Some("s"), &[], Some("t"), Some(outside)).is_err());
        assert_eq!(gerrit(None, &nets, None, Some(inside)), Ok(()));
    }
}
