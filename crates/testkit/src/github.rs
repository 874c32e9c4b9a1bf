//! A fake GitHub REST API, as docs.github.com describes it, for the
//! pull-request bot's tests.
//!
//! It serves one repository, [`OWNER`]/[`REPO`] (id [`REPO_ID`]), at the
//! server's root as api.github.com does, under `/repos/{owner}/{repo}` and
//! under `/repositories/{id}` (the form GitHub's `Link` headers use):
//!
//! - `GET issues?state=&labels=&sort=&direction=&per_page=&page=`: issues
//!   and pull requests (a pull request's item has a `pull_request` object);
//! - `GET pulls/{pull_number}`: `head`, `base`, `merged`, `draft`,
//!   `mergeable`;
//! - `GET commits/{ref}/check-runs` (`check_name`, `status`, `filter`) and
//!   `GET commits/{ref}/status` (the combined status); `{ref}` is a SHA, a
//!   branch (`main`, `heads/main`) or a pull request's head branch;
//! - `GET compare/{base}...{head}`: `merge_base_commit`, `status`,
//!   `ahead_by`, `behind_by`;
//! - `GET|POST issues/{issue_number}/comments` (oldest first),
//!   `PATCH issues/comments/{comment_id}`;
//! - `GET|POST issues/{issue_number}/labels`,
//!   `DELETE issues/{issue_number}/labels/{name}`.
//!
//! A request needs a `User-Agent` (403 without one, as GitHub answers) and
//! `Authorization: Bearer <token>` or `Authorization: token <token>` (401
//! `Bad credentials` otherwise). Every answer carries `x-ratelimit-limit`,
//! `-remaining`, `-used`, `-reset` and `-resource`. Lists are paged with
//! `per_page` (30 by default, at most 100) and `page`, and carry a `Link`
//! header (`prev`, `next`, `last`, `first`, absolute URLs on the fake) only
//! when there is more than one page. Errors are GitHub's
//! `{"message", "documentation_url", "status"}`.
//!
//! A test scripts failures with [`FakeGitHub::fail_next`] (a secondary rate
//! limit's 429 with `Retry-After`, the primary rate limit's 403 with
//! `x-ratelimit-remaining: 0` from [`Failure::github_rate_limited`], 5xx)
//! and reads back every request with [`FakeGitHub::requests`].
//!
//! The fake serves data and decides nothing: whether a head is green (its
//! check runs all completed as `success`, `neutral` or `skipped`, or its
//! combined status `success`) is the bot's call.

mod answers;
mod checks;
mod issues;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch};

pub use crate::review_fake::{Failure, Seen};
use crate::review_fake::{IsoClock, Product, Script, epoch_now, gate, iso8601};
use answers::{
    Refusal, error, invalid, label_json, link, not_found, number, repo_json, repository, user_json,
    with_link,
};

/// The repository's owner (an organization).
pub const OWNER: &str = "octo-org";
/// The repository's name.
pub const REPO: &str = "octo-repo";
/// The repository's numeric id (in `/repositories/{id}` paths).
pub const REPO_ID: u64 = 1_296_269;
/// The login of the token's user: comments posted through the API are
/// theirs.
pub const BOT_LOGIN: &str = "testfleet-bot";
/// The login of everyone else ([`FakeGitHub::add_comment`]'s author).
pub const OTHER_LOGIN: &str = "octocat";

/// Where the fake's web pages would be (`html_url`s).
const WEB: &str = "https://github.com";
/// The `documentation_url` of errors that have no more precise page.
const DOCS: &str = "https://docs.github.com/rest";
/// The primary rate limit per hour, as for a personal access token.
const RATE_LIMIT: u64 = 5000;

/// A pull request the test puts in the fake.
#[derive(Debug, Clone)]
pub struct FakePr {
    /// Its number (shared with issues: one number is one or the other).
    pub number: u64,
    /// Its title (`Change <number>` by default).
    pub title: String,
    /// ISO 8601 creation time; the list sorts by it.
    pub created_at: String,
    /// The head branch (`feature-<number>` by default).
    pub head_ref: String,
    /// The head commit.
    pub head_sha: String,
    /// The base branch (`main` by default).
    pub base_ref: String,
    /// The base branch's tip (the merge base by default).
    pub base_sha: String,
    /// Where head and base meet, answered by `compare`.
    pub merge_base: String,
    /// Label names.
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: String,
    /// Whether it was merged (then `state` is `closed`).
    pub merged: bool,
    /// Whether it is a draft.
    pub draft: bool,
    /// GitHub's `mergeable`: `None` while GitHub still computes it.
    pub mergeable: Option<bool>,
    /// The head's check runs, set on the head SHA by
    /// [`FakeGitHub::put_pr`] (one successful `ci` run by default).
    pub check_runs: Vec<FakeCheckRun>,
}

impl FakePr {
    /// An open, mergeable pull request from `feature-<number>` into `main`
    /// whose head has one successful check run.
    pub fn new(
        number: u64,
        created_at: &str,
        head_sha: &str,
        merge_base: &str,
        labels: &[&str],
    ) -> FakePr {
        FakePr {
            number,
            title: format!("Change {number}"),
            created_at: created_at.to_owned(),
            head_ref: format!("feature-{number}"),
            head_sha: head_sha.to_owned(),
            base_ref: "main".to_owned(),
            base_sha: merge_base.to_owned(),
            merge_base: merge_base.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            state: "open".to_owned(),
            merged: false,
            draft: false,
            mergeable: Some(true),
            check_runs: vec![FakeCheckRun::completed("ci", "success")],
        }
    }
}

/// A plain issue (not a pull request) the test puts in the fake.
#[derive(Debug, Clone)]
pub struct FakeIssue {
    /// Its number (shared with pull requests).
    pub number: u64,
    /// Its title (`Issue <number>` by default).
    pub title: String,
    /// ISO 8601 creation time.
    pub created_at: String,
    /// Label names.
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: String,
}

impl FakeIssue {
    /// An open issue.
    pub fn new(number: u64, created_at: &str, labels: &[&str]) -> FakeIssue {
        FakeIssue {
            number,
            title: format!("Issue {number}"),
            created_at: created_at.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            state: "open".to_owned(),
        }
    }
}

/// A check run on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCheckRun {
    /// The check's name (`check_name` filters on it).
    pub name: String,
    /// `queued`, `in_progress`, `completed` (or `waiting`, `requested`,
    /// `pending`).
    pub status: String,
    /// Once completed: `success`, `failure`, `neutral`, `cancelled`,
    /// `skipped`, `timed_out` or `action_required`.
    pub conclusion: Option<String>,
    /// When it started, if it did.
    pub started_at: Option<String>,
    /// When it completed, if it did.
    pub completed_at: Option<String>,
    /// The app that runs it (`app.slug`).
    pub app_slug: String,
}

impl FakeCheckRun {
    /// A run of GitHub Actions that completed with `conclusion`.
    pub fn completed(name: &str, conclusion: &str) -> FakeCheckRun {
        FakeCheckRun {
            name: name.to_owned(),
            status: "completed".to_owned(),
            conclusion: Some(conclusion.to_owned()),
            started_at: Some("2026-01-01T00:00:00Z".to_owned()),
            completed_at: Some("2026-01-01T00:05:00Z".to_owned()),
            app_slug: "github-actions".to_owned(),
        }
    }

    /// A run that started and has not completed.
    pub fn in_progress(name: &str) -> FakeCheckRun {
        FakeCheckRun {
            status: "in_progress".to_owned(),
            conclusion: None,
            completed_at: None,
            ..FakeCheckRun::completed(name, "success")
        }
    }

    /// A run waiting for a runner.
    pub fn queued(name: &str) -> FakeCheckRun {
        FakeCheckRun {
            status: "queued".to_owned(),
            started_at: None,
            ..FakeCheckRun::in_progress(name)
        }
    }
}

/// A commit status (the older Statuses API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeStatus {
    /// What reports it (`ci/jenkins`); the combined status keeps the latest
    /// status of each context.
    pub context: String,
    /// `error`, `failure`, `pending` or `success`.
    pub state: String,
    /// A short description.
    pub description: Option<String>,
    /// A link to the build.
    pub target_url: Option<String>,
}

impl FakeStatus {
    /// A status of `context` in `state`.
    pub fn new(context: &str, state: &str) -> FakeStatus {
        FakeStatus {
            context: context.to_owned(),
            state: state.to_owned(),
            description: None,
            target_url: None,
        }
    }
}

/// A comment on an issue or pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeComment {
    /// The comment's id (unique in the fake).
    pub id: u64,
    /// The issue or pull request it is on.
    pub number: u64,
    /// Its text.
    pub body: String,
    /// Its author's login ([`BOT_LOGIN`] through the API).
    pub author: String,
    /// When it was posted (the fake's clock).
    pub created_at: String,
    /// When it was last edited (`created_at` until then).
    pub updated_at: String,
    /// How many times it was edited.
    pub edits: u32,
}

/// A check run as stored: with the id the fake gave it.
#[derive(Debug, Clone)]
struct StoredRun {
    id: u64,
    run: FakeCheckRun,
}

/// A commit status as stored: with its id and time.
#[derive(Debug, Clone)]
struct StoredStatus {
    id: u64,
    status: FakeStatus,
    at: String,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    prs: BTreeMap<u64, FakePr>,
    issues: BTreeMap<u64, FakeIssue>,
    comments: Vec<FakeComment>,
    check_runs: HashMap<String, Vec<StoredRun>>,
    statuses: HashMap<String, Vec<StoredStatus>>,
    /// The last id given to a comment, check run or status.
    last_id: u64,
    script: Script,
    clock: IsoClock,
    /// Requests counted against the rate limit in this window.
    used: u64,
    /// When the rate-limit window resets (Unix seconds).
    window_reset: u64,
    /// The fake's own URL, for URLs in answers and `Link` headers.
    base: String,
}

impl Inner {
    /// A distinct, increasing timestamp for each change.
    fn now(&mut self) -> String {
        iso8601(self.clock.tick(), false)
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Whether issue or pull request `number` exists.
    fn exists(&self, number: u64) -> bool {
        self.prs.contains_key(&number) || self.issues.contains_key(&number)
    }

    /// The labels of issue or pull request `number`.
    fn labels(&self, number: u64) -> Option<&Vec<String>> {
        match self.prs.get(&number) {
            Some(pr) => Some(&pr.labels),
            None => self.issues.get(&number).map(|i| &i.labels),
        }
    }

    fn labels_mut(&mut self, number: u64) -> Option<&mut Vec<String>> {
        match self.prs.get_mut(&number) {
            Some(pr) => Some(&mut pr.labels),
            None => self.issues.get_mut(&number).map(|i| &mut i.labels),
        }
    }

    fn add_comment(&mut self, number: u64, body: &str, author: &str) -> FakeComment {
        let id = self.next_id();
        let now = self.now();
        let comment = FakeComment {
            id,
            number,
            body: body.to_owned(),
            author: author.to_owned(),
            created_at: now.clone(),
            updated_at: now,
            edits: 0,
        };
        self.comments.push(comment.clone());
        comment
    }

    fn set_check_runs(&mut self, sha: &str, runs: Vec<FakeCheckRun>) {
        let stored = runs
            .into_iter()
            .map(|run| StoredRun {
                id: self.next_id(),
                run,
            })
            .collect();
        self.check_runs.insert(sha.to_owned(), stored);
    }
}

/// The fake GitHub: a handle on its state, shared with the running server.
#[derive(Debug, Clone)]
pub struct FakeGitHub {
    inner: Shared,
    /// `http://127.0.0.1:PORT`, the API root (as `https://api.github.com`).
    pub url: String,
}

impl FakeGitHub {
    /// Starts the fake on a free loopback port, accepting `token`.
    pub async fn start(token: &str) -> FakeGitHub {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            last_id: 4000,
            window_reset: epoch_now() + 3600,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitHub");
        let addr: SocketAddr = listener.local_addr().expect("fake GitHub address");
        lock(&inner).base = format!("http://{addr}");
        let app = router(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitHub {
            inner,
            url: format!("http://{addr}"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Adds or replaces a pull request (and an issue of that number), and
    /// sets its head's check runs to `pr.check_runs`.
    pub fn put_pr(&self, pr: FakePr) {
        let mut g = self.lock();
        g.issues.remove(&pr.number);
        g.set_check_runs(&pr.head_sha, pr.check_runs.clone());
        g.prs.insert(pr.number, pr);
    }

    /// A pull request as it is now.
    pub fn pr(&self, number: u64) -> Option<FakePr> {
        self.lock().prs.get(&number).cloned()
    }

    /// Adds or replaces a plain issue (and a pull request of that number).
    pub fn put_issue(&self, issue: FakeIssue) {
        let mut g = self.lock();
        g.prs.remove(&issue.number);
        g.issues.insert(issue.number, issue);
    }

    /// A plain issue as it is now.
    pub fn issue(&self, number: u64) -> Option<FakeIssue> {
        self.lock().issues.get(&number).cloned()
    }

    /// The labels of issue or pull request `number` (empty when unknown).
    pub fn labels(&self, number: u64) -> Vec<String> {
        self.lock().labels(number).cloned().unwrap_or_default()
    }

    /// Sets the labels of issue or pull request `number` (as a user
    /// labelling it).
    pub fn set_labels(&self, number: u64, labels: &[&str]) {
        if let Some(l) = self.lock().labels_mut(number) {
            *l = labels.iter().map(|l| (*l).to_owned()).collect();
        }
    }

    /// Adds one label to issue or pull request `number`, unless it has it.
    pub fn add_label(&self, number: u64, label: &str) {
        if let Some(l) = self.lock().labels_mut(number)
            && !l.iter().any(|have| have.eq_ignore_ascii_case(label))
        {
            l.push(label.to_owned());
        }
    }

    /// The comments on issue or pull request `number`, oldest first.
    pub fn comments(&self, number: u64) -> Vec<FakeComment> {
        self.lock()
            .comments
            .iter()
            .filter(|c| c.number == number)
            .cloned()
            .collect()
    }

    /// Adds a comment written by someone else ([`OTHER_LOGIN`]); returns
    /// its id.
    pub fn add_comment(&self, number: u64, body: &str) -> u64 {
        self.lock().add_comment(number, body, OTHER_LOGIN).id
    }

    /// Replaces the check runs of commit `sha` (in order: a later run of the
    /// same name is the newer one).
    pub fn set_check_runs(&self, sha: &str, runs: Vec<FakeCheckRun>) {
        self.lock().set_check_runs(sha, runs);
    }

    /// Replaces the commit statuses of `sha` (in order: a later status of
    /// the same context is the newer one).
    pub fn set_statuses(&self, sha: &str, statuses: Vec<FakeStatus>) {
        let mut g = self.lock();
        let stored = statuses
            .into_iter()
            .map(|status| StoredStatus {
                id: g.next_id(),
                at: g.now(),
                status,
            })
            .collect();
        g.statuses.insert(sha.to_owned(), stored);
    }

    /// Queues a failure for the next matching request.
    pub fn fail_next(&self, failure: Failure) {
        self.lock().script.push(failure);
    }

    /// Changes the accepted token (the old one then gets 401).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_owned();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().script.seen()
    }
}

type Shared = Arc<Mutex<Inner>>;

/// A handler's answer: the success, or GitHub's error.
type Answer = Result<Response, Refusal>;

/// A route's path parameters, by name.
type PathParams = Path<HashMap<String, String>>;
/// A request's query, in order.
type QueryParams = Query<Vec<(String, String)>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Routes `suffix` under both of GitHub's names for the repository.
fn both(router: Router<Shared>, suffix: &str, route: MethodRouter<Shared>) -> Router<Shared> {
    router
        .route(&format!("/repos/{{owner}}/{{repo}}{suffix}"), route.clone())
        .route(&format!("/repositories/{{repository_id}}{suffix}"), route)
}

fn router(inner: Shared) -> Router {
    let routes: [(&str, MethodRouter<Shared>); 8] = [
        ("/issues", get(issues::list_issues)),
        ("/pulls/{pull_number}", get(issues::get_pull)),
        (
            "/issues/{issue_number}/comments",
            get(issues::list_comments).post(issues::create_comment),
        ),
        (
            "/issues/comments/{comment_id}",
            patch(issues::update_comment),
        ),
        (
            "/issues/{issue_number}/labels",
            get(issues::list_labels).post(issues::add_labels),
        ),
        (
            "/issues/{issue_number}/labels/{name}",
            delete(issues::remove_label),
        ),
        // `{ref}` may hold slashes (`heads/main`), so the suffix after it
        // (`/check-runs`, `/status`) is told apart by the handler.
        ("/commits/{*ref_and_suffix}", get(checks::commit_checks)),
        ("/compare/{*basehead}", get(checks::compare)),
    ];
    let api = routes
        .into_iter()
        .fold(Router::new(), |r, (suffix, route)| both(r, suffix, route))
        .fallback(|| async { not_found() });
    api.layer(middleware::from_fn_with_state(
        inner.clone(),
        gate::<Shared>,
    ))
    .with_state(inner)
}

/// GitHub's answer to a request without a `User-Agent` (plain text, from
/// its front end, before any authentication).
const NO_USER_AGENT: &str = "Request forbidden by administrative rules. Please make sure your \
     request has a User-Agent header \
     (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
     Check https://developer.github.com for other possible causes.\n";

impl Product for Shared {
    fn refuse(&self, request: &Request) -> Option<Response> {
        let has_agent = request
            .headers()
            .get(header::USER_AGENT)
            .is_some_and(|v| !v.is_empty());
        if !has_agent {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    NO_USER_AGENT,
                )
                    .into_response(),
            );
        }
        let token = lock(self).token.clone();
        (!authorized(request.headers(), &token))
            .then(|| error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS).into_response())
    }

    fn failure_response(&self, failure: &Failure) -> Response {
        let status =
            StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        const LIMITS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";
        if let Some(secs) = failure.reset_after {
            let mut response = error(
                status,
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for \
                 help, please include the request ID 0000:0000:000000:000000:00000000.",
                LIMITS,
            )
            .into_response();
            let h = response.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
            h.insert("x-ratelimit-used", HeaderValue::from(RATE_LIMIT));
            h.insert("x-ratelimit-reset", HeaderValue::from(epoch_now() + secs));
            h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            return response;
        }
        let mut response = if failure.retry_after.is_some() || status.as_u16() == 429 {
            error(
                status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you \
                 try again. If you reach out to GitHub Support for help, please include the \
                 request ID 0000:0000:000000:000000:00000000.",
                &format!("{LIMITS}#about-secondary-rate-limits"),
            )
        } else {
            error(status, status.canonical_reason().unwrap_or("Error"), DOCS)
        }
        .into_response();
        if let Some(secs) = failure.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response
    }

    fn with_script<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut lock(self).script)
    }

    /// The primary rate limit's headers, on every answer that has none yet.
    fn finish(&self, response: &mut Response) {
        if response.headers().contains_key("x-ratelimit-remaining") {
            return;
        }
        let (used, reset) = {
            let mut g = lock(self);
            g.used = (g.used + 1).min(RATE_LIMIT);
            (g.used, g.window_reset)
        };
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
        h.insert(
            "x-ratelimit-remaining",
            HeaderValue::from(RATE_LIMIT - used),
        );
        h.insert("x-ratelimit-used", HeaderValue::from(used));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    }
}

/// `Authorization: Bearer <token>` or `Authorization: token <token>` (the
/// scheme in any case).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        && given.trim() == token
}
