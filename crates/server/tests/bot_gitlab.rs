//! The GitLab merge-request bot against a fake GitLab API (the test kit's,
//! which enforces the documented paths, auth headers, JSON shapes and
//! pagination, and fails on demand) and a real in-process coordinator whose
//! agent is a plain socket.io client reporting benchmark values chosen by
//! the test, so verdicts are known in advance.

#[path = "bot/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bench_agent_auth, passes_until, reported, sha, spawn_agent};
use reqwest::Method;
use serde_json::json;
use testfleet_server::bots::gitlab::GitLabClient;
use testfleet_server::bots::{
    Action, ApiError, Bot, BotConfig, BotError, BotSettings, Host, RetryPolicy, Token,
};
use testfleet_store::{BotRequestState, Store};
use testfleet_testkit::gitlab::{Failure, FakeGitLab, FakeMr, PROJECT_PATH};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::sio::idle_agent;

const TOKEN: &str = "glpat-test-token";

fn settings() -> BotSettings {
    common::settings(PROJECT_PATH)
}

fn client(url: &str, token: &str) -> GitLabClient {
    testfleet_sio::tls::install_default_provider();
    GitLabClient::new(
        reqwest::Client::new(),
        url,
        PROJECT_PATH,
        Token::new(token),
        RetryPolicy {
            max_attempts: 4,
            backoff: Duration::from_millis(50),
            max_wait: Duration::from_secs(3),
        },
    )
    .expect("client")
}

#[tokio::test]
async fn lists_follow_pagination_oldest_first_through_429_and_5xx() {
    let fake = FakeGitLab::start(TOKEN).await;
    // 130 labelled requests created in reverse iid order, and some others.
    for i in 0..130u64 {
        let created = format!(
            "2026-01-01T{:02}:{:02}:00.000Z",
            (200 - i) / 60,
            (200 - i) % 60
        );
        fake.put_mr(FakeMr::new(
            i + 1,
            &created,
            &sha('a'),
            &sha('b'),
            &["benchmark"],
        ));
    }
    fake.put_mr(FakeMr::new(
        500,
        "2025-01-01T00:00:00.000Z",
        &sha('a'),
        &sha('b'),
        &["other"],
    ));
    let mut closed = FakeMr::new(
        501,
        "2025-01-01T00:00:00.000Z",
        &sha('a'),
        &sha('b'),
        &["benchmark"],
    );
    closed.state = "merged".into();
    fake.put_mr(closed);

    fake.fail_next(Failure::rate_limited(1));
    fake.fail_next(Failure::status(500));
    fake.fail_next(Failure::status(502).on(Method::GET, "page=2"));
    let gitlab = client(&fake.url, TOKEN);
    let start = Instant::now();
    let mrs = gitlab.open_merge_requests("benchmark").await.expect("list");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was waited out"
    );
    let iids: Vec<u64> = mrs.iter().map(|m| m.iid).collect();
    let expected: Vec<u64> = (1..=130).rev().collect();
    assert_eq!(iids, expected, "every page, oldest first");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 500, 200, 502, 200]);
    let uris: Vec<String> = fake.requests().into_iter().map(|r| r.uri).collect();
    assert!(
        uris[2].contains("state=opened")
            && uris[2].contains("labels=benchmark")
            && uris[2].contains("order_by=created_at")
            && uris[2].contains("sort=asc")
            && uris[2].contains("per_page=100"),
        "{uris:?}"
    );
    assert!(
        uris[2].contains("/api/v4/projects/group%2Fproject/merge_requests"),
        "{uris:?}"
    );

    // Notes are paginated too (GitLab lists them newest first).
    for n in 0..120 {
        fake.add_note(7, &format!("note {n}"));
    }
    let notes = gitlab.notes(7).await.expect("notes");
    assert_eq!(notes.len(), 120);
    assert_eq!(notes[0].body, "note 119");

    // The merge base, as GitLab's repository API gives it.
    let base = gitlab
        .merge_base_commit("main", &sha('a'))
        .await
        .expect("merge base");
    assert_eq!(base.id, sha('b'));

    // Too many failures end in a clear error, not a loop.
    for _ in 0..4 {
        fake.fail_next(Failure::status(503));
    }
    let err = gitlab.merge_request(1).await.expect_err("exhausted");
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
    // An unknown merge request is GitLab's 404, with its message.
    let err = gitlab.merge_request(999).await.expect_err("404");
    assert!(err.to_string().contains("404 Not found"), "{err}");
}

#[tokio::test]
async fn a_refused_token_pauses_the_bot_with_a_clear_error() {
    let fake = FakeGitLab::start(TOKEN).await;
    fake.put_mr(FakeMr::new(
        1,
        "2026-01-01T00:00:00.000Z",
        &sha('a'),
        &sha('b'),
        &["benchmark"],
    ));
    let err = client(&fake.url, "wrong")
        .open_merge_requests("benchmark")
        .await
        .expect_err("401");
    assert!(err.is_unauthorized(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the token (401") && text.contains("paused"),
        "{text}"
    );
    assert!(
        !format!("{err:?}").contains("wrong"),
        "the token is never shown"
    );
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");

    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    let store = Store::open(dir.path()).await.expect("store");
    let bot = Bot::new(
        client(&fake.url, "wrong"),
        h.coordinator.clone(),
        store,
        settings(),
    );
    let err = bot.pass(false).await.expect_err("paused");
    assert!(matches!(err, BotError::Paused(..)), "{err:?}");
    // The loop stops by itself (it does not poll with a refused token).
    tokio::time::timeout(Duration::from_secs(5), bot.run(std::future::pending()))
        .await
        .expect("the paused bot's loop returns");
    assert!(fake.notes(1).is_empty());
}

#[tokio::test]
async fn two_labelled_requests_are_served_oldest_first_with_one_note_each() {
    let fake = FakeGitLab::start(TOKEN).await;
    // !2 is older than !1; !3 is labelled but its pipeline is running;
    // !4 is not labelled.
    fake.put_mr(FakeMr::new(
        1,
        "2026-01-02T00:00:00.000Z",
        &sha('1'),
        &sha('0'),
        &["benchmark", "backend"],
    ));
    fake.put_mr(FakeMr::new(
        2,
        "2026-01-01T00:00:00.000Z",
        &sha('2'),
        &sha('0'),
        &["benchmark"],
    ));
    let mut running = FakeMr::new(
        3,
        "2025-12-01T00:00:00.000Z",
        &sha('3'),
        &sha('0'),
        &["benchmark"],
    );
    running.pipeline_status = Some("running".into());
    fake.put_mr(running);
    fake.put_mr(FakeMr::new(
        4,
        "2025-11-01T00:00:00.000Z",
        &sha('4'),
        &sha('0'),
        &[],
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    let auth = json!({"clientType": "agent", "hostname": "bench-1",
        "machine": {"platform": "Debian GNU/Linux 12", "os_version": "12", "kernel": "6.1",
                    "arch": "x86_64", "cpu_model": "Intel Core i7-7700K", "cores": 8, "compiler": "gcc-12"}});
    spawn_agent(&h, idle_agent(&h.url, auth).await, 1);
    let store = Store::open(dir.path()).await.expect("store");
    let bot = Bot::new(
        client(&fake.url, TOKEN),
        h.coordinator.clone(),
        store.clone(),
        settings(),
    );

    // Rate limits and server errors on the way are survived.
    fake.fail_next(Failure::rate_limited(1).on(Method::GET, "/merge_requests?"));
    fake.fail_next(Failure::status(500).on(Method::GET, "/merge_requests/2"));
    fake.fail_next(Failure::status(502).on(Method::PUT, "/notes/"));

    let first = bot.pass(false).await.expect("first pass");
    let started: Vec<u64> = first
        .iter()
        .filter_map(|a| match a {
            Action::Started { iid, .. } => Some(*iid),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![2],
        "the oldest ready request first: {first:#?} {:#?}",
        fake.requests()
    );
    assert!(
        first.contains(&Action::Waiting {
            iid: 3,
            why: "its head pipeline is running".into()
        }),
        "{first:#?}"
    );
    assert!(
        first.contains(&Action::Waiting {
            iid: 1,
            why: "an older request runs first".into()
        }),
        "{first:#?}"
    );
    let Some(Action::Started {
        base_sha,
        head_jobs,
        base_jobs,
        reused_jobs,
        note_id,
        ..
    }) = first
        .iter()
        .find(|a| matches!(a, Action::Started { .. }))
        .cloned()
    else {
        panic!("no start: {first:#?}");
    };
    assert_eq!(base_sha, sha('0'), "the baseline is the merge base");
    assert!(reused_jobs.is_empty(), "nothing stored yet to reuse");
    let ([head_job], [base_job]) = (head_jobs.as_slice(), base_jobs.as_slice()) else {
        panic!("one job per side: {head_jobs:?} {base_jobs:?}");
    };
    let (head_job, base_job) = (*head_job, *base_job);
    let notes = fake.notes(2);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].id, note_id);
    assert!(
        notes[0].body.contains("### Benchmarks running"),
        "{}",
        notes[0].body
    );
    assert!(
        notes[0]
            .body
            .contains(&format!("http://testfleet.example/jobs/{head_job}")),
        "{}",
        notes[0].body
    );
    assert!(notes[0].body.contains(&format!(
        "<!-- testfleet-bot:{PROJECT_PATH}!2@{} -->",
        sha('2')
    )));
    let base_view = h.coordinator.views().job(base_job).await.expect("base job");
    assert_eq!(base_view.name, "bench-mr2-base");

    let all = passes_until(&bot, "both requests reported", |a| reported(a).len() == 2).await;
    assert_eq!(reported(&all), vec![2, 1], "oldest first");
    // !1 has the same merge base: !2's baseline results are reused, not
    // run again.
    let second = all
        .iter()
        .find_map(|a| match a {
            Action::Started {
                iid: 1,
                base_jobs,
                reused_jobs,
                ..
            } => Some((base_jobs.clone(), reused_jobs.clone())),
            _ => None,
        })
        .expect("!1 started");
    assert_eq!(second, (vec![base_job], vec![base_job]), "{all:#?}");
    assert!(
        fake.notes(1)[0]
            .body
            .contains(&format!("baseline: [job {base_job}](http://testfleet.example/jobs/{base_job}) (stored results of this sha, reused)")),
        "{}",
        fake.notes(1)[0].body
    );

    for (iid, headline) in [(2, "no significant change"), (1, "1 slower")] {
        let notes = fake.notes(iid);
        assert_eq!(notes.len(), 1, "one note per request: {notes:#?}");
        let body = &notes[0].body;
        assert!(notes[0].edits >= 1, "the start note was updated in place");
        assert!(
            body.contains(&format!("### Benchmarks: {headline}")),
            "{body}"
        );
        assert!(
            body.contains(&format!("- head: `{}`", sha(char::from(b'0' + iid as u8)))),
            "{body}"
        );
        assert!(
            body.contains(&format!("- baseline: `{}` (the merge base", sha('0'))),
            "{body}"
        );
        assert!(
            body.contains("| benchmark | host | baseline | head | change % | 95 % CI | verdict |"),
            "{body}"
        );
        assert!(
            body.contains("`tst_Bench::run [WalltimeMilliseconds]` | bench-1 |"),
            "{body}"
        );
        assert!(
            body.contains("#### Errors") && body.contains("#### Unstable benchmarks"),
            "{body}"
        );
        assert!(
            body.contains("[Plots and details](http://testfleet.example/compare?"),
            "{body}"
        );
        let mr = fake.mr(iid).expect("mr");
        assert!(
            !mr.labels.contains(&"benchmark".to_owned()),
            "label removed: {:?}",
            mr.labels
        );
    }
    assert_eq!(
        fake.mr(1).expect("mr").labels,
        vec!["backend".to_owned()],
        "other labels stay"
    );
    assert!(fake.notes(3).is_empty() && fake.notes(4).is_empty());
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    for s in [429, 500, 502] {
        assert!(statuses.contains(&s), "{s} injected: {statuses:?}");
    }
    // Nothing more to do but wait for !3's pipeline, and nothing done twice.
    let after = bot.pass(false).await.expect("idle pass");
    assert_eq!(
        after,
        vec![Action::Waiting {
            iid: 3,
            why: "its head pipeline is running".into()
        }]
    );
    let r = store
        .bot_request_by_key("gitlab", PROJECT_PATH, 2, &sha('2'))
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(r.state, BotRequestState::Reported);

    // A new push to !2, labelled again: the same note is edited (one note
    // per request, not one per push), now about the new head.
    let note_id = fake.notes(2)[0].id;
    let mut pushed = fake.mr(2).expect("mr");
    pushed.sha = sha('8');
    pushed.labels.push("benchmark".into());
    fake.put_mr(pushed);
    passes_until(&bot, "the push reported", |a| reported(a).contains(&2)).await;
    let notes = fake.notes(2);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(notes[0].id, note_id);
    assert!(notes[0].body.contains(&format!("- head: `{}`", sha('8'))));

    // The bot's note deleted by someone while a run goes on: posted again.
    let mut again = fake.mr(1).expect("mr");
    again.sha = sha('9');
    again.labels.push("benchmark".into());
    fake.put_mr(again);
    let started = passes_until(&bot, "!1's push started", |a| {
        a.iter()
            .any(|x| matches!(x, Action::Started { iid: 1, .. }))
    })
    .await;
    assert!(!started.is_empty());
    let old = fake.notes(1)[0].id;
    fake.delete_note(old);
    passes_until(&bot, "!1's push reported", |a| reported(a).contains(&1)).await;
    let notes = fake.notes(1);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_ne!(notes[0].id, old, "a new note");
    assert!(
        notes[0].body.contains("### Benchmarks:"),
        "{}",
        notes[0].body
    );
    let r = store
        .bot_request_by_key("gitlab", PROJECT_PATH, 1, &sha('9'))
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(r.note_id, Some(i64::try_from(notes[0].id).expect("id")));
    h.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_posting_the_note_leaves_one_note() {
    let fake = FakeGitLab::start(TOKEN).await;
    fake.put_mr(FakeMr::new(
        5,
        "2026-01-01T00:00:00.000Z",
        &sha('5'),
        &sha('0'),
        &["benchmark"],
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    let store = Store::open(dir.path()).await.expect("store");

    // GitLab stores the note but the answer is lost (a proxy's 502): the
    // bot cannot know the note's id and stops there, as if it crashed.
    fake.fail_next(
        Failure::status(502)
            .on(Method::POST, "/notes")
            .after_applying(),
    );
    let bot = Bot::new(
        client(&fake.url, TOKEN),
        h.coordinator.clone(),
        store.clone(),
        settings(),
    );
    let err = bot.pass(false).await.expect_err("the lost answer");
    assert!(
        matches!(
            err,
            BotError::Api(ApiError::Unconfirmed { status: 502, .. })
        ),
        "{err:?}"
    );
    drop(bot);
    assert_eq!(fake.notes(5).len(), 1, "GitLab has the note");
    let r = store
        .bot_request_by_key("gitlab", PROJECT_PATH, 5, &sha('5'))
        .await
        .expect("read")
        .expect("taken up");
    assert_eq!(r.note_id, None, "the note's id was never recorded");

    // A new bot (a restart) finds its marker and posts nothing more.
    let bot = Bot::new(
        client(&fake.url, TOKEN),
        h.coordinator.clone(),
        store.clone(),
        settings(),
    );
    let actions = bot.pass(false).await.expect("pass after the restart");
    let notes = fake.notes(5);
    assert_eq!(notes.len(), 1, "exactly one note: {notes:#?}");
    assert!(
        matches!(actions.as_slice(), [Action::Started { note_id, .. }] if *note_id == notes[0].id),
        "{actions:#?}"
    );
    let r = store.bot_request(r.id).await.expect("read");
    assert_eq!(r.note_id, Some(i64::try_from(notes[0].id).expect("id")));
    // Its jobs were submitted once.
    let jobs = h.coordinator.views().jobs(50, None).await.expect("jobs");
    assert_eq!(jobs.len(), 2, "{jobs:#?}");

    // Dry run says what it would do and writes nothing.
    fake.put_mr(FakeMr::new(
        6,
        "2026-01-03T00:00:00.000Z",
        &sha('6'),
        &sha('0'),
        &["benchmark"],
    ));
    let before = fake.requests().len();
    let dry = bot.pass(true).await.expect("dry");
    assert!(
        dry.iter()
            .any(|a| matches!(a, Action::Running { iid: 5, .. })),
        "{dry:#?}"
    );
    assert!(
        dry.contains(&Action::Waiting {
            iid: 6,
            why: "an older request runs first".into()
        }),
        "{dry:#?}"
    );
    let writes = fake.requests()[before..]
        .iter()
        .filter(|r| r.method != Method::GET)
        .count();
    assert_eq!(writes, 0);
    let _ = Arc::clone(&h.coordinator);
    h.stop().await;
}

#[tokio::test]
async fn inside_the_server_the_start_note_comes_within_one_poll_interval() {
    let fake = FakeGitLab::start(TOKEN).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.url.clone();
    let poll = Duration::from_millis(500);
    let h = TestServer::start(dir.path(), |c| {
        c.allow_any_agent = true;
        let mut s = settings();
        s.poll_interval = poll;
        c.bots = vec![BotConfig {
            host: Host::GitLab,
            api_url: url,
            token: Token::new(TOKEN),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(5),
            settings: s,
        }];
    })
    .await;
    spawn_agent(&h, idle_agent(&h.url, bench_agent_auth("bench-1")).await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The label is set now; the note must follow within one poll interval.
    fake.put_mr(FakeMr::new(
        9,
        "2026-01-01T00:00:00.000Z",
        &sha('9'),
        &sha('0'),
        &["benchmark"],
    ));
    let labelled = Instant::now();
    while fake.notes(9).is_empty() {
        assert!(
            labelled.elapsed() < poll * 2,
            "no start note within one poll interval"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latency = labelled.elapsed();
    eprintln!("start note {} ms after the label", latency.as_millis());
    assert!(latency <= poll + Duration::from_millis(300), "{latency:?}");
    // And the run ends with the result in the same note, label removed.
    let end = Instant::now() + Duration::from_secs(60);
    while fake
        .mr(9)
        .is_some_and(|m| m.labels.contains(&"benchmark".to_owned()))
    {
        assert!(Instant::now() < end, "not reported: {:#?}", fake.notes(9));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notes = fake.notes(9);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .body
            .contains("### Benchmarks: no significant change"),
        "{}",
        notes[0].body
    );
    h.stop().await;
}

#[tokio::test]
async fn twenty_restarts_at_random_moments_leave_one_note_per_request() {
    let fake = FakeGitLab::start(TOKEN).await;
    let requests = [
        (11u64, 'b'),
        (12, 'c'),
        (13, 'd'),
        (14, 'e'),
        (15, 'f'),
        (16, '7'),
    ];
    for (iid, c) in requests {
        let created = format!("2026-01-0{}T00:00:00.000Z", iid - 10);
        fake.put_mr(FakeMr::new(
            iid,
            &created,
            &sha(c),
            &sha('0'),
            &["benchmark"],
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    spawn_agent(
        &h,
        idle_agent(&h.url, bench_agent_auth("bench-1")).await,
        12,
    );
    let store = Store::open(dir.path()).await.expect("store");
    let labelled = |iid: u64| {
        fake.mr(iid)
            .is_some_and(|m| m.labels.contains(&"benchmark".to_owned()))
    };
    let restarts = common::kill_passes_until(
        20_261_130,
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
                    .on(Method::POST, "/notes")
                    .after_applying(),
                1 => Failure::status(502)
                    .on(Method::PUT, "/notes/")
                    .after_applying(),
                2 => Failure::rate_limited(0),
                _ => Failure::status(500).after_applying(),
            });
        },
        || !requests.iter().any(|(i, _)| labelled(*i)),
        || {
            let notes: Vec<_> = requests.iter().map(|(i, _)| (*i, fake.notes(*i))).collect();
            let writes: Vec<String> = fake
                .requests()
                .into_iter()
                .filter(|r| r.method != Method::GET)
                .map(|r| format!("{} {} {}", r.method, r.uri, r.status))
                .collect();
            format!("{notes:#?}\n{writes:#?}")
        },
    )
    .await;
    eprintln!("{restarts} passes killed mid-way");
    assert!(restarts >= 20, "only {restarts} passes were killed mid-way");
    for (iid, _) in requests {
        let notes = fake.notes(iid);
        assert_eq!(notes.len(), 1, "!{iid}: {notes:#?}");
        let seen: Vec<String> = fake
            .requests()
            .into_iter()
            .filter(|r| r.uri.contains(&format!("/{iid}")))
            .map(|r| format!("{} {} {}", r.method, r.uri, r.status))
            .collect();
        assert!(
            notes[0].body.contains("### Benchmarks:"),
            "{}\n{seen:#?}\nlabels {:?}\nPUTs {:#?}",
            notes[0].body,
            fake.mr(iid).map(|m| m.labels),
            fake.requests()
                .into_iter()
                .filter(|r| r.method != Method::GET)
                .map(|r| format!("{} {} {}", r.method, r.uri, r.status))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        fake.notes(12)[0].body.contains("1 slower"),
        "{}",
        fake.notes(12)[0].body
    );
    // Jobs are submitted and recorded in one transaction, so a kill leaves
    // no job nobody reports on: one head job per request, and one baseline
    // job (all six share the merge base; the later five reuse its results).
    let jobs = h.coordinator.views().jobs(100, None).await.expect("jobs");
    eprintln!("{} jobs for 6 requests", jobs.len());
    assert_eq!(jobs.len(), 7, "{jobs:#?}");
    h.stop().await;
}
