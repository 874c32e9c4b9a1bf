//! The HTTP layer the bots' API clients share: the token, retries, rate
//! limits and pagination of GitLab's and GitHub's REST APIs.
//!
//! Lists follow the `Link` header's `rel="next"` (both hosts), else GitLab's
//! `X-Next-Page`. A rate limit is waited out: a 429, or a 403 that says it is
//! one (`Retry-After`, or `X-RateLimit-Remaining: 0` on GitHub), waits as
//! `Retry-After` (seconds) or the reset header (`RateLimit-Reset` on GitLab,
//! `X-RateLimit-Reset` on GitHub: a Unix time) says. A 5xx is retried with a
//! doubling back-off, both a bounded number of times; a call that is not
//! idempotent (posting a note) is not retried on a 5xx. Other 401 and 403
//! are [`ApiError::Unauthorized`], which pauses the bot. The token is never
//! logged: [`Token`]'s `Debug` hides it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most items either host gives in one page.
const PER_PAGE: &str = "100";
/// A guard against a server whose `next` links never end.
const MAX_PAGES: usize = 1000;

/// An access token; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token read from a file or the environment (surrounding
    /// whitespace removed).
    pub fn new(token: &str) -> Token {
        Token(token.trim().to_owned())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// How often and how long a client retries a rate limit or a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The first back-off after a 5xx (or a rate limit without a wait
    /// header); doubled after each further failure.
    pub backoff: Duration,
    /// The longest wait accepted from `Retry-After` or a reset header (and
    /// the back-off's cap).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// The code-review host a client talks to: its name in messages, how the
/// token is sent and what a refused token should make the user check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    GitLab,
    GitHub,
}

impl Host {
    /// The name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Host::GitLab => "GitLab",
            Host::GitHub => "GitHub",
        }
    }

    /// What to check when the token is refused.
    fn token_hint(self) -> &'static str {
        match self {
            Host::GitLab => "check the bot's token and its `api` scope",
            Host::GitHub => {
                "check the bot's token and its permissions (issues and pull requests: write; checks and commit statuses: read)"
            }
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call to a code-review host failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401, or a 403 that is not a rate limit: the token is missing, wrong,
    /// expired or lacks a permission. The bot pauses until its
    /// configuration is fixed.
    #[error("{host} refused the token ({status} on {method} {path}): {hint}; the bot is paused", hint = host.token_hint())]
    Unauthorized {
        host: Host,
        status: u16,
        method: Method,
        path: String,
    },
    /// Another error status (such as 404 for an unknown project).
    #[error("{host} answered {status} on {method} {path}: {message}")]
    Status {
        host: Host,
        status: u16,
        method: Method,
        path: String,
        message: String,
    },
    /// A 5xx to a call that is not idempotent (posting a note): it may have
    /// been applied, so it is not retried; the caller looks before posting
    /// again.
    #[error(
        "{host} answered {status} on {method} {path}; it may have been applied, so it was not retried"
    )]
    Unconfirmed {
        host: Host,
        status: u16,
        method: Method,
        path: String,
    },
    /// Still rate-limited or 5xx after every attempt the policy allows.
    #[error("{host} still answered {status} on {method} {path} after {attempts} attempts")]
    RetriesExhausted {
        host: Host,
        status: u16,
        method: Method,
        path: String,
        attempts: u32,
    },
    /// The request could not be sent or its answer not read.
    #[error("failed to reach {host} for {method} {path}")]
    Transport {
        host: Host,
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the documented JSON.
    #[error("failed to read {host}'s answer to {method} {path}")]
    Decode {
        host: Host,
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The configured API URL is not an absolute http(s) URL.
    #[error("the {host} API URL `{url}` is not an absolute http(s) URL")]
    BadUrl { host: Host, url: String },
    /// The configured project is not of the host's form.
    #[error("the {host} project `{project}` is not {expected}")]
    BadProject {
        host: Host,
        project: String,
        expected: &'static str,
    },
    /// A `Link` header's next-page URL could not be read.
    #[error("{host}'s next-page link `{link}` is not a URL")]
    BadLink { host: Host, link: String },
}

impl ApiError {
    /// Whether the error means the token is refused (the bot pauses).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ApiError::Unauthorized { .. })
    }

    /// The HTTP status of an error answer, if the host gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { status, .. }
            | ApiError::Status { status, .. }
            | ApiError::Unconfirmed { status, .. }
            | ApiError::RetriesExhausted { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A REST client of one host: the API root, the token and the policy.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    host: Host,
    /// The API root without a trailing `/` (`https://gitlab.example.com/api/v4`,
    /// `https://api.github.com`).
    root: String,
    token: Token,
    retry: RetryPolicy,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("host", &self.host)
            .field("root", &self.root)
            .field("token", &self.token)
            .finish()
    }
}

/// One answer: its headers and body.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl ApiClient {
    /// A client of the API at `root` (an absolute http(s) URL; a trailing
    /// `/` is dropped).
    pub fn new(
        http: reqwest::Client,
        host: Host,
        root: &str,
        token: Token,
        retry: RetryPolicy,
    ) -> Result<ApiClient, ApiError> {
        let trimmed = root.trim().trim_end_matches('/');
        let ok = reqwest::Url::parse(trimmed)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .unwrap_or(false);
        if !ok {
            return Err(ApiError::BadUrl {
                host,
                url: root.to_owned(),
            });
        }
        Ok(ApiClient {
            http,
            host,
            root: trimmed.to_owned(),
            token,
            retry,
        })
    }

    /// `GET path` decoded.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let answer = self
            .call(Method::GET, path, query, None::<&()>, true)
            .await?;
        self.decode(&Method::GET, path, &answer.body)
    }

    /// A call with a JSON body, decoded. `idempotent`: retried on a 5xx
    /// (an edit); otherwise not ([`ApiError::Unconfirmed`]).
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        idempotent: bool,
    ) -> Result<T, ApiError> {
        let answer = self
            .call(method.clone(), path, &[], Some(body), idempotent)
            .await?;
        self.decode(&method, path, &answer.body)
    }

    /// A `DELETE` whose answer is not read.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, path, &[], None::<&()>, true)
            .await
            .map(|_| ())
    }

    /// Every page of a list.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        query.push(("per_page".to_owned(), PER_PAGE.to_owned()));
        let mut path = path.to_owned();
        for _ in 0..MAX_PAGES {
            let pairs: Vec<(&str, &str)> = query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let answer = self
                .call(Method::GET, &path, &pairs, None::<&()>, true)
                .await?;
            let page: Vec<T> = self.decode(&Method::GET, &path, &answer.body)?;
            let empty = page.is_empty();
            items.extend(page);
            if empty {
                break;
            }
            if let Some(next) = next_link(&answer.headers) {
                let (next_path, next_query) = self.split_link(&next)?;
                path = next_path;
                query = next_query;
            } else if let Some(page) = header(&answer.headers, "x-next-page")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
            {
                query.retain(|(k, _)| k != "page");
                query.push(("page".to_owned(), page));
            } else {
                break;
            }
        }
        Ok(items)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|source| ApiError::Decode {
            host: self.host,
            method: method.clone(),
            path: path.to_owned(),
            source,
        })
    }

    /// A `Link` URL as a path under the API root and its query pairs. The
    /// link's own scheme and host are not used: a host behind a proxy may
    /// name itself differently (`localhost` for `127.0.0.1`, its public
    /// name), and the token goes only to the configured URL.
    fn split_link(&self, link: &str) -> Result<(String, Vec<(String, String)>), ApiError> {
        let url = reqwest::Url::parse(link)
            .or_else(|_| reqwest::Url::parse(&self.root).and_then(|base| base.join(link)))
            .map_err(|_| ApiError::BadLink {
                host: self.host,
                link: link.to_owned(),
            })?;
        let base = reqwest::Url::parse(&self.root).map_err(|_| ApiError::BadUrl {
            host: self.host,
            url: self.root.clone(),
        })?;
        if url.origin() != base.origin() {
            tracing::debug!(
                link,
                "{} named another origin in a next-page link; following its path on the configured URL",
                self.host
            );
        }
        let prefix = base.path().trim_end_matches('/');
        let path = url.path();
        let path = path.strip_prefix(prefix).unwrap_or(path).to_owned();
        let query = url.query_pairs().into_owned().collect();
        Ok((path, query))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header(
            reqwest::header::USER_AGENT,
            concat!("testfleet/", env!("CARGO_PKG_VERSION")),
        );
        match self.host {
            Host::GitLab => request.header("PRIVATE-TOKEN", &self.token.0),
            Host::GitHub => request
                .bearer_auth(&self.token.0)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
        }
    }

    /// One call, retried on rate limits and (when `idempotent`) on 5xx as
    /// the policy allows.
    async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
        idempotent: bool,
    ) -> Result<Answer, ApiError> {
        let url = format!("{}{path}", self.root);
        let host = self.host;
        let mut backoff = self.retry.backoff;
        let attempts = self.retry.max_attempts.max(1);
        let mut last_status = 0;
        for attempt in 1..=attempts {
            let mut request = self
                .authorize(self.http.request(method.clone(), &url))
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let transport = |source| ApiError::Transport {
                host,
                method: method.clone(),
                path: path.to_owned(),
                source,
            };
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let headers = response.headers().clone();
            if status.is_success() {
                let body = response.bytes().await.map_err(transport)?.to_vec();
                return Ok(Answer { headers, body });
            }
            last_status = status.as_u16();
            let limited = is_rate_limit(status, &headers);
            if !limited && (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) {
                return Err(ApiError::Unauthorized {
                    host,
                    status: last_status,
                    method,
                    path: path.to_owned(),
                });
            }
            if status.is_server_error() && !idempotent {
                return Err(ApiError::Unconfirmed {
                    host,
                    status: last_status,
                    method,
                    path: path.to_owned(),
                });
            }
            if !limited && !status.is_server_error() {
                let text = response.text().await.unwrap_or_default();
                return Err(ApiError::Status {
                    host,
                    status: last_status,
                    method,
                    path: path.to_owned(),
                    message: error_message(&text),
                });
            }
            if attempt == attempts {
                break;
            }
            let wait = if limited {
                rate_limit_wait(&headers, SystemTime::now()).unwrap_or(backoff)
            } else {
                backoff
            };
            let wait = wait.min(self.retry.max_wait);
            tracing::warn!(
                "{host} answered {status} on {method} {path}; retrying in {} ms (attempt {attempt} of {attempts})",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_wait);
        }
        Err(ApiError::RetriesExhausted {
            host,
            status: last_status,
            method,
            path: path.to_owned(),
            attempts,
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A 429; or a 403 that says it is a rate limit (GitHub answers its
/// primary limit with 403 and `X-RateLimit-Remaining: 0`, its secondary
/// limits with 403 or 429 and `Retry-After`).
fn is_rate_limit(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (header(headers, "retry-after").is_some()
                || header(headers, "x-ratelimit-remaining") == Some("0")))
}

/// Both hosts' error bodies are `{"message": …}` (GitLab also `{"error":
/// …}`); GitLab's message may itself be an object of field errors.
fn error_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        message: Option<serde_json::Value>,
        error: Option<String>,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(Body {
            message: Some(serde_json::Value::String(m)),
            ..
        }) => m,
        Ok(Body {
            message: Some(m), ..
        }) => m.to_string(),
        Ok(Body { error: Some(e), .. }) => e,
        _ => text.chars().take(200).collect(),
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = header(headers, "link")?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let url = url.strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

/// How long a rate limit asks to wait: `Retry-After` in seconds (neither
/// host sends an HTTP date), else the reset header as a Unix time
/// (`RateLimit-Reset` on GitLab, `X-RateLimit-Reset` on GitHub).
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = header(headers, "ratelimit-reset")
        .or_else(|| header(headers, "x-ratelimit-reset"))
        .and_then(|v| v.parse::<u64>().ok())?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// Percent-encodes a path segment (a project path's `/` becomes `%2F`, a
/// label's space `%20`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    #[test]
    fn paths_are_encoded_as_one_segment() {
        assert_eq!(
            encode_segment("group/sub/my.project"),
            "group%2Fsub%2Fmy.project"
        );
        assert_eq!(encode_segment("42"), "42");
        assert_eq!(encode_segment("needs bench"), "needs%20bench");
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://g/api/v4/x?page=1>; rel=\"prev\", <https://g/api/v4/x?page=3>; rel=\"next\", <https://g/api/v4/x?page=9>; rel=\"last\"",
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://g/api/v4/x?page=3"));
        h.insert(
            "link",
            HeaderValue::from_static("<https://g/x?page=9>; rel=\"last\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn rate_limits_wait_as_the_headers_say() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("1007"));
        assert_eq!(rate_limit_wait(&h, now), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(rate_limit_wait(&h, now), Some(Duration::from_secs(3)));
        assert_eq!(rate_limit_wait(&HeaderMap::new(), now), None);
        let mut gh = HeaderMap::new();
        gh.insert("x-ratelimit-reset", HeaderValue::from_static("1012"));
        assert_eq!(rate_limit_wait(&gh, now), Some(Duration::from_secs(12)));
    }

    #[test]
    fn a_403_is_a_rate_limit_only_when_it_says_so() {
        let mut h = HeaderMap::new();
        assert!(!is_rate_limit(StatusCode::FORBIDDEN, &h));
        assert!(is_rate_limit(StatusCode::TOO_MANY_REQUESTS, &h));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert!(is_rate_limit(StatusCode::FORBIDDEN, &h));
        let mut secondary = HeaderMap::new();
        secondary.insert("retry-after", HeaderValue::from_static("60"));
        assert!(is_rate_limit(StatusCode::FORBIDDEN, &secondary));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
        assert!(!is_rate_limit(StatusCode::FORBIDDEN, &h));
    }

    #[test]
    fn the_token_is_never_shown() {
        let token = Token::new(" glpat-secret \n");
        assert_eq!(format!("{token:?}"), "Token(***)");
        let client = ApiClient::new(
            http(),
            Host::GitLab,
            "https://gitlab.example.com/api/v4/",
            token,
            RetryPolicy::default(),
        )
        .expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("glpat-secret"), "{shown}");
        assert!(shown.contains("/api/v4"), "{shown}");
    }

    #[test]
    fn next_links_are_followed_on_the_configured_url() {
        let client = ApiClient::new(
            http(),
            Host::GitLab,
            "http://127.0.0.1:8080/api/v4",
            Token::new("t"),
            RetryPolicy::default(),
        )
        .expect("client");
        let pairs = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        for link in [
            "http://127.0.0.1:8080/api/v4/projects/7/notes?page=2&per_page=100",
            "http://localhost:8080/api/v4/projects/7/notes?page=2&per_page=100",
            "https://gitlab.example.com/api/v4/projects/7/notes?page=2&per_page=100",
            "/api/v4/projects/7/notes?page=2&per_page=100",
        ] {
            let (path, query) = client.split_link(link).expect(link);
            assert_eq!(path, "/projects/7/notes", "{link}");
            assert_eq!(
                query,
                pairs(&[("page", "2"), ("per_page", "100")]),
                "{link}"
            );
        }
    }

    #[test]
    fn a_bad_api_url_is_refused() {
        let err = ApiClient::new(
            http(),
            Host::GitHub,
            "api.github.com",
            Token::new("t"),
            RetryPolicy::default(),
        )
        .err();
        assert!(matches!(err, Some(ApiError::BadUrl { .. })), "{err:?}");
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(shown.contains("GitHub API URL `api.github.com`"), "{shown}");
    }
}
