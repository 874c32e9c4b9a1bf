//! The analytics commands through the real binary (issue 14, items 4 and 6):
//!
//! - `changes FILE.csv` finds a 10 % step here, without a coordinator, as a
//!   table and as JSON (`SeriesChanges`), from a file or from standard input
//!   (`-`); a bad line or a missing file is exit 2 with a message naming
//!   the file and the line; a reader that goes away ends it quietly;
//! - against a coordinator and an agent that ran benchmark jobs before and
//!   after a 20 % slow-down: `series`, `series ID`, `compare A,B C,D`,
//!   `changes --series`, `regressions` and `ack`, each as JSON parsed into
//!   the wire types and as a table.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::SeriesQuery;
use testfleet_core::JobState;
use testfleet_core::analysis::Verdict;
use testfleet_core::analysis::changes::Step;
use testfleet_testkit::Rng;
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::server::TestServer;
use testfleet_testkit::wait::{wait_agents, wait_job};
use testfleet_wire::analysis::{
    AckView, CompareStatus, CompareView, RegressionsView, SeriesChanges, SeriesPage, SeriesPoints,
};

const SECRET: &str = "cli-analysis-secret";

/// The binary with no configuration or credentials from the environment.
fn testfleet(dir: &Path) -> Command {
    let config = dir.join("empty-config.toml");
    if !config.exists() {
        std::fs::write(&config, "").expect("write an empty config file");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.current_dir(dir)
        .env("TESTFLEET_CONFIG", &config)
        .env("RUST_BACKTRACE", "1")
        .env_remove("TESTFLEET_TOKEN")
        .env_remove("TESTFLEET_USER")
        .env_remove("TESTFLEET_PASSWORD")
        .env_remove("TESTFLEET_SERVER");
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run testfleet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `steps` runs of `len` points each, ±0.5 % noise around the levels
/// `levels[i % levels.len()]`, as `index,value` CSV.
fn stepped_csv(levels: &[f64], steps: usize, len: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut csv = String::from("index,value\n");
    for i in 0..steps * len {
        let level = levels[(i / len) % levels.len()];
        let noise = (rng.below(1001) as f64 / 1000.0 - 0.5) * 0.01;
        csv.push_str(&format!("{i},{:.4}\n", level * (1.0 + noise)));
    }
    csv
}

/// 50 points around 100, then 50 around 110: a 10 % step at index 50.
fn step_csv(dir: &Path) -> PathBuf {
    let path = dir.join("step.csv");
    std::fs::write(&path, stepped_csv(&[100.0, 110.0], 2, 50, 7)).unwrap();
    path
}

fn assert_step_found(changes: &SeriesChanges) {
    assert_eq!(changes.points, 100);
    assert!(changes.series.is_none());
    let step = changes
        .changes
        .iter()
        .find(|c| (48..=52).contains(&c.index))
        .unwrap_or_else(|| panic!("no change point at the step (index 50): {changes:#?}"));
    assert!(
        (8.0..12.0).contains(&step.change_pct),
        "a 10 % step: {step:?}"
    );
    assert_eq!(step.step, Step::Up);
    assert!(step.regression, "up is worse by default (lower is better)");
    assert!(step.p_value <= 0.001, "{step:?}");
    assert!(
        (99.0..101.0).contains(&step.mean_before) && (109.0..111.0).contains(&step.mean_after),
        "{step:?}"
    );
}

#[test]
fn changes_of_a_csv_file_finds_the_step_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let csv = step_csv(dir.path());

    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes").arg(&csv).arg("--json");
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    let changes: SeriesChanges = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_step_found(&changes);

    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes").arg(&csv);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("in 100 points"), "{table}");
    let header = table
        .lines()
        .find(|l| l.starts_with("INDEX"))
        .unwrap_or_else(|| panic!("no table header: {table}"));
    for column in ["BEFORE", "AFTER", "CHANGE", "P", "DIRECTION"] {
        assert!(header.contains(column), "{header}");
    }
    let row = table
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| (48..=52).contains(&i))
        })
        .unwrap_or_else(|| panic!("no row at the step: {table}"));
    assert!(row.contains("up (regression)"), "{row}");
    assert!(
        row.contains("+9.") || row.contains("+10.") || row.contains("+11."),
        "the change as `+10.0 %`: {row}"
    );

    // Throughput: up is an improvement.
    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes")
            .arg(&csv)
            .args(["--better", "higher", "--json"]);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    let changes: SeriesChanges = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        changes.changes.iter().all(|c| !c.regression),
        "{changes:#?}"
    );
}

#[test]
fn changes_reads_standard_input_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(step_csv(dir.path())).unwrap();
    let mut child = testfleet(dir.path())
        .args(["changes", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(csv.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let changes: SeriesChanges = serde_json::from_slice(&out.stdout).unwrap();
    assert_step_found(&changes);

    // A bad line on standard input is named as such.
    let mut child = testfleet(dir.path())
        .args(["changes", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"index,value\n0,1\nzero,2\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("standard input: line 3:") && err.contains("zero"),
        "{err}"
    );
}

#[test]
fn a_bad_csv_line_or_a_missing_file_is_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "index,value\n0,100\n1,101\n\n2,1O2\n3,100\n").unwrap();
    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes").arg(&bad);
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.csv: line 5:"), "{err}");
    assert!(err.contains("`1O2`"), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    let header = dir.path().join("header.csv");
    std::fs::write(&header, "when,how much\n1,2\n").unwrap();
    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes").arg(&header);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("header.csv: line 1:"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("no-such.csv");
    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes").arg(&missing);
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed to read") && err.contains("no-such.csv"),
        "{err}"
    );

    // Neither a file nor --series: a usage error from the argument parser.
    let out = run({
        let mut c = testfleet(dir.path());
        c.arg("changes");
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Runs `cmd` with its stdout a pipe whose reader reads `keep` bytes and
/// then goes away; returns the exit code and stderr.
fn with_closed_stdout(mut cmd: Command, keep: usize) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn testfleet");
    let mut stdout = child.stdout.take().expect("piped stdout");
    if keep > 0 {
        let mut buf = vec![0; keep];
        let _ = stdout.read_exact(&mut buf);
    }
    drop(stdout);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait for testfleet");
    (status.code(), stderr)
}

#[test]
fn changes_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // 200 alternating 30 % steps: far more output than a pipe holds.
    let path = dir.path().join("many.csv");
    std::fs::write(&path, stepped_csv(&[100.0, 130.0], 200, 20, 11)).unwrap();
    for args in [vec!["--json"], vec![]] {
        for keep in [0, 64] {
            let mut cmd = testfleet(dir.path());
            cmd.arg("changes").arg(&path).args(&args);
            let (code, stderr) = with_closed_stdout(cmd, keep);
            let what = format!("changes {args:?}, reader gone after {keep} bytes");
            assert!(
                !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
                "{what}: {stderr}"
            );
            assert!(!stderr.contains("error:"), "{what}: {stderr}");
            assert_eq!(code, Some(0), "{what}: {stderr}");
        }
    }
}

// ---------------------------------------------------------------------------
// Against a coordinator.

/// A Google Benchmark file with one benchmark, `BM_Step`, whose real and
/// CPU times are `ns`.
fn gbench(ns: f64) -> String {
    format!(
        r#"{{"context": {{"date": "2026-01-01T00:00:00+00:00", "num_cpus": 2}}, "benchmarks": [{{"name": "BM_Step/64", "run_name": "BM_Step/64", "run_type": "iteration", "repetitions": 1, "repetition_index": 0, "threads": 1, "iterations": 1000, "real_time": {ns:.3}, "cpu_time": {ns:.3}, "time_unit": "ns"}}]}}"#
    )
}

/// Job `n`: it reports `ns` for `BM_Step/64`, at integration time `n`
/// minutes past midnight and commit `sha`.
fn bench_job(n: usize, ns: f64, sha: &str) -> String {
    format!(
        r#"name = "step-{n}"
[integration]
id = "{n}"
timestamp = "2026-01-01T00:{n:02}:00Z"
sha = "{sha}"
[[task]]
name = "bench"
steps = [{{ stage = "test", run = '''mkdir -p results && printf '%s' '{json}' > results/bench.json''' }}]
results = [{{ path = "results/bench.json", format = "gbench" }}]
"#,
        json = gbench(ns)
    )
}

/// Runs on each side of the slow-down.
const RUNS: usize = 20;

const SHA_BEFORE: &str = "1111111111111111111111111111111111111111";
const SHA_AFTER: &str = "2222222222222222222222222222222222222222";

/// Runs `cmd` on a blocking thread (the coordinator runs on this runtime).
async fn run_async(cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || run(cmd)).await.unwrap()
}

async fn json_of<T: serde::de::DeserializeOwned>(dir: &Path, url: &str, args: &[&str]) -> T {
    let mut cmd = testfleet(dir);
    cmd.args(args).args(["--json", "--server", url]);
    let out = run_async(cmd).await;
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} --json: {e}: {}", text(&out.stdout)))
}

async fn table_of(dir: &Path, url: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = testfleet(dir);
    cmd.args(args).args(["--server", url]);
    let out = run_async(cmd).await;
    assert!(
        !text(&out.stderr).contains("error:"),
        "{args:?}: {}",
        text(&out.stderr)
    );
    (out.status.code(), text(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_compare_regressions_and_ack_against_a_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::in_tempdir(|config| {
        config.agent_secret = Some(SECRET.into());
        config.lease_timeout = Duration::from_secs(3);
    })
    .await;
    let api = &server.api;
    let agent = TestAgent::start(&server.url, "bench-host", dir.path(), |config| {
        config.secret = Some(SECRET.into());
    });
    wait_agents(api, 1).await;

    // Twenty runs around 100 ns, then twenty around 120 ns (a 20 % slow-down):
    // the detector's p ≤ 1e-6 needs about this many on each side.
    let mut rng = Rng::new(3);
    let mut before = Vec::new();
    let mut after = Vec::new();
    for n in 0..2 * RUNS {
        let (level, sha, ids) = if n < RUNS {
            (100.0, SHA_BEFORE, &mut before)
        } else {
            (120.0, SHA_AFTER, &mut after)
        };
        let ns = level * (1.0 + (rng.below(1001) as f64 / 1000.0 - 0.5) * 0.01);
        let job = api.submit(&bench_job(n, ns, sha)).await.unwrap();
        let done = wait_job(api, job.id, Duration::from_secs(60)).await;
        assert_eq!(done.state, JobState::Passed, "{done:#?}");
        ids.push(job.id);
    }

    // The series fill in the background: wait for all the points.
    let query = SeriesQuery {
        search: Some("BM_Step".into()),
        ..SeriesQuery::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = api.series(&query).await.unwrap();
        if !page.series.is_empty() && page.series.iter().all(|s| s.points == 2 * RUNS as u64) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the series did not get {} points: {page:#?}",
            2 * RUNS
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let url = server.url.as_str();
    let d = dir.path();

    // series: the list, as JSON and as a table.
    let listed: SeriesPage = json_of(d, url, &["series", "--search", "BM_Step"]).await;
    assert_eq!(listed, page);
    let real = listed
        .series
        .iter()
        .find(|s| s.metric == "real_time")
        .unwrap_or_else(|| panic!("no real_time series: {listed:#?}"))
        .clone();
    assert_eq!(real.host, "bench-host");
    let (code, table) = table_of(d, url, &["series", "--search", "BM_Step"]).await;
    assert_eq!(code, Some(0));
    assert!(table.starts_with("ID"), "{table}");
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&real.id.to_string()))
        .unwrap_or_else(|| panic!("no row for series {}: {table}", real.id));
    assert!(
        row.contains("bench-host") && row.contains("BM_Step") && row.contains(" ns"),
        "{row}"
    );

    // series ID: its points, noise model and machine.
    let id = real.id.to_string();
    let points: SeriesPoints = json_of(d, url, &["series", &id, "--points", "5"]).await;
    assert_eq!(points.series.id, real.id);
    assert_eq!(points.points.len(), 5, "the newest five");
    assert!(points.points.iter().all(|p| after.contains(&p.job_id)));
    let (code, table) = table_of(d, url, &["series", &id]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.starts_with(&format!("series {id}: ")) && table.contains("40 points"),
        "{table}"
    );
    assert!(table.contains("last 20 point(s):"), "{table}");

    // compare: two sets of jobs, slower by 20 %.
    let ids = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let (base, cont) = (ids(&before), ids(&after));
    let view: CompareView = json_of(d, url, &["compare", &base, &cont]).await;
    assert_eq!(
        (view.baseline_jobs.clone(), view.contender_jobs.clone()),
        (before.clone(), after.clone())
    );
    assert!(view.counts.slower >= 1, "{view:#?}");
    assert_eq!(view.rounds, 0);
    let row = view
        .rows
        .iter()
        .find(|r| r.metric == "real_time")
        .unwrap_or_else(|| panic!("{view:#?}"));
    assert_eq!(row.status, CompareStatus::Compared);
    assert_eq!(row.verdict(), Some(Verdict::Slower), "{row:#?}");
    let cmp = row.comparison.as_ref().unwrap();
    assert_eq!((cmp.baseline.n, cmp.contender.n), (RUNS, RUNS));
    assert!((0.17..0.23).contains(&cmp.change), "{cmp:?}");
    let (code, table) = table_of(d, url, &["compare", &base, &cont]).await;
    assert_eq!(
        code,
        Some(0),
        "slower is exit 0 without --fail-on-regression"
    );
    assert!(
        table.contains(&format!("{} slower", view.counts.slower)),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.contains("BM_Step") && l.contains("real_time"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("SLOWER") && line.contains("+") && line.contains("(n=20)"),
        "{line}"
    );
    let (code, _) = table_of(d, url, &["compare", &base, &cont, "--fail-on-regression"]).await;
    assert_eq!(
        code,
        Some(1),
        "--fail-on-regression with a slower benchmark"
    );
    let (code, _) = table_of(d, url, &["compare", &cont, &base, "--fail-on-regression"]).await;
    assert_eq!(code, Some(0), "the other way round it is faster");

    // --confirm asks through POST /api/v1/compare; nothing is UNKNOWN, so
    // no round runs and the answer is the same.
    let confirmed: CompareView = json_of(d, url, &["compare", &base, &cont, "--confirm"]).await;
    assert_eq!(confirmed.rounds, 0, "{confirmed:#?}");
    assert!(confirmed.confirm_jobs.is_empty());
    assert_eq!(confirmed.counts, view.counts);

    // changes FILE.csv here answers as POST /api/v1/analysis/changes does.
    let csv_path = step_csv(d);
    let local: SeriesChanges = json_of(d, url, &["changes", csv_path.to_str().unwrap()]).await;
    let remote = api
        .changes_of_csv(&std::fs::read_to_string(&csv_path).unwrap())
        .await
        .unwrap();
    assert_step_found(&local);
    assert_eq!(local, remote);

    // changes --series: the step at point RUNS, commit SHA_AFTER.
    let changes: SeriesChanges = json_of(d, url, &["changes", "--series", &id]).await;
    assert_eq!(changes.series.as_ref().map(|s| s.id), Some(real.id));
    let change = changes
        .changes
        .iter()
        .find(|c| c.index == RUNS as u64)
        .unwrap_or_else(|| panic!("no change at point {RUNS}: {changes:#?}"));
    assert_eq!(change.sha.as_deref(), Some(SHA_AFTER));
    assert!(change.regression && change.ack.is_none(), "{change:?}");
    let (code, table) = table_of(d, url, &["changes", "--series", &id]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.contains("up (regression)") && table.contains("2222222222"),
        "{table}"
    );

    // regressions: the group of BM_Step's metrics at SHA_AFTER.
    let regressions: RegressionsView = json_of(d, url, &["regressions"]).await;
    let group = regressions
        .groups
        .iter()
        .find(|g| g.sha.as_deref() == Some(SHA_AFTER))
        .unwrap_or_else(|| panic!("{regressions:#?}"));
    assert!(
        group.function.contains("BM_Step") && !group.acknowledged,
        "{group:?}"
    );
    assert!(
        group.changes.iter().any(|c| c.series_id == real.id),
        "{group:?}"
    );
    let (code, table) = table_of(d, url, &["regressions"]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.contains("BM_Step") && table.contains("on bench-host at 2222222222"),
        "{table}"
    );

    // ack: recorded, then shown by regressions.
    let ack: AckView = json_of(
        d,
        url,
        &[
            "ack",
            &id,
            "--sha",
            SHA_AFTER,
            "--note",
            "expected: bigger buffers",
            "--bug",
            "https://bugs.example/42",
        ],
    )
    .await;
    assert_eq!(ack.series_id, real.id);
    assert_eq!(ack.bug_url.as_deref(), Some("https://bugs.example/42"));
    let regressions: RegressionsView = json_of(d, url, &["regressions"]).await;
    let group = regressions
        .groups
        .iter()
        .find(|g| g.sha.as_deref() == Some(SHA_AFTER))
        .unwrap_or_else(|| panic!("{regressions:#?}"));
    assert!(
        group.acknowledged,
        "every metric of the test is acknowledged: {group:#?}"
    );
    let (_, table) = table_of(d, url, &["regressions"]).await;
    assert!(
        table.contains("acknowledged") && table.contains("expected: bigger buffers"),
        "{table}"
    );

    // An unknown series is a clear 404, exit 2.
    let mut cmd = testfleet(d);
    cmd.args(["series", "999999", "--server", url]);
    let out = run_async(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    agent.stop().await;
    server.stop().await;
}
