//! The ResultsDB tables: results mapped from finished attempts, and the
//! API's own results, testcases and groups with their queries.

use std::collections::BTreeMap;

use testfleet_core::{AttemptOutcome, LabelSet};
use testfleet_store::{
    DataFilter, NewRdbResult, RdbGroup, RdbQuery, RdbResult, RdbTestcase, Store, job_group_uuid,
};
use testfleet_wire::protocol::MachineInfo;

use crate::support::{INTEGRATION, catch_up, claim, parse, qtest_results, submit};

contract_tests!(
    finished_results_are_mapped_into_resultsdb,
    resultsdb_queries_filter_sort_and_page,
    latest_results_per_testcase_and_data_key,
    testcases_and_groups_are_upserted_and_listed,
);

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry((*k).to_owned())
            .or_default()
            .push((*v).to_owned());
    }
    map
}

async fn finished_results_are_mapped_into_resultsdb(store: Store) {
    let machine = MachineInfo {
        arch: "x86_64".into(),
        ..MachineInfo::default()
    };
    store
        .agent_connected("linux-01", &LabelSet::new(), Some(&machine), 500)
        .await
        .unwrap();
    let (job_id, queued) = submit(&store, &parse(INTEGRATION), 1_000).await;
    let task_id = queued[1].id;
    let a = claim(&store, task_id, "linux-01", 2_000)
        .await
        .attempt
        .attempt_id;
    store
        .finish_attempt(
            a,
            Some("linux-01"),
            AttemptOutcome::Failed,
            Some("1 test failed"),
            None,
            Some(&qtest_results()),
            None,
            5_000,
        )
        .await
        .unwrap();
    // The view is built after the finish, by the outbox's consumer.
    assert!(store.rdb_attempt_results(a).await.unwrap().is_empty());
    assert_eq!(catch_up(&store).await, 1);
    assert_eq!(store.materialize_pending(8).await.unwrap(), 0);

    let (job_s, task_s, attempt_s) = (job_id.to_string(), task_id.to_string(), a.to_string());
    let common = [
        ("item", "189470895"),
        ("type", "testfleet_integration"),
        ("host", "linux-01"),
        ("job_id", job_s.as_str()),
        ("job", "qtbase-dev"),
        ("task_id", task_s.as_str()),
        ("task", "corelib-tests"),
        ("attempt_id", attempt_s.as_str()),
        ("integration_id", "189470895"),
        ("arch", "x86_64"),
        ("branch", "dev"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("format", "qtest-xml"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = common.to_vec();
        pairs.extend_from_slice(extra);
        data(&pairs)
    };
    let uids: Vec<String> = (0..5).map(|i| format!("{a}.{i}")).collect();
    let group = job_group_uuid(job_id);
    let ref_url = format!("/api/v1/tasks/{task_id}/log?attempt={a}");
    let result = |testcase: &str, outcome: &str, note: Option<&str>, data| RdbResult {
        id: 0,
        testcase: RdbTestcase {
            name: testcase.into(),
            ref_url: None,
        },
        outcome: outcome.into(),
        note: note.map(str::to_owned),
        ref_url: Some(ref_url.clone()),
        submit_time: 5_000,
        groups: vec![group.clone()],
        data,
    };
    let expected = vec![
        result(
            "tst_QString.benchQString",
            "PASSED",
            None,
            with(&[
                ("case_outcome", "pass"),
                ("duration_ms", "12.5"),
                ("metric.WalltimeMilliseconds", "0.25"),
                ("tf_uid", uids[0].as_str()),
            ]),
        ),
        result(
            "tst_QString.toInt(hex)",
            "PASSED",
            None,
            with(&[
                ("case_outcome", "pass"),
                ("data_tag", "hex"),
                ("tf_uid", uids[1].as_str()),
            ]),
        ),
        result(
            "tst_QString.compare",
            "FAILED",
            Some("Compared values are not the same"),
            with(&[("case_outcome", "fail"), ("tf_uid", uids[2].as_str())]),
        ),
        result(
            "tst_QString.unicode",
            "INFO",
            Some("no ICU"),
            with(&[("case_outcome", "skip"), ("tf_uid", uids[3].as_str())]),
        ),
        result(
            "tst_QDateTime",
            "NEEDS_INSPECTION",
            Some("the test program crashed"),
            with(&[("case_outcome", "crash"), ("tf_uid", uids[4].as_str())]),
        ),
    ];
    let mapped = store.rdb_attempt_results(a).await.unwrap();
    assert_eq!(mapped.len(), expected.len());
    let ids: Vec<i64> = mapped.iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "in the order they were mapped");
    for (got, want) in mapped.iter().zip(expected) {
        assert_eq!(got, &RdbResult { id: got.id, ..want });
        assert_eq!(store.rdb_result(got.id).await.unwrap().as_ref(), Some(got));
    }
    assert_eq!(
        store.rdb_group(&group).await.unwrap(),
        Some(RdbGroup {
            uuid: group.clone(),
            description: Some("qtbase-dev".into()),
            ref_url: Some(format!("/api/v1/jobs/{job_id}")),
        })
    );
    assert_eq!(
        store.rdb_testcase("tst_QString.compare").await.unwrap(),
        Some(RdbTestcase {
            name: "tst_QString.compare".into(),
            ref_url: None,
        })
    );
    // The job's group finds them all; the data filter finds this attempt's.
    let q = RdbQuery {
        groups: vec![group],
        ..RdbQuery::default()
    };
    assert_eq!(store.rdb_results(&q, 0, 100).await.unwrap().len(), 5);
    let q = RdbQuery {
        data: vec![DataFilter {
            key: "attempt_id".into(),
            like: false,
            values: vec![a.to_string()],
        }],
        outcomes: vec!["FAILED".into(), "NEEDS_INSPECTION".into()],
        ..RdbQuery::default()
    };
    let names: Vec<String> = store
        .rdb_results(&q, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.testcase.name)
        .collect();
    assert_eq!(names, vec!["tst_QDateTime", "tst_QString.compare"]);
    assert!(store.rdb_attempt_results(999_999).await.unwrap().is_empty());
}

fn new_result(
    testcase: &str,
    outcome: &str,
    groups: &[&str],
    pairs: &[(&str, &str)],
) -> NewRdbResult {
    NewRdbResult {
        testcase: testcase.into(),
        testcase_ref_url: None,
        outcome: outcome.into(),
        note: None,
        ref_url: None,
        groups: groups
            .iter()
            .map(|g| RdbGroup {
                uuid: (*g).to_owned(),
                description: None,
                ref_url: None,
            })
            .collect(),
        data: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

const G1: &str = "8e1cc7f2-0000-4000-8000-000000000001";
const G2: &str = "8e1cc7f2-0000-4000-8000-000000000002";

/// Four results: two runs of rpmlint, one abicheck, one upgrade test.
async fn four_results(store: &Store) -> [RdbResult; 4] {
    let mut r1 = new_result(
        "dist.rpmlint",
        "PASSED",
        &[G1],
        &[("item", "foo-1.0"), ("arch", "x86_64")],
    );
    r1.note = Some("0 errors".into());
    r1.ref_url = Some("https://ci.example/1".into());
    let r2 = new_result(
        "dist.rpmlint",
        "FAILED",
        &[],
        &[("item", "foo-1.1"), ("arch", "aarch64")],
    );
    let mut r3 = new_result(
        "dist.abicheck",
        "PASSED",
        &[],
        &[("item", "foo-1.1"), ("tag", "a"), ("tag", "b")],
    );
    r3.testcase_ref_url = Some("https://ci.example/abicheck".into());
    let r4 = new_result(
        "compose.upgrade",
        "NEEDS_INSPECTION",
        &[G2, G1],
        &[("item", "bar-2")],
    );
    [
        store.rdb_create_result(&r1, 1_000).await.unwrap(),
        store.rdb_create_result(&r2, 2_000).await.unwrap(),
        store.rdb_create_result(&r3, 3_000).await.unwrap(),
        store.rdb_create_result(&r4, 4_000).await.unwrap(),
    ]
}

async fn resultsdb_queries_filter_sort_and_page(store: Store) {
    let [r1, r2, r3, r4] = four_results(&store).await;
    assert_eq!(
        r1,
        RdbResult {
            id: r1.id,
            testcase: RdbTestcase {
                name: "dist.rpmlint".into(),
                ref_url: None,
            },
            outcome: "PASSED".into(),
            note: Some("0 errors".into()),
            ref_url: Some("https://ci.example/1".into()),
            submit_time: 1_000,
            groups: vec![G1.into()],
            data: data(&[("item", "foo-1.0"), ("arch", "x86_64")]),
        }
    );
    // Values of one key keep their order.
    assert_eq!(r3.data["tag"], vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(
        r3.testcase.ref_url.as_deref(),
        Some("https://ci.example/abicheck")
    );
    let mut groups = r4.groups.clone();
    groups.sort();
    assert_eq!(groups, vec![G1.to_owned(), G2.to_owned()]);
    assert_eq!(store.rdb_result(r2.id).await.unwrap(), Some(r2.clone()));
    assert_eq!(store.rdb_result(999_999).await.unwrap(), None);

    let ids = |rs: Vec<RdbResult>| rs.iter().map(|r| r.id).collect::<Vec<_>>();
    let query = |q: RdbQuery| {
        let store = store.clone();
        async move { ids(store.rdb_results(&q, 0, 100).await.unwrap()) }
    };
    let all = RdbQuery::default();
    assert_eq!(query(all.clone()).await, vec![r4.id, r3.id, r2.id, r1.id]);
    assert_eq!(
        query(RdbQuery {
            ascending: true,
            ..all.clone()
        })
        .await,
        vec![r1.id, r2.id, r3.id, r4.id]
    );
    assert_eq!(
        ids(store.rdb_results(&all, 1, 2).await.unwrap()),
        vec![r3.id, r2.id]
    );
    assert!(store.rdb_results(&all, 4, 2).await.unwrap().is_empty());

    let by = |f: fn(&mut RdbQuery)| {
        let mut q = RdbQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        query(by(|q| q.outcomes = vec!["PASSED".into()])).await,
        vec![r3.id, r1.id]
    );
    assert_eq!(
        query(by(
            |q| q.outcomes = vec!["FAILED".into(), "NEEDS_INSPECTION".into()]
        ))
        .await,
        vec![r4.id, r2.id]
    );
    assert_eq!(
        query(by(|q| q.testcases = vec!["dist.rpmlint".into()])).await,
        vec![r2.id, r1.id]
    );
    assert_eq!(
        query(by(|q| q.testcases_like = vec!["dist.*".into()])).await,
        vec![r3.id, r2.id, r1.id]
    );
    assert_eq!(
        query(by(|q| {
            q.testcases = vec!["compose.upgrade".into()];
            q.testcases_like = vec!["*.abicheck".into()];
        }))
        .await,
        vec![r4.id, r3.id]
    );
    assert_eq!(
        query(by(|q| q.groups = vec![G1.into()])).await,
        vec![r4.id, r1.id]
    );
    assert_eq!(query(by(|q| q.groups = vec![G2.into()])).await, vec![r4.id]);
    assert_eq!(
        query(by(|q| {
            q.since = Some(2_000);
            q.until = Some(3_000);
        }))
        .await,
        vec![r3.id, r2.id]
    );
    let item = |like: bool, values: &[&str]| DataFilter {
        key: "item".into(),
        like,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    assert_eq!(
        query(RdbQuery {
            data: vec![item(false, &["foo-1.1"])],
            ..all.clone()
        })
        .await,
        vec![r3.id, r2.id]
    );
    assert_eq!(
        query(RdbQuery {
            data: vec![item(true, &["foo-*"])],
            ..all.clone()
        })
        .await,
        vec![r3.id, r2.id, r1.id]
    );
    assert_eq!(
        query(RdbQuery {
            data: vec![item(false, &["foo-1.0", "bar-2"])],
            ..all.clone()
        })
        .await,
        vec![r4.id, r1.id]
    );
    // Several filters all apply.
    assert_eq!(
        query(RdbQuery {
            data: vec![
                item(true, &["foo-*"]),
                DataFilter {
                    key: "arch".into(),
                    like: false,
                    values: vec!["aarch64".into()],
                },
            ],
            outcomes: vec!["FAILED".into()],
            testcases_like: vec!["dist.*".into()],
            ..all.clone()
        })
        .await,
        vec![r2.id]
    );
    assert!(
        query(RdbQuery {
            data: vec![item(false, &["nothing"])],
            ..all
        })
        .await
        .is_empty()
    );
}

async fn latest_results_per_testcase_and_data_key(store: Store) {
    let [r1, r2, r3, r4] = four_results(&store).await;
    let ids = |rs: Vec<RdbResult>| rs.iter().map(|r| r.id).collect::<Vec<_>>();
    let all = RdbQuery::default();
    assert_eq!(
        ids(store.rdb_latest(&all, &[]).await.unwrap()),
        vec![r4.id, r3.id, r2.id]
    );
    // The outcome filter does not apply to `latest`.
    let passed = RdbQuery {
        outcomes: vec!["PASSED".into()],
        ..RdbQuery::default()
    };
    assert_eq!(
        ids(store.rdb_latest(&passed, &[]).await.unwrap()),
        vec![r4.id, r3.id, r2.id]
    );
    // One per testcase and arch.
    let rpmlint = RdbQuery {
        testcases: vec!["dist.rpmlint".into()],
        ..RdbQuery::default()
    };
    assert_eq!(
        ids(store.rdb_latest(&rpmlint, &[]).await.unwrap()),
        vec![r2.id]
    );
    assert_eq!(
        ids(store
            .rdb_latest(&rpmlint, &["arch".to_owned()])
            .await
            .unwrap()),
        vec![r2.id, r1.id]
    );
    let ascending = RdbQuery {
        ascending: true,
        ..rpmlint
    };
    assert_eq!(
        ids(store
            .rdb_latest(&ascending, &["arch".to_owned()])
            .await
            .unwrap()),
        vec![r1.id, r2.id]
    );
    // A third rpmlint run on x86_64 replaces r1 as the latest there.
    let r5 = store
        .rdb_create_result(
            &new_result(
                "dist.rpmlint",
                "PASSED",
                &[],
                &[("item", "foo-1.2"), ("arch", "x86_64")],
            ),
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(
        ids(store
            .rdb_latest(&ascending, &["arch".to_owned()])
            .await
            .unwrap()),
        vec![r2.id, r5.id]
    );
    // A key with several values on one result still gives that one result.
    let abicheck = RdbQuery {
        testcases: vec!["dist.abicheck".into()],
        ..RdbQuery::default()
    };
    let latest = store
        .rdb_latest(&abicheck, &["tag".to_owned()])
        .await
        .unwrap();
    assert_eq!(latest, vec![r3]);
}

async fn testcases_and_groups_are_upserted_and_listed(store: Store) {
    assert_eq!(store.rdb_testcase("dist.rpmlint").await.unwrap(), None);
    assert_eq!(
        store.rdb_put_testcase("dist.rpmlint", None).await.unwrap(),
        RdbTestcase {
            name: "dist.rpmlint".into(),
            ref_url: None,
        }
    );
    let with_url = RdbTestcase {
        name: "dist.rpmlint".into(),
        ref_url: Some("https://docs.example/rpmlint".into()),
    };
    assert_eq!(
        store
            .rdb_put_testcase("dist.rpmlint", Some("https://docs.example/rpmlint"))
            .await
            .unwrap(),
        with_url
    );
    // Without a URL the stored one stays.
    assert_eq!(
        store.rdb_put_testcase("dist.rpmlint", None).await.unwrap(),
        with_url
    );
    store.rdb_put_testcase("dist.abicheck", None).await.unwrap();
    store
        .rdb_put_testcase("compose.upgrade", None)
        .await
        .unwrap();
    let names = |tcs: Vec<RdbTestcase>| tcs.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.rdb_testcases(&[], &[], 0, 10).await.unwrap()),
        vec!["compose.upgrade", "dist.abicheck", "dist.rpmlint"]
    );
    assert_eq!(
        names(store.rdb_testcases(&[], &[], 1, 1).await.unwrap()),
        vec!["dist.abicheck"]
    );
    assert_eq!(
        names(
            store
                .rdb_testcases(&[], &["dist.*".into()], 0, 10)
                .await
                .unwrap()
        ),
        vec!["dist.abicheck", "dist.rpmlint"]
    );
    assert_eq!(
        store
            .rdb_testcases(&["dist.rpmlint".into()], &[], 0, 10)
            .await
            .unwrap(),
        vec![with_url]
    );
    assert_eq!(
        names(
            store
                .rdb_testcases(&["compose.upgrade".into()], &["*.abicheck".into()], 0, 10)
                .await
                .unwrap()
        ),
        vec!["compose.upgrade", "dist.abicheck"]
    );

    assert_eq!(store.rdb_group(G1).await.unwrap(), None);
    let g1 = RdbGroup {
        uuid: G1.into(),
        description: Some("Fedora 40 compose".into()),
        ref_url: None,
    };
    assert_eq!(store.rdb_put_group(&g1).await.unwrap(), g1);
    // Only the fields given change.
    let g1_linked = RdbGroup {
        ref_url: Some("https://compose.example/40".into()),
        ..g1.clone()
    };
    let update = RdbGroup {
        uuid: G1.into(),
        description: None,
        ref_url: Some("https://compose.example/40".into()),
    };
    assert_eq!(store.rdb_put_group(&update).await.unwrap(), g1_linked);
    let g2 = RdbGroup {
        uuid: G2.into(),
        description: Some("Fedora 41 compose".into()),
        ref_url: None,
    };
    store.rdb_put_group(&g2).await.unwrap();
    let g3 = RdbGroup {
        uuid: "8e1cc7f2-0000-4000-8000-000000000003".into(),
        description: Some("nightly".into()),
        ref_url: None,
    };
    store.rdb_put_group(&g3).await.unwrap();

    // Newest first.
    assert_eq!(
        store.rdb_groups(&[], &[], &[], 0, 10).await.unwrap(),
        vec![g3.clone(), g2.clone(), g1_linked.clone()]
    );
    assert_eq!(
        store.rdb_groups(&[], &[], &[], 1, 1).await.unwrap(),
        vec![g2.clone()]
    );
    assert_eq!(
        store
            .rdb_groups(&[G1.into(), G2.into()], &[], &[], 0, 10)
            .await
            .unwrap(),
        vec![g2.clone(), g1_linked.clone()]
    );
    assert_eq!(
        store
            .rdb_groups(&[], &["nightly".into()], &[], 0, 10)
            .await
            .unwrap(),
        vec![g3]
    );
    assert_eq!(
        store
            .rdb_groups(&[], &[], &["Fedora *".into()], 0, 10)
            .await
            .unwrap(),
        vec![g2, g1_linked]
    );
}
