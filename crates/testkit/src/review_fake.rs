//! What the fake code-review APIs (`gitlab`, `github`) share: scripted
//! failures and the request log, the gate every request passes (refusal,
//! failure, log), a clock for timestamps, and page arithmetic with the
//! query helpers the `Link` headers are built from.
//!
//! Each fake decides what is its own: how a request is refused (a missing
//! token, GitHub's missing `User-Agent`), how a scripted failure reads (a
//! GitLab 429 is `Retry later`, a GitHub primary rate limit is a 403 with
//! `x-ratelimit-remaining: 0`) and what every answer carries; it says so
//! by implementing the crate-private `Product` trait.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// A scripted failure: the next matching request gets this answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The HTTP status answered.
    pub status: u16,
    /// `Retry-After` in seconds (for 429).
    pub retry_after: Option<u64>,
    /// A primary rate limit: the window resets this many seconds from now
    /// (`x-ratelimit-remaining: 0` and `x-ratelimit-reset` on GitHub,
    /// `RateLimit-Remaining: 0` and `RateLimit-Reset` on GitLab).
    pub reset_after: Option<u64>,
    /// Only requests with this method match (any when `None`).
    pub method: Option<Method>,
    /// Only paths (with their query) containing this match (any when `None`).
    pub path_contains: Option<String>,
    /// The request is carried out first and only its answer replaced (a
    /// proxy's 502 after the server did the work).
    pub after_applying: bool,
}

impl Failure {
    /// A failure with `status` on the next request of any kind.
    pub fn status(status: u16) -> Failure {
        Failure {
            status,
            retry_after: None,
            reset_after: None,
            method: None,
            path_contains: None,
            after_applying: false,
        }
    }

    /// 429 with `Retry-After: secs` (GitLab's throttle, GitHub's secondary
    /// rate limit).
    pub fn rate_limited(secs: u64) -> Failure {
        Failure {
            retry_after: Some(secs),
            ..Failure::status(429)
        }
    }

    /// GitHub's primary rate limit: 403, `x-ratelimit-remaining: 0` and
    /// `x-ratelimit-reset` `secs` from now, no `Retry-After`.
    pub fn github_rate_limited(secs: u64) -> Failure {
        Failure {
            reset_after: Some(secs),
            ..Failure::status(403)
        }
    }

    /// The request is carried out, then answered with the failure.
    pub fn after_applying(mut self) -> Failure {
        self.after_applying = true;
        self
    }

    /// Restricts the failure to one method and paths containing `part`.
    pub fn on(mut self, method: Method, part: &str) -> Failure {
        self.method = Some(method);
        self.path_contains = Some(part.to_owned());
        self
    }

    fn matches(&self, method: &Method, uri: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| uri.contains(p.as_str()))
    }
}

/// One request a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request's method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The status it was answered with.
    pub status: u16,
}

/// The scripted failures still to come and the requests seen so far.
#[derive(Debug, Default)]
pub(crate) struct Script {
    failures: VecDeque<Failure>,
    seen: Vec<Seen>,
}

impl Script {
    /// Queues a failure for the next matching request.
    pub(crate) fn push(&mut self, failure: Failure) {
        self.failures.push_back(failure);
    }

    /// Takes the first queued failure matching this request.
    fn take(&mut self, method: &Method, uri: &str) -> Option<Failure> {
        let i = self.failures.iter().position(|f| f.matches(method, uri))?;
        self.failures.remove(i)
    }

    /// Every request answered so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.clone()
    }
}

/// What one fake product decides around the shared [`gate`].
pub(crate) trait Product: Clone + Send + Sync + 'static {
    /// An answer refusing the request before anything else happens (no
    /// token, a wrong one), or `None` to let it through.
    fn refuse(&self, request: &Request) -> Option<Response>;

    /// The answer a scripted failure gives, in the product's own words.
    fn failure_response(&self, failure: &Failure) -> Response;

    /// Runs `f` on the fake's script, under the fake's lock.
    fn with_script<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R;

    /// Adds what every answer carries (GitHub's rate-limit headers).
    fn finish(&self, _response: &mut Response) {}
}

/// The middleware in front of every route: refusal, scripted failures
/// (before or after the request is carried out), the product's common
/// headers and the request log.
pub(crate) async fn gate<P: Product>(
    State(product): State<P>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let mut response = match product.refuse(&request) {
        Some(refusal) => refusal,
        None => match product.with_script(|s| s.take(&method, &uri)) {
            Some(failure) if failure.after_applying => {
                let _applied = next.run(request).await;
                product.failure_response(&failure)
            }
            Some(failure) => product.failure_response(&failure),
            None => next.run(request).await,
        },
    };
    product.finish(&mut response);
    let status = response.status().as_u16();
    product.with_script(|s| {
        s.seen.push(Seen {
            method,
            uri,
            status,
        })
    });
    response
}

/// A clock for the fakes' own timestamps: each tick is one second later
/// than the last, from 2026-01-01T00:00:00Z, so changes are ordered and
/// distinct without reading the real time.
#[derive(Debug, Default)]
pub(crate) struct IsoClock {
    seconds: u64,
}

impl IsoClock {
    /// The next instant, as seconds since the clock's origin.
    pub(crate) fn tick(&mut self) -> u64 {
        self.seconds += 1;
        self.seconds
    }
}

/// `seconds` after 2026-01-01T00:00:00Z in ISO 8601 (UTC), with
/// milliseconds (GitLab's `…T00:00:01.000Z`) or without (GitHub's
/// `…T00:00:01Z`). Times past the first day wrap, which no test reaches.
pub(crate) fn iso8601(seconds: u64, millis: bool) -> String {
    let (h, m, s) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    if millis {
        format!("2026-01-01T{h:02}:{m:02}:{s:02}.000Z")
    } else {
        format!("2026-01-01T{h:02}:{m:02}:{s:02}Z")
    }
}

/// The real time in Unix seconds (rate-limit reset headers are absolute).
pub(crate) fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first value of query parameter `key`.
pub(crate) fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(s: &str) -> String {
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

/// Which page of a list a request asked for, and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// The page asked for, from 1.
    pub(crate) page: usize,
    /// Items per page (from `per_page`, at most 100).
    pub(crate) per_page: usize,
    /// How many pages the list has (at least 1).
    pub(crate) pages: usize,
}

impl Page {
    /// The page `page` and `per_page` ask for over `total` items; a missing
    /// or unreadable `per_page` (or 0) means `default_per_page`.
    pub(crate) fn of(query: &[(String, String)], default_per_page: usize, total: usize) -> Page {
        let per_page = param(query, "per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(default_per_page)
            .min(100);
        let page = param(query, "page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        Page {
            page,
            per_page,
            pages: total.div_ceil(per_page).max(1),
        }
    }

    /// This page's items.
    pub(crate) fn slice<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip((self.page - 1) * self.per_page)
            .take(self.per_page)
            .collect()
    }
}

/// `<{base}{path}?{query without page}&page={page}>`, a `Link` target.
pub(crate) fn link_to(base: &str, path: &str, query: &[(String, String)], page: usize) -> String {
    let mut q: Vec<String> = query
        .iter()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    q.push(format!("page={page}"));
    format!("<{base}{path}?{}>", q.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pages_are_clamped_and_sliced() {
        let page = Page::of(&q(&[("per_page", "2"), ("page", "3")]), 30, 5);
        assert_eq!((page.page, page.per_page, page.pages), (3, 2, 3));
        assert_eq!(page.slice(vec![1, 2, 3, 4, 5]), vec![5]);
        let page = Page::of(&q(&[("per_page", "500")]), 30, 0);
        assert_eq!((page.page, page.per_page, page.pages), (1, 100, 1));
        let page = Page::of(&q(&[("per_page", "0")]), 20, 41);
        assert_eq!((page.per_page, page.pages), (20, 3));
    }

    #[test]
    fn links_keep_the_query_and_replace_the_page() {
        assert_eq!(
            link_to("http://h", "/x", &q(&[("page", "1"), ("labels", "a b")]), 2),
            "<http://h/x?labels=a%20b&page=2>"
        );
    }

    #[test]
    fn failures_match_method_and_path() {
        let mut script = Script::default();
        script.push(Failure::status(502).on(Method::POST, "/notes"));
        script.push(Failure::rate_limited(3));
        let got = script.take(&Method::GET, "/notes").map(|f| f.status);
        assert_eq!(got, Some(429), "the first failure wants a POST");
        let got = script.take(&Method::POST, "/x/notes").map(|f| f.status);
        assert_eq!(got, Some(502));
        assert!(script.take(&Method::GET, "/").is_none());
    }

    #[test]
    fn clock_times_are_ordered() {
        let mut clock = IsoClock::default();
        let (a, b) = (clock.tick(), clock.tick());
        assert_eq!(iso8601(a, true), "2026-01-01T00:00:01.000Z");
        assert_eq!(iso8601(b, false), "2026-01-01T00:00:02Z");
        assert_eq!(iso8601(3661, false), "2026-01-01T01:01:01Z");
    }
}
