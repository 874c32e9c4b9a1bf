//! The exporters' outbox: one event per finished attempt with results, a
//! cursor per sink.

use testfleet_core::AttemptOutcome;
use testfleet_store::{ExportEvent, SinkStatus, Store};

use crate::support::{catch_up, claim, passing_results, simple_job, submit};

contract_tests!(
    finishes_with_results_enter_the_outbox,
    sinks_move_their_cursor_on_ack_only,
    a_large_report_is_mapped_once_whole,
);

/// Runs one attempt of each task and finishes it with `results[i]`.
async fn finish_each(
    store: &Store,
    n: usize,
    results: &[Option<Vec<testfleet_wire::results::Results>>],
) -> Vec<i64> {
    let (_, queued) = submit(store, &simple_job("exported", n, 0, 2), 1_000).await;
    let mut attempts = Vec::new();
    for (q, results) in queued.iter().zip(results) {
        let a = claim(store, q.id, "agent-1", 2_000)
            .await
            .attempt
            .attempt_id;
        store
            .finish_attempt(
                a,
                Some("agent-1"),
                AttemptOutcome::Passed,
                None,
                None,
                results.as_deref(),
                None,
                3_000,
            )
            .await
            .unwrap();
        attempts.push(a);
    }
    attempts
}

fn status(name: &str) -> SinkStatus {
    SinkStatus {
        name: name.into(),
        pending: 0,
        delivered: 0,
        dropped: 0,
        failures: 0,
        last_error: None,
        last_error_at: None,
        last_success_at: None,
    }
}

async fn finishes_with_results_enter_the_outbox(store: Store) {
    assert!(store.outbox_status().await.unwrap().is_empty());
    assert!(store.resultsdb_view_caught_up().await.unwrap());
    assert_eq!(store.materialize_pending(10).await.unwrap(), 0);
    // An unregistered sink reads from the beginning.
    assert!(
        store
            .outbox_pending("influxdb", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let attempts = finish_each(
        &store,
        4,
        &[
            Some(passing_results("tst_a", "one")),
            None,
            Some(Vec::new()),
            Some(passing_results("tst_b", "two")),
        ],
    )
    .await;
    // Sinks see an event once the ResultsDB view has mapped it.
    assert!(!store.resultsdb_view_caught_up().await.unwrap());
    assert!(
        store
            .outbox_pending("influxdb", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.materialize_pending(1).await.unwrap(), 1);
    assert_eq!(
        store
            .outbox_pending("influxdb", 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.attempt_id)
            .collect::<Vec<_>>(),
        vec![attempts[0]]
    );
    assert_eq!(store.materialize_pending(10).await.unwrap(), 1);
    assert_eq!(store.materialize_pending(10).await.unwrap(), 0);
    assert!(store.resultsdb_view_caught_up().await.unwrap());
    // No results and empty results export nothing.
    let pending = store.outbox_pending("influxdb", 10).await.unwrap();
    let exported: Vec<i64> = pending.iter().map(|e| e.attempt_id).collect();
    assert_eq!(exported, vec![attempts[0], attempts[3]]);
    assert!(pending[0].id < pending[1].id);
    // A late, stale finish adds nothing.
    store
        .finish_attempt(
            attempts[0],
            Some("agent-1"),
            AttemptOutcome::Passed,
            None,
            None,
            Some(&passing_results("tst_a", "one")),
            None,
            4_000,
        )
        .await
        .unwrap();
    assert!(store.resultsdb_view_caught_up().await.unwrap());
    assert_eq!(store.materialize_pending(10).await.unwrap(), 0);
    assert_eq!(store.outbox_pending("influxdb", 10).await.unwrap(), pending);
    // The view's own cursor is not a sink.
    assert!(store.outbox_status().await.unwrap().is_empty());
    // Oldest first, `max` at most.
    assert_eq!(
        store.outbox_pending("influxdb", 1).await.unwrap(),
        vec![pending[0]]
    );
}

async fn sinks_move_their_cursor_on_ack_only(store: Store) {
    store.outbox_register("influxdb").await.unwrap();
    store.outbox_register("influxdb").await.unwrap();
    assert_eq!(
        store.outbox_status().await.unwrap(),
        vec![status("influxdb")]
    );

    let attempts = finish_each(
        &store,
        2,
        &[
            Some(passing_results("tst_a", "one")),
            Some(passing_results("tst_b", "two")),
        ],
    )
    .await;
    assert_eq!(catch_up(&store).await, 2);
    let pending: Vec<ExportEvent> = store.outbox_pending("influxdb", 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.attempt_id).collect::<Vec<_>>(),
        attempts
    );
    assert_eq!(store.outbox_status().await.unwrap()[0].pending, 2);

    // The receiver is down: the cursor stays.
    store
        .outbox_failed("influxdb", "connection refused", 5_000)
        .await
        .unwrap();
    store
        .outbox_failed("influxdb", "503 Service Unavailable", 6_000)
        .await
        .unwrap();
    assert_eq!(
        store.outbox_status().await.unwrap(),
        vec![SinkStatus {
            pending: 2,
            failures: 2,
            last_error: Some("503 Service Unavailable".into()),
            last_error_at: Some(6_000),
            ..status("influxdb")
        }]
    );
    assert_eq!(store.outbox_pending("influxdb", 10).await.unwrap(), pending);

    // The first event is acknowledged: 3 points accepted, 1 refused.
    store
        .outbox_ack("influxdb", pending[0].id, 3, 1, 7_000)
        .await
        .unwrap();
    assert_eq!(
        store.outbox_pending("influxdb", 10).await.unwrap(),
        vec![pending[1]]
    );
    assert_eq!(
        store.outbox_status().await.unwrap(),
        vec![SinkStatus {
            pending: 1,
            delivered: 3,
            dropped: 1,
            failures: 0,
            last_error: Some("503 Service Unavailable".into()),
            last_error_at: Some(6_000),
            last_success_at: Some(7_000),
            ..status("influxdb")
        }]
    );
    // An acknowledgement older than the cursor never moves it back.
    store.outbox_ack("influxdb", 0, 0, 0, 7_500).await.unwrap();
    assert_eq!(
        store.outbox_pending("influxdb", 10).await.unwrap(),
        vec![pending[1]]
    );
    store
        .outbox_ack("influxdb", pending[1].id, 2, 0, 8_000)
        .await
        .unwrap();
    assert!(
        store
            .outbox_pending("influxdb", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A sink added later back-fills everything; each sink has its own cursor.
    store.outbox_register("resultsdb").await.unwrap();
    assert_eq!(
        store.outbox_pending("resultsdb", 10).await.unwrap(),
        pending
    );
    let statuses = store.outbox_status().await.unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        statuses[0],
        SinkStatus {
            delivered: 5,
            dropped: 1,
            last_error: Some("503 Service Unavailable".into()),
            last_error_at: Some(6_000),
            last_success_at: Some(8_000),
            ..status("influxdb")
        }
    );
    assert_eq!(
        statuses[1],
        SinkStatus {
            pending: 2,
            ..status("resultsdb")
        }
    );
}

/// A report of more cases than SQLite maps per transaction (50) ends up in
/// the view whole and once, and the events after it still follow in order.
async fn a_large_report_is_mapped_once_whole(store: Store) {
    let mut big = passing_results("tst_big", "case_0");
    let template = big[0].suites[0].cases[0].clone();
    big[0].suites[0].cases = (0..250)
        .map(|i| testfleet_wire::results::Case {
            name: format!("case_{i}"),
            ..template.clone()
        })
        .collect();
    let attempts = finish_each(
        &store,
        2,
        &[Some(big), Some(passing_results("tst_small", "one"))],
    )
    .await;
    assert_eq!(store.materialize_pending(1).await.unwrap(), 1);
    let mapped = store.rdb_attempt_results(attempts[0]).await.unwrap();
    assert_eq!(mapped.len(), 250);
    let mut names: Vec<&str> = mapped.iter().map(|r| r.testcase.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 250, "every case once");
    // Each result got its own data (rows are inserted many per statement).
    for r in &mapped {
        let seq = r.testcase.name.rsplit('_').next().unwrap();
        assert_eq!(
            r.data["tf_uid"],
            vec![format!("{}.{seq}", attempts[0])],
            "{}",
            r.testcase.name
        );
    }
    assert!(
        store
            .rdb_attempt_results(attempts[1])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.resultsdb_view_caught_up().await.unwrap());
    assert_eq!(store.materialize_pending(10).await.unwrap(), 1);
    assert!(store.resultsdb_view_caught_up().await.unwrap());
    assert_eq!(
        store.rdb_attempt_results(attempts[0]).await.unwrap().len(),
        250
    );
    assert_eq!(
        store.rdb_attempt_results(attempts[1]).await.unwrap().len(),
        1
    );
}
