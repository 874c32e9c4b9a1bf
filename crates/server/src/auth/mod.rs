//! Who may write: CIDR allow-list, users (argon2, HTTP Basic; HA1 values for
//! HTTP Digest, RFC 7616) and API tokens (SHA-256, `Authorization: Bearer`).
//! Reading is open unless configured otherwise. Failed attempts are slowed
//! down per address.
//!
//! Secrets never reach a log: only names, addresses and outcomes do.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ipnet::IpNet;
use testfleet_wire::api::ErrorBody;

use crate::coordinator::Coordinator;

mod agent;
mod digest;
mod hash;
mod state;

pub use agent::{AgentAuthError, check_agent_secret};
pub use digest::{
    DigestAlgorithm, DigestCounts, MalformedDigest, NonceCheck, NonceKey, digest_ha1,
    digest_response, parse_auth_params,
};
pub use hash::{
    HashError, hash_secret, new_secret, new_token, token_hash, user_record, verify_secret,
};
pub use state::{AuthState, FailureLimiter};

use digest::{identify_digest, unix_now};

/// Access rules.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Anyone may read (GET); else reading needs the same as writing.
    pub read_open: bool,
    /// Addresses allowed to write without credentials.
    pub allowed_cidrs: Vec<IpNet>,
    /// The realm of the Basic and Digest challenges. Digest HA1 values are
    /// bound to it: changing it means resetting passwords for Digest.
    pub realm: String,
    /// How long a Digest nonce is good for; after that the client is told
    /// `stale=true` and retries with a fresh one.
    pub digest_nonce_lifetime: Duration,
    /// Signs Digest nonces: random at each start (nonces need no storage),
    /// or derived from `[server.auth] digest_key_file` so coordinators
    /// behind one load balancer accept each other's nonces.
    pub digest_key: NonceKey,
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
            realm: DEFAULT_REALM.to_owned(),
            digest_nonce_lifetime: Duration::from_secs(300),
            digest_key: NonceKey::random(),
        }
    }
}

/// The realm unless configured.
pub const DEFAULT_REALM: &str = "testfleet";

/// A realm that cannot be sent inside a challenge's quoted string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a usable realm (1 to 100 printable ASCII characters, no quotes or backslashes)"
)]
pub struct InvalidRealm(pub String);

/// Checks a configured realm: it is sent inside a quoted string.
pub fn validate_realm(realm: &str) -> Result<(), InvalidRealm> {
    if realm.is_empty()
        || realm.len() > 100
        || !realm.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        || realm.contains(['"', '\\'])
    {
        return Err(InvalidRealm(realm.to_owned()));
    }
    Ok(())
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

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credentials are missing")]
    Missing,
    /// Wrong, unknown or unusable credentials (counts as a failure).
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    #[error("{0}")]
    Forbidden(&'static str),
    /// A right Digest answer to an expired nonce: asked again with
    /// `stale=true` (not a failure).
    #[error("the Digest nonce has expired")]
    Stale,
}

impl AuthError {
    fn invalid(message: &'static str) -> AuthError {
        AuthError::Invalid(Cow::Borrowed(message))
    }
}

fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Works out who sent `method target` with `headers` from `ip`.
/// `Ok(None)`: no credentials and not an allowed address.
pub async fn identify(
    c: &Coordinator,
    method: &Method,
    target: &Uri,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Option<Identity>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::invalid("malformed Authorization header"))?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            let stored = c
                .views()
                .token_by_hash(&token_hash(token.trim()))
                .await
                .map_err(|_| AuthError::invalid("token lookup failed"))?;
            return match stored {
                Some(t) if !t.revoked => Ok(Some(Identity::Token {
                    name: t.name,
                    admin: t.admin,
                })),
                Some(_) => Err(AuthError::invalid("the token has been revoked")),
                None => Err(AuthError::invalid("unknown token")),
            };
        }
        if let Some(credentials) = value.strip_prefix("Digest ") {
            return identify_digest(c, method, target, credentials).await;
        }
        if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(AuthError::invalid("malformed Basic credentials"))?;
            let (name, password) = decoded
                .split_once(':')
                .ok_or(AuthError::invalid("malformed Basic credentials"))?;
            let user = c
                .views()
                .user(name)
                .await
                .map_err(|_| AuthError::invalid("user lookup failed"))?;
            let Some(user) = user else {
                return Err(AuthError::invalid("wrong user or password"));
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
                Err(AuthError::invalid("wrong user or password"))
            };
        }
        return Err(AuthError::invalid(
            "unsupported Authorization scheme (use Basic, Digest or Bearer)",
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

/// The `WWW-Authenticate` challenges of a 401: Digest with SHA-256 (first:
/// preferred), Digest with MD5, then Basic. `stale`: the client's Digest
/// answer was right but its nonce expired.
pub fn challenges(auth: &AuthConfig, stale: bool) -> Vec<HeaderValue> {
    let realm = &auth.realm;
    let nonce = auth.digest_key.nonce_at(realm, unix_now());
    let stale = if stale { ", stale=true" } else { "" };
    ["SHA-256", "MD5"]
        .iter()
        .map(|algorithm| {
            format!(
                "Digest realm=\"{realm}\", qop=\"auth\", algorithm={algorithm}, nonce=\"{nonce}\"{stale}"
            )
        })
        .chain([format!("Basic realm=\"{realm}\"")])
        .filter_map(|v| HeaderValue::from_str(&v).ok())
        .collect()
}

fn refusal(auth: &AuthConfig, status: StatusCode, message: &str, stale: bool) -> Response {
    let body = ErrorBody {
        error: message.to_owned(),
        field: None,
        line: None,
        column: None,
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        for challenge in challenges(auth, stale) {
            response
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, challenge);
        }
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
    let result = identify(&c, request.method(), request.uri(), request.headers(), ip).await;
    let limiter = &c.auth;
    let auth = &c.config.auth;
    match result {
        Ok(Some(identity)) => {
            if let Some(ip) = ip {
                limiter.succeeded(ip);
            }
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Ok(None) if is_read && c.config.auth.read_open => next.run(request).await,
        Ok(None) => {
            let response = refusal(
                auth,
                StatusCode::UNAUTHORIZED,
                "authentication required: use a token (TESTFLEET_TOKEN), a user and password (TESTFLEET_USER, TESTFLEET_PASSWORD), or an allowed address",
                false,
            );
            drain_body(request, response).await
        }
        Err(AuthError::Stale) => {
            let response = refusal(
                auth,
                StatusCode::UNAUTHORIZED,
                "the Digest nonce has expired; retry with the new one",
                true,
            );
            drain_body(request, response).await
        }
        Err(e) => {
            let message: Cow<'static, str> = match e {
                AuthError::Missing => "authentication required".into(),
                AuthError::Invalid(m) => m,
                AuthError::Forbidden(m) => m.into(),
                AuthError::Stale => "the Digest nonce has expired".into(),
            };
            if let Some(ip) = ip {
                let delay = limiter.failed(ip);
                if !delay.is_zero() {
                    tracing::warn!(%ip, "repeated failed authentication; slowing down by {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
            tracing::info!(peer = ?ip, "refused: {message}");
            let response = refusal(auth, StatusCode::UNAUTHORIZED, &message, false);
            drain_body(request, response).await
        }
    }
}

/// Reads the rest of a refused request's body (up to a small limit), so the
/// client can answer the challenge on the same connection, as Digest and
/// Basic clients do. A body not read by then (too big, too slow, or held
/// back behind `Expect: 100-continue`) makes the answer close the
/// connection, so the client does not reuse a connection the server drops.
async fn drain_body(request: Request, mut response: Response) -> Response {
    const DRAIN_LIMIT: usize = 256 * 1024;
    const DRAIN_TIME: Duration = Duration::from_secs(5);
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let drained = !expects_continue
        && matches!(
            tokio::time::timeout(
                DRAIN_TIME,
                axum::body::to_bytes(request.into_body(), DRAIN_LIMIT)
            )
            .await,
            Ok(Ok(_))
        );
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_checked() {
        assert!(validate_realm("testfleet").is_ok());
        assert!(validate_realm("ci fleet@example.org").is_ok());
        assert!(validate_realm("").is_err());
        assert!(validate_realm("a\"b").is_err());
        assert!(validate_realm("a\nb").is_err());
        assert_eq!(
            validate_realm("a\"b").unwrap_err().to_string(),
            "`a\"b` is not a usable realm (1 to 100 printable ASCII characters, no quotes or backslashes)"
        );
    }
}
