//! Benchmark series: finished attempts' metric values mapped by the outbox
//! consumer into series and points, read back, and acknowledged.

use testfleet_core::AttemptOutcome;
use testfleet_core::LabelSet;
use testfleet_store::{
    Missing, NewAck, SERIES_VIEW, SeriesFilter, SeriesKey, Store, StoreError, StoredPoint,
    StoredSeries,
};
use testfleet_wire::protocol::{MachineInfo, PrepAction, PrepStatus, PrepStep};
use testfleet_wire::results::{Case, CaseOutcome, Metric, Results, Suite};

use crate::support::{INTEGRATION, claim, parse, passing_results, simple_job, submit};

contract_tests!(
    mapping_makes_series_with_every_identity_field,
    mapping_again_adds_nothing,
    hosts_never_share_a_series_and_fingerprint_changes_show_inside_one,
    listing_filters_and_pages,
    points_come_oldest_first_newest_limit_since,
    job_points_group_two_jobs_by_series,
    acks_are_listed_and_need_a_known_series,
    the_series_cursor_is_not_an_exporter_and_catches_up,
    a_prepared_attempt_is_fingerprinted_with_its_preparation,
);

/// The integration's timestamp in [`INTEGRATION`].
const INTEGRATION_AT: i64 = 1_676_034_673_000;
const INTEGRATION_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn metric(name: &str, unit: &str, value: f64) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        value,
        total: None,
        iterations: Some(16),
        variance: None,
    }
}

fn bench_case(name: &str, tag: Option<&str>, metrics: Vec<Metric>) -> Case {
    let mut c = Case::new(name, tag.map(str::to_owned));
    c.outcome = CaseOutcome::Pass;
    c.metrics = metrics;
    c
}

/// One result set of suite `tst_bench`: a benchmark `walltime` (msecs) of
/// value `v`, a data-driven `toInt("hex")` with two metrics and a case
/// without metrics.
pub(crate) fn bench_results(v: f64, repetition: u32) -> Results {
    Results {
        format: "qtest-xml".into(),
        suites: vec![Suite {
            name: "tst_bench".into(),
            cases: vec![
                bench_case(
                    "walltime",
                    None,
                    vec![metric("WalltimeMilliseconds", "msecs", v)],
                ),
                bench_case(
                    "toInt",
                    Some("hex"),
                    vec![
                        metric("CPUTicks", "ticks", v * 1000.0),
                        metric("InstructionReads", "instr. loads", 42.0),
                    ],
                ),
                bench_case("plain", None, Vec::new()),
            ],
            properties: Vec::new(),
            duration_ms: None,
        }],
        crashed: Vec::new(),
        complete: true,
        warnings: Vec::new(),
        repetition,
    }
}

fn machine(cpu: &str) -> MachineInfo {
    MachineInfo {
        platform: "Debian GNU/Linux 12".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        cpu_model: cpu.into(),
        cores: 8,
        compiler: "gcc 12.2".into(),
        ..MachineInfo::default()
    }
}

/// Submits `spec` at `at`, runs its task number `task` on `host` and
/// finishes it at `at + 20` with `results`; returns (job, attempt, task) ids.
async fn run(
    store: &Store,
    spec: &testfleet_core::JobSpec,
    task: usize,
    host: &str,
    at: i64,
    results: &[Results],
) -> (i64, i64, i64) {
    let (job, queued) = submit(store, spec, at).await;
    let attempt = claim(store, queued[task].id, host, at + 10)
        .await
        .attempt
        .attempt_id;
    store
        .finish_attempt(
            attempt,
            Some(host),
            AttemptOutcome::Passed,
            None,
            None,
            Some(results),
            None,
            at + 20,
        )
        .await
        .unwrap();
    (job, attempt, queued[task].id)
}

/// Maps until caught up, as the server's background loop does.
pub(crate) async fn map_all(store: &Store) -> usize {
    let mut mapped = 0;
    for _ in 0..1_000 {
        if store.series_caught_up().await.unwrap() {
            return mapped;
        }
        mapped += store.map_series_pending(8).await.unwrap();
    }
    panic!("the series did not catch up");
}

fn all() -> SeriesFilter {
    SeriesFilter {
        limit: 1_000,
        ..SeriesFilter::default()
    }
}

fn key(host: &str, function: &str, tag: &str, metric: &str, unit: &str) -> SeriesKey {
    SeriesKey {
        host: host.into(),
        program: "tst_bench".into(),
        function: function.into(),
        data_tag: tag.into(),
        metric: metric.into(),
        unit: unit.into(),
    }
}

async fn series_by_key(store: &Store, k: &SeriesKey) -> StoredSeries {
    store
        .list_series(&all())
        .await
        .unwrap()
        .into_iter()
        .find(|s| &s.key == k)
        .unwrap_or_else(|| panic!("no series {k:?}"))
}

async fn mapping_makes_series_with_every_identity_field(store: Store) {
    let m = machine("Xeon E5");
    store
        .agent_connected("bench-01", &LabelSet::new(), Some(&m), 500)
        .await
        .unwrap();
    let spec = parse(INTEGRATION);
    let results = [bench_results(0.25, 0), bench_results(0.5, 1)];
    let (job, attempt, task) = run(&store, &spec, 1, "bench-01", 1_000, &results).await;
    assert_eq!(map_all(&store).await, 1);

    let series = store.list_series(&all()).await.unwrap();
    let keys: Vec<SeriesKey> = series.iter().map(|s| s.key.clone()).collect();
    assert_eq!(
        keys,
        [
            key("bench-01", "walltime", "", "WalltimeMilliseconds", "msecs"),
            key("bench-01", "toInt", "hex", "CPUTicks", "ticks"),
            key(
                "bench-01",
                "toInt",
                "hex",
                "InstructionReads",
                "instr. loads"
            ),
        ]
    );
    let wall = &series[0];
    assert_eq!(
        (wall.points, wall.first_at, wall.last_at, wall.last_value),
        (2, INTEGRATION_AT, INTEGRATION_AT, 0.5),
        "the later repetition (same time, larger id) is the last value"
    );
    assert_eq!(store.series(wall.id).await.unwrap(), *wall);

    let points = store.series_points(wall.id, None, 100).await.unwrap();
    let fingerprint = points[0].fingerprint.clone();
    assert_eq!(fingerprint.len(), 16, "{fingerprint}");
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    let point = |id: i64, repetition: i64, value: f64| StoredPoint {
        id,
        series_id: wall.id,
        attempt_id: attempt,
        job_id: job,
        task_id: task,
        repetition,
        value,
        sha: Some(INTEGRATION_SHA.into()),
        branch: Some("dev".into()),
        integration: Some("189470895".into()),
        fingerprint: fingerprint.clone(),
        at: INTEGRATION_AT,
    };
    assert_eq!(
        points,
        [point(points[0].id, 0, 0.25), point(points[1].id, 1, 0.5)]
    );
    assert!(points[0].id < points[1].id);
    let known = store
        .fingerprints(std::slice::from_ref(&fingerprint))
        .await
        .unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(
        (known[0].hash.as_str(), &known[0].machine),
        (fingerprint.as_str(), &m)
    );

    // Without an integration, on a host that never reported its machine:
    // no sha, branch or integration, the finish time, fingerprint `unknown`.
    run(
        &store,
        &simple_job("plain", 1, 0, 0),
        0,
        "ghost",
        9_000,
        &[bench_results(2.0, 0)],
    )
    .await;
    map_all(&store).await;
    let ghost = series_by_key(
        &store,
        &key("ghost", "walltime", "", "WalltimeMilliseconds", "msecs"),
    )
    .await;
    let points = store.series_points(ghost.id, None, 10).await.unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(
        (
            points[0].sha.as_deref(),
            points[0].branch.as_deref(),
            points[0].integration.as_deref(),
            points[0].fingerprint.as_str(),
            points[0].at,
            points[0].value,
        ),
        (None, None, None, "unknown", 9_020, 2.0)
    );
    assert!(
        store
            .fingerprints(&["unknown".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn mapping_again_adds_nothing(store: Store) {
    run(
        &store,
        &simple_job("a", 1, 0, 0),
        0,
        "h",
        1_000,
        &[bench_results(1.0, 0)],
    )
    .await;
    assert_eq!(map_all(&store).await, 1);
    let before = store.list_series(&all()).await.unwrap();
    assert_eq!(store.map_series_pending(8).await.unwrap(), 0);
    assert_eq!(store.list_series(&all()).await.unwrap(), before);
    // Results without metrics move the cursor and add nothing.
    run(
        &store,
        &simple_job("b", 1, 0, 0),
        0,
        "h",
        2_000,
        &passing_results("tst_x", "one"),
    )
    .await;
    assert!(!store.series_caught_up().await.unwrap());
    assert_eq!(map_all(&store).await, 1);
    assert_eq!(store.list_series(&all()).await.unwrap(), before);
}

async fn hosts_never_share_a_series_and_fingerprint_changes_show_inside_one(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    store
        .agent_connected("h1", &LabelSet::new(), Some(&machine("Xeon")), 1)
        .await
        .unwrap();
    store
        .agent_connected("h2", &LabelSet::new(), Some(&machine("Xeon")), 1)
        .await
        .unwrap();
    run(&store, &spec, 0, "h1", 1_000, &[bench_results(1.0, 0)]).await;
    run(&store, &spec, 0, "h2", 2_000, &[bench_results(1.0, 0)]).await;
    map_all(&store).await;
    // The CPU of h1 changes.
    store
        .agent_connected("h1", &LabelSet::new(), Some(&machine("EPYC")), 3)
        .await
        .unwrap();
    run(&store, &spec, 0, "h1", 3_000, &[bench_results(1.5, 0)]).await;
    map_all(&store).await;

    let wall1 = series_by_key(
        &store,
        &key("h1", "walltime", "", "WalltimeMilliseconds", "msecs"),
    )
    .await;
    let wall2 = series_by_key(
        &store,
        &key("h2", "walltime", "", "WalltimeMilliseconds", "msecs"),
    )
    .await;
    assert_ne!(wall1.id, wall2.id);
    assert_eq!((wall1.points, wall2.points), (2, 1));
    assert_eq!(
        (wall1.first_at, wall1.last_at, wall1.last_value),
        (1_020, 3_020, 1.5)
    );
    let p1 = store.series_points(wall1.id, None, 10).await.unwrap();
    let p2 = store.series_points(wall2.id, None, 10).await.unwrap();
    assert_ne!(p1[0].fingerprint, p1[1].fingerprint, "the change is marked");
    assert_eq!(
        p1[0].fingerprint, p2[0].fingerprint,
        "same machine, same hash"
    );
    let mut hashes = vec![p1[0].fingerprint.clone(), p1[1].fingerprint.clone()];
    hashes.sort();
    let known = store.fingerprints(&hashes).await.unwrap();
    assert_eq!(
        known.iter().map(|f| f.hash.clone()).collect::<Vec<_>>(),
        hashes
    );
    let cpus: Vec<&str> = known.iter().map(|f| f.machine.cpu_model.as_str()).collect();
    assert!(cpus.contains(&"Xeon") && cpus.contains(&"EPYC"), "{cpus:?}");
    // Six series: three per host.
    assert_eq!(store.list_series(&all()).await.unwrap().len(), 6);
}

async fn listing_filters_and_pages(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    run(&store, &spec, 0, "h1", 1_000, &[bench_results(1.0, 0)]).await;
    run(&store, &spec, 0, "h2", 2_000, &[bench_results(1.0, 0)]).await;
    map_all(&store).await;
    let ids = |v: Vec<StoredSeries>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let every = ids(store.list_series(&all()).await.unwrap());
    assert_eq!(every.len(), 6);
    assert!(every.windows(2).all(|w| w[0] < w[1]), "ordered by id");

    let h2 = store
        .list_series(&SeriesFilter {
            host: Some("h2".into()),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(h2.len(), 3);
    assert!(h2.iter().all(|s| s.key.host == "h2"));
    let narrow = store
        .list_series(&SeriesFilter {
            host: Some("h1".into()),
            program: Some("tst_bench".into()),
            function: Some("toInt".into()),
            metric: Some("CPUTicks".into()),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(narrow.len(), 1);
    assert_eq!(
        narrow[0].key,
        key("h1", "toInt", "hex", "CPUTicks", "ticks")
    );
    // Search: case-insensitive, over program, function and data tag.
    let search = |s: &str| SeriesFilter {
        search: Some(s.into()),
        ..all()
    };
    assert_eq!(
        store.list_series(&search("WALLTIME")).await.unwrap().len(),
        2
    );
    assert_eq!(store.list_series(&search("HeX")).await.unwrap().len(), 4);
    assert_eq!(store.list_series(&search("TST_B")).await.unwrap().len(), 6);
    assert!(store.list_series(&search("%")).await.unwrap().is_empty());
    assert!(store.list_series(&search("t_b_")).await.unwrap().is_empty());
    // Paging.
    let page = |after: Option<i64>| SeriesFilter {
        after,
        limit: 4,
        ..SeriesFilter::default()
    };
    let first = ids(store.list_series(&page(None)).await.unwrap());
    let second = ids(store
        .list_series(&page(first.last().copied()))
        .await
        .unwrap());
    assert_eq!([first, second].concat(), every);
    assert!(
        store
            .list_series(&SeriesFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "limit 0"
    );
}

async fn points_come_oldest_first_newest_limit_since(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    // Finished at 1_020, 2_020, …, 5_020 with values 1..=5.
    for i in 1..=5 {
        run(
            &store,
            &spec,
            0,
            "h",
            i * 1_000,
            &[bench_results(i as f64, 0)],
        )
        .await;
    }
    map_all(&store).await;
    let wall = series_by_key(
        &store,
        &key("h", "walltime", "", "WalltimeMilliseconds", "msecs"),
    )
    .await;
    let values = |v: Vec<StoredPoint>| v.into_iter().map(|p| p.value).collect::<Vec<_>>();
    assert_eq!(
        values(store.series_points(wall.id, None, 100).await.unwrap()),
        [1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(
        values(store.series_points(wall.id, None, 2).await.unwrap()),
        [4.0, 5.0],
        "the newest two, oldest first"
    );
    assert_eq!(
        values(
            store
                .series_points(wall.id, Some(2_020), 100)
                .await
                .unwrap()
        ),
        [2.0, 3.0, 4.0, 5.0],
        "at or after since"
    );
    assert_eq!(
        values(store.series_points(wall.id, Some(2_021), 2).await.unwrap()),
        [4.0, 5.0]
    );
    assert!(
        store
            .series_points(wall.id, Some(9_999), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.series_points(999_999, None, 10).await,
        Err(StoreError::NotFound(Missing::Series(999_999)))
    ));
    assert!(matches!(
        store.series(999_999).await,
        Err(StoreError::NotFound(Missing::Series(999_999)))
    ));
}

async fn job_points_group_two_jobs_by_series(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    let (a, _, _) = run(&store, &spec, 0, "h", 1_000, &[bench_results(1.0, 0)]).await;
    let (b, _, _) = run(
        &store,
        &spec,
        0,
        "h",
        2_000,
        &[bench_results(2.0, 0), bench_results(3.0, 1)],
    )
    .await;
    let (c, _, _) = run(&store, &spec, 0, "other", 3_000, &[bench_results(9.0, 0)]).await;
    map_all(&store).await;

    let got = store.job_points(&[b, a]).await.unwrap();
    assert_eq!(got.len(), 3, "three series of host h");
    assert!(got.windows(2).all(|w| w[0].series.id < w[1].series.id));
    assert!(got.iter().all(|s| s.series.key.host == "h"));
    let wall = got
        .iter()
        .find(|s| s.series.key.function == "walltime")
        .unwrap();
    assert_eq!(wall.series.points, 3);
    assert_eq!(
        wall.points
            .iter()
            .map(|p| (p.job_id, p.repetition, p.value))
            .collect::<Vec<_>>(),
        [(a, 0, 1.0), (b, 0, 2.0), (b, 1, 3.0)]
    );
    let only_c = store.job_points(&[c]).await.unwrap();
    assert_eq!(only_c.len(), 3);
    assert!(only_c.iter().all(|s| s.series.key.host == "other"));
    assert!(store.job_points(&[]).await.unwrap().is_empty());
    assert!(store.job_points(&[999_999]).await.unwrap().is_empty());
}

async fn acks_are_listed_and_need_a_known_series(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    run(&store, &spec, 0, "h", 1_000, &[bench_results(1.0, 0)]).await;
    map_all(&store).await;
    let series = store.list_series(&all()).await.unwrap();
    let (s1, s2) = (series[0].id, series[1].id);
    let ack = |series_id: i64, sha: &str, bug: Option<&str>| NewAck {
        series_id,
        sha: sha.into(),
        note: format!("expected after {sha}"),
        bug_url: bug.map(str::to_owned),
        by: "alice".into(),
    };
    let first = store
        .add_ack(&ack(s1, "abc", Some("https://bugs.example/1")), 100)
        .await
        .unwrap();
    assert_eq!(
        (
            first.series_id,
            first.sha.as_str(),
            first.note.as_str(),
            first.bug_url.as_deref(),
            first.by.as_str(),
            first.created_at
        ),
        (
            s1,
            "abc",
            "expected after abc",
            Some("https://bugs.example/1"),
            "alice",
            100
        )
    );
    let second = store.add_ack(&ack(s2, "def", None), 200).await.unwrap();
    let third = store.add_ack(&ack(s1, "fed", None), 150).await.unwrap();
    assert_eq!(
        store.acks(None).await.unwrap(),
        [first.clone(), third.clone(), second.clone()],
        "oldest first"
    );
    assert_eq!(
        store.acks(Some(&[s1])).await.unwrap(),
        [first.clone(), third]
    );
    assert_eq!(store.acks(Some(&[s2])).await.unwrap(), [second]);
    assert!(store.acks(Some(&[])).await.unwrap().is_empty());
    let err = store
        .add_ack(&ack(999_999, "abc", None), 300)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(Missing::Series(999_999))),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "series 999999 not found");
    assert_eq!(store.acks(None).await.unwrap().len(), 3);
}

async fn the_series_cursor_is_not_an_exporter_and_catches_up(store: Store) {
    assert!(store.series_caught_up().await.unwrap());
    assert_eq!(store.map_series_pending(8).await.unwrap(), 0);
    let spec = simple_job("bench", 1, 0, 0);
    for i in 1..=3 {
        run(&store, &spec, 0, "h", i * 1_000, &[bench_results(1.0, 0)]).await;
    }
    assert!(!store.series_caught_up().await.unwrap());
    assert_eq!(store.map_series_pending(2).await.unwrap(), 2);
    assert!(!store.series_caught_up().await.unwrap());
    assert_eq!(store.map_series_pending(2).await.unwrap(), 1);
    assert!(store.series_caught_up().await.unwrap());
    assert_eq!(store.map_series_pending(2).await.unwrap(), 0);
    store.outbox_register("influxdb").await.unwrap();
    let names: Vec<String> = store
        .outbox_status()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["influxdb"], "not {SERIES_VIEW}");
}

async fn a_prepared_attempt_is_fingerprinted_with_its_preparation(store: Store) {
    let spec = simple_job("bench", 1, 0, 0);
    store
        .agent_connected("h1", &LabelSet::new(), Some(&machine("Xeon")), 1)
        .await
        .unwrap();
    run(&store, &spec, 0, "h1", 1_000, &[bench_results(1.0, 0)]).await;
    // The next attempt reports the machine as prepared for it.
    let (_, queued) = submit(&store, &spec, 2_000).await;
    let attempt = claim(&store, queued[0].id, "h1", 2_010)
        .await
        .attempt
        .attempt_id;
    let mut prepared = machine("Xeon");
    prepared.prep = vec![PrepStep {
        step: PrepAction::Governor,
        target: "cpu0".into(),
        status: PrepStatus::Applied,
        detail: "powersave -> performance".into(),
    }];
    assert!(
        !store
            .set_attempt_machine(attempt, "h2", &prepared)
            .await
            .unwrap(),
        "only the attempt's own agent"
    );
    assert!(
        store
            .set_attempt_machine(attempt, "h1", &prepared)
            .await
            .unwrap()
    );
    store
        .finish_attempt(
            attempt,
            Some("h1"),
            AttemptOutcome::Passed,
            None,
            None,
            Some(&[bench_results(1.0, 0)]),
            None,
            2_020,
        )
        .await
        .unwrap();
    assert!(
        !store
            .set_attempt_machine(attempt, "h1", &machine("EPYC"))
            .await
            .unwrap(),
        "not once the attempt has ended"
    );
    map_all(&store).await;
    let wall = series_by_key(
        &store,
        &key("h1", "walltime", "", "WalltimeMilliseconds", "msecs"),
    )
    .await;
    let points = store.series_points(wall.id, None, 10).await.unwrap();
    assert_eq!(points.len(), 2);
    assert_ne!(
        points[0].fingerprint, points[1].fingerprint,
        "the preparation is part of the fingerprint"
    );
    let known = store
        .fingerprints(std::slice::from_ref(&points[1].fingerprint))
        .await
        .unwrap();
    assert_eq!(known[0].machine.prep, prepared.prep);
}
