//! Merge-request bots' state: a request is taken up once per head sha,
//! records its note, submits and records its jobs in one transaction
//! (once, whoever calls), finds stored results to reuse, and ends once.

use testfleet_core::{AttemptOutcome, JobSpec};
use testfleet_store::{
    BotJob, BotRequest, BotRequestState, BotSide, BotSideJobs, Missing, NewBotRequest, NewTask,
    ReusableJob, Store, StoreError,
};

use crate::series::{bench_results, map_all};
use crate::support::{claim, parse, simple_job};

contract_tests!(
    a_request_is_taken_up_once_per_head_sha,
    jobs_and_note_are_recorded_and_the_end_is_final,
    open_requests_are_listed_oldest_first_per_bot_and_project,
    an_unknown_request_is_not_found,
    jobs_are_submitted_with_their_record_once_whoever_calls,
    stored_results_are_reused_per_sha_host_and_template,
);

fn request(iid: i64, sha: &str) -> NewBotRequest {
    NewBotRequest {
        bot: "gitlab".into(),
        project: "group/project".into(),
        iid,
        head_sha: sha.into(),
        template_digest: "t1".into(),
    }
}

/// Both sides submitted as new jobs named `<name>-head` / `<name>-base`.
fn sides(name: &str) -> Vec<BotSideJobs> {
    [BotSide::Head, BotSide::Base]
        .into_iter()
        .map(|side| {
            let spec = simple_job(&format!("{name}-{}", side.as_str()), 1, 0, 0);
            let tasks = NewTask::plain(&spec);
            BotSideJobs {
                side,
                reused: Vec::new(),
                submit: Some((spec, tasks)),
            }
        })
        .collect()
}

async fn job_count(store: &Store) -> usize {
    store.jobs(1000, None).await.expect("jobs").len()
}

async fn a_request_is_taken_up_once_per_head_sha(store: Store) {
    let (first, created) = store
        .begin_bot_request(&request(4, "aaa"), 1_000)
        .await
        .expect("begin");
    assert!(created);
    assert_eq!(first.state, BotRequestState::Queued);
    assert_eq!((first.iid, first.head_sha.as_str()), (4, "aaa"));
    assert_eq!((first.created_at, first.updated_at), (1_000, 1_000));
    assert_eq!(first.note_id, None);

    let (again, created) = store
        .begin_bot_request(&request(4, "aaa"), 2_000)
        .await
        .expect("begin again");
    assert!(!created, "the same request and sha is taken up only once");
    assert_eq!(again, first);

    // A new push (another head sha) is a new request.
    let (pushed, created) = store
        .begin_bot_request(&request(4, "bbb"), 3_000)
        .await
        .expect("begin new sha");
    assert!(created);
    assert_ne!(pushed.id, first.id);

    // Another bot or project does not collide.
    let mut other = request(4, "aaa");
    other.bot = "github".into();
    assert!(
        store
            .begin_bot_request(&other, 4_000)
            .await
            .expect("other bot")
            .1
    );
    let found = store
        .bot_request_by_key("gitlab", "group/project", 4, "aaa")
        .await
        .expect("by key");
    assert_eq!(found, Some(first));
    assert_eq!(
        store
            .bot_request_by_key("gitlab", "group/project", 5, "aaa")
            .await
            .expect("by key"),
        None
    );
}

async fn jobs_and_note_are_recorded_and_the_end_is_final(store: Store) {
    let (r, _) = store
        .begin_bot_request(&request(1, "head"), 10)
        .await
        .expect("begin");
    let noted = store
        .set_bot_request_note(r.id, 555, 20)
        .await
        .expect("note");
    assert_eq!(noted.note_id, Some(555));
    assert_eq!(noted.state, BotRequestState::Queued);
    let submitted = store
        .submit_bot_jobs(r.id, "base", sides("bench"), 30)
        .await
        .expect("jobs");
    let running = submitted.request;
    assert_eq!(submitted.queued.len(), 2, "one task per side queued");
    assert_eq!(running.state, BotRequestState::Running);
    assert_eq!(running.base_sha.as_deref(), Some("base"));
    let jobs: Vec<(BotSide, bool)> = running.jobs.iter().map(|j| (j.side, j.reused)).collect();
    assert_eq!(
        jobs,
        vec![(BotSide::Head, false), (BotSide::Base, false)],
        "head first"
    );
    assert_eq!(running.updated_at, 30);
    assert_eq!(running.note_id, Some(555));
    assert_eq!(running.confirm_rounds, 0);
    let bumped = store
        .bump_bot_request_rounds(r.id, 35)
        .await
        .expect("a round");
    assert_eq!((bumped.confirm_rounds, bumped.updated_at), (1, 35));

    assert!(
        store
            .finish_bot_request(r.id, BotRequestState::Reported, None, 40)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish_bot_request(r.id, BotRequestState::Failed, Some("late"), 50)
            .await
            .expect("finish twice"),
        "a request ends once"
    );
    let done = store.bot_request(r.id).await.expect("read");
    assert_eq!(done.state, BotRequestState::Reported);
    assert_eq!(done.reason, None);
    assert_eq!(done.updated_at, 40);

    let err = store
        .submit_bot_jobs(r.id, "other", sides("late"), 60)
        .await
        .expect_err("jobs after the end");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .bump_bot_request_rounds(r.id, 60)
        .await
        .expect_err("a round after the end");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .finish_bot_request(r.id, BotRequestState::Running, None, 60)
        .await
        .expect_err("running is not an end");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let (f, _) = store
        .begin_bot_request(&request(2, "x"), 10)
        .await
        .expect("begin");
    assert!(
        store
            .finish_bot_request(f.id, BotRequestState::Failed, Some("no merge base"), 70)
            .await
            .expect("fail")
    );
    let failed = store.bot_request(f.id).await.expect("read");
    assert_eq!(failed.state, BotRequestState::Failed);
    assert_eq!(failed.reason.as_deref(), Some("no merge base"));
}

async fn open_requests_are_listed_oldest_first_per_bot_and_project(store: Store) {
    let (a, _) = store
        .begin_bot_request(&request(9, "a"), 1)
        .await
        .expect("a");
    let (b, _) = store
        .begin_bot_request(&request(3, "b"), 2)
        .await
        .expect("b");
    let (c, _) = store
        .begin_bot_request(&request(5, "c"), 3)
        .await
        .expect("c");
    let mut elsewhere = request(1, "z");
    elsewhere.project = "other/project".into();
    store.begin_bot_request(&elsewhere, 4).await.expect("z");
    store
        .submit_bot_jobs(b.id, "base", sides("b"), 5)
        .await
        .expect("jobs");
    store
        .finish_bot_request(c.id, BotRequestState::Reported, None, 6)
        .await
        .expect("finish");
    let open = store
        .open_bot_requests("gitlab", "group/project")
        .await
        .expect("open");
    let ids: Vec<i64> = open.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
    assert_eq!(open[1].state, BotRequestState::Running);
}

async fn an_unknown_request_is_not_found(store: Store) {
    let err = store.bot_request(424_242).await.expect_err("unknown");
    assert!(
        matches!(err, StoreError::NotFound(Missing::BotRequest(424_242))),
        "{err:?}"
    );
    let err = store
        .set_bot_request_note(424_242, 1, 1)
        .await
        .expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .finish_bot_request(424_242, BotRequestState::Failed, None, 1)
        .await
        .expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn jobs_are_submitted_with_their_record_once_whoever_calls(store: Store) {
    let (r, _) = store
        .begin_bot_request(&request(7, "h"), 1)
        .await
        .expect("begin");
    // Two coordinators (or a pass and its restart) at once.
    let (a, b) = tokio::join!(
        store.submit_bot_jobs(r.id, "base", sides("x"), 2),
        store.submit_bot_jobs(r.id, "base", sides("x"), 2),
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(
        a.queued.len() + b.queued.len(),
        2,
        "only one call queued tasks"
    );
    assert_eq!(a.request.jobs, b.request.jobs);
    assert_eq!(a.request.jobs.len(), 2);
    assert_eq!(job_count(&store).await, 2, "no job outside the record");
    // Later calls submit nothing either.
    let again = store
        .submit_bot_jobs(r.id, "base", sides("x"), 3)
        .await
        .expect("again");
    assert!(again.queued.is_empty());
    assert_eq!(job_count(&store).await, 2);
    // A side made only of reused jobs submits nothing.
    let (q, _) = store
        .begin_bot_request(&request(8, "h2"), 4)
        .await
        .expect("begin");
    let reuse_only = vec![BotSideJobs {
        side: BotSide::Base,
        reused: vec![a.request.jobs[1].job_id],
        submit: None,
    }];
    let done = store
        .submit_bot_jobs(q.id, "base", reuse_only, 5)
        .await
        .expect("reuse");
    assert!(done.queued.is_empty());
    assert_eq!(
        done.request.jobs,
        vec![BotJob {
            side: BotSide::Base,
            job_id: a.request.jobs[1].job_id,
            reused: true,
        }]
    );
    assert_eq!(job_count(&store).await, 2);
}

/// A bot job of `request` on `side`, run on each of `hosts` with benchmark
/// results at `sha`, passed (or failed).
async fn run_bot_job(
    store: &Store,
    request: &BotRequest,
    side: BotSide,
    sha: &str,
    hosts: &[&str],
    outcome: AttemptOutcome,
    at: i64,
) -> i64 {
    let mut toml =
        format!("name = \"bench {sha}\"\n[integration]\nid = \"i-{at}\"\nsha = \"{sha}\"\n");
    for h in hosts {
        toml.push_str(&format!(
            "[[task]]\nname = \"on-{h}\"\nsteps = [{{ stage = \"test\", run = \"./bench\" }}]\n"
        ));
    }
    let spec: JobSpec = parse(&toml);
    let tasks = NewTask::plain(&spec);
    let submitted = store
        .submit_bot_jobs(
            request.id,
            "base",
            vec![BotSideJobs {
                side,
                reused: Vec::new(),
                submit: Some((spec, tasks)),
            }],
            at,
        )
        .await
        .expect("submit");
    for (task, host) in submitted.queued.iter().zip(hosts) {
        let attempt = claim(store, task.id, host, at + 1).await.attempt.attempt_id;
        store
            .finish_attempt(
                attempt,
                Some(host),
                outcome,
                None,
                None,
                Some(&[bench_results(10.0, 0)]),
                None,
                at + 2,
            )
            .await
            .expect("finish");
    }
    map_all(store).await;
    submitted.request.jobs[0].job_id
}

async fn stored_results_are_reused_per_sha_host_and_template(store: Store) {
    let (r1, _) = store
        .begin_bot_request(&request(1, "h1"), 1)
        .await
        .expect("begin");
    let job_a = run_bot_job(
        &store,
        &r1,
        BotSide::Base,
        "base0",
        &["bench-1", "bench-2"],
        AttemptOutcome::Passed,
        100,
    )
    .await;
    let (r2, _) = store
        .begin_bot_request(&request(2, "h2"), 2)
        .await
        .expect("begin");
    // A newer job of the same sha on bench-1 only.
    let job_b = run_bot_job(
        &store,
        &r2,
        BotSide::Head,
        "base0",
        &["bench-1"],
        AttemptOutcome::Passed,
        200,
    )
    .await;

    let hosts = [
        "bench-1".to_owned(),
        "bench-2".to_owned(),
        "bench-3".to_owned(),
    ];
    let found = store
        .bot_reusable_jobs(&r2, "base0", Some(&hosts))
        .await
        .expect("reusable");
    assert_eq!(
        found,
        vec![
            ReusableJob {
                host: "bench-1".into(),
                job_id: job_b,
            },
            ReusableJob {
                host: "bench-2".into(),
                job_id: job_a,
            },
        ],
        "the newest job per host; none on bench-3"
    );
    let any = store
        .bot_reusable_jobs(&r2, "base0", None)
        .await
        .expect("any host");
    assert_eq!(any.len(), 2);
    assert!(
        store
            .bot_reusable_jobs(&r2, "other-sha", Some(&hosts))
            .await
            .expect("other sha")
            .is_empty()
    );
    assert!(
        store
            .bot_reusable_jobs(&r2, "base0", Some(&[]))
            .await
            .expect("no host")
            .is_empty()
    );
    // Another template: nothing is reused.
    let mut other = request(3, "h3");
    other.template_digest = "t2".into();
    let (r3, _) = store.begin_bot_request(&other, 3).await.expect("begin");
    assert!(
        store
            .bot_reusable_jobs(&r3, "base0", None)
            .await
            .expect("other template")
            .is_empty()
    );
    // A failed job's results are not reused.
    let mut fresh = request(4, "h4");
    fresh.template_digest = "t3".into();
    let (r4, _) = store.begin_bot_request(&fresh, 4).await.expect("begin");
    run_bot_job(
        &store,
        &r4,
        BotSide::Base,
        "base9",
        &["bench-1"],
        AttemptOutcome::Failed,
        300,
    )
    .await;
    assert!(
        store
            .bot_reusable_jobs(&r4, "base9", None)
            .await
            .expect("failed")
            .is_empty()
    );
}
