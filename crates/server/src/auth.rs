//! Who may write: CIDR allow-list, users (argon2, HTTP Basic) and API tokens
//! (SHA-256, `Authorization: Bearer`). Reading is open unless configured
//! otherwise. Failed attempts are slowed down per address.
//!
//! Secrets never reach a log: only names, addresses and outcomes do.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use testfleet_wire::api::ErrorBody;

use crate::coordinator::Coordinator;

/// Access rules.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Anyone may read (GET); else reading needs the same as writing.
    pub read_open: bool,
    /// Addresses allowed to write without credentials.
    pub allowed_cidrs: Vec<IpNet>,
}

impl Default for AuthConfig {
    /// Reads are open; writes are allowed from loopback only, until users,
    /// tokens or other networks are configured.
    fn default() -> AuthConfig {
        AuthConfig {
            read_open: true,
            allowed_cidrs: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Network(IpAddr),
    User { name: String, admin: bool },
    Token { name: String, admin: bool },
}

impl Identity {
    /// How the audit log names the actor.
    pub fn actor(&self) -> String {
        match self {
            Identity::Network(ip) => format!("ip:{ip}"),
            Identity::User { name, .. } => format!("user:{name}"),
            Identity::Token { name, .. } => format!("token:{name}"),
        }
    }
}

/// Hashes a password or agent secret with argon2id (PHC string).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("failed to hash: {e}"))
}

/// Checks a secret against an argon2 PHC hash.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), hash)
        .is_ok()
}

/// A new random API token (shown once) and the hash to store.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = format!("tf_{}", hex::encode(bytes));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// A new random agent secret.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The stored form of an API token: tokens are long random strings, so a
/// plain SHA-256 is enough (no salt or stretching needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Slows down repeated failed authentication from one address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// Failures within this window count together.
    const WINDOW: Duration = Duration::from_secs(60);
    /// Failures allowed before answers slow down.
    const FREE: u32 = 5;

    /// The delay to apply before answering this address's next failure.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| now.duration_since(*since) < Self::WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) > Self::WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        match entry.0.saturating_sub(Self::FREE) {
            0 => Duration::ZERO,
            // 200 ms, 400 ms, 800 ms … at most 5 s per answer.
            over => Duration::from_millis((100u64 << over.min(6)).min(5_000)),
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub enum AuthError {
    Missing,
    Invalid(&'static str),
    Forbidden(&'static str),
}

fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Works out who sent `headers` from `ip`. `Ok(None)`: no credentials and
/// not an allowed address.
pub async fn identify(
    c: &Coordinator,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Option<Identity>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::Invalid("malformed Authorization header"))?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            let stored = c
                .store
                .token_by_hash(&token_hash(token.trim()))
                .await
                .map_err(|_| AuthError::Invalid("token lookup failed"))?;
            return match stored {
                Some(t) if !t.revoked => Ok(Some(Identity::Token {
                    name: t.name,
                    admin: t.admin,
                })),
                Some(_) => Err(AuthError::Invalid("the token has been revoked")),
                None => Err(AuthError::Invalid("unknown token")),
            };
        }
        if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(AuthError::Invalid("malformed Basic credentials"))?;
            let (name, password) = decoded
                .split_once(':')
                .ok_or(AuthError::Invalid("malformed Basic credentials"))?;
            let user = c
                .store
                .user(name)
                .await
                .map_err(|_| AuthError::Invalid("user lookup failed"))?;
            let Some(user) = user else {
                return Err(AuthError::Invalid("wrong user or password"));
            };
            let password = password.to_owned();
            let hash = user.password_hash.clone();
            let ok = tokio::task::spawn_blocking(move || verify_secret(&password, &hash))
                .await
                .unwrap_or(false);
            return if ok {
                Ok(Some(Identity::User {
                    name: user.name,
                    admin: user.admin,
                }))
            } else {
                Err(AuthError::Invalid("wrong user or password"))
            };
        }
        return Err(AuthError::Invalid(
            "unsupported Authorization scheme (use Basic or Bearer)",
        ));
    }
    if let Some(ip) = ip
        && c.config
            .auth
            .allowed_cidrs
            .iter()
            .any(|net| net.contains(&ip))
    {
        return Ok(Some(Identity::Network(ip)));
    }
    Ok(None)
}

fn refusal(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        error: message.to_owned(),
        field: None,
        line: None,
        column: None,
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"testfleet\""),
        );
    }
    response
}

/// Middleware: writes need an identity; reads too unless `read_open`. The
/// identity is attached to the request for handlers (audit log).
pub async fn guard(
    State(c): State<Arc<Coordinator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let is_read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let ip = peer(&request);
    let result = identify(&c, request.headers(), ip).await;
    let limiter = &c.auth_failures;
    match result {
        Ok(Some(identity)) => {
            if let Some(ip) = ip {
                limiter.succeeded(ip);
            }
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Ok(None) if is_read && c.config.auth.read_open => next.run(request).await,
        Ok(None) => refusal(
            StatusCode::UNAUTHORIZED,
            "authentication required: use a token (TESTFLEET_TOKEN), a user and password (TESTFLEET_USER, TESTFLEET_PASSWORD), or an allowed address",
        ),
        Err(e) => {
            let message = match e {
                AuthError::Missing => "authentication required",
                AuthError::Invalid(m) | AuthError::Forbidden(m) => m,
            };
            if let Some(ip) = ip {
                let delay = limiter.failed(ip);
                if !delay.is_zero() {
                    tracing::warn!(%ip, "repeated failed authentication; slowing down by {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
            tracing::info!(peer = ?ip, "refused: {message}");
            refusal(StatusCode::UNAUTHORIZED, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let hash = hash_secret("hunter2").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("hunter2", &hash));
        assert!(!verify_secret("hunter3", &hash));
        assert!(!verify_secret("hunter2", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), ha);
        assert_eq!(ha.len(), 64);
    }

    #[test]
    fn failures_slow_down_after_a_few() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..5 {
            assert!(l.failed(ip).is_zero());
        }
        assert_eq!(l.failed(ip), Duration::from_millis(200));
        assert_eq!(l.failed(ip), Duration::from_millis(400));
        l.succeeded(ip);
        assert!(l.failed(ip).is_zero());
    }
}
