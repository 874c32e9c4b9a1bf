//! Attempt logs (chunks by byte offset) and progress (stages, work log).

use serde_json::json;
use testfleet_core::time_fmt::format_millis;
use testfleet_core::{AttemptOutcome, Stage};
use testfleet_store::{Progress, Store, StoreError};
use testfleet_wire::api::LogSlice;

use crate::support::{INTEGRATION, as_json, claim, parse, simple_job, submit};

contract_tests!(
    append_log_stores_each_offset_once_for_its_agent,
    task_log_reads_by_byte_offset_up_to_the_first_gap,
    progress_moves_stages_and_fills_the_work_log,
);

async fn append_log_stores_each_offset_once_for_its_agent(store: Store) {
    let (_, queued) = submit(&store, &simple_job("logs", 1, 0, 2), 1_000).await;
    let id = queued[0].id;
    let a = claim(&store, id, "agent-1", 2_000).await.attempt.attempt_id;
    assert!(store.append_log(a, "agent-1", 0, "hello ").await.unwrap());
    assert!(store.append_log(a, "agent-1", 6, "world\n").await.unwrap());
    // Re-sent after a reconnect: stored once, the first copy kept.
    assert!(!store.append_log(a, "agent-1", 0, "HELLO ").await.unwrap());
    assert!(!store.append_log(a, "agent-1", 6, "world\n").await.unwrap());
    // Another agent may not write to this attempt, nor anyone to an unknown one.
    assert!(
        !store
            .append_log(a, "agent-2", 12, "forged\n")
            .await
            .unwrap()
    );
    assert!(!store.append_log(999_999, "agent-1", 0, "x").await.unwrap());

    let slice = store.task_log(id, None, 0).await.unwrap();
    assert_eq!(
        slice,
        LogSlice {
            task_id: id,
            attempt_id: Some(a),
            offset: 0,
            next_offset: 12,
            data: "hello world\n".into(),
            complete: false,
        }
    );
    assert_eq!(
        store.attempt_log_tail(a, 1 << 20).await.unwrap(),
        "hello world\n"
    );
    // The newest chunks that reach the size asked for.
    assert_eq!(store.attempt_log_tail(a, 3).await.unwrap(), "world\n");
    assert_eq!(store.attempt_log_tail(999_999, 100).await.unwrap(), "");
}

async fn task_log_reads_by_byte_offset_up_to_the_first_gap(store: Store) {
    let (_, queued) = submit(&store, &simple_job("slices", 2, 0, 2), 1_000).await;
    let id = queued[0].id;
    // No attempt yet: an empty slice, not complete.
    assert_eq!(
        store.task_log(id, None, 0).await.unwrap(),
        LogSlice {
            task_id: id,
            attempt_id: None,
            offset: 0,
            next_offset: 0,
            data: String::new(),
            complete: false,
        }
    );
    let a = claim(&store, id, "agent-1", 2_000).await.attempt.attempt_id;
    assert!(store.append_log(a, "agent-1", 0, "hello ").await.unwrap());
    assert!(store.append_log(a, "agent-1", 6, "world\n").await.unwrap());

    let slice = store.task_log(id, Some(a), 3).await.unwrap();
    assert_eq!(
        (slice.data.as_str(), slice.offset, slice.next_offset),
        ("lo world\n", 3, 12)
    );
    let slice = store.task_log(id, Some(a), 12).await.unwrap();
    assert_eq!((slice.data.as_str(), slice.next_offset), ("", 12));

    // A chunk after a gap waits until the gap is filled.
    assert!(store.append_log(a, "agent-1", 20, "later\n").await.unwrap());
    let slice = store.task_log(id, None, 12).await.unwrap();
    assert_eq!((slice.data.as_str(), slice.next_offset), ("", 12));
    assert!(
        store
            .append_log(a, "agent-1", 12, "12345678")
            .await
            .unwrap()
    );
    let slice = store.task_log(id, None, 12).await.unwrap();
    assert_eq!(
        (slice.data.as_str(), slice.next_offset),
        ("12345678later\n", 26)
    );

    // Offsets count bytes, not characters: "ünïcødé\n" is 12 bytes.
    let text = "ünïcødé\n";
    assert!(store.append_log(a, "agent-1", 26, text).await.unwrap());
    let slice = store.task_log(id, None, 35).await.unwrap();
    assert_eq!((slice.data.as_str(), slice.next_offset), ("é\n", 38));
    let slice = store.task_log(id, None, 0).await.unwrap();
    assert_eq!(slice.data, "hello world\n12345678later\nünïcødé\n");
    assert_eq!(slice.next_offset, 38);
    assert!(!slice.complete);
    assert_eq!(store.attempt_log_tail(a, 5).await.unwrap(), text);

    // Once the attempt and its task are finished, the log is complete.
    store
        .finish_attempt(
            a,
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            3_000,
        )
        .await
        .unwrap();
    let slice = store.task_log(id, None, 38).await.unwrap();
    assert!(slice.complete);
    assert_eq!(slice.data, "");

    // An attempt of another task is not this task's.
    let b = claim(&store, queued[1].id, "agent-2", 4_000)
        .await
        .attempt
        .attempt_id;
    assert!(matches!(
        store.task_log(id, Some(b), 0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.task_log(999_999, None, 0).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn progress_moves_stages_and_fills_the_work_log(store: Store) {
    let spec = parse(INTEGRATION);
    let (_, queued) = submit(&store, &spec, 1_000).await;
    let id = queued[1].id;
    let a = claim(&store, id, "agent-1", 2_000).await.attempt.attempt_id;
    let progress = store.progress();
    progress.send(Progress::Stage {
        attempt_id: a,
        stage: Stage::Configure,
        detail: None,
        update_ts: Some(2_100),
        now: 2_100,
    });
    progress.send(Progress::Stage {
        attempt_id: a,
        stage: Stage::Test,
        detail: Some("ctest --test-dir build".into()),
        update_ts: Some(2_500),
        now: 2_500,
    });
    progress.send(Progress::WorkLog {
        hostname: "agent-1".into(),
        attempt_id: Some(a),
        integration_id: Some("189470895".into()),
        status: "test".into(),
        detail: Some("ctest --test-dir build".into()),
        now: 2_500,
    });
    // Reading a task waits for the progress sent before.
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.stage.as_deref(), Some("test"));
    assert_eq!(
        detail.task.detail_message.as_deref(),
        Some("ctest --test-dir build")
    );
    assert_eq!(detail.attempts_list[0].stage.as_deref(), Some("test"));
    let running = store.running_attempts().await.unwrap();
    assert_eq!(running[0].last_update_ts, Some(2_500));

    // The attempt ends with a final stage; a late update changes nothing.
    store
        .finish_attempt(
            a,
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            Some(Stage::Done),
            3_000,
        )
        .await
        .unwrap();
    progress.send(Progress::Stage {
        attempt_id: a,
        stage: Stage::Build,
        detail: Some("late".into()),
        update_ts: Some(3_050),
        now: 3_050,
    });
    progress.send(Progress::WorkLog {
        hostname: "agent-1".into(),
        attempt_id: None,
        integration_id: None,
        status: "idle".into(),
        detail: None,
        now: 3_100,
    });
    let detail = store.task(id).await.unwrap();
    assert_eq!(detail.task.stage.as_deref(), Some("test"));
    assert_ne!(detail.task.detail_message.as_deref(), Some("late"));
    assert_eq!(detail.attempts_list[0].stage.as_deref(), Some("done"));

    assert_eq!(
        as_json(store.work_log(10).await.unwrap()),
        json!([
            {"hostname": "agent-1", "attemptId": a, "integrationId": "189470895",
             "status": "test", "detailMessage": "ctest --test-dir build",
             "timestamp": format_millis(2_500)},
            {"hostname": "agent-1", "attemptId": null, "integrationId": null,
             "status": "idle", "detailMessage": null, "timestamp": format_millis(3_100)},
        ])
    );
    let newest = as_json(store.work_log(1).await.unwrap());
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(newest[0]["status"], "idle");

    // Lines sent together (one batch, one statement) keep their order.
    for n in 0..40 {
        progress.send(Progress::WorkLog {
            hostname: format!("agent-{n}"),
            attempt_id: None,
            integration_id: None,
            status: "idle".into(),
            detail: None,
            now: 4_000,
        });
    }
    let lines = store.work_log(40).await.unwrap();
    let hosts: Vec<&str> = lines.iter().map(|l| l.hostname.as_str()).collect();
    let sent: Vec<String> = (0..40).map(|n| format!("agent-{n}")).collect();
    assert_eq!(hosts, sent.iter().map(String::as_str).collect::<Vec<_>>());
}
