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
//! `X-Total-Pages` and a `Link` header. Parameters are validated as GitLab's
//! Grape API does (400 `{"error":"sort does not have a valid value"}`), and
//! errors read as GitLab's (`{"message":"404 Project Not Found"}`, an
//! unknown route's `{"error":"404 Not Found"}`). A test scripts failures
//! with [`FakeGitLab::fail_next`] (429 `Retry later` with `Retry-After` and
//! `RateLimit-*` headers, 500, 502, …) and reads back every request with
//! [`FakeGitLab::requests`]; both come from [`crate::review_fake`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};

/// Kept here so `testfleet_testkit::gitlab::{Failure, Seen}` stay the
/// names tests use; both are shared with the GitHub fake.
pub use crate::review_fake::{Failure, Seen};
use crate::review_fake::{
    IsoClock, Page, Product, Script, encode, epoch_now, gate, iso8601, link_to, param,
};

/// The project's numeric id in the fake.
pub const PROJECT_ID: u64 = 7;
/// The project's path in the fake (`group/project`).
pub const PROJECT_PATH: &str = "group/project";

/// A merge request the test puts in the fake.
#[derive(Debug, Clone)]
pub struct FakeMr {
    /// The merge request's number in the project (`!iid`).
    pub iid: u64,
    /// Its title (`Change <iid>` by default).
    pub title: String,
    /// ISO 8601 creation time; the list sorts by it.
    pub created_at: String,
    /// The branch it merges (`feature-<iid>` by default).
    pub source_branch: String,
    /// The branch it merges into (`main` by default).
    pub target_branch: String,
    /// The head commit.
    pub sha: String,
    /// The merge base with the target branch, answered by `merge_base`.
    pub merge_base: String,
    /// Label names.
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
    /// The note's id (unique in the fake).
    pub id: u64,
    /// The merge request it is on.
    pub iid: u64,
    /// Its text.
    pub body: String,
    /// When it was posted (the fake's clock).
    pub created_at: String,
    /// When it was last edited (`created_at` until then).
    pub updated_at: String,
    /// How many times it was edited.
    pub edits: u32,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    mrs: BTreeMap<u64, FakeMr>,
    notes: Vec<FakeNote>,
    next_note: u64,
    script: Script,
    clock: IsoClock,
    /// The fake's own URL, for `Link` headers.
    base: String,
}

impl Inner {
    /// A distinct, increasing timestamp for each note change.
    fn now(&mut self) -> String {
        iso8601(self.clock.tick(), true)
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

    /// Deletes a note (as a user deleting it in the web UI).
    pub fn delete_note(&self, id: u64) {
        self.lock().notes.retain(|n| n.id != id);
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
        // An unknown route is Grape's `{"error":"404 Not Found"}`.
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "error": "404 Not Found" })),
            )
        });
    api.layer(middleware::from_fn_with_state(
        inner.clone(),
        gate::<Shared>,
    ))
    .with_state(inner)
}

impl Product for Shared {
    fn refuse(&self, request: &Request) -> Option<Response> {
        let token = lock(self).token.clone();
        (!authorized(request.headers(), &token))
            .then(|| message(StatusCode::UNAUTHORIZED, "401 Unauthorized"))
    }

    fn failure_response(&self, failure: &Failure) -> Response {
        failure_response(failure)
    }

    fn with_script<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut lock(self).script)
    }
}

/// A scripted failure as GitLab gives it: a throttle (429) is Rack
/// Attack's plain `Retry later` with `Retry-After` and the `RateLimit-*`
/// headers; anything else is `{"message": <reason>}`.
fn failure_response(failure: &Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if status == StatusCode::TOO_MANY_REQUESTS {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain")],
            "Retry later\n",
        )
            .into_response()
    } else {
        message(status, status.canonical_reason().unwrap_or("error"))
    };
    let wait = failure.retry_after.or(failure.reset_after);
    let h = response.headers_mut();
    if let Some(secs) = failure.retry_after {
        h.insert("retry-after", HeaderValue::from(secs));
    }
    if let Some(secs) = wait {
        let reset = epoch_now() + secs;
        h.insert(
            "ratelimit-name",
            HeaderValue::from_static("throttle_authenticated_api"),
        );
        h.insert("ratelimit-limit", HeaderValue::from(2000u64));
        h.insert("ratelimit-observed", HeaderValue::from(2001u64));
        h.insert("ratelimit-remaining", HeaderValue::from(0u64));
        h.insert("ratelimit-reset", HeaderValue::from(reset));
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

/// One page of `items`, with GitLab's pagination headers (20 a page
/// unless `per_page` says otherwise, at most 100).
fn paged(base: &str, uri_path: &str, query: &[(String, String)], items: Vec<Value>) -> Response {
    let total = items.len();
    let p = Page::of(query, 20, total);
    let body = p.slice(items);
    let link =
        |page: usize, rel: &str| format!("{}; rel=\"{rel}\"", link_to(base, uri_path, query, page));
    let mut links = Vec::new();
    if p.page > 1 {
        links.push(link(p.page - 1, "prev"));
    }
    if p.page < p.pages {
        links.push(link(p.page + 1, "next"));
    }
    links.push(link(1, "first"));
    links.push(link(p.pages, "last"));
    let next = if p.page < p.pages {
        (p.page + 1).to_string()
    } else {
        String::new()
    };
    let prev = if p.page > 1 {
        (p.page - 1).to_string()
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
    set("x-page", p.page.to_string());
    set("x-per-page", p.per_page.to_string());
    set("x-next-page", next);
    set("x-prev-page", prev);
    set("x-total", total.to_string());
    set("x-total-pages", p.pages.to_string());
    set("link", links.join(", "));
    response
}

/// 400 `{"error":"<param> does not have a valid value"}` when `param` is
/// given and not one of `values`, as Grape's `values:` validation answers.
fn check_values(query: &[(String, String)], key: &str, values: &[&str]) -> Option<Response> {
    param(query, key)
        .filter(|v| !values.contains(v))
        .map(|_| bad_request(&format!("{key} does not have a valid value")))
}

async fn list_mrs(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    let checks = [
        (
            "state",
            &["opened", "closed", "locked", "merged", "all"][..],
        ),
        (
            "order_by",
            &["created_at", "updated_at", "title", "merged_at"][..],
        ),
        ("sort", &["asc", "desc"][..]),
    ];
    for (key, values) in checks {
        if let Some(refused) = check_values(&query, key, values) {
            return refused;
        }
    }
    let state = param(&query, "state").unwrap_or("all");
    // `labels` is an AND of names; `None` and `Any` (any case) are GitLab's
    // "no label" and "at least one label".
    let labels: Vec<&str> = param(&query, "labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let label_ok = |mr: &FakeMr| match labels.as_slice() {
        [one] if one.eq_ignore_ascii_case("none") => mr.labels.is_empty(),
        [one] if one.eq_ignore_ascii_case("any") => !mr.labels.is_empty(),
        all => all.iter().all(|l| mr.labels.iter().any(|m| m == l)),
    };
    let desc = !matches!(param(&query, "sort"), Some("asc"));
    let mut mrs: Vec<FakeMr> = lock(&inner)
        .mrs
        .values()
        .filter(|mr| state == "all" || mr.state == state)
        .filter(|mr| label_ok(mr))
        .cloned()
        .collect();
    // The fake's merge requests are never updated or merged: `updated_at`
    // and `merged_at` order as `created_at` does.
    if param(&query, "order_by") == Some("title") {
        mrs.sort_by(|a, b| a.title.cmp(&b.title).then(a.iid.cmp(&b.iid)));
    } else {
        mrs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.iid.cmp(&b.iid)));
    }
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

/// Grape's `at_least_one_of` message for `PUT merge_requests/:iid`.
const AT_LEAST_ONE: &str = "assignee_id, assignee_ids, reviewer_ids, description, labels, \
     add_labels, remove_labels, milestone_id, remove_source_branch, allow_collaboration, \
     allow_maintainer_to_push, squash, target_branch, title, state_event, discussion_locked, \
     merge_after are missing, at least one parameter must be provided";

async fn update_mr(
    State(inner): State<Shared>,
    Path((id, iid)): Path<(String, u64)>,
    body: axum::Json<MrUpdate>,
) -> Response {
    if !project_ok(&id) {
        return not_found("404 Project Not Found");
    }
    if body.labels.is_none() && body.add_labels.is_none() && body.remove_labels.is_none() {
        return bad_request(AT_LEAST_ONE);
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
    for (key, values) in [
        ("order_by", &["created_at", "updated_at"][..]),
        ("sort", &["asc", "desc"][..]),
    ] {
        if let Some(refused) = check_values(&query, key, values) {
            return refused;
        }
    }
    let g = lock(&inner);
    if !g.mrs.contains_key(&iid) {
        return not_found("404 Not found");
    }
    let mut notes: Vec<&FakeNote> = g.notes.iter().filter(|n| n.iid == iid).collect();
    // GitLab's default: order_by=created_at, sort=desc, the id breaking ties.
    if param(&query, "order_by") == Some("updated_at") {
        notes.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)));
    } else {
        notes.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    }
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
    let Some(text) = body.body.as_deref() else {
        return bad_request("body is missing");
    };
    let mut g = lock(&inner);
    if !g.mrs.contains_key(&iid) {
        return not_found("404 Not found");
    }
    if text.trim().is_empty() {
        // Grape lets an empty `body` through; the note's validation refuses it.
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - Note {:note=>[\"can't be blank\"]}",
        );
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
    // `body` is optional on update (`allow_blank: false`).
    if body.body.as_deref().is_some_and(str::is_empty) {
        return bad_request("body is empty");
    }
    let mut g = lock(&inner);
    let now = g.now();
    let Some(note) = g.notes.iter_mut().find(|n| n.id == note_id && n.iid == iid) else {
        return not_found("404 Not found");
    };
    if let Some(text) = body.body.clone() {
        note.body = text;
        note.updated_at = now;
        note.edits += 1;
    }
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
    // `refs[]=a&refs[]=b`, or one comma-separated `refs=a,b`.
    let refs: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "refs[]" || k == "refs")
        .flat_map(|(_, v)| v.split(','))
        .filter(|r| !r.is_empty())
        .collect();
    if refs.is_empty() {
        return bad_request("refs is missing");
    }
    if refs.len() < 2 {
        return message(StatusCode::BAD_REQUEST, "Provide at least 2 refs");
    }
    let g = lock(&inner);
    let known = |r: &str| {
        g.mrs.values().any(|mr| {
            [
                &mr.sha,
                &mr.source_branch,
                &mr.target_branch,
                &mr.merge_base,
            ]
            .iter()
            .any(|k| k.as_str() == r)
        })
    };
    let unknown: Vec<&str> = refs.iter().copied().filter(|r| !known(r)).collect();
    if !unknown.is_empty() {
        let noun = if unknown.len() == 1 { "ref" } else { "refs" };
        return message(
            StatusCode::BAD_REQUEST,
            &format!("Could not find {noun}: {}", unknown.join(", ")),
        );
    }
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
        None => not_found("404 Merge Base Not Found"),
    }
}
