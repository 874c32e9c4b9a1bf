//! A GitLab REST API v4 client for the merge-request bot.
//!
//! Only the calls the bot needs: open merge requests with a label (oldest
//! first), one merge request (its head pipeline and diff refs), the merge
//! base of two refs, a merge request's notes, posting and editing a note,
//! and removing a label. Every call sends the token in `PRIVATE-TOKEN`.
//!
//! Lists follow GitLab's pagination: the `Link` header's `rel="next"` when
//! present (keyset pagination gives only that), else `X-Next-Page`. A 429 is
//! waited out as `Retry-After` (seconds) or `RateLimit-Reset` (a Unix time)
//! says, a 5xx is retried with a doubling back-off, both a bounded number of
//! times; 401 and 403 are [`GitLabError::Unauthorized`], which pauses the
//! bot. The token is never logged: [`Token`]'s `Debug` hides it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The most items GitLab gives in one page.
const PER_PAGE: &str = "100";
/// A guard against a server whose `next` links never end.
const MAX_PAGES: usize = 1000;

/// A GitLab access token; its `Debug` and `Display` never show it.
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

/// How often and how long the client retries a 429 or a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The first back-off after a 5xx (or a 429 without a wait header);
    /// doubled after each further failure.
    pub backoff: Duration,
    /// The longest wait the client accepts from `Retry-After` or
    /// `RateLimit-Reset` (and the back-off's cap).
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

/// Why a GitLab call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// 401 or 403: the token is missing, wrong, expired or lacks the `api`
    /// scope. The bot pauses until its configuration is fixed.
    #[error(
        "GitLab refused the token ({status} on {method} {path}): check the bot's token and its `api` scope; the bot is paused"
    )]
    Unauthorized {
        status: u16,
        method: Method,
        path: String,
    },
    /// Another error status (such as 404 for an unknown project).
    #[error("GitLab answered {status} on {method} {path}: {message}")]
    Status {
        status: u16,
        method: Method,
        path: String,
        message: String,
    },
    /// A 5xx to a call that is not idempotent (posting a note): it may have
    /// been applied, so it is not retried; the caller looks before posting
    /// again.
    #[error(
        "GitLab answered {status} on {method} {path}; it may have been applied, so it was not retried"
    )]
    Unconfirmed {
        status: u16,
        method: Method,
        path: String,
    },
    /// Still 429 or 5xx after every attempt the policy allows.
    #[error("GitLab still answered {status} on {method} {path} after {attempts} attempts")]
    RetriesExhausted {
        status: u16,
        method: Method,
        path: String,
        attempts: u32,
    },
    /// The request could not be sent or its answer not read.
    #[error("failed to reach GitLab for {method} {path}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the documented JSON.
    #[error("failed to read GitLab's answer to {method} {path}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The configured API URL is not an absolute http(s) URL.
    #[error("the GitLab API URL `{0}` is not an absolute http(s) URL")]
    BadUrl(String),
    /// A `Link` header pointed to another host than the configured API.
    #[error("GitLab's next-page link `{0}` leaves the configured API URL")]
    ForeignLink(String),
}

impl GitLabError {
    /// Whether the error means the token is refused (the bot pauses).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, GitLabError::Unauthorized { .. })
    }
}

/// A merge request as the list endpoint gives it (no pipeline there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MergeRequestSummary {
    /// The project-scoped number (`!iid`).
    pub iid: u64,
    pub title: String,
    /// ISO 8601, as GitLab writes it.
    pub created_at: String,
    /// The head commit (null on a merge request with no commits).
    pub sha: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub web_url: String,
}

/// A pipeline as a merge request's `head_pipeline` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    /// `created`, `pending`, `running`, `success`, `failed`, `canceled`, …
    pub status: String,
    pub sha: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub web_url: Option<String>,
}

/// A merge request's diff refs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DiffRefs {
    pub base_sha: Option<String>,
    pub head_sha: Option<String>,
    pub start_sha: Option<String>,
}

/// One merge request, as `GET …/merge_requests/:iid` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MergeRequest {
    pub iid: u64,
    pub title: String,
    pub state: String,
    pub created_at: String,
    pub sha: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub web_url: String,
    pub head_pipeline: Option<Pipeline>,
    pub diff_refs: Option<DiffRefs>,
}

/// A note (comment) on a merge request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Note {
    pub id: u64,
    pub body: String,
    /// GitLab's own notes ("added 1 commit", label changes).
    #[serde(default)]
    pub system: bool,
    pub created_at: Option<String>,
}

/// A commit, as the merge base endpoint gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Commit {
    /// The full SHA.
    pub id: String,
    pub created_at: Option<String>,
}

/// A client of one GitLab project.
#[derive(Clone)]
pub struct GitLabClient {
    http: reqwest::Client,
    /// `https://gitlab.example.com` (`/api/v4` is added).
    api_url: String,
    /// The project's numeric id or its path, already percent-encoded.
    project: String,
    token: Token,
    retry: RetryPolicy,
}

impl fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLabClient")
            .field("api_url", &self.api_url)
            .field("project", &self.project)
            .field("token", &self.token)
            .finish()
    }
}

/// One answer: its status, headers and body.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitLabClient {
    /// A client of `project` (a numeric id or a path such as
    /// `group/sub/project`) on the GitLab at `api_url` (its root, such as
    /// `https://gitlab.com`; a trailing `/api/v4` is accepted).
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        project: &str,
        token: Token,
        retry: RetryPolicy,
    ) -> Result<GitLabClient, GitLabError> {
        let trimmed = api_url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/api/v4").unwrap_or(trimmed);
        let ok = reqwest::Url::parse(trimmed)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .unwrap_or(false);
        if !ok {
            return Err(GitLabError::BadUrl(api_url.to_owned()));
        }
        Ok(GitLabClient {
            http,
            api_url: trimmed.to_owned(),
            project: encode_segment(project.trim()),
            token,
            retry,
        })
    }

    fn project_path(&self) -> String {
        format!("/api/v4/projects/{}", self.project)
    }

    /// Open merge requests carrying `label`, oldest first, every page.
    pub async fn open_merge_requests(
        &self,
        label: &str,
    ) -> Result<Vec<MergeRequestSummary>, GitLabError> {
        let path = format!("{}/merge_requests", self.project_path());
        self.get_all(
            &path,
            &[
                ("state", "opened"),
                ("labels", label),
                ("order_by", "created_at"),
                ("sort", "asc"),
            ],
        )
        .await
    }

    /// One merge request, with its head pipeline and diff refs.
    pub async fn merge_request(&self, iid: u64) -> Result<MergeRequest, GitLabError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path());
        let answer = self.call(Method::GET, &path, &[], None).await?;
        decode(&Method::GET, &path, &answer.body)
    }

    /// The merge base of two refs (branch names or SHAs).
    pub async fn merge_base(&self, a: &str, b: &str) -> Result<Commit, GitLabError> {
        let path = format!("{}/repository/merge_base", self.project_path());
        let answer = self
            .call(Method::GET, &path, &[("refs[]", a), ("refs[]", b)], None)
            .await?;
        decode(&Method::GET, &path, &answer.body)
    }

    /// Every note of a merge request (GitLab's default order: newest first).
    pub async fn notes(&self, iid: u64) -> Result<Vec<Note>, GitLabError> {
        let path = format!("{}/merge_requests/{iid}/notes", self.project_path());
        self.get_all(&path, &[]).await
    }

    /// Posts a note on a merge request.
    pub async fn create_note(&self, iid: u64, body: &str) -> Result<Note, GitLabError> {
        let path = format!("{}/merge_requests/{iid}/notes", self.project_path());
        let json = serde_json::json!({ "body": body });
        let answer = self
            .call_once_on_5xx(Method::POST, &path, Some(&json))
            .await?;
        decode(&Method::POST, &path, &answer.body)
    }

    /// Replaces a note's body.
    pub async fn update_note(
        &self,
        iid: u64,
        note_id: u64,
        body: &str,
    ) -> Result<Note, GitLabError> {
        let path = format!(
            "{}/merge_requests/{iid}/notes/{note_id}",
            self.project_path()
        );
        let json = serde_json::json!({ "body": body });
        let answer = self.call(Method::PUT, &path, &[], Some(&json)).await?;
        decode(&Method::PUT, &path, &answer.body)
    }

    /// Removes `label` from a merge request.
    pub async fn remove_label(&self, iid: u64, label: &str) -> Result<MergeRequest, GitLabError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path());
        let json = serde_json::json!({ "remove_labels": label });
        let answer = self.call(Method::PUT, &path, &[], Some(&json)).await?;
        decode(&Method::PUT, &path, &answer.body)
    }

    /// Reads every page of a list.
    async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, GitLabError> {
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
            let answer = self.call(Method::GET, &path, &pairs, None).await?;
            let page: Vec<T> = decode(&Method::GET, &path, &answer.body)?;
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

    /// A `Link` URL as a path under the API and its query pairs.
    fn split_link(&self, link: &str) -> Result<(String, Vec<(String, String)>), GitLabError> {
        let url = reqwest::Url::parse(link).map_err(|_| GitLabError::ForeignLink(link.into()))?;
        let base = reqwest::Url::parse(&self.api_url)
            .map_err(|_| GitLabError::BadUrl(self.api_url.clone()))?;
        if url.origin() != base.origin() {
            return Err(GitLabError::ForeignLink(link.to_owned()));
        }
        let prefix = base.path().trim_end_matches('/');
        let path = url.path();
        let path = path.strip_prefix(prefix).unwrap_or(path).to_owned();
        let query = url.query_pairs().into_owned().collect();
        Ok((path, query))
    }

    /// One call, retried on 429 and 5xx as the policy allows.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitLabError> {
        self.call_with(method, path, query, body, true).await
    }

    /// A call that is not idempotent: retried on 429 (GitLab did not run
    /// it), not on 5xx ([`GitLabError::Unconfirmed`]).
    async fn call_once_on_5xx(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitLabError> {
        self.call_with(method, path, &[], body, false).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<Answer, GitLabError> {
        let url = format!("{}{path}", self.api_url);
        let mut backoff = self.retry.backoff;
        let attempts = self.retry.max_attempts.max(1);
        let mut last_status = 0;
        for attempt in 1..=attempts {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("PRIVATE-TOKEN", &self.token.0)
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let transport = |source| GitLabError::Transport {
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
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(GitLabError::Unauthorized {
                    status: last_status,
                    method,
                    path: path.to_owned(),
                });
            }
            if status.is_server_error() && !idempotent {
                return Err(GitLabError::Unconfirmed {
                    status: last_status,
                    method,
                    path: path.to_owned(),
                });
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable {
                let text = response.text().await.unwrap_or_default();
                return Err(GitLabError::Status {
                    status: last_status,
                    method,
                    path: path.to_owned(),
                    message: error_message(&text),
                });
            }
            if attempt == attempts {
                break;
            }
            let wait = if status == StatusCode::TOO_MANY_REQUESTS {
                rate_limit_wait(&headers, SystemTime::now()).unwrap_or(backoff)
            } else {
                backoff
            };
            let wait = wait.min(self.retry.max_wait);
            tracing::warn!(
                "GitLab answered {status} on {method} {path}; retrying in {} ms (attempt {attempt} of {attempts})",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_wait);
        }
        Err(GitLabError::RetriesExhausted {
            status: last_status,
            method,
            path: path.to_owned(),
            attempts,
        })
    }
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, body: &[u8]) -> Result<T, GitLabError> {
    serde_json::from_slice(body).map_err(|source| GitLabError::Decode {
        method: method.clone(),
        path: path.to_owned(),
        source,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// GitLab's error bodies are `{"message": …}` or `{"error": …}`; the
/// message may itself be an object of field errors.
fn error_message(text: &str) -> String {
    #[derive(Deserialize)]
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

/// How long a 429 asks to wait: `Retry-After` in seconds (or an HTTP date
/// is not used by GitLab, so only seconds), else `RateLimit-Reset` as a Unix
/// time.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(secs) = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = header(headers, "ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// Percent-encodes a path segment (a project path's `/` becomes `%2F`).
fn encode_segment(s: &str) -> String {
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
    fn project_paths_are_encoded_as_one_segment() {
        assert_eq!(
            encode_segment("group/sub/my.project"),
            "group%2Fsub%2Fmy.project"
        );
        assert_eq!(encode_segment("42"), "42");
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
    }

    #[test]
    fn the_token_is_never_shown() {
        let token = Token::new(" glpat-secret \n");
        assert_eq!(format!("{token:?}"), "Token(***)");
        let client = GitLabClient::new(
            http(),
            "https://gitlab.example.com/api/v4/",
            "g/p",
            token,
            RetryPolicy::default(),
        );
        let shown = format!("{client:?}");
        assert!(!shown.contains("glpat-secret"), "{shown}");
        assert!(shown.contains("g%2Fp"), "{shown}");
    }

    #[test]
    fn a_bad_api_url_is_refused() {
        let err = GitLabClient::new(
            http(),
            "gitlab.example.com",
            "1",
            Token::new("t"),
            RetryPolicy::default(),
        )
        .err();
        assert!(matches!(err, Some(GitLabError::BadUrl(_))), "{err:?}");
    }
}
