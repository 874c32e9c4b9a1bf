//! The fake GitHub's common answers: its error bodies, the repository and
//! number checks of paths, `Link` headers, and the JSON of what many
//! answers embed (users, the repository, labels).

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{DOCS, OWNER, REPO, REPO_ID, WEB};
use crate::review_fake::{Page, encode, link_to};

/// An error answer on its way out of a handler (boxed: a `Response` is
/// large for an `Err`).
pub(super) struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// GitHub's error body: `{"message", "documentation_url", "status"}`.
pub(super) fn error(status: StatusCode, message: &str, documentation_url: &str) -> Refusal {
    Refusal(Box::new(
        (
            status,
            axum::Json(json!({
                "message": message,
                "documentation_url": documentation_url,
                "status": status.as_u16().to_string(),
            })),
        )
            .into_response(),
    ))
}

/// GitHub's 404 for anything it does not have (or will not show).
pub(super) fn not_found() -> Refusal {
    error(StatusCode::NOT_FOUND, "Not Found", DOCS)
}

/// 422 `Validation Failed` for one field of `resource`.
pub(super) fn invalid(
    resource: &str,
    field: &str,
    code: &str,
    message: Option<&str>,
    docs: &str,
) -> Refusal {
    let mut detail = json!({ "resource": resource, "field": field, "code": code });
    if let (Some(m), Some(obj)) = (message, detail.as_object_mut()) {
        obj.insert("message".into(), Value::from(m));
    }
    Refusal(Box::new(
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "message": "Validation Failed",
                "errors": [detail],
                "documentation_url": docs,
                "status": "422",
            })),
        )
            .into_response(),
    ))
}

/// Whether a path names the fake's repository (either form); 404 if not.
pub(super) fn repository(params: &HashMap<String, String>) -> Result<(), Refusal> {
    let ok = match (
        params.get("owner"),
        params.get("repo"),
        params.get("repository_id"),
    ) {
        (Some(o), Some(r), _) => o.eq_ignore_ascii_case(OWNER) && r.eq_ignore_ascii_case(REPO),
        (_, _, Some(id)) => *id == REPO_ID.to_string(),
        _ => false,
    };
    if ok { Ok(()) } else { Err(not_found()) }
}

/// A numeric path parameter; GitHub answers 404 for anything else.
pub(super) fn number(params: &HashMap<String, String>, key: &str) -> Result<u64, Refusal> {
    params
        .get(key)
        .and_then(|n| n.parse().ok())
        .ok_or_else(not_found)
}

/// One page of a list: the page, and GitHub's `Link` header when there is
/// more than one (`suffix` is the path after `/repositories/{id}`).
pub(super) fn link(
    base: &str,
    suffix: &str,
    query: &[(String, String)],
    page: &Page,
) -> Option<HeaderValue> {
    if page.pages <= 1 {
        return None;
    }
    let path = format!("/repositories/{REPO_ID}{suffix}");
    let rel = |p: usize, rel: &str| format!("{}; rel=\"{rel}\"", link_to(base, &path, query, p));
    let mut links = Vec::new();
    if page.page > 1 {
        links.push(rel(page.page - 1, "prev"));
    }
    if page.page < page.pages {
        links.push(rel(page.page + 1, "next"));
        links.push(rel(page.pages, "last"));
    }
    if page.page > 1 {
        links.push(rel(1, "first"));
    }
    HeaderValue::from_str(&links.join(", ")).ok()
}

/// `body` as JSON with `link` set, 200.
pub(super) fn with_link(body: Value, link: Option<HeaderValue>) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// A user as GitHub embeds one (`user`, `owner`, `author`).
pub(super) fn user_json(base: &str, login: &str, kind: &str) -> Value {
    json!({
        "login": login,
        "id": stable_id(login),
        "node_id": format!("U_fake{}", stable_id(login)),
        "type": kind,
        "site_admin": false,
        "url": format!("{base}/users/{login}"),
        "html_url": format!("{WEB}/{login}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", stable_id(login)),
    })
}

/// The repository as GitHub embeds it (`head.repo`, `base.repo`).
pub(super) fn repo_json(base: &str) -> Value {
    json!({
        "id": REPO_ID,
        "node_id": "R_fake",
        "name": REPO,
        "full_name": format!("{OWNER}/{REPO}"),
        "private": false,
        "owner": user_json(base, OWNER, "Organization"),
        "html_url": format!("{WEB}/{OWNER}/{REPO}"),
        "url": format!("{base}/repos/{OWNER}/{REPO}"),
        "default_branch": "main",
    })
}

/// A label object.
pub(super) fn label_json(base: &str, name: &str) -> Value {
    json!({
        "id": stable_id(name),
        "node_id": format!("LA_fake{}", stable_id(name)),
        "url": format!("{base}/repos/{OWNER}/{REPO}/labels/{}", encode(name)),
        "name": name,
        "color": "ededed",
        "default": false,
        "description": null,
    })
}

/// A stable id for a name (FNV-1a), so a label or user keeps its id.
pub(super) fn stable_id(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    1_000_000 + hash % 1_000_000_000
}
