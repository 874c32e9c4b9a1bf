//! The slow group: the Qt benchmark lab example (examples/qtlab, docs/lab.md)
//! end to end on loopback, with two integrations (testfleet issue 18).
//!
//! `examples/qtlab/make-repo.sh` creates the example's git repository: two
//! commits on `dev`, the second making one benchmark (`tst_BenchCodec::checksum`,
//! both its data rows) do 10 % more work. A real `testfleet server` process
//! loads the example's own trigger rules and template, a Gerrit hook secret
//! and its InfluxDB exporter, pointed at a real `influxd` (InfluxDB 1.x) on
//! loopback; two real `testfleet agent` processes carry `bench=yes`. For each
//! integration a Gerrit `change-merged` body (the example's
//! `events/change-merged.json`) is POSTed: the job it queues has one task per
//! benchmark agent, which builds the merged commit and runs every
//! `tst_bench_*` five times (`repeat = 5`).
//!
//! Then: every benchmark value is a point in InfluxDB in the seed-000 schema,
//! stamped with its integration's timestamp (the job's submission) and carrying
//! its integration id and sha; the coordinator's series (what the dashboard
//! plots) hold both integrations; and comparing integration 2 with
//! integration 1 flags `checksum` SLOWER on both hosts and no other benchmark
//! as different (both sides are run again, `--confirm`, while a verdict is
//! UNKNOWN).
//!
//! Both agents share this machine, so the example's `lab.sh` is given a lock
//! file (`QTLAB_MACHINE_LOCK`): their builds and benchmark runs take turns
//! instead of disturbing each other, as they would on two lab machines. And
//! they count instructions (`QTLAB_BENCH_ARGS=-callgrind`, QtTest's valgrind
//! backend) rather than CPU ticks: on a shared two-core machine whatever else
//! runs moves tick counts by tens of per cent between two integrations (the
//! first runs of this test, beside other builds, saw +47 % and +36 % on rows
//! nobody changed), while instruction counts move by under 1 %. The metrics
//! are then instruction reads and the codec's compressed size in bytes.
//!
//! Without Qt 6, CMake (Debian: `qt6-base-dev cmake g++`), `valgrind` or
//! `influxd` (Debian: `influxdb`) the test kit's peer rule applies. Ignored by a plain
//! `cargo test`; `cargo xtask test` runs it, as does
//! `cargo test -p testfleet --test slow_lab -- --ignored --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet_client::{ApiClient, SeriesQuery};
use testfleet_core::analysis::Verdict;
use testfleet_core::{JobState, TaskState, time_fmt};
use testfleet_testkit::peers;
use testfleet_testkit::process::{
    Influxd, KillOnDrop, ServerProcess, configure_qtbench, influxd_program, output_of,
};
use testfleet_testkit::sysfs::{Turbo, fake_cpu_tree, read_cpu};
use testfleet_testkit::wait::{wait_agents, wait_job};
use testfleet_wire::analysis::{CompareRequest, CompareStatus, CompareView};
use testfleet_wire::api::JobView;
use testfleet_wire::events::{EventOutcome, HookAnswer};
use testfleet_wire::protocol::{PrepAction, PrepStatus};

const AGENT_SECRET: &str = "s3cret-for-tests";
const GERRIT_SECRET: &str = "gerrit-hook-s3cret";
const HOSTS: [&str; 2] = ["bench-1", "bench-2"];
const DATABASE: &str = "benchmarks";
/// The example's project, as its rule and `make-repo.sh` name it.
const PROJECT: &str = "qt/qtlab";
/// The Gerrit change numbers of the two integrations.
const CHANGES: [&str; 2] = ["1001", "1002"];
/// The benchmark the second integration slows down (both of its rows).
const SLOWED: (&str, &str) = ("tst_BenchCodec", "checksum");
/// Benchmark rows per host: strings 3 + 2, containers 2 + 2, codec 2 + 2 + 2.
const ROWS: usize = 15;
/// `repeat` in the example's template.
const REPEAT: u64 = 5;
/// The fake sysfs' values the preparation touches, as (file, value).
fn sysfs_state(root: &Path) -> Vec<(String, String)> {
    [
        "cpu1/cpufreq/scaling_governor",
        "cpu3/online",
        "intel_pstate/no_turbo",
    ]
    .iter()
    .map(|f| ((*f).to_owned(), read_cpu(root, f)))
    .collect()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
}

fn example(name: &str) -> PathBuf {
    peers::workspace_root().join("examples/qtlab").join(name)
}

/// The example's repository under `git_base`: (integration 1, integration 2).
fn make_repo(git_base: &Path) -> (String, String) {
    let out = output_of(
        Command::new("sh")
            .arg(example("make-repo.sh"))
            .arg(git_base),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shas: Vec<&str> = out.lines().collect();
    assert_eq!(shas.len(), 2, "make-repo.sh printed {out:?}");
    assert!(shas.iter().all(|s| s.len() == 40), "{out:?}");
    (shas[0].to_owned(), shas[1].to_owned())
}

/// The example's rules and template under `dir`, cloning from `git_base`.
fn write_rules(dir: &Path, git_base: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let rules = std::fs::read_to_string(example("rules.toml")).unwrap();
    let lab_base = "git_base = \"/srv/git\"";
    assert!(rules.contains(lab_base), "{rules}");
    let path = dir.join("rules.toml");
    let here = format!("git_base = \"{}\"", git_base.display());
    std::fs::write(&path, rules.replace(lab_base, &here)).unwrap();
    std::fs::copy(
        example("templates/qtlab.toml"),
        dir.join("templates/qtlab.toml"),
    )
    .unwrap();
    path
}

/// The example's Gerrit body for change `change` merging `sha` onto `parents`.
fn change_merged_body(change: &str, parents: &[&str], sha: &str) -> String {
    let text = std::fs::read_to_string(example("events/change-merged.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["change"]["number"] = change.parse::<u64>().unwrap().into();
    body["change"]["url"] = format!("https://codereview.example.org/c/{PROJECT}/+/{change}").into();
    body["newRev"] = sha.into();
    body["patchSet"]["revision"] = sha.into();
    body["patchSet"]["parents"] = serde_json::json!(parents);
    serde_json::to_string(&body).unwrap()
}

/// POSTs a Gerrit webhook body to the server at `url` over plain HTTP/1.1.
fn post_hook(url: &str, body: &str) -> HookAnswer {
    let authority = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "POST /api/v1/hooks/gerrit?secret={GERRIT_SECRET} HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// GETs `path` of the server at `url` over plain HTTP/1.1: status and body.
fn get(url: &str, path: &str) -> (u16, String) {
    let authority = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
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

/// One point of the `benchmark` measurement, as InfluxDB answers it.
#[derive(Debug, Clone)]
struct InfluxPoint {
    time_ns: i64,
    host: String,
    test_name: String,
    case_name: String,
    data_row: String,
    branch: String,
    value: f64,
    iterations: i64,
    integration_id: String,
    sha1: String,
    crashed: bool,
}

/// Every point of `benchmark` (InfluxDB 1.x's JSON answer, `epoch=ns`).
fn influx_points(influx: &Influxd) -> Vec<InfluxPoint> {
    let answer = influx.query(DATABASE, "SELECT * FROM benchmark");
    let v: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let Some(series) = v["results"][0]["series"][0].as_object() else {
        return Vec::new();
    };
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let rows = series["values"].as_array().unwrap();
    rows.iter()
        .map(|row| {
            let row: BTreeMap<&str, &Value> = columns
                .iter()
                .copied()
                .zip(row.as_array().unwrap())
                .collect();
            let text = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
            InfluxPoint {
                time_ns: row["time"].as_i64().unwrap(),
                host: text("host"),
                test_name: text("test_name"),
                case_name: text("case_name"),
                data_row: text("data_row"),
                branch: text("branch"),
                value: row["value"].as_f64().unwrap(),
                iterations: row["iterations"].as_i64().unwrap(),
                integration_id: text("integration_id"),
                sha1: text("sha1"),
                crashed: row["crashed"].as_bool().unwrap(),
            }
        })
        .collect()
}

fn label(row: &testfleet_wire::analysis::CompareRow) -> String {
    let tag = row.data_tag.as_deref().unwrap_or("");
    format!(
        "{}::{}({tag}) {} on {}",
        row.program, row.function, row.metric, row.host
    )
}

fn verdicts(view: &CompareView) -> Vec<(String, Option<Verdict>, Option<f64>)> {
    view.rows
        .iter()
        .map(|r| {
            let change = r.comparison.as_ref().map(|c| c.change);
            (label(r), r.verdict(), change)
        })
        .collect()
}

fn is_slowed(row: &testfleet_wire::analysis::CompareRow) -> bool {
    (row.program.as_str(), row.function.as_str()) == SLOWED
}

#[test]
#[ignore = "slow: cargo xtask test runs it (cargo test -p testfleet --test slow_lab -- --ignored)"]
fn two_integrations_of_the_lab_example_reach_influxdb_and_the_slowed_benchmark_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = configure_qtbench(&dir.path().join("probe")) {
        return peers::skip(&peers::QT6, &why);
    }
    if peers::valgrind().is_none() {
        return;
    }
    let Some(influxd) = influxd_program() else {
        return;
    };
    let influx = Influxd::start(influxd, dir.path().join("influxdb"));
    let created = influx.query(DATABASE, &format!("CREATE DATABASE {DATABASE}"));
    assert!(!created.contains("\"error\""), "{created}");

    let git_base = dir.path().join("git");
    let (sha1, sha2) = make_repo(&git_base);
    // The example's event names integration 2 as make-repo.sh makes it (its
    // dates and names are fixed): regenerate the event when the project changes.
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(example("events/change-merged.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            event["newRev"].as_str(),
            event["patchSet"]["parents"][0].as_str()
        ),
        (Some(sha2.as_str()), Some(sha1.as_str())),
        "examples/qtlab/events/change-merged.json is out of date: \
         `sh examples/qtlab/make-repo.sh DIR` prints the commits"
    );
    let rules = write_rules(&dir.path().join("triggers"), &git_base);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntrigger_rules = \"{}\"\n\n[server.hooks.gerrit]\nsecret = \"{GERRIT_SECRET}\"\n\
             allowed_cidrs = [\"127.0.0.1/32\"]\n\n[server.exporters.influxdb]\nurl = \"{}\"\n\
             version = 1\ndatabase = \"{DATABASE}\"\n",
            rules.display(),
            influx.url(),
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
    let lock = dir.path().join("machine.lock");
    let agents: Vec<KillOnDrop> = HOSTS
        .iter()
        .map(|host| {
            let log = std::fs::File::create(dir.path().join(format!("{host}.log"))).unwrap();
            let sysfs = dir.path().join(format!("sysfs-{host}"));
            // The agents prepare a fake tree of their own rather than this
            // machine's `/sys` (which a VM mostly lacks).
            fake_cpu_tree(&sysfs, Turbo::IntelPstate).unwrap();
            KillOnDrop::spawn(
                bin()
                    .args(["agent", "--server", &url, "--hostname", host])
                    .args(["--labels", "bench=yes", "--secret", AGENT_SECRET])
                    .arg("--sysfs-root")
                    .arg(&sysfs)
                    .arg("--work-dir")
                    .arg(dir.path().join("agents").join(host))
                    .env("QTLAB_MACHINE_LOCK", &lock)
                    .env("QTLAB_BENCH_ARGS", "-callgrind")
                    .stdout(Stdio::null())
                    .stderr(log),
            )
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, HOSTS.len()));

    // The two integrations, one after the other, as Gerrit reports merges.
    let mut jobs = Vec::new();
    let merges: [(&[&str], &str); 2] = [(&[], &sha1), (&[&sha1], &sha2)];
    for (change, (parents, sha)) in CHANGES.into_iter().zip(merges) {
        let started = Instant::now();
        let answer = post_hook(&url, &change_merged_body(change, parents, sha));
        assert_eq!(answer.outcome, EventOutcome::Queued, "{answer:?}");
        assert_eq!(answer.jobs.len(), 1, "{answer:?}");
        let job = rt.block_on(wait_job(&api, answer.jobs[0], Duration::from_secs(900)));
        if job.state != JobState::Passed {
            let logs = rt.block_on(logs(&api, &job));
            panic!("integration {change} did not pass: {job:#?}\n{logs}");
        }
        eprintln!(
            "integration {change} ({sha}): {} tasks passed in {:.0} s",
            job.tasks.len(),
            started.elapsed().as_secs_f64()
        );
        jobs.push((change, sha.to_owned(), job));
    }

    // One task per benchmark agent, run there, every row measured.
    for (change, _, job) in &jobs {
        assert_eq!(job.name, format!("{PROJECT}-integration-{change}"));
        assert_eq!(job.queue, "benchmarks");
        assert_eq!(job.integration_id.as_deref(), Some(*change));
        let pinned: BTreeSet<&str> = job
            .tasks
            .iter()
            .filter_map(|t| t.pinned_agent.as_deref())
            .collect();
        assert_eq!(pinned, BTreeSet::from(HOSTS), "{job:#?}");
        for task in &job.tasks {
            assert_eq!(task.state, TaskState::Passed, "{task:#?}");
            assert_eq!(task.agent, task.pinned_agent, "{task:#?}");
            assert_eq!(task.counts.fail + task.counts.error, 0, "{task:#?}");
            let metrics: BTreeSet<&str> = task.metrics.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(
                metrics,
                BTreeSet::from(["BytesAllocated", "InstructionReads"]),
                "two metrics: {task:#?}"
            );
        }
    }

    // The coordinator's series (what the dashboard plots): per host, every
    // row, five points an integration, each with its integration and sha.
    for host in HOSTS {
        let query = SeriesQuery {
            host: Some(host.to_owned()),
            limit: Some(100),
            ..SeriesQuery::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let page = rt.block_on(api.series(&query)).unwrap();
            let filled =
                page.series.len() >= ROWS && page.series.iter().all(|s| s.points >= 2 * REPEAT);
            if filled || Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(page.series.len(), ROWS, "{host}: {page:#?}");
        // The host was prepared for each attempt and restored after it.
        let sysfs = dir.path().join(format!("sysfs-{host}"));
        assert_eq!(
            sysfs_state(&sysfs),
            vec![
                (
                    "cpu1/cpufreq/scaling_governor".to_owned(),
                    "powersave".to_owned()
                ),
                ("cpu3/online".to_owned(), "1".to_owned()),
                ("intel_pstate/no_turbo".to_owned(), "0".to_owned()),
            ],
            "{host}: restored"
        );
        for series in &page.series {
            assert_eq!(series.points, 2 * REPEAT, "{series:#?}");
            let points = rt
                .block_on(api.series_points(series.id, None, None))
                .unwrap();
            // Every point's machine says how it was prepared.
            assert!(!points.fingerprints.is_empty(), "{points:#?}");
            for f in &points.fingerprints {
                let applied: Vec<PrepAction> = f
                    .machine
                    .prep
                    .iter()
                    .filter(|p| p.status == PrepStatus::Applied)
                    .map(|p| p.step)
                    .collect();
                for step in [
                    PrepAction::Governor,
                    PrepAction::Turbo,
                    PrepAction::SiblingOffline,
                    PrepAction::Pin,
                ] {
                    assert!(applied.contains(&step), "{step:?} in {f:#?}");
                }
            }
            for (change, sha, job) in &jobs {
                let mine: Vec<_> = points
                    .points
                    .iter()
                    .filter(|p| p.integration.as_deref() == Some(*change))
                    .collect();
                assert_eq!(mine.len() as u64, REPEAT, "{change}: {points:#?}");
                assert!(
                    mine.iter()
                        .all(|p| p.sha.as_deref() == Some(sha.as_str()) && p.job_id == job.id),
                    "{change}: {points:#?}"
                );
            }
        }
    }

    // InfluxDB: one point per row, host and integration (the five runs of a
    // row share the integration's timestamp, so the last one stays), in the
    // seed-000 schema, at the integration's timestamp.
    let want = ROWS * HOSTS.len() * jobs.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let points = loop {
        let points = influx_points(&influx);
        if points.len() >= want || Instant::now() > deadline {
            break points;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(points.len(), want, "{points:#?}");
    for (change, sha, job) in &jobs {
        let at_ns = time_fmt::parse_rfc3339_millis(&job.created_at).unwrap() * 1_000_000;
        let mine: Vec<&InfluxPoint> = points
            .iter()
            .filter(|p| p.integration_id == *change)
            .collect();
        assert_eq!(mine.len(), ROWS * HOSTS.len(), "{change}: {points:#?}");
        for p in &mine {
            assert_eq!(p.time_ns, at_ns, "the integration's timestamp: {p:#?}");
            assert_eq!(p.sha1, *sha, "{p:#?}");
            assert_eq!(p.branch, "dev", "{p:#?}");
            assert!(HOSTS.contains(&p.host.as_str()), "{p:#?}");
            assert!(p.test_name.starts_with("tst_Bench"), "{p:#?}");
            assert!(!p.case_name.is_empty() && !p.data_row.is_empty(), "{p:#?}");
            assert!(!p.crashed && p.value > 0.0, "{p:#?}");
            assert_eq!(p.iterations, 1, "callgrind runs a body once: {p:#?}");
        }
    }
    // docs/lab.md's Grafana query, as InfluxQL over the seed-000 schema.
    let grafana = influx.query(
        DATABASE,
        "SELECT mean(\"value\") FROM \"benchmark\" WHERE \"test_name\" = 'tst_BenchCodec' \
         AND \"case_name\" = 'checksum' GROUP BY time(1s), \"host\", \"data_row\" fill(none)",
    );
    let grafana: Value = serde_json::from_str(&grafana).unwrap();
    let groups = grafana["results"][0]["series"].as_array().unwrap();
    assert_eq!(groups.len(), HOSTS.len() * 2, "{grafana:#}");
    assert!(
        groups
            .iter()
            .all(|g| g["values"].as_array().map(Vec::len) == Some(jobs.len())),
        "one value per integration: {grafana:#}"
    );

    // Integration 2 against integration 1: checksum SLOWER on both hosts,
    // nothing else different. While a verdict is UNKNOWN both sides run again.
    let (first, second) = (jobs[0].2.id, jobs[1].2.id);
    let mut view = rt.block_on(api.compare(&[first], &[second])).unwrap();
    eprintln!("integration 2 vs 1: {:#?}", verdicts(&view));
    let undecided = |view: &CompareView| {
        view.rows
            .iter()
            .any(|r| is_slowed(r) && r.verdict() != Some(Verdict::Slower))
    };
    if undecided(&view) {
        let request = CompareRequest {
            baseline: vec![first],
            contender: vec![second],
            confirm: true,
            max_rounds: Some(2),
        };
        view = rt.block_on(api.compare_confirm(&request)).unwrap();
        eprintln!(
            "after {} confirmation round(s): {:#?}",
            view.rounds,
            verdicts(&view)
        );
    }
    assert_eq!(view.rows.len(), ROWS * HOSTS.len(), "{view:#?}");
    let mut flagged = BTreeSet::new();
    for row in &view.rows {
        assert_eq!(row.status, CompareStatus::Compared, "{row:#?}");
        let c = row.comparison.as_ref().unwrap();
        if is_slowed(row) {
            assert_eq!(c.verdict, Verdict::Slower, "{}: {row:#?}", label(row));
            assert!(
                (0.08..0.12).contains(&c.change),
                "10 % more work measured as {:+.1} %: {row:#?}",
                c.change * 100.0
            );
            flagged.insert((row.host.clone(), row.data_tag.clone()));
        } else {
            assert!(
                !c.verdict.is_different(),
                "{} flagged by noise: {row:#?}",
                label(row)
            );
        }
    }
    assert_eq!(flagged.len(), HOSTS.len() * 2, "{flagged:?}");
    assert_eq!(
        view.counts.slower,
        flagged.len() as u64,
        "{:?}",
        view.counts
    );
    assert_eq!(view.counts.faster, 0, "{:?}", view.counts);

    // The dashboard plots the slowed benchmark's series: both integrations'
    // points, over integrations, on the series page.
    let slowed = view.rows.iter().find(|r| is_slowed(r)).unwrap();
    let series = slowed.series_id.unwrap();
    let (status, page) = get(&url, &format!("/series/{series}"));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("id=\"plot\"") && page.contains("id=\"plot-data\""),
        "the plot and its data: {page}"
    );
    assert!(
        page.contains(&format!("{} of {} points", 2 * REPEAT, 2 * REPEAT)),
        "{page}"
    );

    drop(agents);
    drop(server);
}
