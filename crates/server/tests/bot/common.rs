//! What the merge-request bot tests share, whatever the host: the job
//! template, the bot's settings, and an agent that reports benchmark
//! values chosen by the test (so verdicts are known in advance).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testfleet_core::trigger::{Overrides, Template};
use testfleet_server::bots::{Action, Bot, BotSettings, ReviewHost};
use testfleet_sio::{Client, EventStream, Incoming};
use testfleet_testkit::server::TestServer;

pub const TEMPLATE: &str = r#"
name = "bench-mr{{mr}}-{{side}}"
[integration]
id = "mr{{mr}}-{{side}}-{{pipeline_id}}"
timestamp = "2026-01-01T00:00:00Z"
branch = "{{branch}}"
sha = "{{sha}}"
[[task]]
name = "bench"
steps = [{ stage = "test", run = "true" }]
"#;

/// A 40-character sha of one repeated character.
pub fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// The bot's settings for `project`: label `benchmark`, polls every 200 ms.
pub fn settings(project: &str) -> BotSettings {
    BotSettings {
        project: project.into(),
        label: "benchmark".into(),
        poll_interval: Duration::from_millis(200),
        template: Template::parse(TEMPLATE, "bot.toml").expect("template"),
        overrides: Overrides::default(),
        dashboard_url: "http://testfleet.example".into(),
        hosts: Vec::new(),
        confirm_rounds: 2,
    }
}

/// An agent that runs every job it gets: head jobs of `slower_mr` report
/// 30 % more time; every other job the same values.
pub fn spawn_agent(h: &TestServer, mut client_events: (Client, EventStream), slower_mr: u64) {
    let _ = h;
    tokio::spawn(async move {
        let (client, events) = &mut client_events;
        loop {
            let Some(work) = next_work(client, events).await else {
                return;
            };
            let name = work["jobName"].as_str().unwrap_or_default().to_owned();
            let factor = if name == format!("bench-mr{slower_mr}-head") {
                1.3
            } else {
                1.0
            };
            let values: Vec<f64> = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8]
                .iter()
                .map(|v| v * factor)
                .collect();
            let attempt = work["attemptId"].as_i64().unwrap_or_default();
            let report =
                json!({"attemptId": attempt, "outcome": "passed", "results": results(&values)});
            let _ = client
                .emit_with_ack("tf:report", report, Duration::from_secs(5))
                .await;
            let _ = client.emit_no_args("fetchWork").await;
        }
    });
}

pub async fn next_work(client: &Client, events: &mut EventStream) -> Option<Value> {
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Incoming::Event { name, args, .. })) if name == "sendWork" => {
                    return args.into_iter().next();
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(_) => break,
            }
        }
        client.emit_no_args("fetchWork").await.ok()?;
    }
}

/// QtTest-like results: one repetition per value of `tst_Bench::run`.
pub fn results(values: &[f64]) -> Value {
    let sets: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(rep, v)| {
            json!({"format": "qtest-xml", "complete": true, "warnings": [], "crashed": [],
                   "repetition": rep,
                   "suites": [{"name": "tst_Bench", "properties": [], "duration_ms": null, "cases": [
                       {"name": "run", "data_tag": null, "classname": null, "outcome": "pass",
                        "flags": {}, "duration_ms": null, "message": null, "log": null,
                        "file": null, "line": null, "reruns": [], "diagnostics": null,
                        "metrics": [{"name": "WalltimeMilliseconds", "unit": "msecs", "value": v,
                                     "total": null, "iterations": 100, "variance": null}]}]}]})
        })
        .collect();
    Value::Array(sets)
}

/// Runs passes until `done` holds, collecting every action.
pub async fn passes_until<H: ReviewHost>(
    bot: &Bot<H>,
    what: &str,
    mut done: impl FnMut(&[Action]) -> bool,
) -> Vec<Action> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut all = Vec::new();
    loop {
        match bot.pass(false).await {
            Ok(actions) => all.extend(actions),
            Err(e) => panic!("pass failed: {e:?}"),
        }
        if done(&all) {
            return all;
        }
        assert!(
            Instant::now() < end,
            "{what} within 60 s; actions: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn reported(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reported { iid, .. } => Some(*iid),
            _ => None,
        })
        .collect()
}

pub fn bench_agent_auth(name: &str) -> Value {
    json!({"clientType": "agent", "hostname": name,
        "machine": {"platform": "Debian GNU/Linux 12", "os_version": "12", "kernel": "6.1",
                    "arch": "x86_64", "cpu_model": "Intel Core i7-7700K", "cores": 8, "compiler": "gcc-12"}})
}

/// Restarts a bot at random moments until `done`: each pass runs on a new
/// bot from `make_bot` and, for the first twenty passes that are still
/// running, is killed (its task dropped wherever it is) after 0–6 ms;
/// `inject` may queue a host failure first (a lost answer, a rate limit,
/// a 500). Returns how many passes were killed mid-way; `state` says
/// where the requests are when they take too long.
pub async fn kill_passes_until<H: ReviewHost>(
    seed: u64,
    make_bot: impl Fn() -> Bot<H>,
    inject: impl Fn(&mut testfleet_testkit::Rng),
    done: impl Fn() -> bool,
    state: impl Fn() -> String,
) -> usize {
    let mut rng = testfleet_testkit::Rng::new(seed);
    let mut restarts = 0;
    let end = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            Instant::now() < end,
            "not all reported after {restarts} restarts: {}",
            state()
        );
        let bot = make_bot();
        if restarts < 20 {
            if rng.chance(2) {
                inject(&mut rng);
            }
            let pass = tokio::spawn(async move { bot.pass(false).await.map(|_| ()) });
            tokio::time::sleep(Duration::from_micros(rng.below(6_000))).await;
            if !pass.is_finished() {
                restarts += 1;
            }
            pass.abort();
            let _ = pass.await;
        } else {
            let _ = bot.pass(false).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restarts
}
