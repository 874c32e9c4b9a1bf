//! `testfleet store copy` end to end: a coordinator on SQLite runs jobs (logs,
//! TAP and benchmark results, a retried failure, artifacts, a cancelled job,
//! an InfluxDB exporter's cursor) and gets a user, a token and an agent
//! secret through the admin commands; it is stopped, the real binary copies
//! its store into a fresh PostgreSQL database, and a coordinator on the copy
//! must answer every REST and ResultsDB read exactly as the original did.
//! The copy then takes new jobs (ids continue after the copied ones) and is
//! copied back into SQLite, which must answer as the PostgreSQL copy did.
//! Also: a target that holds rows is refused (exit code 2) and left as it
//! was, and a bad URL is refused with the accepted forms.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432`; when it is unreachable
//! the test kit's peer rule applies (skipped outside CI, a failure under it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testfleet_client::{ApiClient, Credentials};
use testfleet_server::exporters::{InfluxApi, InfluxConfig};
use testfleet_store::{DatabaseUrl, Store};
use testfleet_testkit::agent::TestAgent;
use testfleet_testkit::postgres::ScratchPg;
use testfleet_testkit::server::TestServer;
use testfleet_testkit::wait::wait_job;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "store-copy-secret";
const PASSWORD: &str = "correct horse battery";

/// A coordinator in this process on `database`, writes needing a token or a
/// user also from loopback, exporting to the InfluxDB stub at `influx`.
async fn start_server(data_dir: &Path, database: &DatabaseUrl, influx: &str) -> TestServer {
    TestServer::start(data_dir, |config| {
        config.database = Some(database.clone());
        config.agent_secret = Some(SECRET.into());
        config.lease_timeout = Duration::from_secs(3);
        // Writes need a token or a user, also from loopback.
        config.auth.allowed_cidrs.clear();
        config.exporters.influxdb = Some(InfluxConfig {
            url: influx.to_owned(),
            api: InfluxApi::V1 {
                database: "bench".into(),
                user: None,
                password: None,
            },
            batch_points: 5000,
        });
    })
    .await
}

/// An agent in this process in the pool `copy`.
fn start_agent(url: &str, name: &str, work_dir: &Path) -> TestAgent {
    TestAgent::start(url, name, work_dir, |config| {
        config.secret = Some(SECRET.into());
        config.kill_grace = Duration::from_millis(300);
        config.labels.insert("pool".into(), "copy".into());
    })
}

/// An InfluxDB that accepts every write; counts the requests.
async fn influx_stub() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let writes = Arc::new(AtomicUsize::new(0));
    let counter = writes.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // The head, then as much body as Content-Length says.
                let body_len = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break end + 4 + len;
                    }
                };
                while buf.len() < body_len {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, writes)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One GET over plain HTTP/1.1: (status, body).
async fn http_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap();
    let end = find(&raw, b"\r\n\r\n").unwrap_or_else(|| panic!("GET {path}: no HTTP head"));
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(line_end) = find(rest, b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            out.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// A path segment with everything but unreserved characters escaped.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every read answer of a coordinator, by request path.
struct Answers {
    base: String,
    out: BTreeMap<String, Value>,
}

impl Answers {
    /// GETs `path` and keeps the answer, with the coordinator's own address
    /// (in ResultsDB links) replaced so two coordinators compare equal.
    async fn get(&mut self, path: &str) -> Value {
        let (status, body) = http_get(&self.base, path).await;
        let addr = self.base.trim_start_matches("http://");
        let text = String::from_utf8_lossy(&body)
            .replace(&self.base, "http://COORDINATOR")
            .replace(addr, "COORDINATOR");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.out
            .insert(path.to_owned(), json!({"status": status, "body": body}));
        body
    }
}

fn ids<'v>(list: &'v Value, field: &str) -> impl Iterator<Item = &'v Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(move |v| v.get(field))
}

/// Everything the REST API and the ResultsDB API answer about the store.
/// Live state (whether an agent is connected now, its status and running
/// attempt) is not in the store, so it is left out of the agents list.
async fn answers(base: &str) -> BTreeMap<String, Value> {
    let mut a = Answers {
        base: base.to_owned(),
        out: BTreeMap::new(),
    };
    let jobs = a.get("/api/v1/jobs?limit=1000").await;
    for job in ids(&jobs, "id").filter_map(Value::as_i64) {
        let view = a.get(&format!("/api/v1/jobs/{job}")).await;
        a.get(&format!("/api/v1/jobs/{job}/report?format=junit"))
            .await;
        a.get(&format!("/api/v1/jobs/{job}/report?format=tap"))
            .await;
        let artifacts = a.get(&format!("/api/v1/jobs/{job}/artifacts")).await;
        for artifact in ids(&artifacts, "id").filter_map(Value::as_i64) {
            a.get(&format!("/api/v1/artifacts/{artifact}")).await;
        }
        for task in ids(&view["tasks"], "id").filter_map(Value::as_i64) {
            let detail = a.get(&format!("/api/v1/tasks/{task}")).await;
            a.get(&format!("/api/v1/tasks/{task}/log")).await;
            a.get(&format!("/api/v1/tasks/{task}/why")).await;
            for attempt in ids(&detail["attempts_list"], "id").filter_map(Value::as_i64) {
                a.get(&format!("/api/v1/tasks/{task}/log?attempt={attempt}"))
                    .await;
                a.get(&format!("/api/v1/attempts/{attempt}/results")).await;
                a.get(&format!("/api/v1/attempts/{attempt}/summary")).await;
            }
        }
    }
    a.get("/api/v1/jobs?state=failed").await;
    a.get("/api/v1/stats").await;
    a.get("/api/v1/exporters").await;
    a.get("/api/v1/agents").await;
    if let Some(Value::Array(agents)) = a.out.get_mut("/api/v1/agents").map(|v| &mut v["body"]) {
        for agent in agents.iter_mut().filter_map(Value::as_object_mut) {
            for live in ["online", "status", "current_attempt"] {
                agent.remove(live);
            }
        }
    }

    a.get("/api/v2.0/healthcheck").await;
    let results = a.get("/api/v2.0/results?limit=1000").await;
    for id in ids(&results["data"], "id").filter_map(Value::as_i64) {
        a.get(&format!("/api/v2.0/results/{id}")).await;
    }
    a.get("/api/v2.0/results?limit=2&page=1").await;
    a.get("/api/v2.0/results?outcome=FAILED&limit=1000").await;
    a.get("/api/v2.0/results/latest").await;
    let testcases = a.get("/api/v2.0/testcases?limit=1000").await;
    for name in ids(&testcases["data"], "name").filter_map(Value::as_str) {
        a.get(&format!("/api/v2.0/testcases/{}", escape(name)))
            .await;
        a.get(&format!("/api/v2.0/testcases/{}/results", escape(name)))
            .await;
    }
    let groups = a.get("/api/v2.0/groups?limit=1000").await;
    for uuid in ids(&groups["data"], "uuid").filter_map(Value::as_str) {
        a.get(&format!("/api/v2.0/groups/{uuid}")).await;
        a.get(&format!("/api/v2.0/groups/{uuid}/results")).await;
    }
    a.out
}

/// The reads the admin commands show, straight from a store.
async fn admin_reads(url: &DatabaseUrl) -> Value {
    let store = Store::connect(url).await.unwrap();
    let out = json!({
        "users": serde_json::to_value(store.users().await.unwrap()).unwrap(),
        "tokens": serde_json::to_value(store.tokens().await.unwrap()).unwrap(),
        "audit": serde_json::to_value(store.audit_log(1000).await.unwrap()).unwrap(),
        "work_log": store.work_log(10_000).await.unwrap(),
        "agent_secret": store
            .agent_secret("other-host")
            .await
            .unwrap()
            .map(|s| (s.secret_hash, s.revoked)),
    });
    store.close().await;
    out
}

/// Asserts that two sets of answers are equal, naming the first differing path.
fn assert_same(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>, what: &str) {
    let paths: Vec<_> = before.keys().collect();
    assert_eq!(
        paths,
        after.keys().collect::<Vec<_>>(),
        "{what}: the same reads"
    );
    for (path, b) in before {
        assert_eq!(b, &after[path], "{what}: GET {path} answers differently");
    }
}

fn bin(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.env_remove("TESTFLEET_SERVER")
        .env_remove("TESTFLEET_DATABASE")
        .env_remove("TESTFLEET_PASSWORD")
        .env_remove("TESTFLEET_AGENT_SECRET")
        .env("TESTFLEET_CONFIG", config)
        .env("TESTFLEET_LOG", "warn");
    cmd
}

/// Runs the binary, printing what it said.
async fn run(mut cmd: Command) -> Output {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run testfleet");
    println!(
        "{}{}(exit {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

fn url_arg(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres(url) => url.clone(),
    }
}

/// `testfleet store copy --from --to --json`, which must succeed; the
/// per-table row counts it printed.
async fn store_copy(config: &Path, from: &DatabaseUrl, to: &DatabaseUrl) -> BTreeMap<String, u64> {
    let mut cmd = bin(config);
    cmd.args([
        "store",
        "copy",
        "--from",
        &url_arg(from),
        "--to",
        &url_arg(to),
        "--json",
    ]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "store copy {from} → {to}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jobs: "),
        "a line per table on stderr: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let counts: BTreeMap<String, u64> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(report["rows"].as_u64(), Some(counts.values().sum()));
    counts
}

/// Waits until every exporter has delivered everything (the InfluxDB stub
/// acknowledges every write).
async fn wait_exported(api: &ApiClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = api.exporters().await.unwrap();
        let exporters = &status.exporters;
        if !exporters.is_empty() && exporters.iter().all(|e| e.pending == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "exporters did not catch up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_agents_offline(api: &ApiClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.agents().await.unwrap().iter().any(|a| a.online) {
        assert!(Instant::now() < deadline, "the agent did not disconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first job: a task with TAP and benchmark results and artifacts, and
/// a task whose TAP has a failure, retried once (two failed attempts that
/// keep their output).
const JOB_A: &str = r#"
name = "copy-a"
queue = "nightly"
priority = 3
[integration]
id = "4711"
timestamp = "2024-05-01T12:00:00Z"
branch = "dev"
sha = "0123456789abcdef0123456789abcdef01234567"
[[task]]
name = "tap"
requires = { pool = "copy" }
steps = [
  { stage = "build", run = "echo building ünïcode; echo warn >&2", timeout = "30s" },
  { stage = "test", run = '''mkdir -p results && printf 'TAP version 13\n1..3\nok 1 - parses\nok 2 - renders # SKIP no display\nok 3 - ünïcode name\n' > results/r.tap && printf '{"context": {"date": "2024-05-01T00:00:00+00:00", "num_cpus": 2}, "benchmarks": [{"name": "BM_Copy/64", "run_name": "BM_Copy/64", "run_type": "iteration", "repetitions": 1, "repetition_index": 0, "threads": 1, "iterations": 300, "real_time": 12.25, "cpu_time": 12.0, "time_unit": "ns"}]}' > results/bench.json''', timeout = "30s" },
]
results = [{ path = "results/*.tap", format = "tap" }, { path = "results/bench.json" }]
artifacts = { always = ["results/*"] }
[[task]]
name = "broken"
requires = { pool = "copy" }
steps = [
  { stage = "test", run = '''echo "attempt $TESTFLEET_ATTEMPT_ID"; mkdir -p results && printf 'TAP version 13\n1..2\nok 1 - fine\nnot ok 2 - broken\n' > results/b.tap''', timeout = "30s" },
]
results = [{ path = "results/b.tap", format = "tap" }]
retries = { tests = 1, infra = 0 }
"#;

/// A second job, submitted by the user (HTTP Basic).
const JOB_B: &str = r#"
name = "copy-b"
[[task]]
name = "one"
requires = { pool = "copy" }
steps = [{ stage = "test", run = '''mkdir -p out && printf 'TAP version 13\n1..1\nok 1 - one\n' > out/one.tap''', timeout = "30s" }]
results = [{ path = "out/one.tap", format = "tap" }]
"#;

/// Never runs (no agent has the label): cancelled while queued.
const JOB_C: &str = r#"
name = "copy-c"
[[task]]
name = "waits"
requires = { pool = "nowhere" }
steps = [{ stage = "test", run = "true" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_copied_to_postgres_answers_as_the_original() {
    let Some(pg) = ScratchPg::create_named("tf_store_copy").await else {
        return;
    };
    // In a task of its own, so the database is dropped when the test fails.
    let outcome = tokio::spawn(scenario(pg.url())).await;
    pg.remove().await.expect("drop the scratch database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(pg: DatabaseUrl) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = root.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let data_dir = root.join("data");
    let sqlite = DatabaseUrl::Sqlite(root.join("source.db"));
    let (influx, writes) = influx_stub().await;

    // ---- the original coordinator, on SQLite --------------------------------
    let server = start_server(&data_dir, &sqlite, &influx).await;
    let mut cmd = bin(&config);
    cmd.args([
        "users",
        "add",
        "alice",
        "--admin",
        "--database",
        &url_arg(&sqlite),
    ])
    .env("TESTFLEET_PASSWORD", PASSWORD);
    assert!(run(cmd).await.status.success(), "users add");
    let mut cmd = bin(&config);
    cmd.args([
        "tokens",
        "create",
        "ci-bot",
        "--database",
        &url_arg(&sqlite),
    ]);
    let out = run(cmd).await;
    assert!(out.status.success(), "tokens create");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut cmd = bin(&config);
    cmd.args([
        "agents",
        "secret",
        "set",
        "other-host",
        "--database",
        &url_arg(&sqlite),
    ])
    .env("TESTFLEET_AGENT_SECRET", "other-host-secret");
    assert!(run(cmd).await.status.success(), "agents secret set");

    let with_token =
        ApiClient::new(&server.url).with_credentials(Credentials::Token(token.clone()));
    let as_alice = ApiClient::new(&server.url).with_credentials(Credentials::Basic {
        user: "alice".into(),
        password: PASSWORD.into(),
    });
    let agent = start_agent(&server.url, "agent-a", root);
    let a = with_token
        .submit(JOB_A)
        .await
        .expect("submit with the token");
    let b = as_alice.submit(JOB_B).await.expect("submit as alice");
    let c = with_token.submit(JOB_C).await.unwrap();
    with_token
        .cancel(c.id)
        .await
        .expect("cancel the waiting job");
    let a = wait_job(&with_token, a.id, Duration::from_secs(60)).await;
    let b = wait_job(&with_token, b.id, Duration::from_secs(60)).await;
    assert_eq!(a.state.to_string(), "failed", "{a:#?}");
    assert_eq!(b.state.to_string(), "passed", "{b:#?}");
    wait_exported(&with_token).await;
    assert!(
        writes.load(Ordering::SeqCst) > 0,
        "the benchmark went to InfluxDB"
    );
    agent.stop().await;
    wait_agents_offline(&with_token).await;
    let original = answers(&server.url).await;
    server.stop().await;

    // Sanity: the answers hold what the copy must keep.
    let task_views: Vec<&Value> = original
        .iter()
        .filter(|(p, _)| p.starts_with("/api/v1/tasks/") && p.matches('/').count() == 4)
        .map(|(_, v)| &v["body"])
        .collect();
    assert_eq!(task_views.len(), 4, "four tasks");
    assert!(
        task_views
            .iter()
            .any(|t| t["attempts_list"].as_array().is_some_and(|l| l.len() == 2)),
        "the broken task ran twice: {task_views:#?}"
    );
    let rdb = &original["/api/v2.0/results?limit=1000"]["body"]["data"];
    assert!(
        rdb.as_array().is_some_and(|l| l.len() >= 6),
        "ResultsDB results: {rdb:#}"
    );
    assert!(
        original.keys().any(|p| p.starts_with("/api/v1/artifacts/")),
        "artifacts were kept"
    );

    // ---- copy SQLite → PostgreSQL with the binary ---------------------------
    let counts = store_copy(&config, &sqlite, &pg).await;
    for (table, at_least) in [
        ("jobs", 3),
        ("tasks", 4),
        ("attempts", 4),
        ("log_chunks", 1),
        ("agents", 1),
        ("export_events", 1),
        ("export_sinks", 2),
        ("rdb_results", 6),
        ("rdb_result_data", 1),
        ("users", 1),
        ("api_tokens", 1),
        ("agent_secrets", 1),
        ("audit_log", 3),
        ("artifacts", 2),
    ] {
        assert!(
            counts.get(table).copied().unwrap_or(0) >= at_least,
            "{table}: {counts:?}"
        );
    }
    assert_eq!(
        admin_reads(&sqlite).await,
        admin_reads(&pg).await,
        "users, tokens, audit log, work log and agent secrets are copied"
    );

    // ---- a coordinator on the copy answers as the original ------------------
    let server = start_server(&data_dir, &pg, &influx).await;
    let copied = answers(&server.url).await;
    println!("comparing {} reads", original.len());
    assert_same(&original, &copied, "SQLite → PostgreSQL");

    // The copied token and password work; new rows get ids past the copied ones.
    let with_token =
        ApiClient::new(&server.url).with_credentials(Credentials::Token(token.clone()));
    let as_alice = ApiClient::new(&server.url).with_credentials(Credentials::Basic {
        user: "alice".into(),
        password: PASSWORD.into(),
    });
    let wrong = ApiClient::new(&server.url).with_credentials(Credentials::Basic {
        user: "alice".into(),
        password: "not it".into(),
    });
    assert!(
        wrong.submit(JOB_B).await.is_err(),
        "a wrong password is refused"
    );
    let max_attempt = task_views
        .iter()
        .flat_map(|t| t["attempts_list"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["id"].as_i64())
        .max()
        .unwrap();
    let agent = start_agent(&server.url, "agent-a", root);
    let d = as_alice
        .submit(JOB_B)
        .await
        .expect("submit as alice on the copy");
    assert_eq!(d.id, c.id + 1, "job ids continue after the copied ones");
    let d = wait_job(&with_token, d.id, Duration::from_secs(60)).await;
    assert_eq!(d.state.to_string(), "passed", "{d:#?}");
    let detail = with_token.task(d.tasks[0].id).await.unwrap();
    assert!(
        detail.attempts_list[0].id > max_attempt,
        "attempt ids continue after the copied ones: {detail:#?}"
    );
    wait_exported(&with_token).await;
    agent.stop().await;
    wait_agents_offline(&with_token).await;
    let grown = answers(&server.url).await;
    assert!(grown.len() > copied.len());
    server.stop().await;

    // ---- a target with rows is refused and left alone -----------------------
    let before = admin_reads(&pg).await;
    let mut cmd = bin(&config);
    cmd.args([
        "store",
        "copy",
        "--from",
        &url_arg(&sqlite),
        "--to",
        &url_arg(&pg),
    ]);
    let out = run(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a non-empty target is a usage error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not empty: table `jobs` has rows"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        admin_reads(&pg).await,
        before,
        "the refused copy changed nothing"
    );

    // ---- bad URLs and a missing source --------------------------------------
    for (args, expected) in [
        (
            vec![
                "--from",
                "mysql://db/testfleet",
                "--to",
                "sqlite:///tmp/x.db",
            ],
            "--from: unsupported database URL `mysql`: use sqlite://PATH or postgres://",
        ),
        (
            vec!["--from", &url_arg(&sqlite), "--to", "sqlite://"],
            "--to: sqlite:// needs a file path",
        ),
    ] {
        let mut cmd = bin(&config);
        cmd.args(["store", "copy"]).args(&args);
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?} should say {expected:?}"
        );
    }
    let missing: PathBuf = root.join("no-such.db");
    let mut cmd = bin(&config);
    cmd.args(["store", "copy", "--from"])
        .arg(format!("sqlite://{}", missing.display()))
        .args(["--to"])
        .arg(format!("sqlite://{}", root.join("out.db").display()));
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "a missing source is named"
    );
    assert!(!missing.exists(), "a missing source is not created");
    // Without --from, the coordinator's store in --data-dir is copied.
    let mut cmd = bin(&config);
    cmd.args(["store", "copy", "--data-dir"])
        .arg(root.join("empty-data"))
        .args(["--to"])
        .arg(format!("sqlite://{}", root.join("out.db").display()));
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let expected = format!(
        "the source sqlite://{}",
        root.join("empty-data/testfleet.db").display()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "the data directory's store is the source"
    );

    // ---- and back: PostgreSQL → SQLite ---------------------------------------
    let back = DatabaseUrl::Sqlite(root.join("back.db"));
    let counts_back = store_copy(&config, &pg, &back).await;
    assert!(counts_back["jobs"] == counts["jobs"] + 1, "{counts_back:?}");
    let server = start_server(&data_dir, &back, &influx).await;
    let returned = answers(&server.url).await;
    server.stop().await;
    assert_same(&grown, &returned, "PostgreSQL → SQLite");
}
