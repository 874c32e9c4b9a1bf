//! Issue 13, seed 000 (the Qt benchmark lab): a Gerrit `change-merged`
//! webhook becomes one job fanned out to every benchmark agent, whose
//! results become benchmark series per host, end to end.
//!
//! A real `testfleet server` process (SQLite) loads the trigger rules of
//! `tests/e2e_gerrit/` and a Gerrit hook secret; three real `testfleet
//! agent` processes carry `bench=yes`, a fourth `bench=no`. The merged
//! change is a commit of the project's own QtTest benchmark
//! (crates/formats/tests/qtbench) in a local git repository; the Gerrit
//! body (`tests/e2e_gerrit/change-merged.json`, shaped as Gerrit sends it)
//! names it in `newRev`. Each benchmark agent checks that commit out,
//! configures and builds it with CMake and runs a few rows of `tst_bench`.
//!
//! Without Qt 6 and CMake (Debian: `qt6-base-dev cmake g++`) the test kit's
//! peer rule applies. Run with `--nocapture` to see the measured latencies:
//! webhook sent → answered (the job committed), and → all three tasks
//! dispatched.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::{ApiClient, SeriesQuery};
use testfleet_core::{JobState, TaskState, time_fmt};
use testfleet_testkit::peers;
use testfleet_testkit::process::{KillOnDrop, ServerProcess, configure_qtbench, output_of};
use testfleet_testkit::wait::{wait_agents, wait_job};
use testfleet_wire::api::JobView;
use testfleet_wire::events::{EventList, EventOutcome, HookAnswer};

const AGENT_SECRET: &str = "s3cret-for-tests";
const GERRIT_SECRET: &str = "gerrit-hook-s3cret";
const BENCH_HOSTS: [&str; 3] = ["bench-1", "bench-2", "bench-3"];
const PLAIN_HOST: &str = "plain-1";
const RULE: &str = "qtbench-on-merge";
/// `change.number` of the fixture's body.
const CHANGE: &str = "612345";
/// The rows the template runs: `join` (three data rows) and
/// `sortNumbers:small`, one CPU-ticks metric each.
const ROWS: usize = 4;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e_gerrit")
        .join(name)
}

fn git(repo: &Path, args: &[&str]) -> String {
    output_of(
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "Jane Developer")
            .env("GIT_AUTHOR_EMAIL", "jane@example.org")
            .env("GIT_COMMITTER_NAME", "Qt CI Bot")
            .env("GIT_COMMITTER_EMAIL", "qt_ci_bot@qt-project.org"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `<git_base>/qt/qtbase.git` on branch `dev`: a first commit, then the
/// benchmark's sources as the merged change. Returns (parent, merged sha).
fn bench_repo(git_base: &Path) -> (String, String) {
    let repo = git_base.join("qt/qtbase.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=dev"]);
    std::fs::write(
        repo.join("README"),
        "qtbase, as far as this test needs it\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "Initial import"]);
    let parent = git(&repo, &["rev-parse", "HEAD"]);
    let src = peers::workspace_root().join("crates/formats/tests/qtbench");
    for file in ["CMakeLists.txt", "tst_bench.cpp"] {
        std::fs::copy(src.join(file), repo.join(file)).unwrap();
    }
    git(&repo, &["add", "."]);
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "QString: make join() of many short parts cheaper",
        ],
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    (parent, sha)
}

/// The rules file and its template under `dir`, cloning from `git_base`.
fn write_rules(dir: &Path, git_base: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let rules = std::fs::read_to_string(fixture("rules.toml")).unwrap();
    assert!(rules.contains("@GIT_BASE@"), "{rules}");
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        rules.replace("@GIT_BASE@", &git_base.display().to_string()),
    )
    .unwrap();
    std::fs::copy(
        fixture("templates/qtbench.toml"),
        dir.join("templates/qtbench.toml"),
    )
    .unwrap();
    path
}

/// The fixture's Gerrit body naming the merged commit `sha` (on `parent`).
fn change_merged_body(parent: &str, sha: &str) -> String {
    let text = std::fs::read_to_string(fixture("change-merged.json")).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    body["newRev"] = sha.into();
    body["patchSet"]["revision"] = sha.into();
    body["patchSet"]["parents"] = serde_json::json!([parent]);
    serde_json::to_string(&body).unwrap()
}

/// POSTs `body` to `path` of the server at `url` (`http://host:port`) over
/// plain HTTP/1.1; the answer's status and body.
fn post(url: &str, path: &str, body: &str) -> (u16, String) {
    let authority = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, body.to_owned())
}

fn hook_path() -> String {
    format!("/api/v1/hooks/gerrit?secret={GERRIT_SECRET}")
}

fn post_hook(url: &str, body: &str) -> HookAnswer {
    let (status, answer) = post(url, &hook_path(), body);
    assert_eq!(status, 202, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

/// `testfleet events --source gerrit --json` against the server.
fn events_cli(url: &str) -> EventList {
    let out = output_of(bin().args(["--server", url, "events", "--source", "gerrit", "--json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Each task's log, for a job that did not pass.
async fn logs(api: &ApiClient, job: &JobView) -> String {
    let mut all = String::new();
    for task in &job.tasks {
        let log = api.task_log(task.id, 0).await.map(|l| l.data);
        all.push_str(&format!("--- {} ---\n{log:?}\n", task.name));
    }
    all
}

#[test]
fn a_gerrit_change_merged_runs_the_benchmark_on_every_benchmark_agent_and_fills_its_series() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = configure_qtbench(&dir.path().join("probe")) {
        return peers::skip(&peers::QT6, &why);
    }
    let git_base = dir.path().join("git");
    let (parent, sha) = bench_repo(&git_base);
    let rules = write_rules(&dir.path().join("triggers"), &git_base);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntrigger_rules = \"{}\"\n\n[server.hooks.gerrit]\nsecret = \"{GERRIT_SECRET}\"\n\
             allowed_cidrs = [\"127.0.0.1/32\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--agent-secret", AGENT_SECRET])
            .env_remove("TESTFLEET_GERRIT_HOOK_SECRET"),
    );
    let url = server.url().to_owned();
    let agent = |host: &str, labels: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{host}.log"))).unwrap();
        KillOnDrop::spawn(
            bin()
                .args(["agent", "--server", &url, "--hostname", host])
                .args(["--labels", labels, "--secret", AGENT_SECRET, "--work-dir"])
                .arg(dir.path().join("agents").join(host))
                .stdout(Stdio::null())
                .stderr(log),
        )
    };
    let mut agents: Vec<KillOnDrop> = BENCH_HOSTS
        .iter()
        .map(|host| agent(host, "bench=yes"))
        .collect();
    agents.push(agent(PLAIN_HOST, "bench=no"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, BENCH_HOSTS.len() + 1));

    let body = change_merged_body(&parent, &sha);

    // A wrong secret is refused and leaves no trace.
    let (status, answer) = post(&url, "/api/v1/hooks/gerrit?secret=nope", &body);
    assert_eq!(status, 401, "{answer}");
    assert!(events_cli(&url).events.is_empty());

    // The webhook: answered once the event and its job are committed.
    let sent = Instant::now();
    let first = post_hook(&url, &body);
    let committed = sent.elapsed();
    assert_eq!(first.outcome, EventOutcome::Queued, "{first:?}");
    assert_eq!(first.jobs.len(), 1, "{first:?}");
    let job_id = first.jobs[0];
    let dispatched = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = api.job(job_id).await.unwrap();
            if job.tasks.len() == BENCH_HOSTS.len()
                && job.tasks.iter().all(|t| t.state != TaskState::Queued)
            {
                break sent.elapsed();
            }
            assert!(Instant::now() < deadline, "not dispatched: {job:#?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    eprintln!(
        "webhook sent → job committed (202): {:.1} ms; → all {} tasks dispatched: {:.1} ms",
        committed.as_secs_f64() * 1e3,
        BENCH_HOSTS.len(),
        dispatched.as_secs_f64() * 1e3
    );

    let job = rt.block_on(wait_job(&api, job_id, Duration::from_secs(300)));
    if job.state != JobState::Passed {
        let logs = rt.block_on(logs(&api, &job));
        panic!("the job did not pass: {job:#?}\n{logs}");
    }
    // The same two delays on the coordinator's clock: the event and its job
    // are recorded at one instant, each task's attempt starts at its claim.
    let millis = |t: &str| time_fmt::parse_rfc3339_millis(t).unwrap();
    let recorded = millis(&job.created_at);
    let last_claim = job
        .tasks
        .iter()
        .map(|t| {
            let detail = rt.block_on(api.task(t.id)).unwrap();
            millis(&detail.attempts_list[0].started_at)
        })
        .max()
        .unwrap();
    eprintln!(
        "coordinator's clock: event and job recorded → last of {} attempts started: {} ms",
        BENCH_HOSTS.len(),
        last_claim - recorded
    );
    assert_eq!(job.name, format!("qt/qtbase-integration-{CHANGE}"));
    assert_eq!(job.queue, "benchmarks");
    assert_eq!(job.integration_id.as_deref(), Some(CHANGE));

    // Exactly one task per benchmark agent, run there; none on the other.
    assert_eq!(job.tasks.len(), BENCH_HOSTS.len(), "{job:#?}");
    let pinned: BTreeSet<&str> = job
        .tasks
        .iter()
        .filter_map(|t| t.pinned_agent.as_deref())
        .collect();
    assert_eq!(pinned, BTreeSet::from(BENCH_HOSTS), "{job:#?}");
    for task in &job.tasks {
        let host = task.pinned_agent.as_deref().unwrap();
        assert_eq!(task.name, format!("qtbench@{host}"));
        assert_eq!(task.agent.as_deref(), Some(host), "{task:#?}");
        assert_eq!(task.state, TaskState::Passed, "{task:#?}");
        assert_eq!(task.attempts, 1, "{task:#?}");
        // Every agent produced results: each row passed and measured.
        // QtTest reports initTestCase and cleanupTestCase as cases too.
        assert_eq!(task.counts.pass, ROWS as u64 + 2, "{task:#?}");
        assert_eq!(task.counts.total(), task.counts.pass, "{task:#?}");
        assert_eq!(task.metrics.len(), ROWS, "{task:#?}");
        assert!(
            task.metrics
                .iter()
                .all(|m| m.value > 0.0 && m.iterations == Some(10)),
            "{task:#?}"
        );
    }
    let plain = rt.block_on(api.agents()).unwrap();
    let plain = plain.iter().find(|a| a.hostname == PLAIN_HOST).unwrap();
    assert!(
        plain.online && plain.current_attempt.is_none(),
        "{plain:#?}"
    );

    // Series per host, each point carrying the merged sha and the change.
    for host in BENCH_HOSTS {
        let query = SeriesQuery {
            host: Some(host.to_owned()),
            ..SeriesQuery::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let page = rt.block_on(api.series(&query)).unwrap();
            if page.series.len() >= ROWS || Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(page.series.len(), ROWS, "{host}: {page:#?}");
        let task = job
            .tasks
            .iter()
            .find(|t| t.pinned_agent.as_deref() == Some(host))
            .unwrap();
        for series in &page.series {
            assert_eq!(series.host, host);
            assert_eq!(series.program, "tst_Bench", "{series:#?}");
            assert_eq!(series.points, 1, "{series:#?}");
            let points = rt
                .block_on(api.series_points(series.id, None, None))
                .unwrap();
            assert_eq!(points.points.len(), 1, "{points:#?}");
            let p = &points.points[0];
            assert_eq!(p.sha.as_deref(), Some(sha.as_str()), "{p:#?}");
            assert_eq!(p.integration.as_deref(), Some(CHANGE), "{p:#?}");
            assert_eq!(p.branch.as_deref(), Some("dev"), "{p:#?}");
            assert_eq!((p.job_id, p.task_id), (job_id, task.id), "{p:#?}");
        }
    }
    let plain_series = rt
        .block_on(api.series(&SeriesQuery {
            host: Some(PLAIN_HOST.to_owned()),
            ..SeriesQuery::default()
        }))
        .unwrap();
    assert!(plain_series.series.is_empty(), "{plain_series:#?}");

    // The events log shows the event, the rule and the job.
    let events = events_cli(&url).events;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.id, first.event_id);
    assert_eq!(
        (e.source.as_str(), e.kind.as_str()),
        ("gerrit", "change-merged")
    );
    assert_eq!(e.outcome, EventOutcome::Queued);
    assert_eq!(e.matched_rules, [RULE]);
    assert_eq!(e.job_ids, [job_id]);

    // The same delivery again: a duplicate, nothing queued.
    let again = post_hook(&url, &body);
    assert_eq!(again.outcome, EventOutcome::Duplicate, "{again:?}");
    assert_eq!(again.jobs, [job_id], "{again:?}");
    assert_ne!(again.event_id, first.event_id);
    assert_eq!(
        again.reason.as_deref(),
        Some(format!("duplicate of event {}", first.event_id).as_str())
    );
    let jobs = rt.block_on(api.jobs(100, None)).unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let events = events_cli(&url).events;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0].id, again.event_id, "newest first: {events:#?}");
    assert_eq!(events[0].outcome, EventOutcome::Duplicate);

    drop(agents);
    drop(server);
}
