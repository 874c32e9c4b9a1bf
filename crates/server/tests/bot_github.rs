//! The GitHub half of the merge-request bot against a fake GitHub REST API
//! (the test kit's, which enforces the documented paths, `User-Agent` and
//! `Authorization` headers, JSON shapes, `Link` pagination and rate-limit
//! headers, and fails on demand) and a real in-process coordinator whose
//! agent is a plain socket.io client reporting benchmark values chosen by
//! the test, so verdicts are known in advance.

#[path = "bot/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{bench_agent_auth, passes_until, reported, sha, spawn_agent};
use reqwest::Method;
use testfleet_server::bots::github::GitHubClient;
use testfleet_server::bots::{Action, ApiError, Bot, BotError, BotSettings, RetryPolicy, Token};
use testfleet_store::{BotRequestState, Store};
use testfleet_testkit::github::{
    Failure, FakeCheckRun, FakeGitHub, FakeIssue, FakePr, FakeStatus, OWNER, REPO,
};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::sio::idle_agent;

const TOKEN: &str = "ghp_test_token";

fn repository() -> String {
    format!("{OWNER}/{REPO}")
}

fn settings() -> BotSettings {
    common::settings(&repository())
}

fn client(url: &str, token: &str) -> GitHubClient {
    testfleet_sio::tls::install_default_provider();
    GitHubClient::new(
        reqwest::Client::new(),
        url,
        &repository(),
        Token::new(token),
        RetryPolicy {
            max_attempts: 4,
            backoff: Duration::from_millis(50),
            max_wait: Duration::from_secs(3),
        },
    )
    .expect("client")
}

fn labelled(fake: &FakeGitHub, number: u64) -> bool {
    fake.labels(number).iter().any(|l| l == "benchmark")
}

#[tokio::test]
async fn pulls_are_listed_oldest_first_through_pages_and_rate_limits() {
    let fake = FakeGitHub::start(TOKEN).await;
    for i in 0..130u64 {
        let created = format!("2026-01-01T{:02}:{:02}:00Z", (200 - i) / 60, (200 - i) % 60);
        fake.put_pr(FakePr::new(
            i + 1,
            &created,
            &sha('a'),
            &sha('b'),
            &["benchmark"],
        ));
    }
    // A labelled issue (not a pull request) and an unlabelled pull.
    fake.put_issue(FakeIssue::new(500, "2025-01-01T00:00:00Z", &["benchmark"]));
    fake.put_pr(FakePr::new(
        501,
        "2025-01-01T00:00:00Z",
        &sha('a'),
        &sha('b'),
        &["other"],
    ));
    // A secondary limit (429, Retry-After), the primary one (403,
    // x-ratelimit-remaining: 0, x-ratelimit-reset), a 502 on page 2.
    fake.fail_next(Failure::rate_limited(1));
    fake.fail_next(Failure::github_rate_limited(1));
    fake.fail_next(Failure::status(502).on(Method::GET, "page=2"));
    let github = client(&fake.url, TOKEN);
    let start = Instant::now();
    let pulls = github.labelled_pulls("benchmark").await.expect("list");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the rate limits were waited out"
    );
    let numbers: Vec<u64> = pulls.iter().map(|p| p.number).collect();
    let expected: Vec<u64> = (1..=130).rev().collect();
    assert_eq!(numbers, expected, "every page, oldest first, pulls only");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 403, 200, 502, 200]);
    let first = &fake.requests()[2].uri;
    for part in [
        "/repos/octo-org/octo-repo/issues",
        "state=open",
        "labels=benchmark",
        "sort=created",
        "direction=asc",
        "per_page=100",
    ] {
        assert!(first.contains(part), "{part} in {first}");
    }

    // One pull with its head's checks, the merge base, the comments.
    let pr = github.pull(7).await.expect("pull");
    assert_eq!(
        (pr.head.sha.as_str(), pr.base.git_ref.as_str()),
        (sha('a').as_str(), "main")
    );
    for n in 0..120 {
        fake.add_comment(7, &format!("comment {n}"));
    }
    let comments = github.issue_comments(7).await.expect("comments");
    assert_eq!(comments.len(), 120);
    assert_eq!(comments[0].body, "comment 0", "oldest first");
    use testfleet_server::bots::ReviewHost as _;
    assert_eq!(
        github.merge_base("main", &sha('a')).await.expect("compare"),
        sha('b')
    );
    // A label already gone is not an error; an unknown pull is a 404.
    github.remove_label(7, "benchmark").await.expect("remove");
    github
        .remove_label(7, "benchmark")
        .await
        .expect("gone already");
    let err = github.pull(999).await.expect_err("404");
    assert_eq!(err.status(), Some(404), "{err}");

    // A refused token (401), and a 403 that is not a rate limit, pause.
    let err = client(&fake.url, "wrong")
        .labelled_pulls("benchmark")
        .await
        .expect_err("401");
    assert!(err.is_unauthorized(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("GitHub refused the token (401") && text.contains("paused"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("wrong"), "never shown");
    fake.fail_next(Failure::status(403));
    let err = github.pull(7).await.expect_err("403");
    assert!(err.is_unauthorized(), "{err:?}");
    // Server errors end in a clear error after the policy's attempts.
    for _ in 0..4 {
        fake.fail_next(Failure::status(503));
    }
    let err = github.pull(7).await.expect_err("exhausted");
    assert!(
        matches!(
            err,
            ApiError::RetriesExhausted {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn two_labelled_pulls_are_served_oldest_first_with_one_comment_each() {
    let fake = FakeGitHub::start(TOKEN).await;
    // #2 is older than #1; #3's checks still run; #4's failed; #5 has no
    // check run but a failing status; #6 is an issue.
    fake.put_pr(FakePr::new(
        1,
        "2026-01-02T00:00:00Z",
        &sha('1'),
        &sha('0'),
        &["benchmark", "backend"],
    ));
    fake.put_pr(FakePr::new(
        2,
        "2026-01-01T00:00:00Z",
        &sha('2'),
        &sha('0'),
        &["benchmark"],
    ));
    let mut running = FakePr::new(
        3,
        "2025-12-01T00:00:00Z",
        &sha('3'),
        &sha('0'),
        &["benchmark"],
    );
    running.check_runs = vec![
        FakeCheckRun::completed("lint", "success"),
        FakeCheckRun::in_progress("build"),
    ];
    fake.put_pr(running);
    let mut red = FakePr::new(
        4,
        "2025-12-02T00:00:00Z",
        &sha('4'),
        &sha('0'),
        &["benchmark"],
    );
    red.check_runs = vec![FakeCheckRun::completed("build", "failure")];
    fake.put_pr(red);
    let mut status_only = FakePr::new(
        5,
        "2025-12-03T00:00:00Z",
        &sha('5'),
        &sha('0'),
        &["benchmark"],
    );
    status_only.check_runs = Vec::new();
    fake.put_pr(status_only);
    fake.set_statuses(&sha('5'), vec![FakeStatus::new("ci/jenkins", "failure")]);
    fake.put_issue(FakeIssue::new(6, "2025-01-01T00:00:00Z", &["benchmark"]));

    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    spawn_agent(&h, idle_agent(&h.url, bench_agent_auth("bench-1")).await, 1);
    let store = Store::open(dir.path()).await.expect("store");
    let bot = Bot::new(
        client(&fake.url, TOKEN),
        h.coordinator.clone(),
        store.clone(),
        settings(),
    );
    fake.fail_next(Failure::github_rate_limited(1).on(Method::GET, "/pulls/2"));
    fake.fail_next(Failure::status(502).on(Method::PATCH, "/issues/comments/"));

    let first = bot.pass(false).await.expect("first pass");
    let started: Vec<u64> = first
        .iter()
        .filter_map(|a| match a {
            Action::Started { iid, .. } => Some(*iid),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![2], "the oldest green pull first: {first:#?}");
    let waiting = |n: u64| {
        first.iter().find_map(|a| match a {
            Action::Waiting { iid, why } if *iid == n => Some(why.clone()),
            _ => None,
        })
    };
    assert_eq!(
        waiting(3).as_deref(),
        Some("1 of 2 check runs on its head are not completed")
    );
    assert_eq!(
        waiting(4).as_deref(),
        Some("check run `build` on its head concluded failure")
    );
    assert_eq!(
        waiting(5).as_deref(),
        Some("the combined status of its head is failure")
    );
    assert_eq!(waiting(1).as_deref(), Some("an older request runs first"));
    assert!(waiting(6).is_none(), "issues are not pull requests");

    let all = passes_until(&bot, "both pulls reported", |a| reported(a).len() == 2).await;
    assert_eq!(reported(&all), vec![2, 1], "oldest first");
    for (n, headline) in [(2, "no significant change"), (1, "1 slower")] {
        let comments = fake.comments(n);
        assert_eq!(comments.len(), 1, "one comment per pull: {comments:#?}");
        let body = &comments[0].body;
        assert!(comments[0].edits >= 1, "updated in place");
        assert!(
            body.contains(&format!(
                "<!-- testfleet-bot:{OWNER}/{REPO}!{n}@{} -->",
                sha(char::from(b'0' + n as u8))
            )),
            "{body}"
        );
        assert!(
            body.contains(&format!("### Benchmarks: {headline}")),
            "{body}"
        );
        assert!(
            body.contains("`tst_Bench::run [WalltimeMilliseconds]` | bench-1 |"),
            "{body}"
        );
        assert!(!labelled(&fake, n), "label removed");
    }
    assert_eq!(fake.labels(1), vec!["backend".to_owned()], "others stay");
    for n in [3, 4, 5, 6] {
        assert!(fake.comments(n).is_empty(), "#{n}");
    }
    // #1 reused #2's baseline (same merge base and template).
    assert!(
        fake.comments(1)[0]
            .body
            .contains("(stored results of this sha, reused)"),
        "{}",
        fake.comments(1)[0].body
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&403) && statuses.contains(&502));
    let r = store
        .bot_request_by_key("github", &repository(), 2, &sha('2'))
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(r.state, BotRequestState::Reported);

    // #3's checks pass later: it is taken up then.
    fake.set_check_runs(&sha('3'), vec![FakeCheckRun::completed("build", "success")]);
    let later = passes_until(&bot, "#3 reported", |a| reported(a) == vec![3]).await;
    assert!(
        later
            .iter()
            .any(|a| matches!(a, Action::Started { iid: 3, .. })),
        "{later:#?}"
    );

    // A refused token pauses the bot; its loop ends by itself.
    let paused = Bot::new(
        client(&fake.url, "wrong"),
        h.coordinator.clone(),
        store,
        settings(),
    );
    let err = paused.pass(false).await.expect_err("paused");
    assert!(matches!(err, BotError::Paused("github", _)), "{err:?}");
    tokio::time::timeout(Duration::from_secs(5), paused.run(std::future::pending()))
        .await
        .expect("the paused bot's loop returns");
    h.stop().await;
}

#[tokio::test]
async fn twenty_restarts_at_random_moments_leave_one_comment_per_pull() {
    let fake = FakeGitHub::start(TOKEN).await;
    let pulls = [(21u64, 'b'), (22, 'c'), (23, 'd'), (24, 'e'), (25, 'f')];
    for (n, c) in pulls {
        let created = format!("2026-01-0{}T00:00:00Z", n - 20);
        fake.put_pr(FakePr::new(n, &created, &sha(c), &sha('0'), &["benchmark"]));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    spawn_agent(
        &h,
        idle_agent(&h.url, bench_agent_auth("bench-1")).await,
        22,
    );
    let store = Store::open(dir.path()).await.expect("store");
    let restarts = common::kill_passes_until(
        20_261_201,
        || {
            Bot::new(
                client(&fake.url, TOKEN),
                h.coordinator.clone(),
                store.clone(),
                settings(),
            )
        },
        |rng| {
            fake.fail_next(match rng.below(4) {
                0 => Failure::status(502)
                    .on(Method::POST, "/comments")
                    .after_applying(),
                1 => Failure::status(502)
                    .on(Method::PATCH, "/issues/comments/")
                    .after_applying(),
                2 => Failure::github_rate_limited(0),
                _ => Failure::status(500).after_applying(),
            });
        },
        || !pulls.iter().any(|(n, _)| labelled(&fake, *n)),
        || format!("{:#?}", pulls.map(|(n, _)| (n, fake.comments(n)))),
    )
    .await;
    eprintln!("{restarts} passes killed mid-way");
    assert!(restarts >= 20, "only {restarts} passes were killed mid-way");
    for (n, _) in pulls {
        let comments = fake.comments(n);
        assert_eq!(comments.len(), 1, "#{n}: {comments:#?}");
        assert!(
            comments[0].body.contains("### Benchmarks:"),
            "{}",
            comments[0].body
        );
    }
    assert!(fake.comments(22)[0].body.contains("1 slower"));
    // One head job per pull and one baseline job, whatever was killed.
    let jobs = h.coordinator.views().jobs(100, None).await.expect("jobs");
    assert_eq!(jobs.len(), pulls.len() + 1, "{jobs:#?}");
    h.stop().await;
}
