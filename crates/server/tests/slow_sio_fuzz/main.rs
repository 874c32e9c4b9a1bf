//! A socket.io frame fuzzer against a live coordinator: thousands of frames
//! from a seeded RNG over raw websockets (garbage bytes, truncated and
//! mistyped engine.io/socket.io packets, bad JSON, deep nesting, huge and
//! binary frames, wrong handshakes, malformed agent events, unknown events,
//! floods), while a well-behaved agent on our socket.io client keeps getting
//! and finishing work. The coordinator must not panic, must keep answering
//! REST, and must answer malformed events of an authenticated agent with an
//! `error` event.
//!
//! `TESTFLEET_FUZZ_SEED=<n>` replays a run; the seed is printed.
//!
//! In the slow group (it fuzzes for 15 s): ignored by a plain `cargo test`,
//! run by `cargo xtask test` (not `--fast`) or
//! `cargo test -p testfleet-server --test slow_sio_fuzz -- --ignored`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use testfleet_sio::{Client, ConnectOptions, EventStream, Incoming};
use testfleet_testkit::Rng;
use testfleet_testkit::server::TestServer;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "fuzz-secret";
/// The server's socket.io packet limit in this test.
const MAX_PAYLOAD: u64 = 256 * 1024;
/// How long the fuzzing runs (the test's runtime stays under ~30 s).
const FUZZ_TIME: Duration = Duration::from_secs(15);
/// Work for fuzzing agents that take an attempt and then misbehave about it.
const DEEP_JOB: &str = "name = \"deep\"\n[[task]]\nname = \"t\"\nrequires = { pool = \"deep\" }\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
const GOOD_JOB: &str = "name = \"good\"\n[[task]]\nname = \"t\"\nrequires = { pool = \"good\" }\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

mod frames;
mod raw;

use frames::{FuzzInput, agent_event, frame, own_attempt_event};
use raw::{Raw, connect_packet};

/// The well-behaved agent: the protocol as `testfleet agent` speaks it,
/// one task after another. Counts finished tasks.
async fn good_agent(
    url: String,
    finished: Arc<AtomicU64>,
    phase: Arc<Mutex<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let set_phase = |p: String| *phase.lock().unwrap() = p;
    let auth = json!({
        "clientType": "agent",
        "hostname": "good",
        "secret": SECRET,
        "labels": {"pool": "good"},
        "protocol": 1,
    });
    let (client, mut events) = Client::connect(&url, ConnectOptions::default().with_auth(auth))
        .await
        .expect("the good agent connects");
    let mut ts = 0i64;
    let mut stamp = move || {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        ts = now.max(ts + 1);
        testfleet_core::time_fmt::format_millis(ts)
    };
    client
        .emit(
            "statusUpdate",
            json!({"status": "idle", "updateTimestamp": stamp()}),
        )
        .await
        .unwrap();
    client.emit_no_args("fetchWork").await.unwrap();
    set_phase("fetched, waiting for sendWork".into());
    loop {
        let event = tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            e = events.recv() => e,
        };
        let (name, args) = match event {
            Some(Incoming::Event { name, args, ack }) => {
                if let Some(ack) = ack {
                    let _ = ack.send(Vec::new()).await;
                }
                (name, args)
            }
            other => panic!("the good agent lost its connection: {other:?}"),
        };
        match name.as_str() {
            "sendWork" => {
                let mut item = args.into_iter().next().unwrap_or(Value::Null);
                let attempt = item["attemptId"].as_i64().expect("a work item");
                set_phase(format!("reporting attempt {attempt}"));
                if let Some(obj) = item.as_object_mut() {
                    for key in ["steps", "env", "results", "artifacts", "source"] {
                        obj.remove(key);
                    }
                }
                for status in ["new", "test"] {
                    let mut update = item.clone();
                    update["status"] = json!(status);
                    update["updateTimestamp"] = json!(stamp());
                    client.emit("statusUpdate", update).await.unwrap();
                }
                let report = json!({"attemptId": attempt, "outcome": "passed", "reason": null,
                                    "results": [], "duration_ms": 1});
                let answer = client
                    .emit_with_ack("tf:report", report, Duration::from_secs(10))
                    .await
                    .expect("the good agent's report is acknowledged");
                assert_eq!(answer[0]["ok"], true, "report refused: {answer:?}");
                let mut update = item.clone();
                update["status"] = json!("done");
                update["updateTimestamp"] = json!(stamp());
                client.emit("statusUpdate", update).await.unwrap();
                finished.fetch_add(1, Ordering::SeqCst);
                client.emit_no_args("fetchWork").await.unwrap();
                set_phase(format!(
                    "attempt {attempt} done, fetched, waiting for sendWork"
                ));
            }
            "requestStatus" => {
                client
                    .emit(
                        "statusUpdate",
                        json!({"status": "idle", "updateTimestamp": stamp()}),
                    )
                    .await
                    .unwrap();
            }
            "error" => panic!("the good agent was sent an error: {args:?}"),
            _ => {}
        }
    }
}

/// Reads events until `name` arrives; its arguments.
async fn expect_event(events: &mut EventStream, name: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Incoming::Event { name: n, args, .. })) if n == name => return args,
            Ok(Some(_)) => continue,
            other => panic!("no `{name}` event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_sio_fuzz -- --ignored)"]
async fn fuzzed_socketio_frames_neither_crash_nor_starve_the_coordinator() {
    let seed = std::env::var("TESTFLEET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7e57_f1ee_75ee_d000u64);
    println!("fuzz seed: {seed} (replay with TESTFLEET_FUZZ_SEED={seed})");

    // Any panic anywhere in the process (a server task included) fails the test.
    let panics = Arc::new(AtomicUsize::new(0));
    let hook_panics = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook_panics.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let server = TestServer::in_tempdir(|config| {
        config.agent_secret = Some(SECRET.into());
        config.max_socket_payload = MAX_PAYLOAD;
    })
    .await;
    let (addr, url) = (server.addr, server.url.clone());
    let ws_url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let http = reqwest::Client::new();

    // The well-behaved agent, and jobs for it all along.
    let finished = Arc::new(AtomicU64::new(0));
    // The submitter stops first; the good agent once its last task is done.
    let (stop_good, stop_rx) = watch::channel(false);
    let (stop, _) = watch::channel(false);
    let phase = Arc::new(Mutex::new(String::from("connecting")));
    let good = tokio::spawn(good_agent(
        url.clone(),
        finished.clone(),
        phase.clone(),
        stop_rx,
    ));
    let submitted = Arc::new(AtomicU64::new(0));
    let submitter = {
        let (http, url, submitted, finished) = (
            http.clone(),
            url.clone(),
            submitted.clone(),
            finished.clone(),
        );
        let phase = phase.clone();
        let mut stop = stop.subscribe();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            loop {
                let started = Instant::now();
                let resp = http
                    .post(format!("{url}/api/v1/jobs"))
                    .header("content-type", "application/toml")
                    .body(GOOD_JOB)
                    .send()
                    .await
                    .expect("REST answers");
                assert_eq!(resp.status().as_u16(), 201, "submit refused");
                let n = submitted.fetch_add(1, Ordering::SeqCst) + 1;
                while finished.load(Ordering::SeqCst) < n {
                    if started.elapsed() > Duration::from_secs(10) {
                        let job: Value = http
                            .get(format!("{url}/api/v1/jobs?limit=1"))
                            .send()
                            .await
                            .expect("REST answers")
                            .json()
                            .await
                            .unwrap_or_default();
                        let phase = phase.lock().unwrap().clone();
                        panic!(
                            "the good agent's task {n} did not finish within 10 s; the agent: {phase}; the job: {job}"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                slowest = slowest.max(started.elapsed());
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => return slowest,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    // Samples first: what the answers must be.
    // An authenticated agent's malformed events get `error` events.
    let raw = Raw::open(&ws_url).await.expect("websocket opens");
    raw.send(connect_packet(
        &json!({"clientType": "agent", "hostname": "fuzz-sample", "secret": SECRET}),
    ));
    assert!(
        raw.wait(Duration::from_secs(5), |s| s.connected).await,
        "agent CONNECT answered"
    );
    for m in [
        r#"42["statusUpdate",{"status":42}]"#,
        r#"42["tf:log",{"nonsense":true}]"#,
        r#"42["tf:log"]"#,
        r#"42["noSuchEvent",1]"#,
        r#"42["tf:report",{"attemptId":"x"}]"#,
        r#"42["tf:report"]"#,
        r#"42["statusUpdate",[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#,
        r#"42["queryWork"]"#,
    ] {
        raw.send(Message::Text(m.into()));
    }
    raw.send(Message::Text(r#"427["tf:report",{"attemptId":[]}]"#.into()));
    assert!(
        raw.wait(Duration::from_secs(5), |s| s.errors.len() >= 8
            && !s.acks.is_empty())
            .await,
        "each malformed event is answered: {:?}",
        raw.seen.lock().unwrap()
    );
    {
        let seen = raw.seen.lock().unwrap();
        assert!(seen.acks[0].starts_with("437[") && seen.acks[0].contains("\"ok\":false"));
        assert!(
            seen.errors
                .iter()
                .any(|e| e.contains("unknown event `noSuchEvent`"))
        );
        assert!(seen.errors.iter().any(|e| e.contains("malformed")));
    }
    raw.close();
    // Wrong handshakes get `connect_error` (44) with a reason.
    for auth in [
        json!({"clientType": "agent", "hostname": "fuzz-bad", "secret": "nope"}),
        json!({"clientType": "agent", "secret": SECRET}),
        json!({"clientType": 7}),
        json!([1, 2]),
    ] {
        let raw = Raw::open(&ws_url).await.expect("websocket opens");
        raw.send(connect_packet(&auth));
        assert!(
            raw.wait(Duration::from_secs(5), |s| s.connect_error.is_some())
                .await,
            "{auth} refused: {:?}",
            raw.seen.lock().unwrap()
        );
        raw.close();
    }
    // A browser gets its read-only events.
    let (browser, mut browser_events) = Client::connect(
        &url,
        ConnectOptions::default().with_auth(json!({"clientType": "browser"})),
    )
    .await
    .unwrap();
    // Fuzzing agents come and go, each pushing `agentData`: read them all
    // as they come (a client that stops reading stops answering pings).
    let agent_data = Arc::new(AtomicU64::new(0));
    let browser_reader = {
        let agent_data = agent_data.clone();
        tokio::spawn(async move {
            while let Some(event) = browser_events.recv().await {
                match event {
                    Incoming::Event { name, .. } if name == "agentData" => {
                        agent_data.fetch_add(1, Ordering::SeqCst);
                    }
                    Incoming::Disconnected { reason } => {
                        eprintln!("the browser's connection ended: {reason}");
                        return;
                    }
                    _ => {}
                }
            }
        })
    };

    // Then fuzz, a few connections at a time, until the time is up.
    let frames = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(AtomicU64::new(0));
    // Authenticated fuzzing agents, and `error` events they received.
    let agents = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Fuzzing agents that held a real attempt while misbehaving.
    let held = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let mut rng = Rng::new(seed ^ (w.wrapping_mul(0x5851_F42D_4C95_7F2D)));
        let (ws_url, frames, sessions) = (ws_url.clone(), frames.clone(), sessions.clone());
        let (agents, errors, held) = (agents.clone(), errors.clone(), held.clone());
        let (http, url) = (http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < FUZZ_TIME {
                n += 1;
                let Some(raw) = Raw::open(&ws_url).await else {
                    continue;
                };
                sessions.fetch_add(1, Ordering::Relaxed);
                let kind = rng.below(11);
                let mut attempt = None;
                let host = format!("fuzz-{w}-{n}");
                match kind {
                    // An authenticated agent sending malformed events.
                    0..=4 => {
                        // Odd labels or machine data now and then (refused
                        // as a malformed handshake).
                        let (labels, machine) = if rng.chance(4) {
                            (rng.value(2), rng.value(2))
                        } else {
                            (json!({"pool": "fuzz"}), Value::Null)
                        };
                        raw.send(connect_packet(
                            &json!({"clientType": "agent", "hostname": host, "secret": SECRET,
                                    "labels": labels, "machine": machine}),
                        ));
                        if raw
                            .wait(Duration::from_secs(2), |s| s.connected || s.closed)
                            .await
                            && raw.seen.lock().unwrap().connected
                        {
                            agents.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // An agent that takes a real attempt first.
                    10 => {
                        let resp = http
                            .post(format!("{url}/api/v1/jobs"))
                            .header("content-type", "application/toml")
                            .body(DEEP_JOB)
                            .send()
                            .await
                            .expect("REST answers");
                        assert_eq!(resp.status().as_u16(), 201);
                        raw.send(connect_packet(&json!({"clientType": "agent", "hostname": host,
                                    "secret": SECRET, "labels": {"pool": "deep"}})));
                        raw.wait(Duration::from_secs(2), |s| s.connected || s.closed)
                            .await;
                        raw.send(Message::Text(r#"42["fetchWork"]"#.into()));
                        raw.wait(Duration::from_secs(3), |s| s.work.is_some() || s.closed)
                            .await;
                        attempt = raw.seen.lock().unwrap().work;
                        if attempt.is_some() {
                            held.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A browser.
                    5 => raw.send(connect_packet(&json!({"clientType": "browser"}))),
                    // A handshake with a wrong or malformed auth payload.
                    6 => {
                        let auth = match rng.below(4) {
                            0 => json!({"clientType": "agent", "hostname": host, "secret": rng.string()}),
                            1 => json!({"clientType": "agent", "hostname": rng.string(), "secret": SECRET}),
                            _ => rng.value(0),
                        };
                        raw.send(connect_packet(&auth));
                    }
                    // No handshake at all.
                    _ => {}
                }
                let count = match rng.below(20) {
                    // A flood.
                    0 => 3_000,
                    _ => 20 + rng.below(150),
                };
                for _ in 0..count {
                    let m = if count > 1_000 {
                        Message::Text(
                            rng.pick(&[
                                r#"42["fetchWork"]"#,
                                r#"42["statusUpdate",{"status":"idle"}]"#,
                                r#"42["noSuchEvent"]"#,
                                r#"42["statusUpdate",{"status":1}]"#,
                            ])
                            .to_string()
                            .into(),
                        )
                    } else if let Some(id) = attempt.filter(|_| rng.chance(2)) {
                        Message::Text(own_attempt_event(&mut rng, id).into())
                    } else if (kind <= 4 || kind == 10) && rng.chance(2) {
                        Message::Text(agent_event(&mut rng).into())
                    } else {
                        frame(&mut rng)
                    };
                    raw.send(m);
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                // Now and then, a packet over the limit: that connection closes.
                if rng.chance(15) {
                    raw.send(Message::Text(
                        format!("42[\"tf:log\",\"{}\"]", "z".repeat(MAX_PAYLOAD as usize + 1))
                            .into(),
                    ));
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                raw.wait(Duration::from_millis(200), |s| s.closed).await;
                let answered = raw.seen.lock().unwrap().errors.len() as u64;
                errors.fetch_add(answered, Ordering::Relaxed);
                raw.close();
            }
        }));
    }
    // While that runs, the browser and REST are served.
    while started.elapsed() < FUZZ_TIME {
        let before = agent_data.load(Ordering::SeqCst);
        browser.emit_no_args("getAgents").await.unwrap();
        let asked = Instant::now();
        while agent_data.load(Ordering::SeqCst) == before {
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "getAgents unanswered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let resp = http
            .get(format!("{url}/api/v1/jobs?limit=1"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("REST answers during the fuzzing");
        assert_eq!(resp.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for w in workers {
        w.await.expect("a fuzzing worker failed");
    }
    let _ = stop.send(true);
    let slowest = submitter.await.expect("the submitter failed");
    let _ = stop_good.send(true);
    good.await.expect("the good agent failed");

    let frames = frames.load(Ordering::Relaxed);
    let sessions = sessions.load(Ordering::Relaxed);
    let finished = finished.load(Ordering::SeqCst);
    let agents = agents.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let held = held.load(Ordering::Relaxed);
    println!(
        "{frames} frames over {sessions} connections ({agents} authenticated agents, {held} holding an attempt, \
         {errors} error events back); the good agent finished {finished} tasks (slowest {slowest:?})"
    );
    assert!(held >= 3, "only {held} fuzzing agents held an attempt");
    assert!(frames >= 5_000, "only {frames} frames sent");
    assert!(agents >= 10, "only {agents} fuzzing agents were accepted");
    assert!(
        errors >= 100,
        "only {errors} error events answered malformed events"
    );
    assert!(
        finished >= 5,
        "the good agent finished only {finished} tasks"
    );
    assert!(server.is_serving(), "the server stopped");
    assert!(
        !browser_reader.is_finished(),
        "the browser's connection ended"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
    // Still answering, REST and socket.io.
    let resp = http
        .get(format!("{url}/api/v1/jobs"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let jobs: Vec<Value> = resp.json().await.unwrap();
    assert!(jobs.iter().any(|j| j["state"] == "passed"), "{jobs:?}");
    let auth = json!({"clientType": "agent", "hostname": "after", "secret": SECRET});
    let (after, mut after_events) =
        Client::connect(&url, ConnectOptions::default().with_auth(auth))
            .await
            .expect("a new agent connects after the fuzzing");
    after
        .emit("statusUpdate", json!({"status": 5}))
        .await
        .unwrap();
    expect_event(&mut after_events, "error").await;
}
