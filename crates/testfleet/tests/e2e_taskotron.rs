//! The Taskotron path end to end (seed 001: trigger → runner → TAP →
//! ResultsDB) with `examples/taskotron/`: Koji build messages published by
//! the real `fedora-messaging` library reach a `testfleet server` process
//! through RabbitMQ, its rules queue the RPM name-policy check, a
//! `testfleet agent` process runs it, and the results are read back with
//! the real ResultsDB client (`resultsdb-api`) from the coordinator's
//! ResultsDB API and from an external ResultsDB (a second coordinator's API)
//! that the first one reports to. Also the same template run standalone
//! with `testfleet run … --var`.

#[path = "../../server/tests/amqp/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BUILD_TOPIC, Fm, Vhost};
use serde::Deserialize;
use serde_json::json;
use testfleet_client::ApiClient;
use testfleet_testkit::peers::{PYTHON_PEERS, require_peer};
use testfleet_testkit::process::{KillOnDrop, ServerProcess, free_port};
use testfleet_testkit::workspace_root;
use testfleet_wire::api::JobView;

const SECRET: &str = "taskotron-agent-secret";
const GOOD: &str = "xchat-0.5-1.fc20";
/// No dist tag in the release: the check fails it.
const BAD: &str = "foobar-1.2-3";
const CHECKNAME: &str = "dist.rpm_name_policy";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
}

fn example(path: &str) -> PathBuf {
    workspace_root().join("examples/taskotron").join(path)
}

/// The peers' Python with `resultsdb-api`, or `None` under the peer rule.
fn resultsdb_python() -> Option<PathBuf> {
    let python = testfleet_testkit::peer_python()?;
    let has_client = Command::new(&python)
        .args(["-c", "import resultsdb_api, requests"])
        .status()
        .is_ok_and(|s| s.success());
    let found = if has_client {
        Ok(python)
    } else {
        Err(format!("{} lacks resultsdb-api", python.display()))
    };
    require_peer(&PYTHON_PEERS, found)
}

/// Reads each item's results with the ResultsDB client (waiting up to the
/// deadline for them to appear) and fetches each result's `ref_url`.
const READER: &str = r#"
import json, sys, time
import requests, resultsdb_api

url, items, wait = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
api = resultsdb_api.ResultsDBapi(url, max_retries=0)
deadline = time.time() + wait
out = {}
for item in items:
    while True:
        data = api.get_results(item=item)["data"]
        if data or time.time() > deadline:
            break
        time.sleep(0.2)
    rows = []
    for r in data:
        log = requests.get(r["ref_url"]) if r["ref_url"] else None
        rows.append({"testcase": r["testcase"]["name"], "outcome": r["outcome"],
                     "note": r["note"], "ref_url": r["ref_url"], "data": r["data"],
                     "log_status": log.status_code if log is not None else None,
                     "log": log.text if log is not None else ""})
    out[item] = rows
print(json.dumps(out))
"#;

/// One result as the ResultsDB client read it.
#[derive(Debug, Deserialize)]
struct ReadResult {
    testcase: String,
    outcome: String,
    note: Option<String>,
    ref_url: Option<String>,
    data: std::collections::BTreeMap<String, Vec<String>>,
    log_status: Option<u16>,
    log: String,
}

fn read_results(
    python: &Path,
    api: &str,
    items: &[&str],
    wait: Duration,
) -> std::collections::BTreeMap<String, Vec<ReadResult>> {
    let out = Command::new(python)
        .args(["-c", READER, api, &json!(items).to_string()])
        .arg(wait.as_secs_f64().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ResultsDB client failed against {api}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "unreadable reader output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The jobs (at least two) once every one has finished.
fn finished_jobs(rt: &tokio::runtime::Runtime, api: &ApiClient, timeout: Duration) -> Vec<JobView> {
    let deadline = Instant::now() + timeout;
    loop {
        let jobs = rt.block_on(api.jobs(10, None)).unwrap_or_default();
        if jobs.len() >= 2 && jobs.iter().all(|j| j.state.is_terminal()) {
            return jobs
                .iter()
                .map(|j| rt.block_on(api.job(j.id)).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "two finished jobs expected within {timeout:?}: {jobs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Koji's `buildsys.build.state.change` body for a completed build of `nvr`
/// (the sample message with its name, version and release replaced).
fn koji_message(name: &str, version: &str, release: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(example("events/koji-build-complete.json")).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    body["name"] = json!(name);
    body["version"] = json!(version);
    body["release"] = json!(release);
    body
}

fn check_result(r: &ReadResult, item: &str, outcome: &str, note: &str, task_log: &str) {
    assert_eq!(r.testcase, CHECKNAME, "{r:#?}");
    assert_eq!(r.outcome, outcome, "{r:#?}");
    assert_eq!(r.note.as_deref(), Some(note), "{r:#?}");
    assert_eq!(r.data.get("item"), Some(&vec![item.to_owned()]), "{r:#?}");
    assert_eq!(
        r.data.get("type"),
        Some(&vec!["koji_build".to_owned()]),
        "{r:#?}"
    );
    let ref_url = r.ref_url.as_deref().unwrap_or_default();
    assert!(
        ref_url.starts_with("http") && ref_url.contains(task_log),
        "ref_url {ref_url:?} is not the task's log {task_log}"
    );
    assert_eq!(r.log_status, Some(200), "{ref_url}: {}", r.log);
    assert!(
        r.log
            .contains(&format!("1 - {CHECKNAME} for koji_build {item}")),
        "the log at {ref_url} shows the check's TAP: {}",
        r.log
    );
}

#[test]
fn koji_messages_become_checks_whose_results_read_back_with_the_resultsdb_client() {
    let Some(python) = resultsdb_python() else {
        return;
    };
    let Some(vhost) = Vhost::create("taskotron") else {
        return;
    };
    let Some(fm) = Fm::new(&vhost) else { return };
    let dir = tempfile::tempdir().unwrap();

    // The external ResultsDB: another coordinator's ResultsDB API.
    let receiver = ServerProcess::start(
        bin()
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("receiver"))
            .args(["--agent-secret", SECRET])
            .env("TESTFLEET_LOG", "warn"),
    );
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("testfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntrigger_rules = {rules}\n\
             [server.amqp]\nurl = \"{amqp}\"\n\
             [server.exporters.resultsdb]\nurl = \"{receiver}/api/v2.0\"\npublic_url = \"{public_url}\"\n",
            rules = toml_string(&example("")),
            amqp = vhost.url(),
            receiver = receiver.url(),
        ),
    )
    .unwrap();
    // The coordinator's queue exists before anything is published.
    fm.declare("testfleet", "org.fedoraproject.#");
    let server = ServerProcess::start(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("coordinator"))
            .args(["--agent-secret", SECRET])
            .env("TESTFLEET_LOG", "warn"),
    );
    let _agent = KillOnDrop::spawn(
        bin()
            .args([
                "agent",
                "--server",
                server.url(),
                "--hostname",
                "fedora-x86",
            ])
            .args(["--secret", SECRET, "--labels", "arch=x86_64", "--work-dir"])
            .arg(dir.path().join("agent"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    fm.publish(&[
        (
            BUILD_TOPIC.to_owned(),
            koji_message("xchat", "0.5", "1.fc20"),
            None,
        ),
        (
            BUILD_TOPIC.to_owned(),
            koji_message("foobar", "1.2", "3"),
            None,
        ),
    ]);

    let published = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(server.url());
    let jobs = finished_jobs(&rt, &api, Duration::from_secs(120));
    let finished = published.elapsed();
    let task_log = |item: &str| {
        let job = jobs
            .iter()
            .find(|j| j.name == format!("rpm-name-policy-{item}-x86_64"))
            .unwrap_or_else(|| panic!("no job for {item}: {jobs:#?}"));
        let task = &job.tasks[0];
        assert_eq!(task.agent.as_deref(), Some("fedora-x86"));
        format!("/api/v1/tasks/{}/log?attempt=", task.id)
    };
    let expected = [
        (
            GOOD,
            "PASSED",
            "name, version and release follow the naming rules",
        ),
        (
            BAD,
            "FAILED",
            "1 naming problem: release '3' has no dist tag (.fcNN, .elN)",
        ),
    ];
    let served = read_results(
        &python,
        &format!("{}/api/v2.0", server.url()),
        &[GOOD, BAD],
        Duration::from_secs(30),
    );
    let external = read_results(
        &python,
        &format!("{}/api/v2.0", receiver.url()),
        &[GOOD, BAD],
        Duration::from_secs(60),
    );
    eprintln!(
        "taskotron path: 2 Koji messages published → both checks finished in {finished:.1?}, \
         results read back from both ResultsDB APIs after {:.1?}",
        published.elapsed()
    );
    for (name, results) in [("served", &served), ("external", &external)] {
        for (item, outcome, note) in expected {
            let rows = &results[item];
            assert_eq!(rows.len(), 1, "{name}: one result for {item}: {rows:#?}");
            check_result(&rows[0], item, outcome, note, &task_log(item));
        }
    }
    // The external ResultsDB's links point back at this coordinator.
    assert!(
        external[GOOD][0]
            .ref_url
            .as_deref()
            .is_some_and(|u| u.starts_with(&public_url)),
        "{:?}",
        external[GOOD][0].ref_url
    );
    drop(server);
    drop(receiver);
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> String {
    json!(path.display().to_string()).to_string()
}

fn run_check(item: &str) -> Output {
    let out = bin()
        .arg("run")
        .arg(example("templates/rpm-name-policy.toml"))
        .args(["--var", &format!("item={item}")])
        .args(["--var", "item_type=koji_build", "--var", "arch=x86_64"])
        .output()
        .unwrap();
    println!(
        "$ testfleet run … --var item={item}\n{}{}(exit {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

#[test]
fn testfleet_run_fills_the_template_from_vars_and_passes_a_good_nvr_and_fails_a_bad_one() {
    let good = run_check(GOOD);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_eq!(good.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("rpm-name-policy: OK"), "{stdout}");
    let output = format!("{stdout}{}", String::from_utf8_lossy(&good.stderr));
    assert!(
        output.contains("outcome: \"PASSED\"") && output.contains(&format!("item: \"{GOOD}\"")),
        "the check's TAP is in the output: {output}"
    );

    for bad in [BAD, "xchat_0.5", "bad name-1.0-1.fc20"] {
        let out = run_check(bad);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stdout}");
        assert!(
            stdout.contains("rpm-name-policy: NOT_OK") && stdout.contains("failed"),
            "{bad}: {stdout}"
        );
        assert!(stdout.contains("outcome: \"FAILED\""), "{bad}: {stdout}");
    }
}

#[test]
fn the_example_rules_queue_the_check_for_the_sample_koji_message() {
    let out = bin()
        .args(["trigger", "test"])
        .arg(example(""))
        .arg(example("events/koji-build-complete.json"))
        .args(["--topic", BUILD_TOPIC])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rule `rpm-name-policy-on-koji-build`")
            && stdout.contains("matched")
            && stdout.contains("name = \"rpm-name-policy-xchat-0.5-1.fc20-x86_64\"")
            && stdout.contains("'xchat-0.5-1.fc20' 'koji_build' 'x86_64'"),
        "{stdout}"
    );
}
