//! The events log: an event and its jobs in one transaction, one job set
//! per de-duplication key (also when two coordinators race on it), ignored
//! events kept with their reason, pruning, and `store copy` moving the table.
//! Batches: a key repeated inside one, a batch racing a single ingest of the
//! same key, and a failing event that fails alone.

use std::sync::Arc;

use testfleet_core::TaskState;
use testfleet_store::{
    EventFilter, EventJob, Ingested, NewEvent, NewTask, Store, StoreError, copy_store,
};
use testfleet_wire::events::EventOutcome;
use tokio::sync::Barrier;

use crate::fixture::PgDatabase;
use crate::support::simple_job;

contract_tests!(
    ingest_records_the_event_and_submits_its_jobs_together,
    the_same_key_twice_queues_one_job_set,
    ignored_events_are_kept_with_their_reason,
    events_are_listed_newest_first_and_filtered,
    old_events_are_pruned_and_their_jobs_stay,
    a_batch_records_a_repeated_key_as_a_duplicate_of_its_first,
    concurrent_ingests_are_each_answered_after_their_commit,
);

fn event(key: Option<&str>) -> NewEvent {
    NewEvent {
        source: "github".into(),
        kind: "push".into(),
        topic: "github.push".into(),
        delivery_id: key.map(str::to_owned),
        dedup_key: key.map(|k| format!("github:{k}")),
        body: r#"{"ref":"refs/heads/main"}"#.into(),
        matched_rules: vec!["nightly-on-push".into()],
        unqueued: EventOutcome::Ignored,
        reason: None,
    }
}

fn job(name: &str, tasks: usize) -> EventJob {
    let spec = simple_job(name, tasks, 0, 0);
    let tasks = NewTask::plain(&spec);
    EventJob { spec, tasks }
}

async fn ingest_records_the_event_and_submits_its_jobs_together(store: Store) {
    let ingested = store
        .ingest_event(&event(Some("d-1")), &[job("a", 2), job("b", 1)], 5_000)
        .await
        .unwrap();
    let Ingested::New {
        event_id,
        outcome,
        jobs,
    } = ingested
    else {
        panic!("a new key is a new event: {ingested:?}");
    };
    assert_eq!(outcome, EventOutcome::Queued);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].queued.len(), 2);
    assert_eq!(jobs[1].queued.len(), 1);
    for j in &jobs {
        let view = store.job(j.job_id).await.unwrap();
        assert!(view.tasks.iter().all(|t| t.state == TaskState::Queued));
        for q in &j.queued {
            assert_eq!((q.job_id, q.queued_at), (j.job_id, 5_000));
        }
    }
    // The scheduler's index at start-up sees them like any submitted task.
    assert_eq!(store.queued_tasks().await.unwrap().len(), 3);

    let detail = store.event(event_id).await.unwrap();
    assert_eq!(detail.summary.outcome, EventOutcome::Queued);
    assert_eq!(
        detail.summary.job_ids,
        jobs.iter().map(|j| j.job_id).collect::<Vec<_>>()
    );
    assert_eq!(detail.summary.matched_rules, vec!["nightly-on-push"]);
    assert_eq!(detail.summary.delivery_id.as_deref(), Some("d-1"));
    assert_eq!(detail.summary.received_at, "1970-01-01T00:00:05.000Z");
    assert_eq!(detail.dedup_key.as_deref(), Some("github:d-1"));
    assert_eq!(detail.body, r#"{"ref":"refs/heads/main"}"#);
    assert!(matches!(
        store.event(event_id + 100).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn the_same_key_twice_queues_one_job_set(store: Store) {
    let first = store
        .ingest_event(&event(Some("d-2")), &[job("a", 1)], 1_000)
        .await
        .unwrap();
    let Ingested::New {
        event_id: first_id,
        jobs,
        ..
    } = first
    else {
        panic!("{first:?}");
    };
    let again = store
        .ingest_event(&event(Some("d-2")), &[job("a", 1)], 2_000)
        .await
        .unwrap();
    let Ingested::Duplicate {
        event_id,
        first_event_id,
        job_ids,
    } = again
    else {
        panic!("the same key again is a duplicate: {again:?}");
    };
    assert_eq!(first_event_id, first_id);
    assert_eq!(job_ids, vec![jobs[0].job_id]);
    assert_ne!(event_id, first_id, "the repeat is recorded too");
    assert_eq!(
        store.queued_tasks().await.unwrap().len(),
        1,
        "one job set only"
    );
    let dup = store.event(event_id).await.unwrap();
    assert_eq!(dup.summary.outcome, EventOutcome::Duplicate);
    assert_eq!(dup.dedup_key, None);
    assert_eq!(
        dup.summary.reason.as_deref(),
        Some(format!("duplicate of event {first_id}").as_str())
    );
    // Events without a key are never duplicates of each other.
    for _ in 0..2 {
        let keyless = store
            .ingest_event(&event(None), &[job("k", 1)], 3_000)
            .await
            .unwrap();
        assert!(matches!(keyless, Ingested::New { .. }), "{keyless:?}");
    }
    assert_eq!(store.queued_tasks().await.unwrap().len(), 3);
}

async fn ignored_events_are_kept_with_their_reason(store: Store) {
    let mut ignored = event(Some("d-3"));
    ignored.matched_rules.clear();
    ignored.reason = Some("no rule matches topic `github.push`".into());
    let got = store.ingest_event(&ignored, &[], 1_000).await.unwrap();
    let Ingested::New {
        event_id,
        outcome,
        jobs,
    } = got
    else {
        panic!("{got:?}");
    };
    assert_eq!(outcome, EventOutcome::Ignored);
    assert!(jobs.is_empty());
    let shown = store.event(event_id).await.unwrap().summary;
    assert_eq!(shown.outcome, EventOutcome::Ignored);
    assert!(shown.job_ids.is_empty() && shown.matched_rules.is_empty());
    assert_eq!(
        shown.reason.as_deref(),
        Some("no rule matches topic `github.push`")
    );
    // A dropped event says so too; "queued" without jobs is refused.
    let mut dropped = event(Some("d-4"));
    dropped.unqueued = EventOutcome::Dropped;
    dropped.reason = Some("rule `x`: the rendered job is invalid".into());
    let got = store.ingest_event(&dropped, &[], 1_000).await.unwrap();
    assert!(matches!(
        got,
        Ingested::New {
            outcome: EventOutcome::Dropped,
            ..
        }
    ));
    let mut wrong = event(Some("d-5"));
    wrong.unqueued = EventOutcome::Queued;
    assert!(matches!(
        store.ingest_event(&wrong, &[], 1_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.queued_tasks().await.unwrap().is_empty());
}

async fn events_are_listed_newest_first_and_filtered(store: Store) {
    let mut ids = Vec::new();
    for (i, source) in ["github", "gitlab", "github", "gerrit"].iter().enumerate() {
        let mut e = event(Some(&format!("l-{i}")));
        e.source = (*source).into();
        let jobs = if i == 2 { vec![] } else { vec![job("l", 1)] };
        e.reason = jobs.is_empty().then(|| "no rule".into());
        let at = 1_000 * (i as i64 + 1);
        match store.ingest_event(&e, &jobs, at).await.unwrap() {
            Ingested::New { event_id, .. } => ids.push(event_id),
            other => panic!("{other:?}"),
        }
    }
    let all = store
        .list_events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let listed: Vec<i64> = all.iter().map(|e| e.id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    let github = store
        .list_events(&EventFilter {
            source: Some("github".into()),
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        github.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2], ids[0]]
    );
    let ignored = store
        .list_events(&EventFilter {
            outcome: Some(EventOutcome::Ignored),
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ignored.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    let recent = store
        .list_events(&EventFilter {
            since: Some(3_000),
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        recent.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );
    let after = store
        .list_events(&EventFilter {
            after: Some(ids[1]),
            limit: 1,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[3]]);
}

async fn old_events_are_pruned_and_their_jobs_stay(store: Store) {
    let Ingested::New { jobs, .. } = store
        .ingest_event(&event(Some("p-1")), &[job("p", 1)], 1_000)
        .await
        .unwrap()
    else {
        panic!("new");
    };
    store
        .ingest_event(&event(Some("p-2")), &[], 5_000)
        .await
        .unwrap();
    assert_eq!(store.prune_events(5_000).await.unwrap(), 1);
    let left = store
        .list_events(&EventFilter {
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].delivery_id.as_deref(), Some("p-2"));
    store.job(jobs[0].job_id).await.expect("the job stays");
    // A pruned key is free again: retention bounds how long duplicates are seen.
    let again = store
        .ingest_event(&event(Some("p-1")), &[], 6_000)
        .await
        .unwrap();
    assert!(matches!(again, Ingested::New { .. }), "{again:?}");
}

/// Two coordinators ingest the same delivery at the same moment: exactly
/// one submits jobs, the other records a duplicate naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_ingest_of_one_key_queues_once() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let url = db.url();
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(Store::connect(&url).await.unwrap());
    }
    for round in 0..20 {
        let start = Arc::new(Barrier::new(2));
        let mut racers = tokio::task::JoinSet::new();
        for store in &stores {
            let store = store.clone();
            let start = start.clone();
            racers.spawn(async move {
                start.wait().await;
                store
                    .ingest_event(
                        &event(Some(&format!("race-{round}"))),
                        &[job("r", 3)],
                        1_000,
                    )
                    .await
            });
        }
        let mut new = Vec::new();
        let mut dups = Vec::new();
        while let Some(done) = racers.join_next().await {
            match done.unwrap().unwrap() {
                Ingested::New { jobs, .. } => new.push(jobs),
                Ingested::Duplicate { job_ids, .. } => dups.push(job_ids),
            }
        }
        assert_eq!((new.len(), dups.len()), (1, 1), "round {round}");
        assert_eq!(dups[0], vec![new[0][0].job_id], "round {round}");
    }
    assert_eq!(stores[0].queued_tasks().await.unwrap().len(), 20 * 3);
    for store in stores {
        store.close().await;
    }
}

/// `testfleet store copy` moves the events log with the rest.
#[tokio::test]
async fn store_copy_moves_the_events_log() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path()).await.unwrap();
    source
        .ingest_event(&event(Some("c-1")), &[job("c", 1)], 1_000)
        .await
        .unwrap();
    source
        .ingest_event(&event(Some("c-1")), &[job("c", 1)], 2_000)
        .await
        .unwrap();
    let before = source
        .list_events(&EventFilter {
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    source.close().await;
    let from = testfleet_store::DatabaseUrl::in_dir(dir.path());
    let report = copy_store(&from, &db.url(), |_| {}).await.unwrap();
    let copied = report
        .tables
        .iter()
        .find(|t| t.table == "trigger_events")
        .expect("the events log is copied");
    assert_eq!(copied.rows, 2);
    let target = db.store().await;
    let after = target
        .list_events(&EventFilter {
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(after, before);
    // The key came along: the delivery is still a duplicate after the move,
    // and new events get ids past the copied ones.
    let again = target
        .ingest_event(&event(Some("c-1")), &[job("c", 1)], 3_000)
        .await
        .unwrap();
    match again {
        Ingested::Duplicate {
            event_id,
            first_event_id,
            ..
        } => {
            assert_eq!(first_event_id, before[1].id);
            assert!(event_id > before[0].id, "{event_id}");
        }
        other => panic!("{other:?}"),
    }
    target.close().await;
}

fn job_ids(ingested: &Ingested) -> Vec<i64> {
    match ingested {
        Ingested::New { jobs, .. } => jobs.iter().map(|j| j.job_id).collect(),
        Ingested::Duplicate { job_ids, .. } => job_ids.clone(),
    }
}

async fn a_batch_records_a_repeated_key_as_a_duplicate_of_its_first(store: Store) {
    let Ingested::New {
        event_id: earlier, ..
    } = store
        .ingest_event(&event(Some("b-0")), &[job("old", 1)], 500)
        .await
        .unwrap()
    else {
        panic!("a new key is a new event");
    };
    let mut queued_without_jobs = event(Some("b-bad"));
    queued_without_jobs.unqueued = EventOutcome::Queued;
    let batch = vec![
        (event(Some("b-1")), vec![job("a", 2)]),
        (event(Some("b-2")), vec![job("b", 1)]),
        (event(Some("b-1")), vec![job("a-again", 3)]),
        (event(None), vec![job("keyless", 1)]),
        (event(Some("b-0")), vec![job("old-again", 1)]),
        (queued_without_jobs, vec![]),
        (event(None), vec![job("keyless", 1)]),
    ];
    let answers = store.ingest_events(&batch, 1_000).await;
    assert_eq!(answers.len(), batch.len());
    let Ok(Ingested::New {
        event_id: first, ..
    }) = &answers[0]
    else {
        panic!("{:?}", answers[0]);
    };
    match &answers[2] {
        Ok(Ingested::Duplicate {
            event_id,
            first_event_id,
            job_ids,
        }) => {
            assert_eq!(first_event_id, first, "a duplicate of its first occurrence");
            assert_ne!(event_id, first);
            assert_eq!(job_ids, &self::job_ids(answers[0].as_ref().unwrap()));
        }
        other => panic!("the repeated key is a duplicate: {other:?}"),
    }
    match &answers[4] {
        Ok(Ingested::Duplicate { first_event_id, .. }) => assert_eq!(*first_event_id, earlier),
        other => panic!("a key of the table is a duplicate: {other:?}"),
    }
    assert!(
        matches!(answers[5], Err(StoreError::Conflict(_))),
        "{:?}",
        answers[5]
    );
    for i in [1, 3, 6] {
        assert!(
            matches!(answers[i], Ok(Ingested::New { .. })),
            "{i}: {:?}",
            answers[i]
        );
    }
    // 1 earlier + 2 + 1 + 1 + 1: the duplicates and the refused event queue nothing.
    assert_eq!(store.queued_tasks().await.unwrap().len(), 6);
    let listed = store
        .list_events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 7, "every event but the refused one");
    let dups = listed
        .iter()
        .filter(|e| e.outcome == EventOutcome::Duplicate)
        .count();
    assert_eq!(dups, 2);
    let detail = store.event(*first).await.unwrap();
    assert_eq!(detail.summary.received_at, "1970-01-01T00:00:01.000Z");
}

/// Many events at once through [`Store::ingest_event`] (committed in
/// batches): each caller gets its own answer, one job set per key.
async fn concurrent_ingests_are_each_answered_after_their_commit(store: Store) {
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..120 {
        let store = store.clone();
        callers.spawn(async move {
            // Keys 0..40, each sent three times.
            let key = format!("c-{}", i % 40);
            let answer = store
                .ingest_event(&event(Some(&key)), &[job(&key, 1)], 1_000 + i)
                .await
                .unwrap();
            // Told only after the commit: a fresh read sees the event.
            let id = match &answer {
                Ingested::New { event_id, .. } | Ingested::Duplicate { event_id, .. } => *event_id,
            };
            store.event(id).await.unwrap();
            (key, answer)
        });
    }
    let mut firsts = std::collections::HashMap::new();
    let mut dups = Vec::new();
    while let Some(done) = callers.join_next().await {
        let (key, answer) = done.unwrap();
        match answer {
            Ingested::New { event_id, jobs, .. } => {
                assert_eq!(jobs.len(), 1);
                let before = firsts.insert(key.clone(), (event_id, jobs[0].job_id));
                assert!(before.is_none(), "{key} queued twice");
            }
            Ingested::Duplicate {
                first_event_id,
                job_ids,
                ..
            } => dups.push((key, first_event_id, job_ids)),
        }
    }
    assert_eq!(firsts.len(), 40);
    assert_eq!(dups.len(), 80);
    for (key, first_event_id, job_ids) in dups {
        assert_eq!(
            (first_event_id, job_ids),
            (firsts[&key].0, vec![firsts[&key].1]),
            "{key}"
        );
    }
    assert_eq!(store.queued_tasks().await.unwrap().len(), 40);
}

/// A batch on one coordinator and a single ingest on another race on a
/// key (and the batch's own keys): exactly one of them queues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_batch_racing_a_single_ingest_of_one_key_queues_once() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let url = db.url();
    let batcher = Store::connect(&url).await.unwrap();
    let single = Store::connect(&url).await.unwrap();
    let rounds = 20;
    for round in 0..rounds {
        let key = format!("race-{round}");
        let start = Arc::new(Barrier::new(2));
        let batch: Vec<(NewEvent, Vec<EventJob>)> = (0..5)
            .map(|i| {
                // The contested key sits at a different place each round.
                let k = if i == round % 5 {
                    key.clone()
                } else {
                    format!("{key}-own-{i}")
                };
                (event(Some(&k)), vec![job("r", 2)])
            })
            .collect();
        let go = start.clone();
        let b = batcher.clone();
        let batched = tokio::spawn(async move {
            go.wait().await;
            b.ingest_events(&batch, 1_000).await
        });
        let go = start.clone();
        let s = single.clone();
        let k = key.clone();
        let alone = tokio::spawn(async move {
            go.wait().await;
            s.ingest_event(&event(Some(&k)), &[job("r", 2)], 1_000)
                .await
        });
        let batched = batched.await.unwrap();
        let alone = alone.await.unwrap().unwrap();
        let contested = batched[round % 5].as_ref().unwrap();
        for (i, a) in batched.iter().enumerate() {
            if i != round % 5 {
                assert!(
                    matches!(a, Ok(Ingested::New { .. })),
                    "round {round}: {a:?}"
                );
            }
        }
        let (winner, loser) = match (contested, &alone) {
            (Ingested::New { .. }, Ingested::Duplicate { .. }) => (contested, &alone),
            (Ingested::Duplicate { .. }, Ingested::New { .. }) => (&alone, contested),
            other => panic!("round {round}: exactly one queues: {other:?}"),
        };
        assert_eq!(job_ids(loser), job_ids(winner), "round {round}");
    }
    // Each round: the contested key's two tasks and four own keys' two each.
    assert_eq!(
        batcher.queued_tasks().await.unwrap().len(),
        rounds * (2 + 4 * 2)
    );
    batcher.close().await;
    single.close().await;
}

/// The events of a batch that one event makes fail (here a trigger the
/// test installs refuses it) are recorded one by one; the bad one answers
/// its error.
async fn a_failing_event_fails_alone(store: Store) {
    let mut poison = event(Some("f-poison"));
    poison.topic = "poison".into();
    let batch = vec![
        (event(Some("f-1")), vec![job("f1", 1)]),
        (poison.clone(), vec![job("p", 1)]),
        (event(Some("f-2")), vec![job("f2", 2)]),
        (event(Some("f-1")), vec![job("f1-again", 1)]),
    ];
    let answers = store.ingest_events(&batch, 1_000).await;
    assert!(
        matches!(&answers[1], Err(StoreError::Db(e)) if e.to_string().contains("poisoned")),
        "{:?}",
        answers[1]
    );
    assert!(
        matches!(answers[0], Ok(Ingested::New { .. })),
        "{:?}",
        answers[0]
    );
    assert!(
        matches!(answers[2], Ok(Ingested::New { .. })),
        "{:?}",
        answers[2]
    );
    assert!(
        matches!(answers[3], Ok(Ingested::Duplicate { .. })),
        "the duplicate is still found one by one: {:?}",
        answers[3]
    );
    assert_eq!(store.queued_tasks().await.unwrap().len(), 3);

    // The same through the group commit: concurrent callers, one poisoned.
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = store.clone();
        let mut e = event(Some(&format!("g-{i}")));
        if i == 7 {
            e.topic = "poison".into();
        }
        callers.spawn(async move { (i, store.ingest_event(&e, &[job("g", 1)], 2_000).await) });
    }
    while let Some(done) = callers.join_next().await {
        let (i, answer) = done.unwrap();
        if i == 7 {
            assert!(answer.is_err(), "{answer:?}");
        } else {
            assert!(
                matches!(answer, Ok(Ingested::New { .. })),
                "{i}: {answer:?}"
            );
        }
    }
    assert_eq!(store.queued_tasks().await.unwrap().len(), 3 + 29);
    let topics: Vec<String> = store
        .list_events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.topic)
        .collect();
    assert_eq!(topics.len(), 3 + 29);
    assert!(!topics.iter().any(|t| t == "poison"));
}

#[tokio::test]
async fn sqlite_a_failing_event_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("testfleet.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON trigger_events WHEN NEW.topic = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned event'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;
    a_failing_event_fails_alone(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_a_failing_event_fails_alone() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let raw = db.pool().await;
    sqlx::query(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.topic = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF;
           RETURN NEW;
         END $$",
    )
    .execute(&raw)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON trigger_events
         FOR EACH ROW EXECUTE FUNCTION poison()",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;
    a_failing_event_fails_alone(store.clone()).await;
    store.close().await;
}
