//! `GET /metrics` scraped and parsed by Prometheus' own text-format parser
//! (the `prometheus_client` Python package's), its values checked against a
//! known queue and fleet: tasks waiting per queue and requirement set, an
//! idle and a busy agent, a finished attempt with its start wait and store
//! latencies.

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use testfleet_core::{JobState, LabelSet};
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::peers::peer_python;
use testfleet_testkit::server::TestServer;
use testfleet_testkit::wait::{wait_job, wait_until};

/// Reads the exposition from argv[1] with prometheus_client's parser and
/// prints every sample as JSON: name, labels, value.
const PARSE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1]) as r:
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
    text = r.read().decode()
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

#[derive(Debug, Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(python: &std::path::Path, url: &str) -> Vec<Sample> {
    let (python, url) = (python.to_owned(), format!("{url}/metrics"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", PARSE, &url])
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("samples")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_parses_metrics_that_match_a_known_queue() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let h = TestServer::start(dir.path(), |c| c.allow_any_agent = true).await;
    let labels = |pairs: &[(&str, &str)]| -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let fast = TestAgent::start(&h.url, "fast-1", dir.path(), |c| {
        c.labels = labels(&[("pool", "fast")]);
    });
    let slow = TestAgent::start(&h.url, "slow-1", dir.path(), |c| {
        c.labels = labels(&[("pool", "slow")]);
    });
    // One task the fast agent runs and passes; one the slow agent keeps
    // running; three that wait in `bench` for an agent nobody has, and two
    // in the default queue.
    let passed = h
        .api
        .submit(
            "name = \"quick\"\n[[task]]\nname = \"t\"\nrequires = { pool = \"fast\" }\n\
             steps = [{ stage = \"test\", run = \"true\" }]\n",
        )
        .await
        .expect("submit")
        .id;
    let job = wait_job(&h.api, passed, Duration::from_secs(30)).await;
    assert_eq!(job.state, JobState::Passed, "{job:#?}");
    h.api
        .submit(
            "name = \"long\"\n[[task]]\nname = \"t\"\nrequires = { pool = \"slow\" }\n\
             steps = [{ stage = \"test\", run = \"sleep 30\" }]\n",
        )
        .await
        .expect("submit");
    let mut bench = String::from("name = \"wait\"\nqueue = \"bench\"\n");
    for i in 0..3 {
        bench.push_str(&format!(
            "[[task]]\nname = \"b{i}\"\nrequires = {{ pool = \"bench\", cores = \">=8\" }}\n\
             steps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    h.api.submit(&bench).await.expect("submit");
    h.api
        .submit(
            "name = \"win\"\n[[task]]\nname = \"a\"\nrequires = { os = \"windows\" }\n\
             steps = [{ stage = \"test\", run = \"true\" }]\n[[task]]\nname = \"b\"\n\
             requires = { os = \"windows\" }\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
        )
        .await
        .expect("submit");

    let url = h.url.clone();
    let py = python.clone();
    wait_until("the slow agent is busy", || {
        let (py, url) = (py.clone(), url.clone());
        async move {
            let samples = scrape(&py, &url).await;
            value(
                &samples,
                "testfleet_agents",
                &[("state", "busy"), ("labels", "pool=slow")],
            ) == Some(1.0)
        }
    })
    .await;
    let samples = scrape(&python, &h.url).await;
    let depth = |queue: &str, requires: &str| {
        value(
            &samples,
            "testfleet_queue_depth",
            &[
                ("queue", queue),
                ("requires", requires),
                ("pinned", "false"),
            ],
        )
    };
    assert_eq!(depth("bench", "cores>=8,pool=bench"), Some(3.0));
    assert_eq!(depth("default", "os=windows"), Some(2.0));
    let oldest = value(
        &samples,
        "testfleet_queue_oldest_wait_seconds",
        &[("queue", "bench")],
    )
    .expect("oldest wait");
    assert!((0.0..60.0).contains(&oldest), "{oldest}");
    for (state, labels, n) in [
        ("idle", "pool=fast", 1.0),
        ("busy", "pool=slow", 1.0),
        ("offline", "pool=fast", 0.0),
    ] {
        assert_eq!(
            value(
                &samples,
                "testfleet_agents",
                &[("state", state), ("labels", labels)]
            ),
            Some(n),
            "{state} {labels}"
        );
    }
    assert_eq!(
        value(&samples, "testfleet_agent_event_queues", &[]),
        Some(2.0),
        "one event queue per connected agent"
    );
    assert_eq!(
        value(
            &samples,
            "testfleet_attempts_finished_total",
            &[("outcome", "passed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "testfleet_task_start_wait_seconds_count", &[]),
        Some(2.0),
        "two tasks started"
    );
    assert_eq!(
        value(
            &samples,
            "testfleet_task_start_wait_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "testfleet_store_operation_seconds_count",
            &[("operation", "finish")]
        ),
        Some(1.0)
    );
    let kinds: Vec<(&str, &str)> = samples
        .iter()
        .map(|s| (s.family.as_str(), s.kind.as_str()))
        .collect();
    assert!(kinds.contains(&("testfleet_task_start_wait_seconds", "histogram")));
    assert!(kinds.contains(&("testfleet_attempts_finished", "counter")));
    fast.stop().await;
    slow.stop().await;
    h.stop().await;
}
