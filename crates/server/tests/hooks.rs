//! Webhooks end to end: bodies as GitHub, GitLab and Gerrit document them
//! (`tests/hooks/*.json`), signed by a separate implementation (Python's
//! `hmac`, stdlib only), posted to a running coordinator with trigger rules.
//! Wrong signatures are refused with nothing stored, a delivery seen before
//! queues nothing, an event no rule wants is kept with the reason, and the
//! latency from a received event to its committed job is measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testfleet_client::EventQuery;
use testfleet_server::ServerConfig;
use testfleet_server::triggers::hooks::{GerritHook, GithubHook, GitlabHook};
use testfleet_server::triggers::load_rules;
use testfleet_testkit::server::TestServer;
use testfleet_wire::events::{EventOutcome, HookAnswer};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITLAB_TOKEN: &str = "gl-plain-token";
/// A GitLab signing token as GitLab shows it: `whsec_` + base64 of 32 bytes.
const GITLAB_SIGNING: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const GERRIT_SECRET: &str = "gerrit-url-secret";

const RULES: &str = r#"
[[rule]]
name = "github-pr"
[rule.when]
source = "github"
kind = "pull_request"
fields = { action = { "$in" = ["opened", "synchronize"] } }
[[rule.do]]
template = "job.toml"
vars = { jobname = "pr-{{body.number}}", rev = "{{body.pull_request.head.sha}}" }

[[rule]]
name = "gitlab-mr"
[rule.when]
source = "gitlab"
kind = "merge_request"
[[rule.do]]
template = "job.toml"
vars = { jobname = "mr-{{body.object_attributes.iid}}", rev = "{{body.object_attributes.last_commit.id}}" }

[[rule]]
name = "gitlab-pipeline"
[rule.when]
source = "gitlab"
kind = "pipeline"
fields = { "object_attributes.status" = "success" }
[[rule.do]]
template = "job.toml"
vars = { jobname = "pipeline-{{body.object_attributes.id}}", rev = "{{body.object_attributes.sha}}" }

[[rule]]
name = "gerrit-merged"
[rule.when]
source = "gerrit"
kind = "change-merged"
fields = { "change.branch" = "dev" }
[[rule.do]]
template = "job.toml"
vars = { jobname = "merged-{{body.change.number}}", rev = "{{body.newRev}}" }
"#;

const TEMPLATE: &str = r#"name = "{{jobname}}"
[[task]]
name = "check"
steps = [{ stage = "test", run = "echo {{rev}}" }]
"#;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs Python (stdlib only) with `args`; its standard output, trimmed.
fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Writes `body` to a file Python reads, so the bytes signed are the bytes sent.
fn body_file(dir: &Path, body: &[u8]) -> PathBuf {
    let path = dir.join(format!("body-{}.json", rand_suffix()));
    std::fs::write(&path, body).unwrap();
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// GitHub's `X-Hub-Signature-256`, computed by Python's `hmac`.
fn github_signature(dir: &Path, secret: &str, body: &[u8]) -> String {
    let file = body_file(dir, body);
    python(
        "import hmac, hashlib, sys\n\
         body = open(sys.argv[2], 'rb').read()\n\
         print('sha256=' + hmac.new(sys.argv[1].encode(), body, hashlib.sha256).hexdigest())",
        &[secret, file.to_str().unwrap()],
    )
}

/// GitLab's `webhook-signature` (Standard Webhooks), computed by Python.
fn gitlab_signature(dir: &Path, signing: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let file = body_file(dir, body);
    python(
        "import base64, hmac, hashlib, sys\n\
         key = base64.b64decode(sys.argv[1].removeprefix('whsec_'))\n\
         body = open(sys.argv[4], 'rb').read()\n\
         msg = sys.argv[2].encode() + b'.' + sys.argv[3].encode() + b'.' + body\n\
         print('v1,' + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode())",
        &[signing, id, ts, file.to_str().unwrap()],
    )
}

fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

struct Fleet {
    server: TestServer,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A coordinator with every hook configured; with the rules above
    /// unless `rules` is false.
    async fn start(rules: bool, configure: impl FnOnce(&mut ServerConfig)) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let rules_file = dir.path().join("rules.toml");
        std::fs::write(&rules_file, RULES).unwrap();
        std::fs::write(dir.path().join("job.toml"), TEMPLATE).unwrap();
        let set = load_rules(&rules_file).expect("the test's rules load");
        let server = TestServer::in_tempdir(|c| {
            c.allow_any_agent = true;
            c.hooks.github = Some(GithubHook {
                secret: GITHUB_SECRET.into(),
            });
            c.hooks.gitlab = Some(GitlabHook {
                token: Some(GITLAB_TOKEN.into()),
                signing_key: Some(GitlabHook::signing_key(GITLAB_SIGNING).unwrap()),
            });
            c.hooks.gerrit = Some(GerritHook {
                secret: Some(GERRIT_SECRET.into()),
                allowed_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            });
            c.trigger_rules = rules.then(|| Arc::new(set));
            configure(c);
        })
        .await;
        Fleet {
            server,
            http: reqwest::Client::new(),
            dir,
        }
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.server.url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    async fn github(&self, event: &str, delivery: &str, body: Vec<u8>) -> (StatusCode, String) {
        let sig = github_signature(self.dir.path(), GITHUB_SECRET, &body);
        self.post(
            "/api/v1/hooks/github",
            &[
                ("x-github-event", event.into()),
                ("x-github-delivery", delivery.into()),
                ("x-hub-signature-256", sig),
            ],
            body,
        )
        .await
    }

    async fn events(&self) -> Vec<testfleet_wire::events::EventSummary> {
        self.server
            .api
            .events(&EventQuery::default())
            .await
            .unwrap()
            .events
    }

    async fn job_count(&self) -> usize {
        self.server.api.jobs(1000, None).await.unwrap().len()
    }
}

/// A refused request: path, headers, body and the words the refusal must say.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, &'a str);

fn answer(status: StatusCode, text: &str) -> HookAnswer {
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn wrong_or_missing_signatures_are_refused_and_nothing_is_stored() {
    let f = Fleet::start(true, |_| {}).await;
    let pr = fixture("github_pull_request.json");
    let mr = fixture("gitlab_merge_request.json");
    let merged = fixture("gerrit_change_merged.json");
    let dir = f.dir.path();

    let wrong_secret = github_signature(dir, "not the secret", &pr);
    let mut tampered = pr.clone();
    tampered.extend_from_slice(b" ");
    let right_for_other_body = github_signature(dir, GITHUB_SECRET, &tampered);
    let ts = unix_now();
    let wrong_hmac = gitlab_signature(
        dir,
        "whsec_d3JvbmcgdG9rZW4gd3Jvbmcgdm9rZW4gd3JvbmcgdG9rZW4=",
        "msg_1",
        &ts,
        &mr,
    );
    let right_but_stale = gitlab_signature(dir, GITLAB_SIGNING, "msg_1", "1000000000", &mr);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/hooks/github",
            vec![("x-github-event", "pull_request".into())],
            pr.clone(),
            "missing X-Hub-Signature-256 header",
        ),
        (
            "/api/v1/hooks/github",
            vec![
                ("x-github-event", "pull_request".into()),
                ("x-hub-signature-256", wrong_secret),
            ],
            pr.clone(),
            "does not match",
        ),
        (
            "/api/v1/hooks/github",
            vec![
                ("x-github-event", "pull_request".into()),
                ("x-hub-signature-256", right_for_other_body),
            ],
            pr.clone(),
            "does not match",
        ),
        (
            "/api/v1/hooks/gitlab",
            vec![("x-gitlab-token", "guess".into())],
            mr.clone(),
            "X-Gitlab-Token does not match",
        ),
        (
            "/api/v1/hooks/gitlab",
            vec![],
            mr.clone(),
            "missing X-Gitlab-Token header",
        ),
        (
            "/api/v1/hooks/gitlab",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                ("webhook-signature", wrong_hmac),
                // A right plain token does not rescue a wrong signature.
                ("x-gitlab-token", GITLAB_TOKEN.into()),
            ],
            mr.clone(),
            "webhook-signature does not match",
        ),
        (
            "/api/v1/hooks/gitlab",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", "1000000000".into()),
                ("webhook-signature", right_but_stale),
            ],
            mr.clone(),
            "webhook-timestamp is",
        ),
        (
            "/api/v1/hooks/gerrit?secret=nope",
            vec![],
            merged.clone(),
            "the secret does not match",
        ),
        (
            "/api/v1/hooks/gerrit",
            vec![],
            merged.clone(),
            "missing `secret` query parameter",
        ),
    ];
    for (path, headers, body, why) in cases {
        let (status, text) = f.post(path, &headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {text}");
        assert!(text.contains(why), "{path}: `{why}` not in {text}");
        assert!(!text.contains(GITHUB_SECRET) && !text.contains(GITLAB_TOKEN));
    }
    assert!(f.events().await.is_empty(), "nothing stored");
    assert_eq!(f.job_count().await, 0, "no job");

    // Gerrit from outside the allowed networks, with the right secret.
    let outside = Fleet::start(true, |c| {
        if let Some(g) = c.hooks.gerrit.as_mut() {
            g.allowed_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        }
    })
    .await;
    let (status, text) = outside
        .post(
            &format!("/api/v1/hooks/gerrit?secret={GERRIT_SECRET}"),
            &[],
            merged,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("127.0.0.1 is not allowed"), "{text}");
    assert!(outside.events().await.is_empty());
}

#[tokio::test]
async fn github_pull_request_queues_a_job_once_and_an_unwanted_push_is_kept_with_its_reason() {
    let f = Fleet::start(true, |_| {}).await;
    let pr = fixture("github_pull_request.json");
    let (status, text) = f.github("pull_request", "d-pr-1", pr.clone()).await;
    let first = answer(status, &text);
    assert_eq!(first.outcome, EventOutcome::Queued, "{text}");
    assert_eq!(first.jobs.len(), 1);
    let job = f.server.api.job(first.jobs[0]).await.unwrap();
    assert_eq!(job.name, "pr-2");
    assert_eq!(job.tasks.len(), 1);

    // GitHub redelivers the same delivery: nothing queued again.
    let (status, text) = f.github("pull_request", "d-pr-1", pr.clone()).await;
    let again = answer(status, &text);
    assert_eq!(again.outcome, EventOutcome::Duplicate);
    assert_eq!(again.jobs, first.jobs);
    assert_eq!(
        again.reason.as_deref(),
        Some(format!("duplicate of event {}", first.event_id).as_str())
    );
    assert_eq!(f.job_count().await, 1, "one job for one delivery");

    // An explicit Idempotency-Key wins over the delivery id.
    let sig = github_signature(f.dir.path(), GITHUB_SECRET, &pr);
    for delivery in ["d-pr-2", "d-pr-3"] {
        let (status, text) = f
            .post(
                "/api/v1/hooks/github",
                &[
                    ("x-github-event", "pull_request".into()),
                    ("x-github-delivery", delivery.into()),
                    ("idempotency-key", "same-thing".into()),
                    ("x-hub-signature-256", sig.clone()),
                ],
                pr.clone(),
            )
            .await;
        answer(status, &text);
    }
    assert_eq!(f.job_count().await, 2);

    // A push no rule wants: accepted, kept, with the reason.
    let (status, text) = f
        .github("push", "d-push-1", fixture("github_push.json"))
        .await;
    let push = answer(status, &text);
    assert_eq!(push.outcome, EventOutcome::Ignored);
    assert!(push.jobs.is_empty());
    let reason = push.reason.unwrap_or_default();
    assert!(
        reason.starts_with("no rule matches github event `push`"),
        "{reason}"
    );
    assert!(reason.contains("rule `github-pr`"), "{reason}");
    assert_eq!(f.job_count().await, 2);

    // The events log: newest first, each with what became of it.
    let events = f.events().await;
    let outcomes: Vec<EventOutcome> = events.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            EventOutcome::Ignored,
            EventOutcome::Duplicate,
            EventOutcome::Queued,
            EventOutcome::Duplicate,
            EventOutcome::Queued,
        ]
    );
    assert_eq!(events[4].matched_rules, vec!["github-pr"]);
    assert_eq!(events[4].delivery_id.as_deref(), Some("d-pr-1"));
    assert_eq!(events[4].topic, "github.pull_request");
    let detail = f.server.api.event(events[4].id).await.unwrap();
    assert_eq!(
        detail.body.as_bytes(),
        pr.as_slice(),
        "the body as received"
    );
    assert_eq!(detail.dedup_key.as_deref(), Some("github:d-pr-1"));
    let ignored = f
        .server
        .api
        .events(&EventQuery {
            outcome: Some("ignored".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(ignored.len(), 1);

    // GitHub's ping is answered and not recorded.
    let (status, text) = f
        .github("ping", "d-ping", b"{\"zen\":\"x\"}".to_vec())
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(f.events().await.len(), 5);
}

#[tokio::test]
async fn gitlab_merge_request_signed_and_pipeline_by_token() {
    let f = Fleet::start(true, |_| {}).await;
    let mr = fixture("gitlab_merge_request.json");
    let ts = unix_now();
    let sig = gitlab_signature(f.dir.path(), GITLAB_SIGNING, "msg_2", &ts, &mr);
    let headers = vec![
        ("x-gitlab-event", "Merge Request Hook".to_owned()),
        (
            "x-gitlab-event-uuid",
            "13792a34-cac6-4fda-95a8-c58e00a3954e".into(),
        ),
        (
            "idempotency-key",
            "f5c3b9a2-0000-4d1e-9d2b-3a5c7e9f1b2d".into(),
        ),
        ("webhook-id", "msg_2".into()),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ];
    let (status, text) = f.post("/api/v1/hooks/gitlab", &headers, mr.clone()).await;
    let first = answer(status, &text);
    assert_eq!(first.outcome, EventOutcome::Queued, "{text}");
    assert_eq!(f.server.api.job(first.jobs[0]).await.unwrap().name, "mr-1");
    let (status, text) = f.post("/api/v1/hooks/gitlab", &headers, mr).await;
    assert_eq!(answer(status, &text).outcome, EventOutcome::Duplicate);

    let pipeline = fixture("gitlab_pipeline.json");
    let headers = vec![
        ("x-gitlab-event", "Pipeline Hook".to_owned()),
        (
            "x-gitlab-event-uuid",
            "8f1b2c3d-1111-4e5f-a6b7-c8d9e0f1a2b3".into(),
        ),
        ("x-gitlab-token", GITLAB_TOKEN.into()),
    ];
    let (status, text) = f.post("/api/v1/hooks/gitlab", &headers, pipeline).await;
    let piped = answer(status, &text);
    assert_eq!(piped.outcome, EventOutcome::Queued, "{text}");
    assert_eq!(
        f.server.api.job(piped.jobs[0]).await.unwrap().name,
        "pipeline-31"
    );
    assert_eq!(f.job_count().await, 2);
    let gitlab = f
        .server
        .api
        .events(&EventQuery {
            source: Some("gitlab".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(gitlab.len(), 3);
    assert_eq!(gitlab[0].matched_rules, vec!["gitlab-pipeline"]);
}

#[tokio::test]
async fn gerrit_change_merged_is_unique_per_change_patch_set_and_sha() {
    let f = Fleet::start(true, |_| {}).await;
    let merged = fixture("gerrit_change_merged.json");
    let path = format!("/api/v1/hooks/gerrit?secret={GERRIT_SECRET}");
    let (status, text) = f.post(&path, &[], merged.clone()).await;
    let first = answer(status, &text);
    assert_eq!(first.outcome, EventOutcome::Queued, "{text}");
    assert_eq!(
        f.server.api.job(first.jobs[0]).await.unwrap().name,
        "merged-471011"
    );
    // Gerrit sends no delivery id: the same change, patch set and sha is
    // the same event.
    let (status, text) = f.post(&path, &[], merged.clone()).await;
    assert_eq!(answer(status, &text).outcome, EventOutcome::Duplicate);
    let detail = f.server.api.event(first.event_id).await.unwrap();
    assert_eq!(
        detail.dedup_key.as_deref(),
        Some("gerrit:change-merged:471011:3:69609f0b3575c571fff4564f6f16cbca9c7d81f6")
    );
    // Another patch set of the change is another event; on another branch
    // no rule wants it.
    let text = String::from_utf8(merged).unwrap();
    let other = text
        .replace("\"number\": 3", "\"number\": 4")
        .replace("\"branch\": \"dev\"", "\"branch\": \"6.5\"");
    let (status, body) = f.post(&path, &[], other.into_bytes()).await;
    let ignored = answer(status, &body);
    assert_eq!(ignored.outcome, EventOutcome::Ignored);
    assert!(
        ignored
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("change.branch"),
        "{body}"
    );
    assert_eq!(f.job_count().await, 1);
}

#[tokio::test]
async fn refusals_without_rules_for_bad_bodies_and_past_the_limit() {
    let f = Fleet::start(false, |c| c.hooks.max_body_bytes = 64 * 1024).await;
    let pr = fixture("github_pull_request.json");
    let (status, text) = f.github("pull_request", "d-1", pr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("no trigger rules configured"), "{text}");

    let (status, text) = f.github("pull_request", "d-2", b"not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not JSON"), "{text}");

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024)).into_bytes();
    let (status, text) = f.github("pull_request", "d-3", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");

    // An unconfigured hook is not there.
    let off = Fleet::start(true, |c| c.hooks.github = None).await;
    let (status, text) = off.github("push", "d-4", fixture("github_push.json")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(f.events().await.is_empty() && off.events().await.is_empty());
}

/// Event received → job committed: the 202 is sent after the commit, so
/// the time to the answer bounds it. Prints p50/p99 (target p99 < 50 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_to_committed_job_latency() {
    let f = Fleet::start(true, |_| {}).await;
    let pr = fixture("github_pull_request.json");
    let sig = github_signature(f.dir.path(), GITHUB_SECRET, &pr);
    const N: usize = 200;
    let mut took = Vec::with_capacity(N);
    for i in 0..N {
        let started = Instant::now();
        let (status, text) = f
            .post(
                "/api/v1/hooks/github",
                &[
                    ("x-github-event", "pull_request".into()),
                    ("x-github-delivery", format!("lat-{i}")),
                    ("x-hub-signature-256", sig.clone()),
                ],
                pr.clone(),
            )
            .await;
        took.push(started.elapsed());
        assert_eq!(answer(status, &text).outcome, EventOutcome::Queued);
    }
    assert_eq!(f.job_count().await, N);
    took.sort();
    let pct = |p: usize| took[(N * p).div_ceil(100).saturating_sub(1)];
    let (p50, p99) = (pct(50), pct(99));
    eprintln!(
        "event → job committed over {N} webhooks (SQLite, debug build): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        took[N - 1].as_secs_f64() * 1e3
    );
    // A loose bound that only a broken path misses on a loaded machine;
    // the target (50 ms) is reported, not asserted.
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
}
