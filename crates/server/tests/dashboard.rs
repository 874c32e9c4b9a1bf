//! The dashboard against a live coordinator filled with data: every page
//! renders with its key elements, answers its live fragment, names its JSON
//! twin and follows the read policy; and (`browser`) headless Chromium loads
//! every page, with no console error, sees a job change state and a log
//! grow without a reload, and sees the change point of a series with a
//! known step drawn on its plot. Agents are plain socket.io clients that
//! report what the test chooses.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testfleet_sio::{Client, EventStream, Incoming};
use testfleet_testkit::server::TestServer;
use testfleet_testkit::sio::idle_agent;
use testfleet_wire::analysis::SeriesChanges;
use testfleet_wire::fleet::{AgentActivity, FleetView, QueuesView};

/// Points of the benchmark series; the level steps up at [`STEP_AT`].
const POINTS: u32 = 40;
const STEP_AT: u32 = 20;

const GERRIT_SECRET: &str = "dashboard-gerrit";

/// What [`fill`] made.
struct Filled {
    /// A job whose only task runs on `runner` until the test reports it.
    live_job: i64,
    live_task: i64,
    /// The attempt of `live_task`, and the log bytes it has sent so far.
    live_attempt: i64,
    live_offset: u64,
    /// A finished job with a failed task.
    failed_job: i64,
    failed_task: i64,
    /// The series with a step, and two jobs on either side of the step.
    series: i64,
    before_step_job: i64,
    after_step_job: i64,
    /// A job that waits: no agent has its label.
    waiting_job: i64,
    runner: Client,
    _runner_events: EventStream,
    _idle: (Client, EventStream),
}

async fn agent(url: &str, name: &str, labels: Value) -> (Client, EventStream) {
    let auth = json!({
        "clientType": "agent", "hostname": name, "labels": labels,
        "machine": {"platform": "Debian GNU/Linux 12", "os_version": "12", "kernel": "6.1",
                    "arch": "x86_64", "cpu_model": "Intel Core i7-7700K", "cores": 8,
                    "compiler": "gcc 12"},
    });
    idle_agent(url, auth).await
}

/// The next `sendWork` within 10 s, asking again every second.
async fn next_work(client: &Client, events: &mut EventStream) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < end {
        let deadline = (tokio::time::Instant::now() + Duration::from_secs(1)).min(end);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if let Incoming::Event { name, args, .. } = event
                && name == "sendWork"
            {
                return args.into_iter().next().expect("sendWork carries work");
            }
        }
        client.emit_no_args("fetchWork").await.unwrap();
    }
    panic!("no work within 10 s");
}

async fn report(client: &Client, work: &Value, outcome: &str, results: Value) {
    let attempt = work["attemptId"].as_i64().unwrap();
    let mut report = json!({"attemptId": attempt, "outcome": outcome, "results": results});
    if outcome != "passed" {
        report["reason"] = json!("exit status 1 in stage test");
    }
    let answer = client
        .emit_with_ack("tf:report", report, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        format!("{answer:?}").contains("true"),
        "report refused: {answer:?}"
    );
    client.emit_no_args("fetchWork").await.unwrap();
}

/// QtTest-like results with one benchmark value.
fn bench_results(value: f64) -> Value {
    json!([{"format": "qtest-xml", "complete": true, "warnings": [], "crashed": [], "repetition": 0,
        "suites": [{"name": "tst_Bench", "properties": [], "duration_ms": null, "cases": [
            {"name": "paint", "data_tag": null, "classname": null, "outcome": "pass", "flags": {},
             "duration_ms": null, "message": null, "log": null, "file": null, "line": null,
             "reruns": [], "diagnostics": null,
             "metrics": [{"name": "WalltimeMilliseconds", "unit": "msecs", "value": value,
                          "total": null, "iterations": 100, "variance": null}]}]}]}])
}

fn job_file(name: &str, n: u32, requires: &str) -> String {
    let ts = testfleet_core::time_fmt::format_millis(1_676_034_671_000 + i64::from(n) * 60_000);
    format!(
        "name = \"{name}\"\n[integration]\nid = \"int-{n}\"\ntimestamp = \"{ts}\"\n\
         branch = \"dev\"\nsha = \"{n:04}{}\"\n\
         [[task]]\nname = \"bench\"\n{requires}steps = [{{ stage = \"test\", run = \"true\" }}]\n",
        "a".repeat(36)
    )
}

/// A coordinator with a busy agent, an idle one, a series with a step,
/// a failed job, a waiting job and a running one.
async fn fill(h: &TestServer) -> Filled {
    let (runner, mut events) =
        agent(&h.url, "bench-1", json!({"os": "linux", "arch": "x86_64"})).await;
    let mut before_step_job = 0;
    let mut after_step_job = 0;
    for n in 0..POINTS {
        let job = h
            .api
            .submit(&job_file(&format!("bench {n}"), n, ""))
            .await
            .unwrap()
            .id;
        let work = next_work(&runner, &mut events).await;
        // A quiet level, then 50 % slower from STEP_AT on.
        let noise = f64::from(n % 5) * 0.4;
        let value = if n < STEP_AT { 100.0 } else { 150.0 } + noise;
        report(&runner, &work, "passed", bench_results(value)).await;
        if n == STEP_AT - 1 {
            before_step_job = job;
        }
        if n == STEP_AT {
            after_step_job = job;
        }
    }
    let failed = h
        .api
        .submit(&job_file("broken build", 100, ""))
        .await
        .unwrap();
    let work = next_work(&runner, &mut events).await;
    report(&runner, &work, "failed", json!([])).await;
    let waiting = h
        .api
        .submit(&job_file(
            "needs a gpu",
            101,
            "requires = { gpu = \"yes\" }\n",
        ))
        .await
        .unwrap();
    let live = h.api.submit(&job_file("live run", 102, "")).await.unwrap();
    let work = next_work(&runner, &mut events).await;
    let live_attempt = work["attemptId"].as_i64().unwrap();
    let first = "configuring\nbuilding step 1 of 3\n";
    runner
        .emit(
            "tf:log",
            json!({"attemptId": live_attempt, "offset": 0, "data": first}),
        )
        .await
        .unwrap();
    runner
        .emit(
            "statusUpdate",
            json!({"status": "test", "attemptId": live_attempt, "load": 1.5}),
        )
        .await
        .unwrap();
    let idle = agent(&h.url, "idle-1", json!({"os": "windows"})).await;
    // A trigger event (no rules are configured: it is kept with its reason).
    let merged = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/hooks/gerrit_change_merged.json"
    ))
    .unwrap();
    let hook = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/hooks/gerrit?secret={GERRIT_SECRET}",
            h.url
        ))
        .header("content-type", "application/json")
        .body(merged)
        .send()
        .await
        .unwrap();
    assert!(hook.status().is_success(), "{:?}", hook.text().await);
    // The series are filled in the background: wait for every point, then
    // for the change point.
    let end = Instant::now() + Duration::from_secs(30);
    while !h.coordinator.views().series_caught_up().await.unwrap() {
        assert!(
            Instant::now() < end,
            "the series did not catch up within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list: Value = get_json(h, "/api/v1/series?metric=WalltimeMilliseconds").await;
    let series = list["series"][0]["id"]
        .as_i64()
        .expect("the benchmark series");
    let changes: SeriesChanges =
        serde_json::from_value(get_json(h, &format!("/api/v1/series/{series}/changes")).await)
            .unwrap();
    assert_eq!(
        changes.changes.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![u64::from(STEP_AT)],
        "the step is found where it was made"
    );
    Filled {
        live_job: live.id,
        live_task: live.tasks[0].id,
        live_attempt,
        live_offset: first.len() as u64,
        failed_job: failed.id,
        failed_task: failed.tasks[0].id,
        series,
        before_step_job,
        after_step_job,
        waiting_job: waiting.id,
        runner,
        _runner_events: events,
        _idle: idle,
    }
}

async fn start(configure: impl FnOnce(&mut testfleet_server::ServerConfig)) -> TestServer {
    // One rule that this test's event does not match: the event is kept
    // with its reason and queues nothing.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"gerrit-patchsets\"\n[rule.when]\nsource = \"gerrit\"\n\
         kind = \"patchset-created\"\n[[rule.do]]\ntemplate = \"job.toml\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        "name = \"patchset\"\n[[task]]\nname = \"check\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
    )
    .unwrap();
    let rules = testfleet_server::triggers::load_rules(&rules).expect("the test's rules load");
    TestServer::in_tempdir(|config| {
        config.allow_any_agent = true;
        config.trigger_rules = Some(std::sync::Arc::new(rules));
        // Gerrit's hook, for a trigger event in the events log.
        config.hooks.gerrit = Some(testfleet_server::triggers::hooks::GerritHook {
            secret: Some(GERRIT_SECRET.into()),
            allowed_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        });
        configure(config);
    })
    .await
}

async fn get_json(h: &TestServer, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", h.url)).await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

/// A page's status and body, as a browser or a live update asks for it.
async fn page(h: &TestServer, path: &str, fragment: bool) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", h.url));
    if fragment {
        request = request.header("x-fragment", "1");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Every page with what must be on it.
fn pages(f: &Filled) -> Vec<(String, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "/".into(),
            s(&[
                "<table id=\"agents\"",
                "data-host=\"bench-1\"",
                "data-host=\"idle-1\"",
                "data-count=\"busy\">1<",
                "data-count=\"idle\">1<",
                "os=linux",
            ]),
        ),
        (
            "/queues".into(),
            s(&[
                "<h2 id=\"q-1\">default</h2>",
                "no agent matches its requirements",
            ]),
        ),
        (
            "/jobs".into(),
            s(&[
                "<table id=\"jobs\"",
                "live run",
                "broken build",
                &format!("data-job=\"{}\"", f.failed_job),
            ]),
        ),
        (
            format!("/jobs/{}", f.failed_job),
            s(&[
                "id=\"job-state\"",
                "data-state=\"failed\"",
                "Retry failed tasks",
                "exit status 1 in stage test",
                &format!("href=\"/tasks/{}\"", f.failed_task),
                "format=junit",
            ]),
        ),
        (
            format!("/jobs/{}", f.live_job),
            s(&["data-state=\"running\"", "Cancel job", "<progress"]),
        ),
        (
            format!("/tasks/{}", f.live_task),
            s(&[
                "<pre id=\"log\"",
                &format!("repro {}", f.live_task),
                "Attempt 1",
                "testfleet --server http://",
            ]),
        ),
        (
            format!("/tasks/{}", f.failed_task),
            s(&["Retry task", "exit status 1 in stage test"]),
        ),
        (
            "/series".into(),
            s(&["<table id=\"series\"", "tst_Bench paint"]),
        ),
        (
            format!("/series/{}", f.series),
            s(&[
                "<div id=\"plot\"",
                &format!("data-changes=\"{STEP_AT}\""),
                "id=\"plot-data\"",
                "uPlot.iife.min.js",
                "<table id=\"changes\"",
            ]),
        ),
        (
            format!(
                "/compare?baseline={}&contender={}",
                f.before_step_job, f.after_step_job
            ),
            s(&["<table id=\"comparison\"", "WalltimeMilliseconds"]),
        ),
        (
            "/events".into(),
            s(&["<table id=\"events\"", "<td>gerrit</td>", "change-merged"]),
        ),
        ("/exporters".into(), s(&["<table id=\"exporters\""])),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_its_key_elements_and_a_json_twin() {
    let h = start(|_| {}).await;
    let f = fill(&h).await;
    for (path, needles) in pages(&f) {
        let (status, body) = page(&h, &path, false).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        assert!(
            body.starts_with("<!doctype html>"),
            "GET {path} is a whole page"
        );
        assert!(
            body.contains("<main id=\"main\">") && body.contains("<nav aria-label"),
            "GET {path}: semantic frame"
        );
        assert!(
            body.contains("name=\"viewport\""),
            "GET {path}: readable on a phone"
        );
        for needle in &needles {
            assert!(
                body.contains(needle.as_str()),
                "GET {path} lacks {needle:?}:\n{body}"
            );
        }
        // The JSON twin the page names answers JSON.
        let twin = body
            .split("rel=\"alternate\" type=\"application/json\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("GET {path} names no JSON twin"))
            .replace("&amp;", "&")
            .replace("&#38;", "&");
        get_json(&h, &twin).await;
        // A live update fetches the content only.
        let (status, fragment) = page(&h, &path, true).await;
        assert_eq!(status, 200, "GET {path} (fragment): {fragment}");
        assert!(
            !fragment.contains("<html"),
            "GET {path}: the fragment is not a whole page"
        );
    }
    let (status, body) = page(&h, "/jobs/999999", false).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such job 999999"), "{body}");
    let (status, body) = page(&h, "/jobs?state=sleeping", false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sleeping"), "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_and_queues_have_json_twins() {
    let h = start(|_| {}).await;
    let f = fill(&h).await;
    let fleet: FleetView = serde_json::from_value(get_json(&h, "/api/v1/fleet").await).unwrap();
    assert_eq!(
        (fleet.summary.busy, fleet.summary.idle, fleet.summary.alive),
        (1, 1, 2)
    );
    let runner = fleet
        .agents
        .iter()
        .find(|a| a.hostname == "bench-1")
        .unwrap();
    assert_eq!(runner.activity, AgentActivity::Busy);
    assert_eq!(
        runner.current.as_ref().map(|c| c.task_id),
        Some(f.live_task)
    );
    assert_eq!(runner.load, Some(1.5));
    assert!(runner.last_seen.is_some());
    let queues: QueuesView = serde_json::from_value(get_json(&h, "/api/v1/queues").await).unwrap();
    let default = queues.queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!((default.depth, default.running), (1, 1));
    assert_eq!(default.pending[0].job_id, f.waiting_job);
    assert!(default.oldest_queued_at.is_some());
    assert!(
        default.pending[0].why.iter().any(|w| w.contains("gpu")),
        "{:?}",
        default.pending[0].why
    );
    // The label filter of the fleet page.
    let (_, body) = page(&h, "/?label=os%3Dwindows", false).await;
    assert!(body.contains("data-host=\"idle-1\"") && !body.contains("data-host=\"bench-1\""));
    let (_, body) = page(&h, "/jobs?q=BROKEN", false).await;
    assert!(
        body.contains("broken build") && !body.contains("live run"),
        "{body}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_the_read_policy_and_assets_are_in_the_binary() {
    let h = start(|c| {
        c.auth.read_open = false;
        c.auth.allowed_cidrs.clear();
    })
    .await;
    for path in [
        "/",
        "/jobs",
        "/queues",
        "/series",
        "/events",
        "/exporters",
        "/compare",
    ] {
        let response = reqwest::get(format!("{}{path}", h.url)).await.unwrap();
        assert_eq!(response.status(), 401, "GET {path} with reads closed");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "GET {path}: the browser asks for a login"
        );
    }
    // The static files hold no data: no login.
    let response = reqwest::get(format!("{}/static/uPlot.iife.min.js", h.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let script = response.text().await.unwrap();
    assert!(script.contains("uPlot"), "the vendored uPlot is served");
    h.stop().await;
}

/// Debian's Chromium and npm `playwright-core` (tests/browser).
const BROWSER: testfleet_testkit::peers::Peer = testfleet_testkit::peers::Peer {
    name: "Chromium with playwright-core",
    install: "`cargo xtask setup` installs Debian's chromium and runs `npm ci` in tests/browser",
};

/// The browser and the driver's modules, or why not.
/// What the browser test misses.
#[derive(Debug, thiserror::Error)]
enum MissingBrowser {
    #[error("no browser at {}", .0.display())]
    Chromium(std::path::PathBuf),
    #[error("no playwright-core in {}/node_modules", .0.display())]
    Playwright(std::path::PathBuf),
}

fn browser_peer() -> Result<(std::path::PathBuf, std::path::PathBuf), MissingBrowser> {
    let chromium = std::env::var_os("TESTFLEET_CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    if !chromium.exists() {
        return Err(MissingBrowser::Chromium(chromium));
    }
    let dir = testfleet_testkit::peers::workspace_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err(MissingBrowser::Playwright(dir));
    }
    Ok((chromium, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_loads_every_page_and_follows_live_updates() {
    use tokio::io::AsyncBufReadExt;

    let Some((chromium, dir)) = testfleet_testkit::peers::require_peer(&BROWSER, browser_peer())
    else {
        return;
    };
    let h = start(|_| {}).await;
    let mut f = fill(&h).await;
    // Each page with the elements the browser must find (CSS selectors).
    let live = |path: &str, selectors: &[&str], live: bool| json!({"path": path, "selectors": selectors, "live": live});
    let plan = json!({
        "pages": [
            live("/", &["#agents tr[data-host=\"bench-1\"]", "dd[data-count=\"alive\"]", "form[role=search]"], true),
            live("/queues", &["#queues article.queue", ".why li"], true),
            live("/jobs", &["#jobs tbody tr[data-job]", "input[name=q]"], true),
            live(&format!("/jobs/{}", f.failed_job), &["#job-state.failed", "#tasks progress", "button[data-post]"], true),
            live(&format!("/tasks/{}", f.failed_task), &["#log", "#repro", ".timeline li", "button[data-post]"], true),
            live("/series", &["#series tbody a[href^=\"/series/\"]"], false),
            live(&format!("/series/{}", f.series), &["#plot canvas", "#changes tbody tr", "select[name=host]", "select[name=metric]"], false),
            live(&format!("/compare?baseline={}&contender={}", f.before_step_job, f.after_step_job), &["#comparison tbody tr", "#verdicts"], false),
            live("/events", &["#events tbody td a[href^=\"/api/v1/events/\"]"], true),
            live("/exporters", &["#exporters"], true),
        ],
        "series": {"path": format!("/series/{}", f.series), "changes": STEP_AT.to_string()},
        "fleet": "/",
        "live": {"job": f.live_job, "task": f.live_task},
        "retry": {"job": f.failed_job},
    });
    let shots = testfleet_testkit::peers::workspace_root().join("target/browser-screenshots");
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("TF_URL", &h.url)
        .env("TF_PLAN", plan.to_string())
        .env("TF_SHOTS", &shots)
        .env("TF_CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node.js 20 is on this machine kind)");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut transcript = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("the driver's output") {
            println!("browser: {line}");
            if line == "READY" {
                // The agent goes on: more output, then the end of the task.
                let more = "building step 2 of 3\nbuilding step 3 of 3\n";
                f.runner
                    .emit(
                        "tf:log",
                        json!({"attemptId": f.live_attempt, "offset": f.live_offset, "data": more}),
                    )
                    .await
                    .unwrap();
                f.live_offset += more.len() as u64;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let work = json!({"attemptId": f.live_attempt});
                report(&f.runner, &work, "passed", json!([])).await;
            }
            transcript.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(180), read)
        .await
        .expect("the browser checks end within 3 minutes");
    let status = child.wait().await.expect("the driver exits");
    println!("screenshots: {}", shots.display());
    let failed: Vec<&String> = transcript
        .iter()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        status.success() && failed.is_empty(),
        "browser checks failed ({status}): {failed:#?}"
    );
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("marks the change point at 20")),
        "the plot check ran: {transcript:#?}"
    );
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("shows the job passed without a reload")),
        "the live check ran: {transcript:#?}"
    );
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("Retry on the failed job queues")),
        "the action check ran: {transcript:#?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_follow_the_read_policy_too() {
    use testfleet_sio::ConnectOptions;
    let h = TestServer::in_tempdir(|c| {
        c.agent_secret = Some("shared".into());
        c.auth.read_open = false;
        c.auth.allowed_cidrs.clear();
    })
    .await;
    let store = testfleet_store::Store::connect(&h.coordinator.config.database_url())
        .await
        .expect("store");
    let (token, hash) = testfleet_server::auth::new_token().expect("token");
    store
        .add_token("viewer", &hash, false, 0)
        .await
        .expect("add");
    let connect = |auth: Value| {
        let url = h.url.clone();
        async move { Client::connect(&url, ConnectOptions::default().with_auth(auth)).await }
    };
    // No credentials, and a wrong token: refused at the handshake.
    for auth in [
        json!({"clientType": "browser"}),
        json!({"clientType": "browser", "token": "tf_wrong"}),
    ] {
        let refused = connect(auth.clone()).await;
        assert!(refused.is_err(), "{auth} was let in");
    }
    // The token the page was given: live updates flow.
    let (client, _events) = connect(json!({"clientType": "browser", "token": token}))
        .await
        .expect("a browser with a token connects");
    drop(client);
    h.stop().await;
}
