//! The analytics REST API against a real coordinator: series, points,
//! change points, acknowledgements, regressions, comparisons and the
//! closed loop of `compare --confirm`. Agents are plain socket.io clients
//! that report benchmark values chosen by the test; the values reach the
//! series through the coordinator's own background mapping.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testfleet_core::analysis::Verdict;
use testfleet_sio::{Client, EventStream, Incoming};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::sio::idle_agent;
use testfleet_wire::analysis::{
    AckView, CompareStatus, CompareView, RegressionsView, SeriesChanges, SeriesPage, SeriesPoints,
    SeriesView,
};

/// 2023-02-10T13:11:11Z: job `n`'s integration is `n` minutes later.
const T0: i64 = 1_676_034_671_000;

async fn start() -> TestServer {
    TestServer::in_tempdir(|config| {
        // The agents are plain socket.io clients without a secret.
        config.allow_any_agent = true;
    })
    .await
}

/// An agent `name` whose machine has compiler `compiler`.
async fn agent(url: &str, name: &str, compiler: &str) -> (Client, EventStream) {
    let auth = json!({
        "clientType": "agent", "hostname": name,
        "machine": {"platform": "Debian GNU/Linux 12", "os_version": "12", "kernel": "6.1",
                    "arch": "x86_64", "cpu_model": "Intel Core i7-7700K", "cores": 8,
                    "compiler": compiler},
    });
    idle_agent(url, auth).await
}

fn sha(n: u32) -> String {
    format!("{n:04}{}", "a".repeat(36))
}

/// A job with one task, its integration `n` minutes after [`T0`].
fn job(name: &str, n: u32) -> String {
    let ts = testfleet_core::time_fmt::format_millis(T0 + i64::from(n) * 60_000);
    format!(
        "name = \"{name}\"\n[integration]\nid = \"int-{n}\"\ntimestamp = \"{ts}\"\n\
         branch = \"dev\"\nsha = \"{}\"\n\
         [[task]]\nname = \"bench\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n",
        sha(n)
    )
}

/// One benchmark value: (function, metric, unit, value).
type Bench<'a> = (&'a str, &'a str, &'a str, f64);

/// QtTest-like results of `tst_Bench`, one result set per repetition.
fn results(repetitions: &[Vec<Bench<'_>>]) -> Value {
    let sets: Vec<Value> = repetitions
        .iter()
        .enumerate()
        .map(|(rep, benches)| {
            let mut functions: Vec<&str> = benches.iter().map(|b| b.0).collect();
            functions.dedup();
            let cases: Vec<Value> = functions
                .iter()
                .map(|f| {
                    let metrics: Vec<Value> = benches
                        .iter()
                        .filter(|b| b.0 == *f)
                        .map(|(_, metric, unit, value)| {
                            json!({"name": metric, "unit": unit, "value": value,
                                   "total": null, "iterations": 100, "variance": null})
                        })
                        .collect();
                    json!({"name": f, "data_tag": null, "classname": null, "outcome": "pass",
                           "flags": {}, "duration_ms": null, "message": null, "log": null,
                           "file": null, "line": null, "reruns": [], "diagnostics": null,
                           "metrics": metrics})
                })
                .collect();
            json!({"format": "qtest-xml", "complete": true, "warnings": [], "crashed": [],
                   "repetition": rep,
                   "suites": [{"name": "tst_Bench", "cases": cases, "properties": [], "duration_ms": null}]})
        })
        .collect();
    Value::Array(sets)
}

/// The next `sendWork` within `wait`, asking again every second as an idle
/// agent does.
async fn next_work(client: &Client, events: &mut EventStream, wait: Duration) -> Option<Value> {
    let end = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < end {
        let deadline = (tokio::time::Instant::now() + Duration::from_secs(1)).min(end);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if let Incoming::Event { name, args, .. } = event
                && name == "sendWork"
            {
                return args.into_iter().next();
            }
        }
        client.emit_no_args("fetchWork").await.unwrap();
    }
    None
}

/// Reports `results` for the attempt of `work` and asks for more work.
async fn report(client: &Client, work: &Value, results: Value) {
    let attempt = work["attemptId"].as_i64().unwrap();
    let report = json!({"attemptId": attempt, "outcome": "passed", "results": results});
    client
        .emit_with_ack("tf:report", report, Duration::from_secs(5))
        .await
        .unwrap();
    client.emit_no_args("fetchWork").await.unwrap();
}

/// Submits a job and runs it on the agent with `results`; returns its id.
async fn run(
    h: &TestServer,
    client: &Client,
    events: &mut EventStream,
    toml: &str,
    results: Value,
) -> i64 {
    let job = h.api.submit(toml).await.unwrap().id;
    let work = next_work(client, events, Duration::from_secs(10))
        .await
        .expect("work for the job");
    assert_eq!(work["jobId"].as_i64(), Some(job));
    report(client, &work, results).await;
    job
}

/// Waits until every finished attempt's values are in the series.
async fn caught_up(h: &TestServer) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if h.coordinator.views().series_caught_up().await.unwrap() {
            return;
        }
        assert!(
            Instant::now() < end,
            "the series did not catch up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until job `id` has finished.
async fn finished(h: &TestServer, id: i64) {
    testfleet_testkit::wait::wait_job(&h.api, id, Duration::from_secs(20)).await;
}

async fn get<T: serde::de::DeserializeOwned>(h: &TestServer, path: &str) -> T {
    let response = reqwest::get(format!("{}{path}", h.url)).await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

/// An error answer's status and message.
async fn error(
    h: &TestServer,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut request =
        reqwest::Client::new().request(method.parse().unwrap(), format!("{}{path}", h.url));
    if let Some((content_type, text)) = body {
        request = request
            .header("content-type", content_type)
            .body(text.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn post<T: serde::de::DeserializeOwned>(h: &TestServer, path: &str, body: Value) -> (u16, T) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", h.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {status} {e}: {text}"));
    (status, value)
}

/// A small deterministic wobble: ±0.4 % around 1.
fn wobble(i: u32) -> f64 {
    1.0 + [0.0, 0.004, -0.003, 0.002, -0.001, 0.003, -0.004][(i % 7) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_points_changes_acks_and_regressions() {
    let h = start().await;
    let (mut client, mut events) = agent(&h.url, "bench-1", "12.2.0").await;
    // 40 runs: walltime and instructions of `concat` step up by 30 % at run
    // 20 (the same commit); `append` stays flat. The compiler changes at run 30.
    for n in 0..40u32 {
        if n == 30 {
            caught_up(&h).await;
            client.disconnect().await;
            (client, events) = agent(&h.url, "bench-1", "13.1.0").await;
        }
        let level = if n < 20 { 1.0 } else { 1.3 };
        let values = vec![
            (
                "append",
                "WalltimeMilliseconds",
                "msecs",
                50.0 * wobble(n + 3),
            ),
            (
                "concat",
                "WalltimeMilliseconds",
                "msecs",
                100.0 * level * wobble(n),
            ),
            (
                "concat",
                "InstructionReads",
                "instr.",
                1000.0 * level * wobble(n + 1),
            ),
        ];
        let job = run(
            &h,
            &client,
            &mut events,
            &job("nightly", n),
            results(&[values]),
        )
        .await;
        finished(&h, job).await;
    }
    caught_up(&h).await;

    // Listing, paging and filters.
    let all: SeriesPage = get(&h, "/api/v1/series").await;
    assert_eq!(all.series.len(), 3, "{all:?}");
    assert_eq!(all.next_after, None);
    assert!(
        all.series
            .iter()
            .all(|s| s.points == 40 && s.host == "bench-1")
    );
    let page: SeriesPage = get(&h, "/api/v1/series?limit=2").await;
    assert_eq!(page.series.len(), 2);
    let after = page.next_after.expect("a second page");
    let rest: SeriesPage = get(&h, &format!("/api/v1/series?limit=2&after={after}")).await;
    assert_eq!(rest.series.len(), 1);
    assert_eq!(rest.next_after, None);
    let instr: SeriesPage = get(&h, "/api/v1/series?metric=InstructionReads").await;
    assert_eq!(instr.series.len(), 1);
    let instr = &instr.series[0];
    assert_eq!(
        (instr.unit.as_str(), instr.data_tag.as_deref()),
        ("instr.", None)
    );
    let append: SeriesPage = get(&h, "/api/v1/series?search=APPEND").await;
    assert_eq!(append.series.len(), 1, "search ignores case");
    let none: SeriesPage = get(&h, "/api/v1/series?host=elsewhere").await;
    assert!(none.series.is_empty());
    let walltime = all
        .series
        .iter()
        .find(|s| s.function == "concat" && s.metric == "WalltimeMilliseconds")
        .unwrap()
        .clone();
    let one: SeriesView = get(&h, &format!("/api/v1/series/{}", walltime.id)).await;
    assert_eq!(one, walltime);
    assert_eq!(one.first_at, "2023-02-10T13:11:11.000Z");

    // Points: the newest 15, the compiler change marked at run 30.
    let points: SeriesPoints = get(
        &h,
        &format!("/api/v1/series/{}/points?limit=15", walltime.id),
    )
    .await;
    let indexes: Vec<u64> = points.points.iter().map(|p| p.index).collect();
    assert_eq!(indexes, (25..40).collect::<Vec<u64>>());
    let changed: Vec<u64> = points
        .points
        .iter()
        .filter(|p| p.fingerprint_changed)
        .map(|p| p.index)
        .collect();
    assert_eq!(changed, vec![30]);
    assert_eq!(points.fingerprints.len(), 2, "{:?}", points.fingerprints);
    assert_eq!(points.fingerprints[1].first_index, 30);
    assert_eq!(points.fingerprints[1].machine.compiler, "13.1.0");
    assert_eq!(points.points[0].sha.as_deref(), Some(sha(25).as_str()));
    let noise = points.noise.expect("a noise model of the current level");
    assert!((noise.median - 130.0).abs() < 1.0, "{noise:?}");
    let since = testfleet_core::time_fmt::format_millis(T0 + 35 * 60_000);
    let recent: SeriesPoints = get(
        &h,
        &format!("/api/v1/series/{}/points?since={since}", walltime.id),
    )
    .await;
    assert_eq!(recent.points.len(), 5);

    // The step, once per metric of `concat`, none in `append`.
    let changes: SeriesChanges = get(&h, &format!("/api/v1/series/{}/changes", walltime.id)).await;
    assert_eq!(changes.points, 40);
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    let step = &changes.changes[0];
    assert_eq!(step.index, 20);
    assert_eq!(step.sha.as_deref(), Some(sha(20).as_str()));
    assert!(
        step.regression && (step.change_pct - 30.0).abs() < 2.0,
        "{step:?}"
    );
    assert_eq!(step.ack, None);
    let flat = all.series.iter().find(|s| s.function == "append").unwrap();
    let flat: SeriesChanges = get(&h, &format!("/api/v1/series/{}/changes", flat.id)).await;
    assert!(flat.changes.is_empty(), "{flat:?}");

    // Regressions: one group (both metrics of `concat`), not acknowledged.
    let regressions: RegressionsView = get(&h, "/api/v1/regressions").await;
    assert_eq!(regressions.series_scanned, 3);
    assert_eq!(regressions.groups.len(), 1, "{regressions:?}");
    let group = &regressions.groups[0];
    assert_eq!(
        (group.function.as_str(), group.sha.as_deref()),
        ("concat", Some(sha(20).as_str()))
    );
    assert_eq!(group.changes.len(), 2);
    assert!(!group.acknowledged);
    let recent: RegressionsView = get(&h, "/api/v1/regressions?since=7d").await;
    assert!(recent.groups.is_empty(), "the step is from 2023");
    assert!(recent.since.is_some());

    // An acknowledgement of the instructions' change, by a sha prefix,
    // carried to the walltime's change of the same group.
    let (status, ack): (u16, AckView) = post(
        &h,
        &format!("/api/v1/series/{}/acks", instr.id),
        json!({"sha": &sha(20)[..10], "note": "expected: new allocator", "bug_url": "https://bugs.example/QTBUG-1"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(ack.sha, sha(20), "the prefix resolved to the full sha");
    assert!(ack.by.starts_with("ip:"), "{ack:?}");
    let changes: SeriesChanges = get(&h, &format!("/api/v1/series/{}/changes", walltime.id)).await;
    let carried = changes.changes[0]
        .ack
        .as_ref()
        .expect("the group's acknowledgement");
    assert_eq!((carried.id, carried.series_id), (ack.id, instr.id));
    let regressions: RegressionsView = get(&h, "/api/v1/regressions").await;
    assert!(regressions.groups[0].acknowledged);
    let acks: Vec<AckView> = get(&h, &format!("/api/v1/series/{}/acks", instr.id)).await;
    assert_eq!(acks, vec![ack]);
    let none: Vec<AckView> = get(&h, &format!("/api/v1/series/{}/acks", walltime.id)).await;
    assert!(
        none.is_empty(),
        "the ack is stored once, on the series it names"
    );

    // Refusals name what is wrong.
    let id = walltime.id;
    for (method, path, body, status, needle) in [
        (
            "GET",
            "/api/v1/series/abc".to_owned(),
            None,
            400,
            "not a series id",
        ),
        (
            "GET",
            "/api/v1/series/999999".to_owned(),
            None,
            404,
            "series 999999 not found",
        ),
        (
            "GET",
            format!("/api/v1/series/{id}/points?limit=0"),
            None,
            400,
            "limit",
        ),
        (
            "GET",
            format!("/api/v1/series/{id}/points?since=soon"),
            None,
            400,
            "since",
        ),
        (
            "GET",
            "/api/v1/series?limit=5000".to_owned(),
            None,
            400,
            "limit",
        ),
        (
            "GET",
            "/api/v1/regressions?since=yesterday".to_owned(),
            None,
            400,
            "since",
        ),
        (
            "GET",
            "/api/v1/series/999999/changes".to_owned(),
            None,
            404,
            "not found",
        ),
        (
            "POST",
            format!("/api/v1/series/{id}/acks"),
            Some(("application/json", r#"{"sha": "ffffffff", "note": "x"}"#)),
            400,
            "sha",
        ),
        (
            "POST",
            format!("/api/v1/series/{id}/acks"),
            Some(("application/json", r#"{"sha": "0020aaaa", "note": "  "}"#)),
            400,
            "note",
        ),
        (
            "POST",
            format!("/api/v1/series/{id}/acks"),
            Some((
                "application/json",
                r#"{"sha": "0020aaaa", "note": "n", "bug_url": "QTBUG-1"}"#,
            )),
            400,
            "bug_url",
        ),
        (
            "POST",
            "/api/v1/series/999999/acks".to_owned(),
            Some(("application/json", r#"{"sha": "0020aaaa", "note": "n"}"#)),
            404,
            "not found",
        ),
        (
            "DELETE",
            format!("/api/v1/series/{id}"),
            None,
            405,
            "method not allowed",
        ),
    ] {
        let (got, message) = error(&h, method, &path, body).await;
        assert_eq!(got, status, "{method} {path}: {message}");
        assert!(message.contains(needle), "{method} {path}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_series_get_their_change_points() {
    let h = start().await;
    let mut csv = String::from("time,value\n");
    for i in 0..40 {
        let level = if i < 25 { 10.0 } else { 12.0 };
        csv.push_str(&format!(
            "{},{}\n",
            1_700_000_000 + i * 60,
            level * wobble(i as u32)
        ));
    }
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/analysis/changes", h.url))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let changes: SeriesChanges = response.json().await.unwrap();
    assert_eq!(changes.series, None);
    assert_eq!(changes.points, 40);
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    assert_eq!(changes.changes[0].index, 25);
    assert_eq!(changes.changes[0].at, "2023-11-14T22:38:20.000Z");

    let values: Vec<f64> = (0..40)
        .map(|i| if i < 20 { 5.0 } else { 4.0 } * wobble(i))
        .collect();
    let (status, changes): (u16, SeriesChanges) =
        post(&h, "/api/v1/analysis/changes", json!(values)).await;
    assert_eq!(status, 200);
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes.changes[0].index, changes.changes[0].at.as_str()),
        (20, "")
    );

    let (status, message) = error(
        &h,
        "POST",
        "/api/v1/analysis/changes",
        Some(("text/csv", "index,value\n0,1\n1,one\n")),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("line 3"), "{message}");
    let (status, _) = error(
        &h,
        "POST",
        "/api/v1/analysis/changes",
        Some(("application/json", "[\"a\"]")),
    )
    .await;
    assert_eq!(status, 422);
}

/// `n` repetitions of `function`'s walltime around `level`.
fn reps(function: &'static str, level: f64, n: u32, seed: u32) -> Vec<Bench<'static>> {
    (0..n)
        .map(|i| {
            (
                function,
                "WalltimeMilliseconds",
                "msecs",
                level * wobble(seed + i),
            )
        })
        .collect()
}

/// Result sets of `n` repetitions: set `i` holds the `i`-th value of every
/// benchmark that has one.
fn by_repetition(benches: Vec<Vec<Bench<'static>>>) -> Value {
    let n = benches.iter().map(Vec::len).max().unwrap_or(0);
    let sets: Vec<Vec<Bench<'static>>> = (0..n)
        .map(|i| benches.iter().filter_map(|b| b.get(i).copied()).collect())
        .collect();
    results(&sets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_two_jobs_benchmark_by_benchmark() {
    let h = start().await;
    let (client, mut events) = agent(&h.url, "bench-1", "12.2.0").await;
    // History before the baseline: the noise model of each series.
    for n in 0..12u32 {
        let values = by_repetition(vec![
            reps("same", 100.0, 1, n),
            reps("slower", 100.0, 1, n + 1),
            reps("unknown", 100.0, 1, n + 2),
        ]);
        let job = run(&h, &client, &mut events, &job("history", n), values).await;
        finished(&h, job).await;
    }
    let baseline = by_repetition(vec![
        reps("same", 100.0, 5, 0),
        reps("slower", 100.0, 5, 1),
        reps("unknown", 100.0, 1, 2),
        reps("gone", 7.0, 1, 3),
    ]);
    let contender = by_repetition(vec![
        reps("same", 100.0, 5, 3),
        reps("slower", 130.0, 5, 4),
        reps("unknown", 103.0, 1, 5),
        reps("fresh", 9.0, 1, 6),
    ]);
    let b = run(&h, &client, &mut events, &job("base", 20), baseline).await;
    let c = run(&h, &client, &mut events, &job("candidate", 21), contender).await;
    finished(&h, b).await;
    finished(&h, c).await;

    let view: CompareView = get(&h, &format!("/api/v1/compare?baseline={b}&contender={c}")).await;
    assert_eq!(
        (view.baseline_jobs.clone(), view.contender_jobs.clone()),
        (vec![b], vec![c])
    );
    assert_eq!(view.rounds, 0);
    let rows: Vec<(&str, CompareStatus, Option<Verdict>)> = view
        .rows
        .iter()
        .map(|r| (r.function.as_str(), r.status, r.verdict()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("slower", CompareStatus::Compared, Some(Verdict::Slower)),
            ("unknown", CompareStatus::Compared, Some(Verdict::Unknown)),
            ("same", CompareStatus::Compared, Some(Verdict::Same)),
            ("fresh", CompareStatus::New, None),
            ("gone", CompareStatus::Missing, None),
        ],
        "{view:#?}"
    );
    let c_ = &view.counts;
    assert_eq!(
        (
            c_.slower, c_.unknown, c_.faster, c_.same, c_.new, c_.missing
        ),
        (1, 1, 0, 1, 1, 1)
    );
    let slower = view.rows[0].comparison.as_ref().unwrap();
    assert_eq!((slower.baseline.n, slower.contender.n), (5, 5));
    assert!((slower.change - 0.3).abs() < 0.02, "{slower:?}");
    let unknown = view.rows[1].comparison.as_ref().unwrap();
    assert!(unknown.more_repetitions.is_some(), "{unknown:?}");
    assert!(
        view.rows
            .iter()
            .all(|r| r.host == "bench-1" && r.series_id.is_some())
    );

    // The same through POST, without confirmation: nothing runs again.
    let (status, posted): (u16, CompareView) = post(
        &h,
        "/api/v1/compare",
        json!({"baseline": [b], "contender": [c]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(posted, view);

    for (method, path, body, status, needle) in [
        (
            "GET",
            format!("/api/v1/compare?baseline={b}"),
            None,
            400,
            "contender",
        ),
        (
            "GET",
            format!("/api/v1/compare?baseline=0&contender={c}"),
            None,
            400,
            "baseline",
        ),
        (
            "GET",
            format!("/api/v1/compare?baseline={b},x&contender={c}"),
            None,
            400,
            "baseline",
        ),
        (
            "GET",
            format!("/api/v1/compare?baseline={b}&contender=999999"),
            None,
            404,
            "job 999999 not found",
        ),
        (
            "POST",
            "/api/v1/compare".to_owned(),
            Some(
                json!({"baseline": [b], "contender": [c], "confirm": true, "max_rounds": 11})
                    .to_string(),
            ),
            400,
            "max_rounds",
        ),
        (
            "POST",
            "/api/v1/compare".to_owned(),
            Some(json!({"baseline": [], "contender": [c]}).to_string()),
            400,
            "baseline",
        ),
    ] {
        let body = body.as_deref().map(|b| ("application/json", b));
        let (got, message) = error(&h, method, &path, body).await;
        assert_eq!(got, status, "{method} {path}: {message}");
        assert!(message.contains(needle), "{method} {path}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_runs_both_sides_again_until_the_verdict_is_known() {
    let h = start().await;
    let (client, mut events) = agent(&h.url, "bench-1", "12.2.0").await;
    let b = run(
        &h,
        &client,
        &mut events,
        &job("base", 1),
        by_repetition(vec![reps("f", 100.0, 1, 0)]),
    )
    .await;
    let c = run(
        &h,
        &client,
        &mut events,
        &job("candidate", 2),
        by_repetition(vec![reps("f", 140.0, 1, 1)]),
    )
    .await;
    finished(&h, b).await;
    finished(&h, c).await;
    let first: CompareView = get(&h, &format!("/api/v1/compare?baseline={b}&contender={c}")).await;
    assert_eq!(
        first.counts.unknown, 1,
        "one value per side cannot decide: {first:#?}"
    );

    let url = h.url.clone();
    let confirm = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/api/v1/compare"))
            .json(&json!({"baseline": [b], "contender": [c], "confirm": true, "max_rounds": 6}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    });
    // Play the agent: every re-run of the baseline measures ~100, of the
    // contender ~140.
    let mut reruns = [0u32; 2];
    while !confirm.is_finished() {
        let Some(work) = next_work(&client, &mut events, Duration::from_secs(2)).await else {
            continue;
        };
        let job = work["jobId"].as_i64().unwrap();
        let (side, level) = if job == b { (0, 100.0) } else { (1, 140.0) };
        assert!(
            job == b || job == c,
            "only the compared jobs run again: {work}"
        );
        reruns[side] += 1;
        let seed = 10 * reruns[side] + side as u32;
        report(
            &client,
            &work,
            by_repetition(vec![reps("f", level, 1, seed)]),
        )
        .await;
    }
    let (status, text) = confirm.await.unwrap();
    assert_eq!(status, 200, "{text}");
    let view: CompareView = serde_json::from_str(&text).unwrap();
    assert!(view.rounds >= 1, "{view:#?}");
    println!(
        "confirm: {} round(s), verdict {:?}",
        view.rounds,
        view.rows[0].verdict()
    );
    assert_eq!(
        reruns,
        [view.rounds, view.rounds],
        "both sides, once per round"
    );
    let row = &view.rows[0];
    let comparison = row.comparison.as_ref().unwrap();
    let n = usize::try_from(view.rounds).unwrap() + 1;
    assert_eq!(
        (comparison.baseline.n, comparison.contender.n),
        (n, n),
        "pooled"
    );
    if view.rounds < 6 {
        assert_eq!(row.verdict(), Some(Verdict::Slower), "{view:#?}");
    }
    assert_eq!(
        view.counts.unknown,
        u64::from(row.verdict() == Some(Verdict::Unknown))
    );
    // Each task ran once more per round, as new attempts.
    for job in [b, c] {
        let task = h.api.job(job).await.unwrap().tasks[0].id;
        let detail = h.coordinator.views().task(task).await.unwrap();
        assert_eq!(detail.attempts_list.len(), n, "{detail:#?}");
    }
}
