//! Issues and pull requests, their comments and labels, as the fake GitHub
//! serves them.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::{
    Answer, BOT_LOGIN, DOCS, FakeComment, FakePr, OTHER_LOGIN, OWNER, PathParams, QueryParams,
    REPO, Refusal, Shared, WEB, error, invalid, label_json, link, lock, not_found, number,
    repo_json, repository, user_json, with_link,
};
use crate::review_fake::{Page, param};

/// GitHub's limit on a comment's body, in characters.
const MAX_BODY: usize = 65_536;

/// One issue or pull request of the list, with what it sorts by.
struct Row {
    number: u64,
    created_at: String,
    comments: usize,
    json: Value,
}

/// `GET issues`: issues and pull requests, filtered and sorted as asked.
pub(super) async fn list_issues(
    State(inner): State<Shared>,
    Path(params): PathParams,
    Query(query): QueryParams,
) -> Answer {
    repository(&params)?;
    const DOC: &str = "https://docs.github.com/rest/issues/issues#list-repository-issues";
    for (field, values) in [
        ("state", &["open", "closed", "all"][..]),
        ("sort", &["created", "updated", "comments"][..]),
        ("direction", &["asc", "desc"][..]),
    ] {
        if let Some(v) = param(&query, field)
            && !values.contains(&v)
        {
            return Err(invalid("Issue", field, "invalid", None, DOC));
        }
    }
    let state = param(&query, "state").unwrap_or("open");
    // Every listed label must be on the item (GitHub's names ignore case).
    let wanted: Vec<&str> = param(&query, "labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let matches = |item_state: &str, labels: &[String]| {
        (state == "all" || item_state == state)
            && wanted
                .iter()
                .all(|w| labels.iter().any(|l| l.eq_ignore_ascii_case(w)))
    };
    let g = lock(&inner);
    let count = |n: u64| g.comments.iter().filter(|c| c.number == n).count();
    let mut rows: Vec<Row> = Vec::new();
    for pr in g.prs.values().filter(|pr| matches(&pr.state, &pr.labels)) {
        let comments = count(pr.number);
        rows.push(Row {
            number: pr.number,
            created_at: pr.created_at.clone(),
            comments,
            json: issue_json(
                &g.base,
                IssueFields {
                    number: pr.number,
                    title: &pr.title,
                    state: &pr.state,
                    created_at: &pr.created_at,
                    labels: &pr.labels,
                    comments,
                },
                Some(pr),
            ),
        });
    }
    for issue in g.issues.values().filter(|i| matches(&i.state, &i.labels)) {
        let comments = count(issue.number);
        rows.push(Row {
            number: issue.number,
            created_at: issue.created_at.clone(),
            comments,
            json: issue_json(
                &g.base,
                IssueFields {
                    number: issue.number,
                    title: &issue.title,
                    state: &issue.state,
                    created_at: &issue.created_at,
                    labels: &issue.labels,
                    comments,
                },
                None,
            ),
        });
    }
    // Nothing in the fake is updated after it is created: `updated` sorts
    // as `created` does.
    if param(&query, "sort") == Some("comments") {
        rows.sort_by(|a, b| {
            (a.comments, &a.created_at, a.number).cmp(&(b.comments, &b.created_at, b.number))
        });
    } else {
        rows.sort_by(|a, b| (&a.created_at, a.number).cmp(&(&b.created_at, b.number)));
    }
    if param(&query, "direction") != Some("asc") {
        rows.reverse();
    }
    let page = Page::of(&query, 30, rows.len());
    let link = link(&g.base, "/issues", &query, &page);
    let body: Vec<Value> = page.slice(rows).into_iter().map(|r| r.json).collect();
    Ok(with_link(Value::Array(body), link))
}

/// `GET pulls/{pull_number}`: a pull request (404 for a plain issue).
pub(super) async fn get_pull(State(inner): State<Shared>, Path(params): PathParams) -> Answer {
    repository(&params)?;
    let n = number(&params, "pull_number")?;
    let g = lock(&inner);
    let pr = g.prs.get(&n).ok_or_else(not_found)?;
    let comments = g.comments.iter().filter(|c| c.number == n).count();
    Ok(axum::Json(pr_json(&g.base, pr, comments)).into_response())
}

/// `GET issues/{issue_number}/comments?since=`: oldest first.
pub(super) async fn list_comments(
    State(inner): State<Shared>,
    Path(params): PathParams,
    Query(query): QueryParams,
) -> Answer {
    repository(&params)?;
    let n = number(&params, "issue_number")?;
    let g = lock(&inner);
    if !g.exists(n) {
        return Err(not_found());
    }
    let since = param(&query, "since");
    let mut comments: Vec<&FakeComment> = g
        .comments
        .iter()
        .filter(|c| c.number == n)
        .filter(|c| since.is_none_or(|s| c.updated_at.as_str() >= s))
        .collect();
    comments.sort_by_key(|c| c.id);
    let is_pr = g.prs.contains_key(&n);
    let page = Page::of(&query, 30, comments.len());
    let link = link(&g.base, &format!("/issues/{n}/comments"), &query, &page);
    let body: Vec<Value> = page
        .slice(comments)
        .into_iter()
        .map(|c| comment_json(&g.base, c, is_pr))
        .collect();
    Ok(with_link(Value::Array(body), link))
}

/// `POST issues/{issue_number}/comments` `{"body": …}`: 201 with the
/// comment and its `Location`.
pub(super) async fn create_comment(
    State(inner): State<Shared>,
    Path(params): PathParams,
    body: Bytes,
) -> Answer {
    const DOC: &str = "https://docs.github.com/rest/issues/comments#create-an-issue-comment";
    repository(&params)?;
    let n = number(&params, "issue_number")?;
    let text = comment_body(&body, DOC)?;
    let mut g = lock(&inner);
    if !g.exists(n) {
        return Err(not_found());
    }
    let comment = g.add_comment(n, &text, BOT_LOGIN);
    let json = comment_json(&g.base, &comment, g.prs.contains_key(&n));
    let location = json["url"]
        .as_str()
        .and_then(|u| HeaderValue::from_str(u).ok());
    let mut response = (StatusCode::CREATED, axum::Json(json)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PATCH issues/comments/{comment_id}` `{"body": …}` (no issue number in
/// the path).
pub(super) async fn update_comment(
    State(inner): State<Shared>,
    Path(params): PathParams,
    body: Bytes,
) -> Answer {
    const DOC: &str = "https://docs.github.com/rest/issues/comments#update-an-issue-comment";
    repository(&params)?;
    let id = number(&params, "comment_id")?;
    let text = comment_body(&body, DOC)?;
    let mut g = lock(&inner);
    let n = g
        .comments
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.number)
        .ok_or_else(not_found)?;
    let is_pr = g.prs.contains_key(&n);
    let now = g.now();
    let base = g.base.clone();
    let comment = g
        .comments
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(not_found)?;
    comment.body = text;
    comment.updated_at = now;
    comment.edits += 1;
    Ok(axum::Json(comment_json(&base, comment, is_pr)).into_response())
}

/// `GET issues/{issue_number}/labels`.
pub(super) async fn list_labels(
    State(inner): State<Shared>,
    Path(params): PathParams,
    Query(query): QueryParams,
) -> Answer {
    repository(&params)?;
    let n = number(&params, "issue_number")?;
    let g = lock(&inner);
    let labels = g.labels(n).ok_or_else(not_found)?;
    let page = Page::of(&query, 30, labels.len());
    let link = link(&g.base, &format!("/issues/{n}/labels"), &query, &page);
    let body: Vec<Value> = page
        .slice(labels.iter().collect())
        .into_iter()
        .map(|l| label_json(&g.base, l))
        .collect();
    Ok(with_link(Value::Array(body), link))
}

/// `POST issues/{issue_number}/labels` `{"labels": [...]}` (or a bare array
/// of names, or of `{"name": …}`): adds them; 200 with all the labels.
pub(super) async fn add_labels(
    State(inner): State<Shared>,
    Path(params): PathParams,
    body: Bytes,
) -> Answer {
    const DOC: &str = "https://docs.github.com/rest/issues/labels#add-labels-to-an-issue";
    repository(&params)?;
    let n = number(&params, "issue_number")?;
    let names = label_names(&body, DOC)?;
    let mut g = lock(&inner);
    let labels = g.labels_mut(n).ok_or_else(not_found)?;
    for name in names {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(&name)) {
            labels.push(name);
        }
    }
    let all = labels.clone();
    Ok(axum::Json(labels_json(&g.base, &all)).into_response())
}

/// `DELETE issues/{issue_number}/labels/{name}`: 200 with the labels left,
/// 404 `Label does not exist` when it is not there.
pub(super) async fn remove_label(State(inner): State<Shared>, Path(params): PathParams) -> Answer {
    repository(&params)?;
    let n = number(&params, "issue_number")?;
    let name = params.get("name").cloned().unwrap_or_default();
    let mut g = lock(&inner);
    let labels = g.labels_mut(n).ok_or_else(not_found)?;
    let Some(i) = labels.iter().position(|l| l.eq_ignore_ascii_case(&name)) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "Label does not exist",
            "https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue",
        ));
    };
    labels.remove(i);
    let left = labels.clone();
    Ok(axum::Json(labels_json(&g.base, &left)).into_response())
}

/// A JSON object body, or GitHub's 400s for anything else.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "Body should be a JSON object",
            DOCS,
        )),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            DOCS,
        )),
    }
}

/// The `body` of a comment request: present, a string, not blank, at most
/// 65,536 characters.
fn comment_body(body: &[u8], doc: &str) -> Result<String, Refusal> {
    let map = json_object(body)?;
    let Some(value) = map.get("body") else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"body\" wasn't supplied.",
            doc,
        ));
    };
    let Some(text) = value.as_str() else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Invalid request.\n\nFor 'properties/body', {value} is not a string."),
            doc,
        ));
    };
    if text.trim().is_empty() {
        return Err(invalid(
            "IssueComment",
            "data",
            "unprocessable",
            Some("Body cannot be blank"),
            doc,
        ));
    }
    if text.chars().count() > MAX_BODY {
        return Err(invalid(
            "IssueComment",
            "data",
            "unprocessable",
            Some("Body is too long (maximum is 65536 characters)"),
            doc,
        ));
    }
    Ok(text.to_owned())
}

/// The names of an add-labels request.
fn label_names(body: &[u8], doc: &str) -> Result<Vec<String>, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Problems parsing JSON", DOCS))?;
    let list = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("labels") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid request.\n\n\"labels\" wasn't supplied.",
                    doc,
                ));
            }
        },
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Body should be a JSON object",
                DOCS,
            ));
        }
    };
    list.iter()
        .map(|item| {
            let name = match item {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("name").and_then(Value::as_str),
                _ => None,
            };
            name.filter(|n| !n.trim().is_empty())
                .map(str::to_owned)
                .ok_or_else(|| invalid("Label", "name", "invalid", None, doc))
        })
        .collect()
}

fn labels_json(base: &str, labels: &[String]) -> Value {
    Value::Array(labels.iter().map(|l| label_json(base, l)).collect())
}

/// What an issue item is made of, for a pull request or a plain issue.
struct IssueFields<'a> {
    number: u64,
    title: &'a str,
    state: &'a str,
    created_at: &'a str,
    labels: &'a [String],
    comments: usize,
}

/// An item of `GET issues`; a pull request's has `pull_request`.
fn issue_json(base: &str, f: IssueFields<'_>, pr: Option<&FakePr>) -> Value {
    let n = f.number;
    let api = format!("{base}/repos/{OWNER}/{REPO}");
    let web = format!("{WEB}/{OWNER}/{REPO}");
    let kind = if pr.is_some() { "pull" } else { "issues" };
    let closed_at = (f.state == "closed").then_some(f.created_at);
    let mut item = json!({
        "id": 2_000_000 + n,
        "node_id": format!("I_fake{n}"),
        "url": format!("{api}/issues/{n}"),
        "repository_url": api,
        "labels_url": format!("{api}/issues/{n}/labels{{/name}}"),
        "comments_url": format!("{api}/issues/{n}/comments"),
        "events_url": format!("{api}/issues/{n}/events"),
        "html_url": format!("{web}/{kind}/{n}"),
        "number": n,
        "state": f.state,
        "state_reason": null,
        "title": f.title,
        "body": null,
        "user": user_json(base, OTHER_LOGIN, "User"),
        "labels": labels_json(base, f.labels),
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "locked": false,
        "active_lock_reason": null,
        "comments": f.comments,
        "closed_at": closed_at,
        "created_at": f.created_at,
        "updated_at": f.created_at,
        "author_association": "CONTRIBUTOR",
    });
    if let (Some(pr), Some(obj)) = (pr, item.as_object_mut()) {
        obj.insert(
            "pull_request".into(),
            json!({
                "url": format!("{api}/pulls/{n}"),
                "html_url": format!("{web}/pull/{n}"),
                "diff_url": format!("{web}/pull/{n}.diff"),
                "patch_url": format!("{web}/pull/{n}.patch"),
                "merged_at": pr.merged.then_some(&pr.created_at),
            }),
        );
        obj.insert("draft".into(), Value::Bool(pr.draft));
    }
    item
}

/// One end of a pull request (`head` or `base`).
fn end_json(base: &str, branch: &str, sha: &str) -> Value {
    json!({
        "label": format!("{OWNER}:{branch}"),
        "ref": branch,
        "sha": sha,
        "user": user_json(base, OWNER, "Organization"),
        "repo": repo_json(base),
    })
}

/// `GET pulls/{pull_number}`'s answer.
fn pr_json(base: &str, p: &FakePr, comments: usize) -> Value {
    let n = p.number;
    let api = format!("{base}/repos/{OWNER}/{REPO}");
    let web = format!("{WEB}/{OWNER}/{REPO}");
    let closed = p.state == "closed";
    let mergeable_state = match (closed, p.mergeable) {
        (true, _) | (false, None) => "unknown",
        (false, Some(true)) if p.draft => "draft",
        (false, Some(true)) => "clean",
        (false, Some(false)) => "dirty",
    };
    let mut v = json!({
        "url": format!("{api}/pulls/{n}"),
        "id": 3_000_000 + n,
        "node_id": format!("PR_fake{n}"),
        "html_url": format!("{web}/pull/{n}"),
        "diff_url": format!("{web}/pull/{n}.diff"),
        "patch_url": format!("{web}/pull/{n}.patch"),
        "issue_url": format!("{api}/issues/{n}"),
        "commits_url": format!("{api}/pulls/{n}/commits"),
        "review_comments_url": format!("{api}/pulls/{n}/comments"),
        "comments_url": format!("{api}/issues/{n}/comments"),
        "statuses_url": format!("{api}/statuses/{}", p.head_sha),
        "number": n,
        "state": p.state,
        "locked": false,
        "title": p.title,
        "user": user_json(base, OTHER_LOGIN, "User"),
        "body": null,
        "labels": labels_json(base, &p.labels),
        "milestone": null,
        "active_lock_reason": null,
        "created_at": p.created_at,
        "updated_at": p.created_at,
        "closed_at": closed.then_some(&p.created_at),
        "merged_at": p.merged.then_some(&p.created_at),
        "merge_commit_sha": null,
    });
    // Two `json!` halves: one would pass the macro's recursion limit.
    let rest = json!({
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": end_json(base, &p.head_ref, &p.head_sha),
        "base": end_json(base, &p.base_ref, &p.base_sha),
        "author_association": "CONTRIBUTOR",
        "auto_merge": null,
        "draft": p.draft,
        "merged": p.merged,
        "mergeable": p.mergeable,
        "rebaseable": p.mergeable,
        "mergeable_state": mergeable_state,
        "merged_by": null,
        "comments": comments,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), rest) {
        obj.extend(more);
    }
    v
}

/// An issue comment.
fn comment_json(base: &str, c: &FakeComment, is_pr: bool) -> Value {
    let api = format!("{base}/repos/{OWNER}/{REPO}");
    let kind = if is_pr { "pull" } else { "issues" };
    let (kind_of_user, association) = if c.author == BOT_LOGIN {
        ("User", "MEMBER")
    } else {
        ("User", "CONTRIBUTOR")
    };
    json!({
        "id": c.id,
        "node_id": format!("IC_fake{}", c.id),
        "url": format!("{api}/issues/comments/{}", c.id),
        "html_url": format!("{WEB}/{OWNER}/{REPO}/{kind}/{}#issuecomment-{}", c.number, c.id),
        "issue_url": format!("{api}/issues/{}", c.number),
        "body": c.body,
        "user": user_json(base, &c.author, kind_of_user),
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "author_association": association,
        "performed_via_github_app": null,
    })
}
