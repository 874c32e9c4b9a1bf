//! Blobs, input trees and artifacts over HTTP (docs/artifacts.md).
//!
//! Clients upload the blobs of an input tree that the coordinator lacks
//! (`POST /api/v1/blobs/missing`, `PUT /api/v1/blobs/{digest}`, guarded like
//! every write). Agents fetch inputs and upload artifacts under
//! `/api/v1/agent/…`, authenticated by their hostname and secret like their
//! socket.io handshake; only the attempt that holds its task may add
//! artifacts. Every body is streamed: a blob is checked against its digest
//! as it arrives and refused past its size limit before it fills a disk.
//! A background task enforces retention (age and total size of artifacts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use testfleet_cas::{BlobBackend, BlobStore, CasError, Digest, Manifest};
use testfleet_core::JobSpec;
use testfleet_store::{NewArtifact, Store, StoreError, StoredArtifact};
use testfleet_wire::api::{MissingBlobs, MissingBlobsAnswer};

use crate::coordinator::Coordinator;
use crate::http_error::{ApiJson, ApiPath, ApiQuery, HttpError, method_not_allowed};

/// Header naming the agent that calls `/api/v1/agent/…`.
pub const AGENT_HOST_HEADER: &str = "x-testfleet-host";
/// Header carrying that agent's secret.
pub const AGENT_SECRET_HEADER: &str = "x-testfleet-secret";

/// Where blobs are kept and how much is kept.
#[derive(Debug, Clone)]
pub struct BlobsConfig {
    /// `None`: a local directory, `<data_dir>/blobs`.
    pub backend: Option<BlobBackend>,
    /// The largest single blob accepted.
    pub max_blob_bytes: u64,
    /// What one attempt may keep, all its artifacts together, when its task
    /// does not say (`artifacts.max_size`); a task cannot ask for more than
    /// `max_blob_bytes` per file.
    pub max_artifact_bytes: u64,
    /// Artifacts older than this are deleted.
    pub retention_max_age: Duration,
    /// The oldest artifacts are deleted while all of them weigh more.
    pub retention_max_bytes: u64,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        BlobsConfig {
            backend: None,
            max_blob_bytes: 8 << 30,
            max_artifact_bytes: 4 << 30,
            retention_max_age: Duration::from_secs(30 * 24 * 3600),
            retention_max_bytes: 100 << 30,
            retention_interval: Duration::from_secs(3600),
        }
    }
}

/// The blob store and its limits, shared by the handlers.
#[derive(Debug)]
pub struct Blobs {
    pub store: BlobStore,
    pub config: BlobsConfig,
    /// Agent credentials checked recently (digest of host and secret → when,
    /// and under which secrets epoch): a per-host secret is an argon2 hash,
    /// too slow to verify for each of the thousands of blobs of an input tree.
    verified: std::sync::Mutex<std::collections::HashMap<Digest, (std::time::Instant, u64)>>,
}

/// How long a checked agent credential is trusted by the HTTP routes.
const VERIFIED_FOR: Duration = Duration::from_secs(60);

impl Blobs {
    pub fn open(config: &BlobsConfig, data_dir: &std::path::Path) -> Result<Blobs, CasError> {
        let backend = config.backend.clone().unwrap_or(BlobBackend::Local {
            root: data_dir.join("blobs"),
        });
        let store = BlobStore::open(&backend, config.max_blob_bytes)?;
        tracing::info!("blobs kept in {}", store.describe());
        Ok(Blobs {
            store,
            config: config.clone(),
            verified: Default::default(),
        })
    }
}

#[derive(Clone)]
struct St {
    c: Arc<Coordinator>,
    b: Arc<Blobs>,
}

type Res<T> = Result<T, HttpError>;

/// The routes of this module: client routes behind the auth guard, agent
/// routes behind the agent's secret.
pub fn router(c: Arc<Coordinator>, b: Arc<Blobs>) -> Router {
    let guarded = Router::new()
        .route("/api/v1/blobs/missing", post(missing))
        .route("/api/v1/blobs/{digest}", put(put_blob).get(get_blob))
        .route("/api/v1/jobs/{id}/artifacts", get(list_artifacts))
        .route("/api/v1/artifacts/{id}", get(download_artifact))
        .route("/api/v1/tasks/{id}/work", get(task_work))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            c.clone(),
            crate::auth::guard,
        ));
    let agent = Router::new()
        .route("/api/v1/agent/blobs/{digest}", get(agent_get_blob))
        .route(
            "/api/v1/agent/attempts/{id}/artifacts",
            put(agent_put_artifact),
        )
        .method_not_allowed_fallback(method_not_allowed);
    guarded
        .merge(agent)
        // JSON bodies (digest lists); blob bodies are streams with limits of their own.
        .layer(DefaultBodyLimit::max(32 << 20))
        .with_state(St { c, b })
}

fn digest_param(raw: &str) -> Res<Digest> {
    raw.parse::<Digest>().map_err(HttpError::from)
}

fn id_param(kind: &str, raw: &str) -> Res<i64> {
    HttpError::parse_id(kind, raw)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `POST /api/v1/blobs/missing`.
async fn missing(
    State(s): State<St>,
    ApiJson(req): ApiJson<MissingBlobs>,
) -> Res<Json<MissingBlobsAnswer>> {
    let digests = req
        .digests
        .iter()
        .map(|d| Digest::parse_prefixed(d))
        .collect::<Result<Vec<_>, _>>()?;
    let missing = s.b.store.missing(&digests).await?;
    Ok(Json(MissingBlobsAnswer {
        missing: missing.iter().map(Digest::to_hex).collect(),
        max_blob_bytes: Some(s.b.store.max_blob_bytes()),
    }))
}

/// `PUT /api/v1/blobs/{digest}`: the body is the blob, streamed.
async fn put_blob(
    State(s): State<St>,
    ApiPath(digest): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Res<Response> {
    let d = digest_param(&digest)?;
    let size =
        s.b.store
            .put_stream(&d, content_length(&headers), body.into_data_stream())
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"digest": d.to_hex(), "size": size})),
    )
        .into_response())
}

async fn stream_blob(b: &Blobs, d: &Digest, name: Option<&str>) -> Res<Response> {
    let (size, stream) = b.store.get(d).await?;
    let body = Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string())));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&d.to_hex()) {
        h.insert("x-testfleet-digest", v);
    }
    if let Some(name) = name {
        let file = name.rsplit('/').next().unwrap_or(name).replace('"', "");
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

/// `GET /api/v1/blobs/{digest}`.
async fn get_blob(State(s): State<St>, ApiPath(digest): ApiPath<String>) -> Res<Response> {
    stream_blob(&s.b, &digest_param(&digest)?, None).await
}

/// `GET /api/v1/jobs/{id}/artifacts`.
async fn list_artifacts(State(s): State<St>, ApiPath(id): ApiPath<String>) -> Res<Response> {
    let list = s.c.views().job_artifacts(id_param("job", &id)?).await?;
    Ok(Json(list).into_response())
}

/// `GET /api/v1/artifacts/{id}`: the artifact's content, streamed.
async fn download_artifact(State(s): State<St>, ApiPath(id): ApiPath<String>) -> Res<Response> {
    let a = s.c.views().artifact(id_param("artifact", &id)?).await?;
    let d = Digest::parse_prefixed(&a.digest)?;
    match stream_blob(&s.b, &d, Some(&a.path)).await {
        Err(e) if e.status() == StatusCode::NOT_FOUND => Err(HttpError::new(
            StatusCode::GONE,
            format!(
                "the content of artifact {id} (`{}`) is no longer stored (retention)",
                a.path
            ),
        )),
        other => other,
    }
}

/// `GET /api/v1/tasks/{id}/work`: the work item the task's last attempt ran
/// (or would run), for `testfleet repro`.
async fn task_work(State(s): State<St>, ApiPath(id): ApiPath<String>) -> Res<Response> {
    let task = id_param("task", &id)?;
    let item = s.c.views().task_work(task).await?;
    Ok(Json(item).into_response())
}

/// Checks the agent headers like the socket.io handshake does.
async fn agent_identity(s: &St, headers: &HeaderMap, peer: Option<SocketAddr>) -> Res<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(host) = text(AGENT_HOST_HEADER).filter(|h| !h.trim().is_empty()) else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "agent routes need the `{AGENT_HOST_HEADER}` and `{AGENT_SECRET_HEADER}` headers"
            ),
        ));
    };
    let secret = text(AGENT_SECRET_HEADER);
    let key = Digest::of(format!("{host}\0{}", secret.as_deref().unwrap_or("")).as_bytes());
    // A revoked or rotated secret bumps the epoch: cached checks end at once.
    let epoch = s.c.auth.agent_secrets_epoch();
    let fresh = {
        let mut seen = s.b.verified.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (at, e)| at.elapsed() < VERIFIED_FOR && *e == epoch);
        seen.contains_key(&key)
    };
    if fresh {
        return Ok(host);
    }
    if let Err(reason) = crate::auth::check_agent_secret(&s.c, &host, secret).await {
        if let Some(peer) = peer {
            tokio::time::sleep(s.c.auth.failed(peer.ip())).await;
        }
        return Err(HttpError::new(StatusCode::UNAUTHORIZED, reason.to_string()));
    }
    s.b.verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, (std::time::Instant::now(), epoch));
    Ok(host)
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `GET /api/v1/agent/blobs/{digest}`: inputs, for agents.
async fn agent_get_blob(
    State(s): State<St>,
    ApiPath(digest): ApiPath<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Res<Response> {
    agent_identity(&s, &headers, peer.map(|p| p.0.0)).await?;
    stream_blob(&s.b, &digest_param(&digest)?, None).await
}

#[derive(Debug, Deserialize)]
struct ArtifactQuery {
    path: String,
    kind: String,
    digest: String,
}

/// `PUT /api/v1/agent/attempts/{id}/artifacts?path=&kind=&digest=`.
async fn agent_put_artifact(
    State(s): State<St>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ArtifactQuery>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Res<Response> {
    let host = agent_identity(&s, &headers, peer.map(|p| p.0.0)).await?;
    let attempt = id_param("attempt", &id)?;
    testfleet_cas::manifest::check_relative(&q.path)?;
    let kind: testfleet_wire::artifact::ArtifactKind =
        q.kind
            .parse()
            .map_err(|e: testfleet_wire::artifact::UnknownArtifactKind| {
                HttpError::new(StatusCode::BAD_REQUEST, e.to_string())
            })?;
    let d = Digest::parse_prefixed(&q.digest)?;
    let slot = s.c.views().artifact_slot(attempt, &host).await?;
    let limit = slot
        .task
        .artifacts
        .max_size
        .map_or(s.b.config.max_artifact_bytes, |m| m.0);
    let left = limit.saturating_sub(slot.used_bytes);
    let declared = content_length(&headers);
    if let Some(size) = declared
        && size > left
    {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "artifact `{}` ({size} bytes) is over what is left of the task's artifact limit ({left} of {limit} bytes)",
                q.path
            ),
        ));
    }
    let size = s
        .b
        .store
        .put_stream_limited(&d, declared, body.into_data_stream(), left)
        .await
        .map_err(|e| match e {
            CasError::TooLarge { .. } => HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "artifact `{}` is over what is left of the task's artifact limit ({left} of {limit} bytes)",
                    q.path
                ),
            ),
            other => other.into(),
        })?;
    let new = NewArtifact {
        path: q.path.clone(),
        kind,
        digest: d.to_hex(),
        size,
    };
    match s.c.add_artifact(attempt, &host, &new, limit).await? {
        StoredArtifact::Added { id } => Ok((
            StatusCode::CREATED,
            Json(json!({"id": id, "digest": new.digest, "size": size})),
        )
            .into_response()),
        StoredArtifact::OverLimit { used, limit } => Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "artifact `{}` ({size} bytes) would take the attempt over its artifact limit ({used} of {limit} bytes used)",
                q.path
            ),
        )),
    }
}

/// Refuses a job whose `inputs` were not uploaded: each must be the digest
/// of a stored manifest (the client replaces a directory by its digest).
pub(crate) async fn check_job_inputs(
    blobs: Option<&Blobs>,
    spec: &JobSpec,
) -> Result<(), HttpError> {
    let mut wanted: Vec<(String, &str)> = Vec::new();
    if let Some(i) = &spec.inputs {
        wanted.push(("inputs".into(), i));
    }
    for (n, t) in spec.tasks.iter().enumerate() {
        if let Some(i) = &t.inputs {
            wanted.push((format!("task[{n}].inputs"), i));
        }
    }
    for (field, value) in wanted {
        let d = Digest::parse_prefixed(value).map_err(|_| {
            HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "field `{field}`: `{value}` is not an uploaded input tree; submit the job with `testfleet submit`, which uploads the directory and sends its digest (`sha256:<64 hex digits>`)"
                ),
            )
        })?;
        let Some(blobs) = blobs else {
            return Err(HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this coordinator has no blob store",
            ));
        };
        match blobs
            .store
            .get_bytes(&d, testfleet_cas::manifest::MAX_MANIFEST_BYTES)
            .await
        {
            Ok(bytes) => {
                Manifest::from_bytes(&bytes, Some(&d)).map_err(|e| {
                    HttpError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("field `{field}`: blob {d} is not a valid input manifest: {e}"),
                    )
                })?;
            }
            Err(CasError::NotFound(_)) => {
                return Err(HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "field `{field}`: the input manifest {d} is not stored; upload the tree first (`testfleet submit` does)"
                    ),
                ));
            }
            Err(e) => return Err(HttpError::internal("blob store", &e)),
        }
    }
    Ok(())
}

/// Runs retention every `retention_interval` until the store closes.
pub fn start_retention(store: Store, blobs: Arc<Blobs>, now: impl Fn() -> i64 + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(blobs.config.retention_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match enforce_retention(&store, &blobs, now()).await {
                Ok(r) if r.artifacts + r.blobs > 0 => tracing::info!(
                    artifacts = r.artifacts,
                    blobs = r.blobs,
                    bytes = r.bytes,
                    "retention: deleted"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention failed: {e}"),
            }
        }
    });
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub artifacts: usize,
    pub blobs: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("blobs: {0}")]
    Blobs(#[from] CasError),
}

/// One retention pass: artifacts past the age or over the total size go,
/// then blobs no artifact and no recent job's inputs name, once older than
/// the age limit (or just released by an artifact).
pub async fn enforce_retention(
    store: &Store,
    blobs: &Blobs,
    now_ms: i64,
) -> Result<RetentionReport, RetentionError> {
    let age_ms = i64::try_from(blobs.config.retention_max_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(age_ms);
    let (artifacts, released) = store
        .expire_artifacts(cutoff, blobs.config.retention_max_bytes)
        .await?;
    let mut report = RetentionReport {
        artifacts,
        ..Default::default()
    };
    // Inputs of jobs submitted within the age limit stay, with their blobs.
    let mut protected = std::collections::HashSet::new();
    for value in store.job_inputs_since(cutoff).await? {
        let Ok(d) = Digest::parse_prefixed(&value) else {
            continue;
        };
        protected.insert(d);
        if let Ok(bytes) = blobs
            .store
            .get_bytes(&d, testfleet_cas::manifest::MAX_MANIFEST_BYTES)
            .await
            && let Ok(m) = Manifest::from_bytes(&bytes, Some(&d))
        {
            protected.extend(m.blobs());
        }
    }
    let released: std::collections::HashSet<String> = released.into_iter().collect();
    let mut listing = blobs.store.list();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        if protected.contains(&meta.digest) {
            continue;
        }
        let hex = meta.digest.to_hex();
        let expired = meta.last_modified_ms < cutoff || released.contains(&hex);
        if expired && !store.artifact_uses(&hex).await? {
            blobs.store.delete(&meta.digest).await?;
            report.blobs += 1;
            report.bytes += meta.size;
        }
    }
    Ok(report)
}

/// The routes of this module with a description each, for the OpenAPI document.
pub(crate) fn openapi_paths() -> serde_json::Value {
    let digest = json!({"name": "digest", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "description": "SHA-256, 64 lowercase hex digits"});
    let id = crate::openapi::id_param;
    let err = crate::openapi::error_response;
    let digest_value = json!({"type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$"});
    let created = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Created"}}});
    // A relative path: no empty, `.` or `..` component, no leading `/`, no NUL.
    let segment = r"([^/\u0000.][^/\u0000]*|\.[^/\u0000.][^/\u0000]*|\.\.[^/\u0000]+)";
    let relative_path = format!("^{segment}(/{segment})*$");
    let bytes =
        json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}});
    json!({
        "/api/v1/blobs/missing": {"post": {
            "summary": "Which blobs are missing",
            "description": "The client sends the digests of an input tree (its files and its manifest) and uploads only the ones returned. Writes need authentication.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["digests"], "properties": {"digests": {"type": "array", "items": digest_value}}}}}},
            "responses": {"200": {"description": "Missing digests and the largest blob accepted", "content": {"application/json": {"schema": {"type": "object", "properties": {"missing": {"type": "array", "items": {"type": "string"}}, "max_blob_bytes": {"type": "integer"}}}}}}, "400": err("Malformed digest")}
        }},
        "/api/v1/blobs/{digest}": {
            "put": {
                "summary": "Upload a blob",
                "description": "Streamed; the content must hash to the digest. Refused with 413 past the size limit (before reading when Content-Length says so). Writes need authentication.",
                "parameters": [digest],
                "requestBody": {"required": true, "content": bytes},
                "responses": {"201": {"description": "Stored (or already stored)", "content": created}, "413": err("Over the size limit"), "422": err("Content does not match the digest")}
            },
            "get": {
                "summary": "Download a blob",
                "parameters": [digest],
                "responses": {"200": {"description": "The blob, streamed", "content": bytes}, "404": err("No such blob")}
            }
        },
        "/api/v1/jobs/{id}/artifacts": {"get": {
            "summary": "A job's artifacts",
            "description": "Files kept per attempt: artifact globs (`always`, `on_failure`) and the whole stdout and stderr of failed attempts.",
            "parameters": [id("job")],
            "responses": {"200": {"description": "Artifacts", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}}}}}, "404": err("No such job")}
        }},
        "/api/v1/artifacts/{id}": {"get": {
            "summary": "Download an artifact",
            "parameters": [id("artifact")],
            "responses": {"200": {"description": "The content, streamed", "content": bytes}, "404": err("No such artifact"), "410": err("Deleted by retention")}
        }},
        "/api/v1/tasks/{id}/work": {"get": {
            "summary": "A task's work item",
            "description": "What the task's last attempt ran, as sent to the agent (for `testfleet repro`).",
            "parameters": [id("task")],
            "responses": {"200": {"description": "The work item (docs/protocol.md)", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": err("No such task")}
        }},
        "/api/v1/agent/blobs/{digest}": {"get": {
            "summary": "Download a blob (agents)",
            "description": "Inputs for agents, authenticated by hostname and agent secret.",
            "parameters": [digest],
            "responses": {"200": {"description": "The blob, streamed", "content": bytes}, "401": err("Unknown agent or wrong secret"), "404": err("No such blob")}
        }},
        "/api/v1/agent/attempts/{id}/artifacts": {"put": {
            "summary": "Upload an artifact (agents)",
            "description": "Streamed; only the attempt that holds its task, on the agent running it, may add artifacts (409 otherwise). Refused with 413 past the task's artifact limit.",
            "parameters": [id("attempt"),
                {"name": "path", "in": "query", "required": true, "schema": {"type": "string", "pattern": relative_path}, "description": "Relative path; no `..` or `.` component, not absolute"},
                {"name": "kind", "in": "query", "required": true, "schema": {"type": "string", "enum": ["always", "on_failure", "stdout", "stderr"]}},
                {"name": "digest", "in": "query", "required": true, "schema": digest_value}],
            "requestBody": {"required": true, "content": bytes},
            "responses": {"201": {"description": "Recorded", "content": created}, "400": err("Unsafe path or bad digest"), "401": err("Unknown agent or wrong secret"), "404": err("No such attempt"), "409": err("The attempt does not hold its task"), "413": err("Over the artifact limit"), "422": err("Content does not match the digest")}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use testfleet_cas::{Entry, EntryKind};

    #[tokio::test]
    async fn retention_keeps_inputs_of_live_jobs_and_deletes_old_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let blobs = Blobs::open(&BlobsConfig::default(), dir.path()).unwrap();
        let put = |data: &'static [u8]| {
            let b = &blobs;
            async move {
                let d = Digest::of(data);
                b.store
                    .put_bytes(&d, Bytes::from_static(data))
                    .await
                    .unwrap();
                d
            }
        };
        let input = put(b"an input file").await;
        let orphan = put(b"nobody needs me").await;
        let manifest = Manifest {
            version: 1,
            entries: vec![Entry {
                path: "f.txt".into(),
                kind: EntryKind::File,
                executable: false,
                size: 13,
                digest: Some(input),
                target: None,
            }],
        };
        let md = manifest.digest();
        blobs
            .store
            .put_bytes(&md, Bytes::from(manifest.to_bytes()))
            .await
            .unwrap();
        let spec = JobSpec::from_toml(&format!(
            "name = \"j\"\ninputs = \"sha256:{md}\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ))
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        store.submit_job(&spec, Vec::new(), now).await.unwrap();

        // Today nothing is old enough to go.
        let r = enforce_retention(&store, &blobs, now).await.unwrap();
        assert_eq!(r, RetentionReport::default());
        // Forty days on: the orphan goes; the live job's manifest and input stay.
        let later = now + 40 * 24 * 3600 * 1000;
        let r = enforce_retention(&store, &blobs, later).await.unwrap();
        assert_eq!(r.blobs, 1, "{r:?}");
        assert!(!blobs.store.contains(&orphan).await.unwrap());
        assert!(blobs.store.contains(&input).await.unwrap());
        assert!(blobs.store.contains(&md).await.unwrap());
    }

    #[tokio::test]
    async fn jobs_must_name_uploaded_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&BlobsConfig::default(), dir.path()).unwrap();
        let job = |inputs: &str| {
            JobSpec::from_toml(&format!(
                "name = \"j\"\ninputs = \"{inputs}\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
            ))
            .unwrap()
        };
        let e = check_job_inputs(Some(&blobs), &job("testdata"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message().contains("not an uploaded input tree"), "{e}");
        let missing = Digest::of(b"never uploaded");
        let e = check_job_inputs(Some(&blobs), &job(&format!("sha256:{missing}")))
            .await
            .unwrap_err();
        assert!(e.message().contains("is not stored"), "{e}");
        let not_manifest = Digest::of(b"plain file");
        blobs
            .store
            .put_bytes(&not_manifest, Bytes::from_static(b"plain file"))
            .await
            .unwrap();
        let e = check_job_inputs(Some(&blobs), &job(&format!("sha256:{not_manifest}")))
            .await
            .unwrap_err();
        assert!(e.message().contains("not a valid input manifest"), "{e}");
    }
}
