//! Commits as the fake GitHub serves them: a ref's check runs, its
//! combined status, and the comparison of two refs (the merge base).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{
    Answer, Inner, OTHER_LOGIN, OWNER, PathParams, QueryParams, REPO, Refusal, Shared, StoredRun,
    StoredStatus, WEB, error, invalid, link, lock, not_found, repo_json, repository, user_json,
    with_link,
};
use crate::review_fake::{Page, param};

/// `GET commits/{ref}/check-runs` and `GET commits/{ref}/status`; `{ref}`
/// may hold slashes (`heads/main`), so both share one wildcard route.
pub(super) async fn commit_checks(
    State(inner): State<Shared>,
    Path(params): PathParams,
    Query(query): QueryParams,
) -> Answer {
    repository(&params)?;
    let rest = params
        .get("ref_and_suffix")
        .map(String::as_str)
        .unwrap_or_default();
    let g = lock(&inner);
    if let Some(r) = rest.strip_suffix("/check-runs") {
        check_runs(&g, r, &query)
    } else if let Some(r) = rest.strip_suffix("/status") {
        combined_status(&g, r, &query)
    } else {
        Err(not_found())
    }
}

/// The commit a ref names: a known SHA (or an unambiguous prefix of 7 or
/// more characters), a branch of a pull request (`main`, `heads/main`,
/// `refs/heads/main`, `octo-org:main`), or any full 40-hex SHA.
fn resolve(g: &Inner, r: &str) -> Option<String> {
    let owner_prefix = format!("{OWNER}:");
    let name = r.strip_prefix("refs/").unwrap_or(r);
    let name = name
        .strip_prefix("heads/")
        .or_else(|| name.strip_prefix("tags/"))
        .unwrap_or(name);
    let name = name.strip_prefix(owner_prefix.as_str()).unwrap_or(name);
    let mut known: Vec<&String> = g
        .prs
        .values()
        .flat_map(|pr| [&pr.head_sha, &pr.base_sha, &pr.merge_base])
        .chain(g.check_runs.keys())
        .chain(g.statuses.keys())
        .collect();
    known.sort();
    known.dedup();
    if known.iter().any(|k| k.as_str() == r) {
        return Some(r.to_owned());
    }
    if let Some(pr) = g.prs.values().find(|pr| pr.head_ref == name) {
        return Some(pr.head_sha.clone());
    }
    if let Some(pr) = g.prs.values().find(|pr| pr.base_ref == name) {
        return Some(pr.base_sha.clone());
    }
    let hex = !r.is_empty() && r.chars().all(|c| c.is_ascii_hexdigit());
    if hex && r.len() >= 7 {
        let mut matching = known.iter().filter(|k| k.starts_with(r));
        if let (Some(one), None) = (matching.next(), matching.next()) {
            return Some((*one).clone());
        }
    }
    (hex && r.len() == 40).then(|| r.to_owned())
}

/// GitHub's 422 for a ref that names no commit.
fn no_commit(r: &str, doc: &str) -> Refusal {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!("No commit found for SHA: {r}"),
        doc,
    )
}

/// `{ "total_count", "check_runs" }` of a ref, filtered by `check_name`,
/// `status` and `filter` (`latest`, the default: the newest run of each
/// name; `all`).
fn check_runs(g: &Inner, r: &str, query: &[(String, String)]) -> Answer {
    const DOC: &str =
        "https://docs.github.com/rest/checks/runs#list-check-runs-for-a-git-reference";
    for (field, values) in [
        ("filter", &["latest", "all"][..]),
        ("status", &["queued", "in_progress", "completed"][..]),
    ] {
        if let Some(v) = param(query, field)
            && !values.contains(&v)
        {
            return Err(invalid("CheckRun", field, "invalid", None, DOC));
        }
    }
    let sha = resolve(g, r).ok_or_else(|| no_commit(r, DOC))?;
    let stored: &[StoredRun] = g.check_runs.get(&sha).map_or(&[], Vec::as_slice);
    let latest = param(query, "filter") != Some("all");
    let runs: Vec<&StoredRun> = stored
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !latest
                || !stored[i + 1..]
                    .iter()
                    .any(|later| later.run.name == s.run.name)
        })
        .map(|(_, s)| s)
        .filter(|s| param(query, "check_name").is_none_or(|n| s.run.name == n))
        .filter(|s| param(query, "status").is_none_or(|st| s.run.status == st))
        .collect();
    let page = Page::of(query, 30, runs.len());
    let link = link(&g.base, &format!("/commits/{r}/check-runs"), query, &page);
    let total = runs.len();
    let items: Vec<Value> = page
        .slice(runs)
        .into_iter()
        .map(|s| check_run_json(g, &sha, s))
        .collect();
    Ok(with_link(
        json!({ "total_count": total, "check_runs": items }),
        link,
    ))
}

fn check_run_json(g: &Inner, sha: &str, s: &StoredRun) -> Value {
    let base = &g.base;
    let api = format!("{base}/repos/{OWNER}/{REPO}");
    let html = format!("{WEB}/{OWNER}/{REPO}/runs/{}", s.id);
    let pulls: Vec<Value> = g
        .prs
        .values()
        .filter(|pr| pr.head_sha == sha)
        .map(|pr| {
            let repo = json!({ "id": super::REPO_ID, "url": api, "name": REPO });
            json!({
                "url": format!("{api}/pulls/{}", pr.number),
                "id": 3_000_000 + pr.number,
                "number": pr.number,
                "head": { "ref": pr.head_ref, "sha": pr.head_sha, "repo": repo },
                "base": { "ref": pr.base_ref, "sha": pr.base_sha, "repo": repo },
            })
        })
        .collect();
    json!({
        "id": s.id,
        "node_id": format!("CR_fake{}", s.id),
        "head_sha": sha,
        "external_id": "",
        "url": format!("{api}/check-runs/{}", s.id),
        "html_url": html,
        "details_url": html,
        "status": s.run.status,
        "conclusion": s.run.conclusion,
        "started_at": s.run.started_at,
        "completed_at": s.run.completed_at,
        "output": {
            "title": null,
            "summary": null,
            "text": null,
            "annotations_count": 0,
            "annotations_url": format!("{api}/check-runs/{}/annotations", s.id),
        },
        "name": s.run.name,
        "check_suite": { "id": 5_000_000 + s.id },
        "app": {
            "id": 15_368,
            "slug": s.run.app_slug,
            "node_id": "MDM6QXBwMTUzNjg=",
            "name": s.run.app_slug,
            "owner": user_json(base, "github", "Organization"),
        },
        "pull_requests": pulls,
    })
}

/// The combined status of a ref: the latest status of each context, and
/// `failure` if one is `error` or `failure`, else `pending` if there are
/// none or one is `pending`, else `success`.
fn combined_status(g: &Inner, r: &str, query: &[(String, String)]) -> Answer {
    const DOC: &str = "https://docs.github.com/rest/commits/statuses#get-the-combined-status-for-a-specific-reference";
    let sha = resolve(g, r).ok_or_else(|| no_commit(r, DOC))?;
    let stored: &[StoredStatus] = g.statuses.get(&sha).map_or(&[], Vec::as_slice);
    let latest: Vec<&StoredStatus> = stored
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !stored[i + 1..]
                .iter()
                .any(|later| later.status.context == s.status.context)
        })
        .map(|(_, s)| s)
        .collect();
    let has = |state: &str| latest.iter().any(|s| s.status.state == state);
    let state = if has("error") || has("failure") {
        "failure"
    } else if latest.is_empty() || has("pending") {
        "pending"
    } else {
        "success"
    };
    let api = format!("{}/repos/{OWNER}/{REPO}", g.base);
    let page = Page::of(query, 30, latest.len());
    let link = link(&g.base, &format!("/commits/{r}/status"), query, &page);
    let total = latest.len();
    let statuses: Vec<Value> = page
        .slice(latest)
        .into_iter()
        .map(|s| {
            json!({
                "url": format!("{api}/statuses/{sha}"),
                "avatar_url": "https://avatars.githubusercontent.com/oa/4808?v=4",
                "id": s.id,
                "node_id": format!("SC_fake{}", s.id),
                "state": s.status.state,
                "description": s.status.description,
                "target_url": s.status.target_url,
                "context": s.status.context,
                "created_at": s.at,
                "updated_at": s.at,
            })
        })
        .collect();
    Ok(with_link(
        json!({
            "state": state,
            "statuses": statuses,
            "sha": sha,
            "total_count": total,
            "repository": repo_json(&g.base),
            "commit_url": format!("{api}/commits/{sha}"),
            "url": format!("{api}/commits/{sha}/status"),
        }),
        link,
    ))
}

/// `GET compare/{base}...{head}`: how `head` relates to `base`, through
/// the pull requests the fake knows (a head meets its base branch at the
/// pull request's merge base).
pub(super) async fn compare(
    State(inner): State<Shared>,
    Path(params): PathParams,
    Query(query): QueryParams,
) -> Answer {
    repository(&params)?;
    let basehead = params.get("basehead").cloned().unwrap_or_default();
    let (base_ref, head_ref) = basehead.split_once("...").ok_or_else(not_found)?;
    let g = lock(&inner);
    let base = resolve(&g, base_ref).ok_or_else(not_found)?;
    let head = resolve(&g, head_ref).ok_or_else(not_found)?;
    let meets = |from: &str, to: &str| {
        g.prs
            .values()
            .find(|pr| pr.head_sha == from && (to == pr.base_sha || to == pr.merge_base))
            .map(|pr| pr.merge_base.clone())
    };
    // (merge base, commits only head has, commits only base has)
    let (merge_base, ahead, behind) = if base == head {
        (head.clone(), 0, 0)
    } else if let Some(mb) = meets(&head, &base) {
        (mb.clone(), 1, usize::from(base != mb))
    } else if let Some(mb) = meets(&base, &head) {
        (mb.clone(), usize::from(head != mb), 1)
    } else {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("No common ancestor between {base_ref} and {head_ref}."),
            "https://docs.github.com/rest/commits/commits#compare-two-commits",
        ));
    };
    let status = match (ahead, behind) {
        (0, 0) => "identical",
        (_, 0) => "ahead",
        (0, _) => "behind",
        _ => "diverged",
    };
    let commits: Vec<Value> = if ahead > 0 {
        vec![commit_json(&g.base, &head, &[&merge_base])]
    } else {
        Vec::new()
    };
    let page = Page::of(&query, 30, commits.len());
    let link = link(&g.base, &format!("/compare/{basehead}"), &query, &page);
    let api = format!("{}/repos/{OWNER}/{REPO}", g.base);
    let web = format!("{WEB}/{OWNER}/{REPO}");
    Ok(with_link(
        json!({
            "url": format!("{api}/compare/{basehead}"),
            "html_url": format!("{web}/compare/{basehead}"),
            "permalink_url": format!("{web}/compare/{OWNER}:{base}...{OWNER}:{head}"),
            "diff_url": format!("{web}/compare/{basehead}.diff"),
            "patch_url": format!("{web}/compare/{basehead}.patch"),
            "base_commit": commit_json(&g.base, &base, &[]),
            "merge_base_commit": commit_json(&g.base, &merge_base, &[]),
            "status": status,
            "ahead_by": ahead,
            "behind_by": behind,
            "total_commits": ahead,
            "commits": page.slice(commits),
            "files": [],
        }),
        link,
    ))
}

/// A commit as `compare` gives it.
fn commit_json(base: &str, sha: &str, parents: &[&str]) -> Value {
    let api = format!("{base}/repos/{OWNER}/{REPO}");
    let web = format!("{WEB}/{OWNER}/{REPO}");
    let short: String = sha.chars().take(7).collect();
    let person =
        json!({ "name": "Dev", "email": "dev@example.org", "date": "2025-12-31T12:00:00Z" });
    let parents: Vec<Value> = parents
        .iter()
        .map(|p| {
            json!({
                "sha": p,
                "url": format!("{api}/commits/{p}"),
                "html_url": format!("{web}/commit/{p}"),
            })
        })
        .collect();
    json!({
        "sha": sha,
        "node_id": format!("C_fake{short}"),
        "url": format!("{api}/commits/{sha}"),
        "html_url": format!("{web}/commit/{sha}"),
        "comments_url": format!("{api}/commits/{sha}/comments"),
        "commit": {
            "url": format!("{api}/git/commits/{sha}"),
            "author": person,
            "committer": person,
            "message": format!("Commit {short}"),
            "tree": { "sha": sha, "url": format!("{api}/git/trees/{sha}") },
            "comment_count": 0,
            "verification": { "verified": false, "reason": "unsigned", "signature": null, "payload": null },
        },
        "author": user_json(base, OTHER_LOGIN, "User"),
        "committer": user_json(base, OTHER_LOGIN, "User"),
        "parents": parents,
    })
}
