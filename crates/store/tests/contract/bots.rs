//! Merge-request bots' state: a request is taken up once per head sha,
//! records its jobs and note, and ends once.

use testfleet_store::{BotRequestState, Missing, NewBotRequest, Store, StoreError};

contract_tests!(
    a_request_is_taken_up_once_per_head_sha,
    jobs_and_note_are_recorded_and_the_end_is_final,
    open_requests_are_listed_oldest_first_per_bot_and_project,
    an_unknown_request_is_not_found,
);

fn request(iid: i64, sha: &str) -> NewBotRequest {
    NewBotRequest {
        bot: "gitlab".into(),
        project: "group/project".into(),
        iid,
        head_sha: sha.into(),
    }
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
    let running = store
        .set_bot_request_jobs(r.id, "base", 11, 12, 30)
        .await
        .expect("jobs");
    assert_eq!(running.state, BotRequestState::Running);
    assert_eq!(running.base_sha.as_deref(), Some("base"));
    assert_eq!(
        (running.head_job_id, running.base_job_id),
        (Some(11), Some(12))
    );
    assert_eq!(running.updated_at, 30);

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
        .set_bot_request_jobs(r.id, "other", 1, 2, 60)
        .await
        .expect_err("jobs after the end");
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
        .set_bot_request_jobs(b.id, "base", 1, 2, 5)
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
