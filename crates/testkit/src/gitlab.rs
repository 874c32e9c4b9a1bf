//! A fake GitLab REST API v4, as its public documentation describes it, for
//! the merge-request bot's tests.
//!
//! It serves only the paths the bot may use, under `/api/v4/projects/:id`
//! (`:id` the numeric id or the URL-encoded path):
//!
//! - `GET merge_requests?state=&labels=&order_by=&sort=&page=&per_page=` (no
//!   `head_pipeline` in list items, as on GitLab);
//! - `GET merge_requests/:iid` (with `head_pipeline` and `diff_refs`);
//! - `PUT merge_requests/:iid` (`add_labels`, `remove_labels`, `labels`);
//! - `GET|POST merge_requests/:iid/notes`, `PUT merge_requests/:iid/notes/:note_id`
//!   (notes listed newest first, GitLab's default);
//! - `GET repository/merge_base?refs[]=&refs[]=`.
//!
//! Every request needs `PRIVATE-TOKEN: <token>` or `Authorization: Bearer
//! <token>` (401 `{"message":"401 Unauthorized"}` otherwise). Lists carry
//! `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page`, `X-Total`,
//! `X-Total-Pages` and a `Link` header. A test scripts failures with
//! [`FakeGitLab::fail_next`] (429 with `Retry-After`, 500, 502, …) and reads
//! back every request with [`FakeGitLab::requests`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};

/// The project's numeric id in the fake.
pub const PROJECT_ID: u64 = 7;
/// The project's path in the fake (`group/project`).
pub const PROJECT_PATH: &str = "group/project";

/// A merge request the test puts in the fake.
#[derive(Debug, Clone)]
pub struct FakeMr {
    pub iid: u64,
    pub title: String,
    /// ISO 8601 creation time; the list sorts by it.
    pub created_at: String,
    pub source_branch: String,
    pub target_branch: String,
    pub sha: String,
    /// The merge base with the target branch, answered by `merge_base`.
    pub merge_base: String,
    pub labels: Vec<String>,
    /// `opened`, `closed`, `merged`.
    pub state: String,
    /// The head pipeline's status (`success`, `running`, …), or none.
    pub pipeline_status: Option<String>,
}

impl FakeMr {
    /// An open merge request with a successful head pipeline.
    pub fn new(iid: u64, created_at: &str, sha: &str, merge_base: &str, labels: &[&str]) -> FakeMr {
        FakeMr {
            iid,
            title: format!("Change {iid}"),
            created_at: created_at.to_owned(),
            source_branch: format!("feature-{iid}"),
            target_branch: "main".to_owned(),
            sha: sha.to_owned(),
            merge_base: merge_base.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            state: "opened".to_owned(),
            pipeline_status: Some("success".to_owned()),
        }
    }
}

/// A note in the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNote {
    pub id: u64,
    pub iid: u64,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
    /// How many times it was edited.
    pub edits: u32,
}

/// A scripted failure: the next matching request gets this answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    /// `Retry-After` in seconds (for 429).
    pub retry_after: Option<u64>,
    /// Only requests with this method match (any when `None`).
    pub method: Option<Method>,
    /// Only paths containing this match (any when `None`).
    pub path_contains: Option<String>,
    /// The request is carried out first and only its answer replaced (a
    /// proxy's 502 after GitLab did the work).
    pub after_applying: bool,
}

impl Failure {
    /// A failure with `status` on the next request of any kind.
    pub fn status(status: u16) -> Failure {
        Failure {
            status,
            retry_after: None,
            method: None,
            path_contains: None,
            after_applying: false,
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Failure {
        Failure {
            retry_after: Some(secs),
            ..Failure::status(429)
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
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    mrs: BTreeMap<u64, FakeMr>,
    notes: Vec<FakeNote>,
    next_note: u64,
    failures: VecDeque<Failure>,
    seen: Vec<Seen>,
    clock: u64,
    /// The fake's own URL, for `Link` headers.
    base: String,
}

impl Inner {
    /// A distinct, increasing timestamp for each note change.
    fn now(&mut self) -> String {
        self.clock += 1;
        let s = self.clock;
        format!(
            "2026-01-01T{:02}:{:02}:{:02}.000Z",
            (s / 3600) % 24,
            (s / 60) % 60,
            s % 60
        )
    }
}

/// The fake GitLab: a handle on its state, shared with the running server.
#[derive(Debug, Clone)]
pub struct FakeGitLab {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`, the API root (without `/api/v4`).
    pub url: String,
}

impl FakeGitLab {
    /// Starts the fake on a free loopback port, accepting `token`.
    pub async fn start(token: &str) -> FakeGitLab {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            next_note: 1000,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitLab");
        let addr: SocketAddr = listener.local_addr().expect("fake GitLab address");
        lock(&inner).base = format!("http://{addr}");
        let app = router(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitLab {
            inner,
            url: format!("http://{addr}"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a merge request.
    pub fn put_mr(&self, mr: FakeMr) {
        self.lock().mrs.insert(mr.iid, mr);
    }

    /// A merge request as it is now.
    pub fn mr(&self, iid: u64) -> Option<FakeMr> {
        self.lock().mrs.get(&iid).cloned()
    }

    /// Sets a merge request's labels (as a user labelling it).
    pub fn set_labels(&self, iid: u64, labels: &[&str]) {
        if let Some(mr) = self.lock().mrs.get_mut(&iid) {
            mr.labels = labels.iter().map(|l| (*l).to_owned()).collect();
        }
    }

    /// The notes of a merge request, oldest first.
    pub fn notes(&self, iid: u64) -> Vec<FakeNote> {
        self.lock()
            .notes
            .iter()
            .filter(|n| n.iid == iid)
            .cloned()
            .collect()
    }

    /// Adds a note written by someone else.
    pub fn add_note(&self, iid: u64, body: &str) -> u64 {
        let mut inner = self.lock();
        add_note(&mut inner, iid, body).id
    }

    /// Queues a failure for the next matching request.
    pub fn fail_next(&self, failure: Failure) {
        self.lock().failures.push_back(failure);
    }

    /// Changes the accepted token (the old one then gets 401).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_owned();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn router(inner: Shared) -> Router {
    let api = Router::new()
        .route("/api/v4/projects/{id}/merge_requests", get(list_mrs))
        .route(
            "/api/v4/projects/{id}/merge_requests/{iid}",
            get(get_mr).put(update_mr),
        )
        .route(
            "/api/v4/projects/{id}/merge_requests/{iid}/notes",
            get(list_notes).post(create_note),
        )
        .route(
            "/api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}",
            put(update_note),
        )
        .route(
            "/api/v4/projects/{id}/repository/merge_base",
            get(merge_base),
        )
        .fallback(|| async { not_found("404 Not Found") });
    api.layer(middleware::from_fn_with_state(inner.clone(), gate))
        .with_state(inner)
}

/// Authentication, scripted failures and the request log.
async fn gate(State(inner): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let (early, late) = {
        let mut g = lock(&inner);
        let authorized = authorized(req.headers(), &g.token);
        let position = g.failures.iter().position(|f| {
            f.method.as_ref().is_none_or(|m| *m == method)
                && f.path_contains
                    .as_ref()
                    .is_none_or(|p| uri.contains(p.as_str()))
        });
        if !authorized {
            (
                Some(message(StatusCode::UNAUTHORIZED, "401 Unauthorized")),
                None,
            )
        } else if let Some(i) = position {
            let failure = g.failures.remove(i).unwrap_or_else(|| Failure::status(500));
            if failure.after_applying {
                (None, Some(failure))
            } else {
                (Some(failure_response(&failure)), None)
            }
        } else {
            (None, None)
        }
    };
    let response = match (early, late) {
        (Some(r), _) => r,
        (None, Some(failure)) => {
            let _applied = next.run(req).await;
            failure_response(&failure)
        }
        (None, None) => next.run(req).await,
    };
    lock(&inner).seen.push(Seen {
        method,
        uri,
        status: response.status().as_u16(),
    });
    response
}

fn failure_response(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = message(status, status.canonical_reason().unwrap_or("error"));
    if let Some(secs) = failure.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let private = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == token);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| v == token);
    private || bearer
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

fn not_found(text: &str) -> Response {
    message(StatusCode::NOT_FOUND, text)
}

fn bad_request(text: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": text })),
    )
        .into_response()
}

fn project_ok(id: &str) -> bool {
    id == PROJECT_ID.to_string() || id == PROJECT_PATH
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn mr_json(mr: &FakeMr, full: bool) -> Value {
    let web_url = format!(
        "http://gitlab.example/{PROJECT_PATH}/-/merge_requests/{}",
        mr.iid
    );
    let mut v = json!({
        "id": 10_000 + mr.iid,
        "iid": mr.iid,
        "project_id": PROJECT_ID,
        "title": mr.title,
        "description": "",
        "state": mr.state,
        "created_at": mr.created_at,
        "updated_at": mr.created_at,
        "target_branch": mr.target_branch,
        "source_branch": mr.source_branch,
        "labels": mr.labels,
        "sha": mr.sha,
        "draft": false,
        "work_in_progress": false,
        "merge_status": "can_be_merged",
        "detailed_merge_status": "mergeable",
        "source_project_id": PROJECT_ID,
        "target_project_id": PROJECT_ID,
        "author": { "id": 1, "username": "dev", "name": "Dev", "state": "active" },
        "references": { "short": format!("!{}", mr.iid), "relative": format!("!{}", mr.iid), "full": format!("{PROJECT_PATH}!{}", mr.iid) },
        "web_url": web_url,
    });
    if full {
        let pipeline = mr.pipeline_status.as_ref().map(|status| {
            json!({
                "id": 50_000 + mr.iid,
                "iid": mr.iid,
                "project_id": PROJECT_ID,
                "sha": mr.sha,
                "ref": format!("refs/merge-requests/{}/head", mr.iid),
                "status": status,
                "source": "merge_request_event",
                "created_at": mr.created_at,
                "updated_at": mr.created_at,
                "started_at": mr.created_at,
                "finished_at": null,
                "web_url": format!("http://gitlab.example/{PROJECT_PATH}/-/pipelines/{}", 50_000 + mr.iid),
            })
        });
        if let Some(obj) = v.as_object_mut() {
            obj.insert("head_pipeline".into(), pipeline.unwrap_or(Value::Null));
            obj.insert(
                "diff_refs".into(),
                json!({ "base_sha": mr.merge_base, "head_sha": mr.sha, "start_sha": mr.merge_base }),
            );
        }
    }
    v
}

fn note_json(n: &FakeNote) -> Value {
    json!({
        "id": n.id,
        "type": null,
        "body": n.body,
        "author": { "id": 99, "username": "testfleet-bot", "name": "testfleet", "state": "active" },
        "created_at": n.created_at,
        "updated_at": n.updated_at,
        "system": false,
        "noteable_id": 10_000 + n.iid,
        "noteable_type": "MergeRequest",
        "noteable_iid": n.iid,
        "project_id": PROJECT_ID,
        "resolvable": false,
        "confidential": false,
        "internal": false,
    })
}

fn add_note(inner: &mut Inner, iid: u64, body: &str) -> FakeNote {
    inner.next_note += 1;
    let now = inner.now();
    let note = FakeNote {
        id: inner.next_note,
        iid,
        body: body.to_owned(),
        created_at: now.clone(),
        updated_at: now,
        edits: 0,
    };
    inner.notes.push(note.clone());
    note
}

/// One page of `items`, with GitLab's pagination headers.
fn paged(base: &str, uri_path: &str, query: &[(String, String)], items: Vec<Value>) -> Response {
    let per_page = param(query, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = param(query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link_to = |p: usize| {
        let mut q: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("<{base}{uri_path}?{}>", q.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < pages {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_to(1)));
    links.push(format!("{}; rel=\"last\"", link_to(pages)));
    let next = if page < pages {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let prev = if page > 1 {
        (page - 1).to_string()
    } else {
        String::new()
    };
    let mut response = axum::Json(body).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-page", page.to_string());
    set("x-per-page", per_page.to_string());
    set("x-next-page", next);
    set("x-prev-page", prev);
    set("x-total", total.to_string());
    set("x-total-pages", pages.to_string());
    set("link", links.join(", "));
    response
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn list_mrs(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let state = param(&query, "state").unwrap_or("all");
    let labels: Vec<&str> = param(&query, "labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(order) = param(&query, "order_by")
        && !matches!(order, "created_at" | "updated_at" | "title" | "merged_at")
    {
        return bad_request("order_by does not have a valid value");
    }
    let desc = !matches!(param(&query, "sort"), Some("asc"));
    let mut mrs: Vec<FakeMr> = lock(&inner)
        .mrs
        .values()
        .filter(|mr| state == "all" || mr.state == state)
        .filter(|mr| labels.iter().all(|l| mr.labels.iter().any(|m| m == l)))
        .cloned()
        .collect();
    mrs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.iid.cmp(&b.iid)));
    if desc {
        mrs.reverse();
    }
    let items = mrs.iter().map(|mr| mr_json(mr, false)).collect();
    let base = lock(&inner).base.clone();
    let path = format!("/api/v4/projects/{}/merge_requests", encode(&id));
    paged(&base, &path, &query, items)
}

async fn get_mr(State(inner): State<Shared>, Path((id, iid)): Path<(String, u64)>) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    match lock(&inner).mrs.get(&iid) {
        Some(mr) => axum::Json(mr_json(mr, true)).into_response(),
        None => not_found("404 Not found"),
    }
}

#[derive(Deserialize)]
struct MrUpdate {
    labels: Option<String>,
    add_labels: Option<String>,
    remove_labels: Option<String>,
}

fn split_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn update_mr(
    State(inner): State<Shared>,
    Path((id, iid)): Path<(String, u64)>,
    body: axum::Json<MrUpdate>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let mut g = lock(&inner);
    let Some(mr) = g.mrs.get_mut(&iid) else {
        return not_found("404 Not found");
    };
    if let Some(labels) = &body.labels {
        mr.labels = split_labels(labels);
    }
    if let Some(add) = &body.add_labels {
        for l in split_labels(add) {
            if !mr.labels.contains(&l) {
                mr.labels.push(l);
            }
        }
    }
    if let Some(remove) = &body.remove_labels {
        let remove = split_labels(remove);
        mr.labels.retain(|l| !remove.contains(l));
    }
    axum::Json(mr_json(mr, true)).into_response()
}

async fn list_notes(
    State(inner): State<Shared>,
    Path((id, iid)): Path<(String, u64)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let g = lock(&inner);
    if !g.mrs.contains_key(&iid) {
        return not_found("404 Not found");
    }
    let mut notes: Vec<&FakeNote> = g.notes.iter().filter(|n| n.iid == iid).collect();
    // GitLab's default: order_by=created_at, sort=desc.
    if !matches!(param(&query, "sort"), Some("asc")) {
        notes.reverse();
    }
    let items = notes.into_iter().map(note_json).collect();
    let base = g.base.clone();
    drop(g);
    paged(
        &base,
        &format!(
            "/api/v4/projects/{}/merge_requests/{iid}/notes",
            encode(&id)
        ),
        &query,
        items,
    )
}

#[derive(Deserialize)]
struct NoteBody {
    body: Option<String>,
}

async fn create_note(
    State(inner): State<Shared>,
    Path((id, iid)): Path<(String, u64)>,
    body: axum::Json<NoteBody>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let Some(text) = body.body.as_deref().filter(|b| !b.is_empty()) else {
        return bad_request("body is missing");
    };
    let mut g = lock(&inner);
    if !g.mrs.contains_key(&iid) {
        return not_found("404 Not found");
    }
    let note = add_note(&mut g, iid, text);
    (StatusCode::CREATED, axum::Json(note_json(&note))).into_response()
}

async fn update_note(
    State(inner): State<Shared>,
    Path((id, iid, note_id)): Path<(String, u64, u64)>,
    body: axum::Json<NoteBody>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let Some(text) = body.body.clone().filter(|b| !b.is_empty()) else {
        return bad_request("body is missing");
    };
    let mut g = lock(&inner);
    let now = g.now();
    let Some(note) = g.notes.iter_mut().find(|n| n.id == note_id && n.iid == iid) else {
        return not_found("404 Not found");
    };
    note.body = text;
    note.updated_at = now;
    note.edits += 1;
    axum::Json(note_json(note)).into_response()
}

async fn merge_base(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let refs: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "refs[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if refs.len() < 2 {
        return bad_request("Provide at least 2 refs");
    }
    let g = lock(&inner);
    // A merge request's head with its target branch (either order) meets
    // at the merge request's merge base.
    let found = g.mrs.values().find(|mr| {
        let is = |r: &str| r == mr.sha || r == mr.source_branch;
        let target = |r: &str| r == mr.target_branch || r == mr.merge_base;
        (is(refs[0]) && target(refs[1])) || (is(refs[1]) && target(refs[0]))
    });
    match found {
        Some(mr) => axum::Json(json!({
            "id": mr.merge_base,
            "short_id": mr.merge_base.chars().take(8).collect::<String>(),
            "title": "Base commit",
            "created_at": "2025-12-31T12:00:00.000Z",
            "parent_ids": [],
            "message": "Base commit\n",
            "author_name": "Dev",
            "author_email": "dev@example.org",
            "authored_date": "2025-12-31T12:00:00.000Z",
            "committer_name": "Dev",
            "committer_email": "dev@example.org",
            "committed_date": "2025-12-31T12:00:00.000Z",
            "web_url": format!("http://gitlab.example/{PROJECT_PATH}/-/commit/{}", mr.merge_base),
        }))
        .into_response(),
        None => bad_request("Could not find merge base"),
    }
}
