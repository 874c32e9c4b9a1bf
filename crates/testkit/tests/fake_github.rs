//! The fake GitHub, exercised over HTTP with reqwest as a client would use
//! it: authentication and the `User-Agent` rule, every endpoint, paging by
//! `Link`, rate-limit headers and scripted failures.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testfleet_testkit::github::{
    BOT_LOGIN, Failure, FakeCheckRun, FakeGitHub, FakeIssue, FakePr, FakeStatus, OTHER_LOGIN,
    REPO_ID,
};

const TOKEN: &str = "ghp_fake_token";
const REPO: &str = "/repos/octo-org/octo-repo";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn http() -> reqwest::Client {
    // reqwest needs a rustls provider; testfleet uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent("testfleet-fake-github-test")
        .build()
        .expect("http client")
}

/// An authenticated request to `path` (under the fake's root).
fn call(fake: &FakeGitHub, method: Method, path: &str) -> reqwest::RequestBuilder {
    http()
        .request(method, format!("{}{path}", fake.url))
        .bearer_auth(TOKEN)
}

async fn get(fake: &FakeGitHub, path: &str) -> (StatusCode, HeaderMap, Value) {
    send(call(fake, Method::GET, path)).await
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The `rel` targets of a `Link` header, in order.
fn links(headers: &HeaderMap) -> Vec<(String, String)> {
    header(headers, "link")
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (url, rel) = part.split_once(';').expect("url; rel");
            let url = url.trim().trim_start_matches('<').trim_end_matches('>');
            let rel = rel
                .trim()
                .trim_start_matches("rel=\"")
                .trim_end_matches('"');
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

fn numbers(body: &Value) -> Vec<u64> {
    body.as_array()
        .expect("a list")
        .iter()
        .map(|i| i["number"].as_u64().expect("number"))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// Five pull requests and one issue, created in number order.
async fn seeded() -> FakeGitHub {
    let fake = FakeGitHub::start(TOKEN).await;
    for (n, labels) in [
        (1, &["benchmark", "perf"][..]),
        (2, &["benchmark"][..]),
        (3, &["perf", "Benchmark"][..]),
        (4, &[][..]),
        (5, &["benchmark", "perf"][..]),
    ] {
        fake.put_pr(FakePr::new(
            n,
            &format!("2026-01-0{n}T00:00:00Z"),
            &sha(char::from(b'a' + n as u8)),
            &sha('0'),
            labels,
        ));
    }
    fake.put_issue(FakeIssue::new(
        6,
        "2026-01-06T00:00:00Z",
        &["benchmark", "perf"],
    ));
    fake
}

#[tokio::test]
async fn user_agent_and_token_are_required_and_every_answer_counts_the_rate_limit() {
    let fake = seeded().await;
    let url = format!("{}{REPO}/pulls/1", fake.url);

    // No User-Agent: GitHub's front end refuses before authentication.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bare = reqwest::Client::builder().build().expect("client");
    let (status, _, body) = send(bare.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.as_str().is_some_and(|t| t.contains("User-Agent")),
        "{body}"
    );

    // No token, a wrong one: 401 Bad credentials.
    for request in [http().get(&url), http().get(&url).bearer_auth("wrong")] {
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401",
            })
        );
        assert_eq!(header(&headers, "x-ratelimit-resource"), "core");
    }

    // `Bearer` and `token` both work.
    let (status, _, _) = send(http().get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = send(
        http()
            .get(&url)
            .header("Authorization", format!("token {TOKEN}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The rate-limit headers: limit, remaining = limit − used, a reset in
    // the coming hour, the `core` resource.
    let limit: u64 = header(&headers, "x-ratelimit-limit")
        .parse()
        .expect("limit");
    let used: u64 = header(&headers, "x-ratelimit-used").parse().expect("used");
    let remaining: u64 = header(&headers, "x-ratelimit-remaining")
        .parse()
        .expect("remaining");
    let reset: u64 = header(&headers, "x-ratelimit-reset")
        .parse()
        .expect("reset");
    assert_eq!((limit, used, remaining), (5000, 5, 4995));
    assert!(reset > now() && reset <= now() + 3600, "{reset}");
    assert_eq!(header(&headers, "x-ratelimit-resource"), "core");

    // A rotated token: the old one is refused.
    fake.set_token("ghp_new");
    let (status, _, _) = get(&fake, &format!("{REPO}/pulls/1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![403, 401, 401, 200, 200, 401]);
}

#[tokio::test]
async fn the_issue_list_filters_labels_as_an_and_and_tells_pull_requests_apart() {
    let fake = seeded().await;
    let mut closed = FakePr::new(7, "2026-01-07T00:00:00Z", &sha('f'), &sha('0'), &["perf"]);
    closed.state = "closed".to_owned();
    fake.put_pr(closed);

    // Defaults: open only, newest first.
    let (status, headers, body) = get(&fake, &format!("{REPO}/issues")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(numbers(&body), vec![6, 5, 4, 3, 2, 1]);
    assert!(headers.get("link").is_none(), "one page: no Link");
    assert!(headers.get("x-total").is_none() && headers.get("x-total-count").is_none());

    // Every label of the comma list must be there (names ignore case).
    let (_, _, body) = get(
        &fake,
        &format!("{REPO}/issues?labels=benchmark,perf&direction=asc&sort=created"),
    )
    .await;
    assert_eq!(numbers(&body), vec![1, 3, 5, 6]);
    let (_, _, body) = get(&fake, &format!("{REPO}/issues?state=all&labels=perf")).await;
    assert_eq!(numbers(&body), vec![7, 6, 5, 3, 1]);
    let (_, _, body) = get(&fake, &format!("{REPO}/issues?state=closed")).await;
    assert_eq!(numbers(&body), vec![7]);

    // A pull request's item has `pull_request`; a plain issue's has not.
    let (_, _, body) = get(&fake, &format!("{REPO}/issues?labels=benchmark,perf")).await;
    let items = body.as_array().expect("list");
    let issue = items.iter().find(|i| i["number"] == 6).expect("issue 6");
    let pr = items.iter().find(|i| i["number"] == 5).expect("pr 5");
    assert!(issue.get("pull_request").is_none(), "{issue}");
    let link = &pr["pull_request"];
    for key in ["url", "html_url", "diff_url", "patch_url"] {
        assert!(link[key].is_string(), "{key}: {pr}");
    }
    assert!(
        link["url"]
            .as_str()
            .expect("url")
            .ends_with(&format!("{REPO}/pulls/5"))
    );
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["user"]["login"], OTHER_LOGIN);
    assert!(pr["node_id"].is_string() && pr["id"].is_u64() && pr["html_url"].is_string());
    let label = &pr["labels"][0];
    for key in [
        "id",
        "node_id",
        "url",
        "name",
        "color",
        "default",
        "description",
    ] {
        assert!(label.get(key).is_some(), "{key}: {label}");
    }
    assert_eq!(label["name"], "benchmark");

    // Values GitHub does not know are refused, not ignored.
    let (status, _, body) = get(&fake, &format!("{REPO}/issues?state=opened")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(body["errors"][0]["field"], "state");
    // Another repository does not exist.
    let (status, _, body) = get(&fake, "/repos/octo-org/other/issues").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Not Found");
}

#[tokio::test]
async fn pages_follow_the_link_header_to_the_end() {
    let fake = seeded().await;
    let (status, headers, body) = get(&fake, &format!("{REPO}/issues?per_page=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(numbers(&body), vec![6, 5]);
    let rels: Vec<String> = links(&headers).into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        rels,
        vec!["next", "last"],
        "the first page has no prev/first"
    );
    let mut seen = numbers(&body);
    let mut next = links(&headers)
        .into_iter()
        .find(|(r, _)| r == "next")
        .map(|(_, u)| u);
    let mut last_rels = Vec::new();
    while let Some(url) = next {
        // Absolute, on the fake, in GitHub's `/repositories/{id}` form.
        assert!(
            url.starts_with(&format!("{}/repositories/{REPO_ID}/issues?", fake.url)),
            "{url}"
        );
        assert!(url.contains("per_page=2"), "{url}");
        let (status, headers, body) = send(http().get(&url).bearer_auth(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        seen.extend(numbers(&body));
        last_rels = links(&headers).into_iter().map(|(r, _)| r).collect();
        next = links(&headers)
            .into_iter()
            .find(|(r, _)| r == "next")
            .map(|(_, u)| u);
    }
    assert_eq!(seen, vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(last_rels, vec!["prev", "first"], "the last page");

    // A middle page has all four.
    let (_, headers, body) = get(&fake, &format!("{REPO}/issues?per_page=2&page=2")).await;
    assert_eq!(numbers(&body), vec![4, 3]);
    let rels: Vec<String> = links(&headers).into_iter().map(|(r, _)| r).collect();
    assert_eq!(rels, vec!["prev", "next", "last", "first"]);
    // `per_page` is capped at 100 and defaults to 30.
    let many = FakeGitHub::start(TOKEN).await;
    for n in 1..=35 {
        many.put_issue(FakeIssue::new(n, "2026-01-01T00:00:00Z", &[]));
    }
    let (_, headers, body) = get(&many, &format!("{REPO}/issues")).await;
    assert_eq!(body.as_array().map(Vec::len), Some(30));
    assert!(
        links(&headers)
            .iter()
            .any(|(r, u)| r == "last" && u.ends_with("page=2"))
    );
}

#[tokio::test]
async fn a_pull_request_has_its_head_base_and_merge_state() {
    let fake = seeded().await;
    let mut draft = FakePr::new(8, "2026-01-08T00:00:00Z", &sha('e'), &sha('0'), &[]);
    draft.draft = true;
    draft.mergeable = None;
    draft.base_sha = sha('9');
    fake.put_pr(draft);

    let (status, _, pr) = get(&fake, &format!("{REPO}/pulls/8")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pr["number"], 8);
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["title"], "Change 8");
    assert_eq!(pr["created_at"], "2026-01-08T00:00:00Z");
    assert!(
        pr["html_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/pull/8"))
    );
    assert_eq!(pr["head"]["ref"], "feature-8");
    assert_eq!(pr["head"]["sha"], sha('e'));
    assert_eq!(pr["head"]["label"], "octo-org:feature-8");
    assert_eq!(pr["head"]["repo"]["full_name"], "octo-org/octo-repo");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["base"]["sha"], sha('9'));
    assert_eq!(pr["base"]["label"], "octo-org:main");
    assert_eq!(pr["merged"], false);
    assert_eq!(pr["draft"], true);
    assert!(pr["mergeable"].is_null(), "still computed: null");
    assert!(pr["labels"].as_array().is_some_and(Vec::is_empty));

    // The same through `/repositories/{id}`.
    let (status, _, same) = get(&fake, &format!("/repositories/{REPO_ID}/pulls/8")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["head"]["sha"], sha('e'));
    // A plain issue is no pull request; an unknown number is nothing.
    for n in ["6", "99", "x"] {
        let (status, _, body) = get(&fake, &format!("{REPO}/pulls/{n}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{n}");
        assert_eq!(body["message"], "Not Found");
    }
}

#[tokio::test]
async fn comments_are_created_edited_and_listed_oldest_first() {
    let fake = seeded().await;
    let first = fake.add_comment(1, "a reviewer's note");

    let (status, headers, created) = send(
        call(&fake, Method::POST, &format!("{REPO}/issues/1/comments"))
            .json(&json!({ "body": "benchmark started" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_u64().expect("id");
    assert!(id > first);
    assert_eq!(created["body"], "benchmark started");
    assert_eq!(created["user"]["login"], BOT_LOGIN);
    assert_eq!(
        header(&headers, "location"),
        format!("{}{REPO}/issues/comments/{id}", fake.url)
    );
    for key in [
        "node_id",
        "url",
        "html_url",
        "created_at",
        "updated_at",
        "author_association",
    ] {
        assert!(created[key].is_string(), "{key}: {created}");
    }

    // Edited in place: no issue number in the path.
    let (status, _, edited) = send(
        call(
            &fake,
            Method::PATCH,
            &format!("{REPO}/issues/comments/{id}"),
        )
        .json(&json!({ "body": "benchmark done" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited["body"], "benchmark done");
    assert_ne!(edited["updated_at"], created["updated_at"]);
    fake.add_comment(1, "thanks");

    let (_, _, list) = get(&fake, &format!("{REPO}/issues/1/comments")).await;
    let bodies: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["body"].as_str().expect("body"))
        .collect();
    assert_eq!(
        bodies,
        vec!["a reviewer's note", "benchmark done", "thanks"]
    );
    let comments = fake.comments(1);
    assert_eq!(comments.len(), 3);
    assert_eq!(
        (comments[1].edits, comments[1].author.as_str()),
        (1, BOT_LOGIN)
    );
    assert_eq!(comments[0].author, OTHER_LOGIN);

    // What GitHub refuses.
    let post = |body: reqwest::Body| {
        call(&fake, Method::POST, &format!("{REPO}/issues/1/comments")).body(body)
    };
    let (status, _, body) = send(post("{}".into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"body\" wasn't supplied"))
    );
    let (status, _, body) = send(post(r#"{"body":"  "}"#.into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["message"], "Body cannot be blank");
    let long = json!({ "body": "x".repeat(65_537) }).to_string();
    let (status, _, body) = send(post(long.into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("65536"))
    );
    let (status, _, body) = send(post("{not json".into())).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Problems parsing JSON"))
    );
    let (status, _, _) = send(
        call(&fake, Method::POST, &format!("{REPO}/issues/99/comments"))
            .json(&json!({ "body": "x" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(
        call(&fake, Method::PATCH, &format!("{REPO}/issues/comments/1"))
            .json(&json!({ "body": "x" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fake.comments(1).len(), 3, "nothing refused was kept");
}

#[tokio::test]
async fn labels_are_added_and_removed_with_github_answers() {
    let fake = seeded().await;
    fake.add_label(2, "needs bench");
    assert_eq!(fake.labels(2), vec!["benchmark", "needs bench"]);

    // Removing: 200 with the labels left, as label objects.
    let (status, _, left) = send(call(
        &fake,
        Method::DELETE,
        &format!("{REPO}/issues/2/labels/needs%20bench"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert_eq!(left[0]["name"], "benchmark");
    assert!(left[0]["id"].is_u64() && left[0]["color"].is_string());
    assert_eq!(fake.labels(2), vec!["benchmark"]);
    // …and 404 when it is not there.
    let (status, _, body) = send(call(
        &fake,
        Method::DELETE,
        &format!("{REPO}/issues/2/labels/needs%20bench"),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Label does not exist");
    assert!(body["documentation_url"].is_string());

    // Adding keeps what is there and answers with all of them.
    let (status, _, all) = send(
        call(&fake, Method::POST, &format!("{REPO}/issues/2/labels"))
            .json(&json!({ "labels": ["perf", "Benchmark"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = all
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["benchmark", "perf"]);
    let (_, _, listed) = get(&fake, &format!("{REPO}/issues/2/labels")).await;
    assert_eq!(listed, all);
    fake.set_labels(2, &[]);
    assert!(fake.labels(2).is_empty());
}

#[tokio::test]
async fn compare_gives_the_merge_base() {
    // One pull request, so `main` names one commit.
    let fake = FakeGitHub::start(TOKEN).await;
    let mut moved = FakePr::new(9, "2026-01-09T00:00:00Z", &sha('d'), &sha('1'), &[]);
    moved.base_sha = sha('2');
    fake.put_pr(moved);

    // The base branch moved on since the head branched off: diverged.
    let (status, _, cmp) = get(&fake, &format!("{REPO}/compare/main...feature-9")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cmp["merge_base_commit"]["sha"], sha('1'));
    assert!(cmp["merge_base_commit"]["commit"]["message"].is_string());
    assert_eq!(cmp["base_commit"]["sha"], sha('2'));
    assert_eq!(cmp["status"], "diverged");
    assert_eq!(
        (cmp["ahead_by"].as_u64(), cmp["behind_by"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(cmp["commits"][0]["sha"], sha('d'));

    // From the merge base itself: ahead; reversed: behind; equal: identical.
    let (_, _, cmp) = get(
        &fake,
        &format!("{REPO}/compare/{}...{}", sha('1'), sha('d')),
    )
    .await;
    assert_eq!(
        (cmp["status"].as_str(), cmp["behind_by"].as_u64()),
        (Some("ahead"), Some(0))
    );
    let (_, _, cmp) = get(
        &fake,
        &format!("{REPO}/compare/{}...{}", sha('d'), sha('1')),
    )
    .await;
    assert_eq!(cmp["status"], "behind");
    assert_eq!(cmp["merge_base_commit"]["sha"], sha('1'));
    let (_, _, cmp) = get(&fake, &format!("{REPO}/compare/heads/main...octo-org:main")).await;
    assert_eq!(cmp["status"], "identical");
    // Refs that name nothing, and no `...`: 404.
    for basehead in ["main...nope", "main..feature-9", "main"] {
        let (status, _, _) = get(&fake, &format!("{REPO}/compare/{basehead}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{basehead}");
    }
}

#[tokio::test]
async fn check_runs_and_the_combined_status_of_a_ref() {
    let fake = seeded().await;
    // A pull request's head has its default successful run, by SHA or branch.
    for r in [
        sha('b'),
        "feature-1".to_owned(),
        "heads/feature-1".to_owned(),
    ] {
        let (status, _, body) = get(&fake, &format!("{REPO}/commits/{r}/check-runs")).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(body["total_count"], 1);
        let run = &body["check_runs"][0];
        assert_eq!(run["head_sha"], sha('b'));
        assert_eq!(
            (run["status"].as_str(), run["conclusion"].as_str()),
            (Some("completed"), Some("success"))
        );
        assert_eq!(run["app"]["slug"], "github-actions");
        assert_eq!(run["pull_requests"][0]["number"], 1);
        for key in [
            "id",
            "name",
            "started_at",
            "completed_at",
            "html_url",
            "details_url",
        ] {
            assert!(!run[key].is_null(), "{key}: {run}");
        }
    }

    // Re-run checks: `filter=latest` (the default) keeps the newest of a name.
    fake.set_check_runs(
        &sha('c'),
        vec![
            FakeCheckRun::completed("build", "failure"),
            FakeCheckRun::in_progress("test"),
            FakeCheckRun::completed("build", "success"),
            FakeCheckRun::queued("lint"),
        ],
    );
    let path = format!("{REPO}/commits/{}/check-runs", sha('c'));
    let (_, _, latest) = get(&fake, &path).await;
    assert_eq!(latest["total_count"], 3);
    let build = latest["check_runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["name"] == "build")
        .expect("build");
    assert_eq!(build["conclusion"], "success");
    let (_, _, all) = get(&fake, &format!("{path}?filter=all")).await;
    assert_eq!(all["total_count"], 4);
    let (_, _, one) = get(&fake, &format!("{path}?check_name=test")).await;
    assert_eq!(one["total_count"], 1);
    assert!(one["check_runs"][0]["conclusion"].is_null());
    assert!(one["check_runs"][0]["completed_at"].is_null());
    let (_, _, queued) = get(&fake, &format!("{path}?status=queued")).await;
    assert_eq!(queued["check_runs"][0]["name"], "lint");
    let (_, headers, paged) = get(&fake, &format!("{path}?filter=all&per_page=3")).await;
    assert_eq!(
        (
            paged["total_count"].as_u64(),
            paged["check_runs"].as_array().map(Vec::len)
        ),
        (Some(4), Some(3))
    );
    assert!(links(&headers).iter().any(|(r, _)| r == "next"));

    // The combined status: pending with no statuses…
    let status_path = format!("{REPO}/commits/{}/status", sha('c'));
    let (status, _, combined) = get(&fake, &status_path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(combined["state"], "pending");
    assert_eq!(combined["total_count"], 0);
    assert_eq!(combined["sha"], sha('c'));
    // …the latest status of each context decides…
    fake.set_statuses(
        &sha('c'),
        vec![
            FakeStatus::new("ci/jenkins", "failure"),
            FakeStatus::new("ci/docs", "success"),
            FakeStatus::new("ci/jenkins", "success"),
        ],
    );
    let (_, _, combined) = get(&fake, &status_path).await;
    assert_eq!(combined["state"], "success");
    assert_eq!(combined["total_count"], 2);
    let jenkins = combined["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .find(|s| s["context"] == "ci/jenkins")
        .expect("jenkins");
    assert_eq!(jenkins["state"], "success");
    for key in ["id", "created_at", "updated_at"] {
        assert!(!jenkins[key].is_null(), "{key}");
    }
    // …pending wins over success, error and failure over both.
    fake.set_statuses(
        &sha('c'),
        vec![
            FakeStatus::new("a", "success"),
            FakeStatus::new("b", "pending"),
        ],
    );
    let (_, _, combined) = get(&fake, &status_path).await;
    assert_eq!(combined["state"], "pending");
    fake.set_statuses(
        &sha('c'),
        vec![
            FakeStatus::new("a", "pending"),
            FakeStatus::new("b", "error"),
        ],
    );
    let (_, _, combined) = get(&fake, &status_path).await;
    assert_eq!(combined["state"], "failure");

    // A ref that names no commit.
    let (status, _, body) = get(&fake, &format!("{REPO}/commits/no-such-branch/check-runs")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["message"], "No commit found for SHA: no-such-branch");
    let (status, _, _) = get(&fake, &format!("{REPO}/commits/no-such-branch/status")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn scripted_failures_answer_as_github_does() {
    let fake = seeded().await;
    let pulls = format!("{REPO}/pulls/1");

    // A secondary rate limit: 429 with Retry-After.
    fake.fail_next(Failure::rate_limited(7));
    let (status, headers, body) = get(&fake, &pulls).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "retry-after"), "7");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("secondary rate limit"))
    );

    // The primary rate limit: 403, nothing remaining, a reset N s away.
    fake.fail_next(Failure::github_rate_limited(120));
    let (status, headers, body) = get(&fake, &pulls).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    let reset: u64 = header(&headers, "x-ratelimit-reset")
        .parse()
        .expect("reset");
    assert!(reset >= now() + 118 && reset <= now() + 121, "{reset}");
    assert!(headers.get("retry-after").is_none());
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("API rate limit exceeded"))
    );
    assert!(body["documentation_url"].is_string());

    // A 5xx, only on the method and path it names.
    fake.fail_next(Failure::status(502).on(Method::POST, "/comments"));
    let (status, _, _) = get(&fake, &pulls).await;
    assert_eq!(status, StatusCode::OK, "a GET does not match");
    let (status, _, body) = send(
        call(&fake, Method::POST, &format!("{REPO}/issues/1/comments"))
            .json(&json!({ "body": "lost" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["message"], "Bad Gateway");
    assert!(fake.comments(1).is_empty(), "refused before it was done");

    // After applying: the comment is made, the answer is still a 500.
    fake.fail_next(Failure::status(500).after_applying());
    let (status, _, _) = send(
        call(&fake, Method::POST, &format!("{REPO}/issues/1/comments"))
            .json(&json!({ "body": "kept" })),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let comments = fake.comments(1);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, "kept");

    let log: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method.to_string(), r.status))
        .collect();
    assert_eq!(
        log,
        vec![
            ("GET".to_owned(), 429),
            ("GET".to_owned(), 403),
            ("GET".to_owned(), 200),
            ("POST".to_owned(), 502),
            ("POST".to_owned(), 500),
        ]
    );
    assert!(fake.requests()[0].uri.ends_with("/pulls/1"));
}
