//! The OpenAPI document is true: schemathesis (`tests/peers/requirements.txt`)
//! generates requests from `/api/v1/openapi.json`, sends them to a real
//! coordinator and checks every answer against the document (`--checks all`:
//! status codes, content types, schemas, negative data refused, positive data
//! accepted, authentication not ignored). Any failure fails the test.
//!
//! Outside CI a missing `.venv/bin/schemathesis` skips with a notice; under
//! `CI=true` it fails (the test kit's peer rule, `testfleet_testkit::peer_program`).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use testfleet_server::auth::new_token;
use testfleet_server::{Server, ServerConfig, SystemClock};
use testfleet_store::Store;

const AGENT: &str = "schema-agent";
const SECRET: &str = "schema-secret";
/// Fixed, so a failure found once is found again.
const SEED: &str = "20240917";
/// Cases per operation and phase: enough to reach every documented answer,
/// few enough to finish in seconds.
const MAX_EXAMPLES: &str = "25";

/// What a schema cannot say: a job file valid in shape may still be refused
/// (422, with its line and field), and a blob or artifact valid in shape
/// whose content does not hash to its digest is refused (422) or is over a
/// size limit (413); a CSV series (any text) may not be one (400, with its
/// line), and a `since` (RFC 3339 or an age such as `7d`) may be neither
/// (400). For these operations such answers to schema-valid
/// requests are right; every other check stays on.
///
/// The keys of one block are alternatives (a block with `include-path` and
/// `include-method` also selects every other operation of that method), and
/// the first block that selects an operation wins: the blocks that name one
/// operation with `include-name` come first.
const CONFIG: &str = r#"
[[operations]]
include-name = "POST /api/v1/analysis/changes"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "422"]

[[operations]]
include-name = "GET /api/v1/regressions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

[[operations]]
include-name = "GET /api/v1/events"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

[[operations]]
include-name = "GET /api/v1/series/{id}/points"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

[[operations]]
include-path = "/api/v1/jobs"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path = "/api/v1/blobs/{digest}"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422"]

[[operations]]
include-path = "/api/v1/agent/attempts/{id}/artifacts"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422"]
"#;

const JOB: &str =
    "name = \"schema\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

/// A coordinator with a token; writes need it.
async fn start() -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::new(addr, dir.path().to_owned());
    config.agent_secret = Some(SECRET.into());
    // Writes need the token: schemathesis checks that authentication is not ignored.
    config.auth.allowed_cidrs.clear();
    // The token is stored before the coordinator starts, on the store it is
    // then built on (the coordinator keeps its store to itself).
    let store = Store::connect(&config.database_url()).await.unwrap();
    let (token, token_hash) = new_token().unwrap();
    store
        .add_token("schemathesis", &token_hash, false, 0)
        .await
        .unwrap();
    let server = Server::build_with_store(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    (format!("http://{addr}"), token, dir)
}

/// Regression: axum's own rejections (bad JSON, wrong content type, bad
/// query, wrong method) answered plain text or nothing, and an id past i64
/// was refused although the document allowed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_json_error_body_with_a_documented_status() {
    let (base, token, _dir) = start().await;
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let missing = "/api/v1/blobs/missing";
    let json = "application/json";
    // (method, path, path template, body, status)
    let cases = [
        ("POST", missing, missing, Some((json, "{not json")), 400),
        ("POST", missing, missing, Some(("text/plain", "{}")), 415),
        ("POST", missing, missing, Some((json, "{}")), 422),
        (
            "POST",
            missing,
            missing,
            Some((json, r#"{"digests": ["nope"]}"#)),
            400,
        ),
        ("GET", "/api/v1/jobs?limit=abc", "/api/v1/jobs", None, 400),
        ("GET", "/api/v1/jobs?limit=5000", "/api/v1/jobs", None, 400),
        (
            "GET",
            "/api/v1/jobs/9223372036854775808",
            "/api/v1/jobs/{id}",
            None,
            400,
        ),
        (
            "GET",
            "/api/v1/jobs/9223372036854775807",
            "/api/v1/jobs/{id}",
            None,
            404,
        ),
        (
            "GET",
            "/api/v1/tasks/1/log?offset=-1",
            "/api/v1/tasks/{id}/log",
            None,
            400,
        ),
        ("DELETE", "/api/v1/jobs/1", "/api/v1/jobs/{id}", None, 405),
    ];
    for (method, path, template, body, status) in cases {
        let mut request = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some((content_type, text)) = body {
            request = request.header("content-type", content_type).body(text);
        }
        let response = request.send().await.unwrap();
        let what = format!("{method} {path}");
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(response.headers()["content-type"], json, "{what}");
        if status == 405 {
            assert!(response.headers().contains_key("allow"), "{what}");
        }
        let body: serde_json::Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(|c: char| c.is_lowercase() || c == '`'),
            "{what}: {body}"
        );
        if status != 405 {
            let documented =
                &doc["paths"][template][method.to_lowercase()]["responses"][status.to_string()];
            assert!(
                documented["content"][json].is_object(),
                "{what}: {status} is not documented as JSON"
            );
        }
    }
}

/// schemathesis, from tests/peers/requirements.txt in `.venv`.
const SCHEMATHESIS: testfleet_testkit::Peer = testfleet_testkit::Peer {
    name: "schemathesis",
    install: "`cargo xtask setup` installs tests/peers/requirements.txt into .venv (or set TESTFLEET_SCHEMATHESIS)",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_mismatch_between_the_document_and_the_server() {
    let Some(schemathesis) =
        testfleet_testkit::peer_program(&SCHEMATHESIS, "TESTFLEET_SCHEMATHESIS", "schemathesis")
    else {
        return;
    };
    let (base, token, _dir) = start().await;

    // A job to find: some generated ids name something that exists.
    let http = reqwest::Client::new();
    let submitted = http
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&token)
        .header("content-type", "application/toml")
        .body(JOB)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 201, "{:?}", submitted.text().await);

    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(&config_file, CONFIG).unwrap();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        // One worker: with two, hypothesis's lambda descriptions call
        // `ast.parse` from two threads, which CPython 3.11 can fail with
        // "AST constructor recursion depth mismatch" (a runtime error of the
        // tool, not a finding).
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .arg("--no-color")
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("x-testfleet-host: {AGENT}")])
        .args(["-H", &format!("x-testfleet-secret: {SECRET}")]);
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("schemathesis did not finish within 5 minutes")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found mismatches between /api/v1/openapi.json and the server \
         (exit {:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );
    // Shown on success too: the number of generated cases is worth seeing.
    println!("{stdout}\n{stderr}");
}
