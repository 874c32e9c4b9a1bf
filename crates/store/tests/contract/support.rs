//! Job files, tasks and results as the coordinator builds them.

use testfleet_core::AttemptOutcome;
use testfleet_core::JobSpec;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{Claimed, FinishEffect, NewTask, QueuedTask, Store};
use testfleet_wire::results::{Case, CaseOutcome, CrashedTest, Metric, Results, Suite};

/// A Qt-style integration: a build task and a test task with a retry of
/// each kind.
pub const INTEGRATION: &str = r#"
name = "qtbase-dev"
queue = "linux"
priority = 5
env = { QT_QPA_PLATFORM = "offscreen" }
[source]
repo = "https://example.org/qtbase.git"
rev = "69609f0b3575c571fff4564f6f16cbca9c7d81f6"
[integration]
id = "189470895"
timestamp = "2023-02-10T13:11:13Z"
branch = "dev"
sha = "0123456789abcdef0123456789abcdef01234567"
[[task]]
name = "build"
steps = [{ stage = "build", run = "cmake --build build", timeout = "30m" }]
[[task]]
name = "corelib-tests"
requires = { os = "linux", cores = ">=4" }
priority = 7
steps = [
  { stage = "configure", run = "cmake -S . -B build -G Ninja", timeout = "10m" },
  { stage = "test", run = "ctest --test-dir build", timeout = "15m" },
]
results = [{ path = "results/*.xml", format = "qtest-xml" }]
artifacts = { always = ["results/**"], on_failure = ["**/core*"], max_size = "1KB" }
retries = { tests = 1, infra = 1 }
max_runtime = "20m"
"#;

/// A job of `n` one-step tasks with the given retry budgets.
pub fn simple_job(name: &str, n: usize, tests: u32, infra: u32) -> JobSpec {
    let mut toml = format!("name = \"{name}\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nsteps = [{{ stage = \"test\", run = \"./run {i}\" }}]\nretries = {{ tests = {tests}, infra = {infra} }}\n"
        ));
    }
    JobSpec::from_toml(&toml).expect("valid job file")
}

pub fn parse(toml: &str) -> JobSpec {
    JobSpec::from_toml(toml).expect("valid job file")
}

/// Submits `spec` at `now`; returns the job id and its queued tasks.
pub async fn submit(store: &Store, spec: &JobSpec, now: UnixMillis) -> (i64, Vec<QueuedTask>) {
    store
        .submit_job(spec, NewTask::plain(spec), now)
        .await
        .expect("submit_job")
}

/// Claims a task that must be claimable.
pub async fn claim(store: &Store, task_id: i64, agent: &str, now: UnixMillis) -> Claimed {
    store
        .claim(task_id, agent, now)
        .await
        .expect("claim")
        .unwrap_or_else(|| panic!("task {task_id} was not claimable"))
}

/// Ends `attempt` passed, without results, as `agent` reports it.
pub async fn pass(
    store: &Store,
    attempt: i64,
    agent: &str,
    now: UnixMillis,
) -> testfleet_store::Result<FinishEffect> {
    store
        .finish_attempt(
            attempt,
            Some(agent),
            AttemptOutcome::Passed,
            None,
            None,
            None,
            None,
            now,
        )
        .await
}

/// A case with an outcome and an optional message.
pub fn case(name: &str, outcome: CaseOutcome, message: Option<&str>) -> Case {
    let mut c = Case::new(name, None);
    c.outcome = outcome;
    c.message = message.map(str::to_owned);
    c
}

/// QtTest results: two passes (one a benchmark, one data-driven), a
/// failure, a skip, and a crashed program no case stands for.
pub fn qtest_results() -> Vec<Results> {
    let mut bench = case("benchQString", CaseOutcome::Pass, None);
    bench.duration_ms = Some(12.5);
    bench.metrics.push(Metric {
        name: "WalltimeMilliseconds".into(),
        unit: "msecs".into(),
        value: 0.25,
        total: None,
        iterations: Some(64),
        variance: None,
    });
    let mut tagged = Case::new("toInt", Some("hex".into()));
    tagged.outcome = CaseOutcome::Pass;
    vec![Results {
        format: "qtest-xml".into(),
        suites: vec![Suite {
            name: "tst_QString".into(),
            cases: vec![
                bench,
                tagged,
                case(
                    "compare",
                    CaseOutcome::Fail,
                    Some("Compared values are not the same"),
                ),
                case("unicode", CaseOutcome::Skip, Some("no ICU")),
            ],
            properties: Vec::new(),
            duration_ms: Some(40.0),
        }],
        crashed: vec![CrashedTest {
            test_name: "tst_QDateTime".into(),
            function: None,
            log: "Segmentation fault".into(),
        }],
        complete: false,
        warnings: Vec::new(),
        repetition: 0,
    }]
}

/// One passing case in one suite.
pub fn passing_results(suite: &str, case_name: &str) -> Vec<Results> {
    vec![Results {
        format: "tap".into(),
        suites: vec![Suite {
            name: suite.into(),
            cases: vec![case(case_name, CaseOutcome::Pass, None)],
            properties: Vec::new(),
            duration_ms: None,
        }],
        crashed: Vec::new(),
        complete: true,
        warnings: Vec::new(),
        repetition: 0,
    }]
}

/// A listing as the REST API serializes it (a `Vec` of JSON maps or of
/// entries that serialize the same way).
pub fn as_json<T: serde::Serialize>(listing: T) -> serde_json::Value {
    serde_json::to_value(listing).expect("listings serialize")
}

/// Builds the ResultsDB view as the server's consumer does (small batches
/// until caught up); returns how many events it mapped.
pub async fn catch_up(store: &Store) -> usize {
    let mut mapped = 0;
    for _ in 0..1_000 {
        if store.resultsdb_view_caught_up().await.expect("view state") {
            return mapped;
        }
        mapped += store
            .materialize_pending(8)
            .await
            .expect("materialize_pending");
    }
    panic!("the ResultsDB view did not catch up");
}
