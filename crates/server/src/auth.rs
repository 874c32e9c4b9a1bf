//! Who may write: CIDR allow-list, users (argon2, HTTP Basic; HA1 values for
//! HTTP Digest, RFC 7616) and API tokens (SHA-256, `Authorization: Bearer`).
//! Reading is open unless configured otherwise. Failed attempts are slowed
//! down per address.
//!
//! Secrets never reach a log: only names, addresses and outcomes do.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use md5::Md5;
use sha2::{Digest, Sha256};
use testfleet_store::StoredUser;
use testfleet_wire::api::ErrorBody;

use crate::coordinator::Coordinator;

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
    /// Signs Digest nonces (random at each start: nonces need no storage).
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

/// Checks a configured realm: it is sent inside a quoted string.
pub fn validate_realm(realm: &str) -> Result<(), String> {
    if realm.is_empty()
        || realm.len() > 100
        || !realm.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        || realm.contains(['"', '\\'])
    {
        return Err(format!(
            "`{realm}` is not a usable realm (1 to 100 printable ASCII characters, no quotes or backslashes)"
        ));
    }
    Ok(())
}

/// The key Digest nonces are signed with. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// The highest Digest `nc` seen per (nonce, cnonce): a request whose `nc`
/// is not above it is a replay. Keyed with the client's cnonce because
/// nonces are stateless and two clients challenged in the same second share
/// one. Entries go once their nonce would be stale anyway.
#[derive(Debug, Default)]
pub struct DigestCounts {
    seen: Mutex<HashMap<(String, String), (u32, u64)>>,
}

/// Entries kept before expired ones are swept.
const DIGEST_COUNTS_SWEEP: usize = 10_000;

impl DigestCounts {
    /// Records `nc` for this nonce and cnonce; false for a replay (an `nc`
    /// not above the last one accepted).
    pub fn advance(
        &self,
        nonce: &str,
        cnonce: &str,
        nc: u32,
        now: u64,
        lifetime: Duration,
    ) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= DIGEST_COUNTS_SWEEP {
            seen.retain(|_, (_, expires)| *expires > now);
        }
        let expires = now + lifetime.as_secs();
        match seen.entry((nonce.to_owned(), cnonce.to_owned())) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if nc <= e.get().0 {
                    return false;
                }
                *e.get_mut() = (nc, expires);
                true
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((nc, expires));
                true
            }
        }
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Ours, but older than the lifetime.
    Stale,
    /// Not ours, malformed, or from the future.
    Invalid,
}

impl NonceKey {
    /// A new random key.
    pub fn random() -> NonceKey {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness: std's hasher keys are the next best source.
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0),
                );
                chunk.copy_from_slice(&h.finish().to_le_bytes());
            }
        }
        NonceKey(key)
    }

    fn mac(&self, realm: &str, issued: u64) -> [u8; 16] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"testfleet digest nonce\0");
        mac.update(&issued.to_be_bytes());
        mac.update(realm.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A nonce issued at `issued` (Unix seconds): the time and its MAC, hex.
    pub fn nonce_at(&self, realm: &str, issued: u64) -> String {
        format!(
            "{}{}",
            hex::encode(issued.to_be_bytes()),
            hex::encode(self.mac(realm, issued))
        )
    }

    /// Checks a nonce against the key, the realm and its age at `now`.
    pub fn check(&self, realm: &str, nonce: &str, now: u64, lifetime: Duration) -> NonceCheck {
        let Ok(bytes) = hex::decode(nonce) else {
            return NonceCheck::Invalid;
        };
        if bytes.len() != 24 {
            return NonceCheck::Invalid;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&bytes[..8]);
        let issued = u64::from_be_bytes(issued);
        if !constant_time_eq(&self.mac(realm, issued), &bytes[8..]) {
            return NonceCheck::Invalid;
        }
        if issued > now.saturating_add(60) {
            return NonceCheck::Invalid;
        }
        if now.saturating_sub(issued) > lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Compares without an early exit, so timing does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Digest hash algorithms (RFC 7616 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    /// From the `algorithm` parameter (case-insensitive); absent means MD5.
    pub fn parse(name: &str) -> Option<DigestAlgorithm> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(DigestAlgorithm::Md5),
            "MD5-SESS" => Some(DigestAlgorithm::Md5Sess),
            "SHA-256" => Some(DigestAlgorithm::Sha256),
            "SHA-256-SESS" => Some(DigestAlgorithm::Sha256Sess),
            _ => None,
        }
    }

    fn is_sha256(self) -> bool {
        matches!(self, DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess)
    }

    /// The hash of `data`, lowercase hex.
    pub fn hash(self, data: &str) -> String {
        if self.is_sha256() {
            hex::encode(Sha256::digest(data.as_bytes()))
        } else {
            hex::encode(Md5::digest(data.as_bytes()))
        }
    }
}

/// HA1 = H(username:realm:password) in MD5 and SHA-256, hex.
pub fn digest_ha1(user: &str, realm: &str, password: &str) -> (String, String) {
    let a1 = format!("{user}:{realm}:{password}");
    (
        DigestAlgorithm::Md5.hash(&a1),
        DigestAlgorithm::Sha256.hash(&a1),
    )
}

/// A user record for `password`: its argon2 hash and its Digest HA1 values
/// for `realm`, computed together so they always match.
pub fn user_record(
    name: &str,
    password: &str,
    admin: bool,
    realm: &str,
) -> Result<StoredUser, String> {
    let (md5, sha256) = digest_ha1(name, realm, password);
    Ok(StoredUser {
        name: name.to_owned(),
        password_hash: hash_secret(password)?,
        admin,
        digest_realm: Some(realm.to_owned()),
        digest_ha1_md5: Some(md5),
        digest_ha1_sha256: Some(sha256),
    })
}

/// Splits the auth-params of a Digest `Authorization` header
/// (`key=token` or `key="quoted \"string\""`, comma separated) into
/// lowercase keys and unquoted values.
pub fn parse_auth_params(input: &str) -> Result<HashMap<String, String>, &'static str> {
    const MALFORMED: &str = "malformed Digest credentials";
    let mut params = HashMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c == ',' || c == '"' {
                return Err(MALFORMED);
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(MALFORMED);
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(MALFORMED);
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or(MALFORMED)?),
                    Some(c) => value.push(c),
                    None => return Err(MALFORMED),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek().is_some_and(|c| *c != ',') {
                return Err(MALFORMED);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        if params.len() >= 32 || params.insert(key, value).is_some() {
            return Err(MALFORMED);
        }
    }
    Ok(params)
}

/// The `response` a client computes (RFC 7616 §3.4.1, qop=auth), from the
/// stored HA1.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    algorithm: DigestAlgorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha1 = match algorithm {
        DigestAlgorithm::Md5Sess | DigestAlgorithm::Sha256Sess => {
            algorithm.hash(&format!("{ha1}:{nonce}:{cnonce}"))
        }
        _ => ha1.to_owned(),
    };
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
}

/// Whether the `uri` of a Digest answer names the request's target.
fn digest_uri_matches(given: &str, target: &Uri) -> bool {
    let Some(path_and_query) = target.path_and_query() else {
        return false;
    };
    if given == path_and_query.as_str() {
        return true;
    }
    // Absolute form (through a proxy): compare its path and query.
    given
        .parse::<Uri>()
        .ok()
        .filter(|u| u.scheme().is_some())
        .and_then(|u| {
            u.path_and_query()
                .map(|p| p.as_str() == path_and_query.as_str())
        })
        .unwrap_or(false)
}

/// Checks a Digest `Authorization` header (everything after `Digest `).
async fn identify_digest(
    c: &Coordinator,
    method: &Method,
    target: &Uri,
    credentials: &str,
) -> Result<Option<Identity>, AuthError> {
    let auth = &c.config.auth;
    let p = parse_auth_params(credentials).map_err(AuthError::invalid)?;
    let get = |key: &'static str| -> Result<&str, AuthError> {
        p.get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AuthError::Invalid(format!("missing `{key}` in Digest credentials").into())
            })
    };
    if p.contains_key("username*") {
        return Err(AuthError::invalid(
            "Digest `username*` is not supported; use a plain user name",
        ));
    }
    if p.get("userhash")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(AuthError::invalid("Digest `userhash` is not supported"));
    }
    let name = get("username")?;
    if get("realm")? != auth.realm {
        return Err(AuthError::Invalid(
            format!("wrong Digest realm (expected `{}`)", auth.realm).into(),
        ));
    }
    let algorithm = match p.get("algorithm") {
        None => DigestAlgorithm::Md5,
        Some(a) => DigestAlgorithm::parse(a).ok_or(AuthError::invalid(
            "unsupported Digest algorithm (use SHA-256 or MD5)",
        ))?,
    };
    if !get("qop")?.eq_ignore_ascii_case("auth") {
        return Err(AuthError::invalid("unsupported Digest qop (use `auth`)"));
    }
    let nc = get("nc")?;
    if nc.len() != 8 || !nc.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AuthError::invalid("malformed Digest `nc`"));
    }
    let cnonce = get("cnonce")?;
    let uri = get("uri")?;
    if !digest_uri_matches(uri, target) {
        return Err(AuthError::invalid(
            "the Digest `uri` does not match the request",
        ));
    }
    let nonce = get("nonce")?;
    let freshness =
        auth.digest_key
            .check(&auth.realm, nonce, unix_now(), auth.digest_nonce_lifetime);
    if freshness == NonceCheck::Invalid {
        return Err(AuthError::invalid(
            "invalid Digest nonce (not issued by this coordinator)",
        ));
    }
    let given = get("response")?.to_ascii_lowercase();
    let user = c
        .store
        .user(name)
        .await
        .map_err(|_| AuthError::invalid("user lookup failed"))?;
    let Some(user) = user else {
        return Err(AuthError::invalid("wrong user or password"));
    };
    let ha1 = if algorithm.is_sha256() {
        &user.digest_ha1_sha256
    } else {
        &user.digest_ha1_md5
    };
    let (Some(ha1), true) = (
        ha1,
        user.digest_realm.as_deref() == Some(auth.realm.as_str()),
    ) else {
        return Err(AuthError::Invalid(
            format!(
                "user `{name}` has no Digest credentials for realm `{}` (its password was set before Digest support or for another realm): reset it with `testfleet users add {name}`, or use Basic",
                auth.realm
            )
            .into(),
        ));
    };
    let expected = digest_response(
        algorithm,
        ha1,
        nonce,
        nc,
        cnonce,
        "auth",
        method.as_str(),
        uri,
    );
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(AuthError::invalid("wrong user or password"));
    }
    if freshness == NonceCheck::Stale {
        return Err(AuthError::Stale);
    }
    // A right answer seen before is a replay (or a request that overtook a
    // later one): answered like a stale nonce, so an honest client retries
    // with a fresh one and a replayer gets nothing.
    let count = u32::from_str_radix(nc, 16).unwrap_or(0);
    if !c
        .digest_counts
        .advance(nonce, cnonce, count, unix_now(), auth.digest_nonce_lifetime)
    {
        tracing::warn!(user = %user.name, "Digest nonce count reused (replay?)");
        return Err(AuthError::Stale);
    }
    Ok(Some(Identity::User {
        name: user.name,
        admin: user.admin,
    }))
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
    /// Wrong, unknown or unusable credentials (counts as a failure).
    Invalid(Cow<'static, str>),
    Forbidden(&'static str),
    /// A right Digest answer to an expired nonce: asked again with
    /// `stale=true` (not a failure).
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
                .store
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
                .store
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
    let limiter = &c.auth_failures;
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

    #[test]
    fn digest_responses_match_rfc_7616_examples() {
        // RFC 7616 §3.9.1.
        let (md5, sha256) = digest_ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let uri = "/dir/index.html";
        assert_eq!(
            digest_response(
                DigestAlgorithm::Md5,
                &md5,
                nonce,
                "00000001",
                cnonce,
                "auth",
                "GET",
                uri
            ),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            digest_response(
                DigestAlgorithm::Sha256,
                &sha256,
                nonce,
                "00000001",
                cnonce,
                "auth",
                "GET",
                uri
            ),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn digest_params_parse_quoted_and_tokens_and_refuse_junk() {
        let p = parse_auth_params(
            r#"username="Mu\"fasa", realm="a, b", nc=00000001 , qop=auth,algorithm=SHA-256"#,
        )
        .unwrap();
        assert_eq!(p["username"], "Mu\"fasa");
        assert_eq!(p["realm"], "a, b");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["algorithm"], "SHA-256");
        for junk in [
            "username",
            r#"username="open"#,
            r#"username="a"x, realm=b"#,
            "a=1, a=2",
            "=x",
            "user name=x",
        ] {
            assert!(parse_auth_params(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn nonces_are_signed_and_expire() {
        let key = NonceKey::random();
        let life = Duration::from_secs(300);
        let nonce = key.nonce_at("r", 1_000_000);
        assert_eq!(key.check("r", &nonce, 1_000_100, life), NonceCheck::Fresh);
        assert_eq!(key.check("r", &nonce, 1_000_301, life), NonceCheck::Stale);
        assert_eq!(
            key.check("other", &nonce, 1_000_100, life),
            NonceCheck::Invalid
        );
        assert_eq!(
            NonceKey::random().check("r", &nonce, 1_000_100, life),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check("r", &nonce, 999_000, life),
            NonceCheck::Invalid,
            "from the future"
        );
        let mut tampered = nonce.clone().into_bytes();
        tampered[15] = if tampered[15] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            key.check("r", &tampered, 1_000_100, life),
            NonceCheck::Invalid
        );
        assert_eq!(key.check("r", "zz", 1_000_100, life), NonceCheck::Invalid);
        assert_eq!(format!("{key:?}"), "NonceKey(..)");
    }

    #[test]
    fn uri_must_name_the_request_target() {
        let target: Uri = "/api/v1/jobs?x=1".parse().unwrap();
        assert!(digest_uri_matches("/api/v1/jobs?x=1", &target));
        assert!(digest_uri_matches("http://h:1/api/v1/jobs?x=1", &target));
        assert!(!digest_uri_matches("/api/v1/jobs", &target));
        assert!(!digest_uri_matches("/api/v1/jobs/1/cancel?x=1", &target));
    }

    #[test]
    fn realms_are_checked() {
        assert!(validate_realm("testfleet").is_ok());
        assert!(validate_realm("ci fleet@example.org").is_ok());
        assert!(validate_realm("").is_err());
        assert!(validate_realm("a\"b").is_err());
        assert!(validate_realm("a\nb").is_err());
    }
}
