//! Exporters against real receivers: a Debian `influxd` (InfluxDB 1.x) started
//! per test on free loopback ports, and the coordinator's own ResultsDB API
//! (the Python `resultsdb-api` client is driven from crates/testfleet/tests).
//! Agents are plain socket.io clients that report benchmark results.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testfleet_server::exporters::{ExportersConfig, InfluxApi, InfluxConfig};
use testfleet_sio::{Client, EventStream, Incoming};
use testfleet_testkit::process::{Influxd, influxd_program as influxd};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::sio::idle_agent;

/// An `influxd` (the test kit's) with its own data directory; killed on drop.
struct Influx {
    kit: Influxd,
    _dir: tempfile::TempDir,
}

impl Influx {
    fn start(bin: PathBuf) -> Influx {
        let dir = tempfile::tempdir().unwrap();
        let kit = Influxd::start(bin, dir.path().to_owned());
        Influx { kit, _dir: dir }
    }

    fn url(&self) -> String {
        self.kit.url()
    }

    fn run(&mut self) {
        self.kit.run();
    }

    fn stop(&mut self) {
        self.kit.stop();
    }

    async fn query(&self, q: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/query", self.url()))
            .query(&[("q", q), ("db", "bench"), ("epoch", "ns")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn create_db(&self) {
        self.query("CREATE DATABASE bench").await;
    }

    /// Every row of `benchmark` as column → value maps.
    async fn points(&self) -> Vec<serde_json::Map<String, Value>> {
        let v = self.query("SELECT * FROM benchmark").await;
        let Some(series) = v["results"][0]["series"][0].as_object() else {
            return Vec::new();
        };
        let columns: Vec<String> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .cloned()
                    .zip(row.as_array().unwrap().iter().cloned())
                    .collect()
            })
            .collect()
    }
}

async fn start(exporters: ExportersConfig) -> TestServer {
    TestServer::in_tempdir(|config| {
        // Its agents are plain socket.io clients without a secret.
        config.allow_any_agent = true;
        config.exporters = exporters;
    })
    .await
}

fn influx_exporters(url: &str) -> ExportersConfig {
    ExportersConfig {
        influxdb: Some(InfluxConfig {
            url: url.to_owned(),
            api: InfluxApi::V1 {
                database: "bench".into(),
                user: None,
                password: None,
            },
            batch_points: 5000,
        }),
        poll_interval: Duration::from_millis(50),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        ..ExportersConfig::default()
    }
}

async fn agent(url: &str, name: &str) -> (Client, EventStream) {
    let auth = json!({
        "clientType": "agent", "hostname": name,
        "machine": {"platform": "Debian GNU/Linux 12", "os_version": "12", "kernel": "6.1",
                    "arch": "x86_64", "cpu_model": "Intel Core i7-7700K", "cores": 8,
                    "compiler": "12.2.0"},
    });
    idle_agent(url, auth).await
}

/// 2023-02-10T13:11:11Z, the time of integration 1, in ns. Each job's integration
/// is a second later: points of the same series at the same time would overwrite
/// each other in InfluxDB (the seed schema has `integration_id` as a field, not a tag).
const INTEGRATION_NS: i64 = 1_676_034_671_000_000_000;

fn job(n: u32) -> String {
    format!(
        "name = \"bench-{n}\"\n[integration]\nid = \"18947089{n}\"\ntimestamp = \"2023-02-10T13:11:1{n}Z\"\n\
         branch = \"dev\"\nsha = \"69609f0b3575c571fff4564f6f16cbca9c7d81f6\"\n\
         [[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
    )
}

/// QtTest-like results: `metrics` benchmark values in tst_QString plus one crashed program.
fn results(run: u32, metrics: u32) -> Value {
    let cases: Vec<Value> = (0..metrics)
        .map(|i| {
            json!({
                "name": "concatenation", "data_tag": format!("row{run}-{i}"), "classname": null,
                "outcome": "pass", "flags": {}, "duration_ms": null, "message": null, "log": null,
                "file": null, "line": null, "reruns": [], "diagnostics": null,
                "metrics": [{"name": "WalltimeMilliseconds", "unit": "msecs", "value": 16.5 + f64::from(i),
                             "total": null, "iterations": 200, "variance": null}],
            })
        })
        .collect();
    json!([{
        "format": "qtest-xml", "complete": true, "warnings": [],
        "suites": [{"name": "tst_QString", "cases": cases, "properties": [], "duration_ms": null}],
        "crashed": [{"test_name": "tst_OtherTest", "function": "heavy", "log": "Segmentation fault"}],
    }])
}

/// The next `sendWork`, polling again every second as an idle agent does
/// (every 30 s in production): a fetch that raced the agent's registration
/// is not answered.
async fn take_work(client: &Client, events: &mut EventStream) -> Value {
    for _ in 0..10 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if let Incoming::Event { name, args, .. } = event
                && name == "sendWork"
            {
                return args.into_iter().next().unwrap_or(Value::Null);
            }
        }
        client.emit_no_args("fetchWork").await.unwrap();
    }
    panic!("no work sent");
}

/// Runs one job on `agent`: takes the work and reports `results`.
async fn run_job(
    h: &TestServer,
    client: &Client,
    events: &mut EventStream,
    n: u32,
    metrics: u32,
) -> i64 {
    h.api.submit(&job(n)).await.unwrap();
    let work = take_work(client, events).await;
    let attempt = work["attemptId"].as_i64().unwrap();
    let report = json!({"attemptId": attempt, "outcome": "passed", "results": results(n, metrics)});
    client
        .emit_with_ack("tf:report", report, Duration::from_secs(5))
        .await
        .unwrap();
    client.emit_no_args("fetchWork").await.unwrap();
    attempt
}

async fn wait_status(h: &TestServer, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Value = reqwest::get(format!("{}/api/v1/exporters", h.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "exporter status never matched: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_points(
    influx: &Influx,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Map<String, Value>> {
    let deadline = Instant::now() + within;
    loop {
        let points = influx.points().await;
        if points.len() >= n || Instant::now() > deadline {
            return points;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_1x_receives_seed_000_points_with_the_integration_timestamp_within_a_second() {
    let Some(bin) = influxd() else { return };
    let influx = Influx::start(bin);
    // The server first: building it installs the process's TLS crypto provider.
    let h = start(influx_exporters(&influx.url())).await;
    influx.create_db().await;
    let (client, mut events) = agent(&h.url, "bench1").await;

    run_job(&h, &client, &mut events, 1, 3).await;
    // run_job returns once the coordinator acknowledged the results upload.
    let reported = Instant::now();
    let points = wait_points(&influx, 4, Duration::from_secs(5)).await;
    let latency = reported.elapsed();
    assert_eq!(points.len(), 4, "3 values + 1 crashed test: {points:#?}");
    assert!(latency < Duration::from_secs(1), "points took {latency:?}");
    eprintln!("points visible in InfluxDB {latency:?} after the results upload");

    let value_point = points
        .iter()
        .find(|p| p["data_row"] == json!("row1-1"))
        .expect("the row1-1 point");
    let expected = json!({
        "time": INTEGRATION_NS,
        "branch": "dev", "case_name": "concatenation", "cpu_model": "Intel Core i7-7700K",
        "crashed": false, "data_row": "row1-1", "gcc": "12.2.0", "host": "bench1",
        "integration_id": "189470891", "iterations": 200, "platform": "Debian GNU/Linux 12",
        "sha1": "69609f0b3575c571fff4564f6f16cbca9c7d81f6", "test_name": "tst_QString", "value": 17.5,
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&value_point[k], v, "column {k} of {value_point:#?}");
    }
    let crash = points
        .iter()
        .find(|p| p["crashed"] == json!(true))
        .expect("a crashed point");
    assert_eq!(crash["test_name"], json!("tst_OtherTest"));
    assert_eq!(crash["case_name"], json!("heavy"));
    assert_eq!(crash["time"], json!(INTEGRATION_NS));

    // The cursor moves right after InfluxDB's answer.
    let status = wait_status(&h, |s| s["exporters"][0]["pending"] == 0).await;
    let sink = &status["exporters"][0];
    assert_eq!(sink["name"], "influxdb");
    assert_eq!(sink["pending"], 0);
    assert_eq!(sink["delivered"], 4);
    assert!(sink["last_success_at"].is_string(), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_during_a_run_gets_every_point_once_when_it_returns() {
    let Some(bin) = influxd() else { return };
    let mut influx = Influx::start(bin);
    let h = start(influx_exporters(&influx.url())).await;
    influx.create_db().await;
    let (client, mut events) = agent(&h.url, "bench2").await;

    run_job(&h, &client, &mut events, 1, 5).await;
    assert_eq!(
        wait_points(&influx, 6, Duration::from_secs(5)).await.len(),
        6
    );
    // Acknowledged too, so the outage below only holds back the next runs.
    wait_status(&h, |s| s["exporters"][0]["pending"] == 0).await;

    // InfluxDB goes away while three more runs finish.
    influx.stop();
    for n in 2..=4 {
        run_job(&h, &client, &mut events, n, 5).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s: Value = reqwest::get(format!("{}/api/v1/exporters", h.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["exporters"][0]["pending"] == 3 && s["exporters"][0]["failures"].as_i64() > Some(0) {
            break s;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status["exporters"][0]["last_error"].is_string());

    // It comes back with its data: the outbox drains, each point once.
    influx.run();
    let points = wait_points(&influx, 24, Duration::from_secs(10)).await;
    assert_eq!(points.len(), 24, "4 runs × (5 values + 1 crash)");
    let mut keys: Vec<String> = points
        .iter()
        .map(|p| format!("{}|{}|{}", p["integration_id"], p["data_row"], p["crashed"]))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 24, "no point twice");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s: Value = reqwest::get(format!("{}/api/v1/exporters", h.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["exporters"][0]["pending"], 0);
    assert_eq!(
        s["exporters"][0]["delivered"], 24,
        "delivered counts each point once: {s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testfleet_results_appear_in_the_resultsdb_api_and_are_reported_once_to_an_external_one() {
    // The external ResultsDB is a second coordinator's ResultsDB API.
    let receiver = start(ExportersConfig::default()).await;
    let h = start(ExportersConfig {
        resultsdb: Some(testfleet_server::exporters::ResultsDbReporterConfig {
            url: format!("{}/api/v2.0", receiver.url),
            public_url: "http://coordinator.example".into(),
        }),
        poll_interval: Duration::from_millis(50),
        ..ExportersConfig::default()
    })
    .await;
    let (client, mut events) = agent(&h.url, "bench3").await;
    let attempt = run_job(&h, &client, &mut events, 7, 2).await;

    let http = reqwest::Client::new();
    let local: Value = http
        .get(format!(
            "{}/api/v2.0/results?attempt_id={attempt}&_sort=asc:submit_time",
            h.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = local["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "2 cases + 1 crashed program: {local:#}");
    let first = &data[0];
    assert_eq!(
        first["testcase"]["name"],
        "tst_QString.concatenation(row7-0)"
    );
    assert_eq!(first["outcome"], "PASSED");
    assert_eq!(first["data"]["item"], json!(["189470897"]));
    assert_eq!(first["data"]["host"], json!(["bench3"]));
    assert_eq!(first["data"]["arch"], json!(["x86_64"]));
    assert!(
        first["ref_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/log?attempt={attempt}")),
        "{first:#}"
    );
    assert_eq!(data[2]["outcome"], "NEEDS_INSPECTION");
    let group = first["groups"][0].as_str().unwrap();
    let g: Value = http
        .get(format!("{}/api/v2.0/groups/{group}", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(g["description"], "bench-7");

    // The reporter posts them to the receiver, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let remote = loop {
        let r: Value = http
            .get(format!("{}/api/v2.0/results?groups={group}", receiver.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["data"].as_array().unwrap().len() >= 3 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(remote["data"].as_array().unwrap().len(), 3, "{remote:#}");
    assert!(
        remote["data"][0]["ref_url"]
            .as_str()
            .unwrap()
            .starts_with("http://coordinator.example/api/v1/tasks/")
    );
    let rg: Value = http
        .get(format!("{}/api/v2.0/groups/{group}", receiver.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rg["description"], "bench-7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again: Value = http
        .get(format!("{}/api/v2.0/results?groups={group}", receiver.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["data"].as_array().unwrap().len(),
        3,
        "nothing posted twice"
    );
}
