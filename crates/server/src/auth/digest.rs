//! HTTP Digest authentication (RFC 7616): signed stateless nonces, HA1
//! values, parsing of the `Authorization` auth-params, the expected
//! `response`, and per-(nonce, cnonce) counts that refuse replays.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, Uri};
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use super::{AuthError, Identity};
use crate::coordinator::Coordinator;

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

    /// The key every coordinator derives from the same shared secret
    /// (`[server.auth] digest_key_file`), so that a nonce one of them
    /// issued is good on the others behind one load balancer.
    pub fn from_secret(secret: &[u8]) -> NonceKey {
        let mut hash = Sha256::new();
        hash.update(b"testfleet digest nonce key\0");
        hash.update(secret);
        NonceKey(hash.finalize().into())
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

pub(super) fn unix_now() -> u64 {
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

/// Digest credentials that are not a list of auth-params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Digest credentials")]
pub struct MalformedDigest;

/// The auth-params of a Digest header: lowercase keys, unquoted values.
pub type AuthParams = HashMap<String, String>;

/// Splits the auth-params of a Digest `Authorization` header
/// (`key=token` or `key="quoted \"string\""`, comma separated) into
/// lowercase keys and unquoted values.
pub fn parse_auth_params(input: &str) -> Result<AuthParams, MalformedDigest> {
    const MALFORMED: MalformedDigest = MalformedDigest;
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
pub(super) async fn identify_digest(
    c: &Coordinator,
    method: &Method,
    target: &Uri,
    credentials: &str,
) -> Result<Option<Identity>, AuthError> {
    let auth = &c.config.auth;
    let p = parse_auth_params(credentials)
        .map_err(|e| AuthError::Invalid(Cow::Owned(e.to_string())))?;
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
        .views()
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
        .auth
        .digest_counts()
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn coordinators_sharing_a_secret_accept_each_others_nonces() {
        let life = Duration::from_secs(300);
        let a = NonceKey::from_secret(b"shared by the coordinators");
        let b = NonceKey::from_secret(b"shared by the coordinators");
        let nonce = a.nonce_at("r", 1_000_000);
        assert_eq!(b.check("r", &nonce, 1_000_100, life), NonceCheck::Fresh);
        let other = NonceKey::from_secret(b"another secret");
        assert_eq!(
            other.check("r", &nonce, 1_000_100, life),
            NonceCheck::Invalid
        );
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
}
