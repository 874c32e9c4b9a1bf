//! Blobs, input trees and artifacts: uploading a tree (only the blobs the
//! coordinator lacks), streaming downloads, and the agent's side (inputs in,
//! artifacts out, authenticated by its hostname and secret).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use testfleet_cas::{CasError, Digest, Fetcher, HashCache, hash_tree};
use testfleet_wire::api::{ArtifactView, MissingBlobs, MissingBlobsAnswer};
use testfleet_wire::protocol::WorkItem;
use tokio::io::AsyncWriteExt;

use crate::{ApiClient, ClientError};

/// Streams may take long; only connecting is bounded.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What uploading a tree did.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadReport {
    pub manifest: Option<Digest>,
    pub files: usize,
    pub bytes: u64,
    /// Files whose digest came from the hash cache (not read).
    pub cached: usize,
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
}

/// Why an input tree could not be uploaded.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("input tree {root}: {source}")]
    Tree { root: String, source: CasError },
    #[error(
        "input file {path} is {size} bytes, over the coordinator's limit of {limit} bytes per blob"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error(transparent)]
    Api(#[from] ClientError),
}

fn body_of_file(file: tokio::fs::File) -> reqwest::Body {
    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10))
}

impl ApiClient {
    /// Which of `digests` the coordinator lacks.
    pub async fn missing_blobs(
        &self,
        digests: &[Digest],
    ) -> Result<MissingBlobsAnswer, ClientError> {
        let body = MissingBlobs {
            digests: digests.iter().map(Digest::to_hex).collect(),
        };
        let req = self
            .http
            .post(format!("{}/api/v1/blobs/missing", self.base))
            .json(&body);
        self.send(req).await
    }

    /// Uploads one blob from a file, streamed.
    pub async fn put_blob_file(&self, digest: &Digest, path: &Path) -> Result<(), ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Decode(format!("{}: {e}", path.display())))?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let req = self
            .http
            .put(format!("{}/api/v1/blobs/{digest}", self.base))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .timeout(TRANSFER_TIMEOUT)
            .body(body_of_file(file));
        self.send::<serde_json::Value>(req).await.map(|_| ())
    }

    pub async fn put_blob_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<(), ClientError> {
        let req = self
            .http
            .put(format!("{}/api/v1/blobs/{digest}", self.base))
            .timeout(TRANSFER_TIMEOUT)
            .body(bytes);
        self.send::<serde_json::Value>(req).await.map(|_| ())
    }

    /// Hashes the tree at `root` (reusing `hash_cache` when given), asks
    /// which blobs are missing, uploads only those (four at a time) and the
    /// manifest last. Returns the manifest's digest.
    pub async fn upload_tree(
        &self,
        root: &Path,
        hash_cache: Option<&Path>,
    ) -> Result<UploadReport, UploadError> {
        let root_owned = root.to_owned();
        let cache_file = hash_cache.map(Path::to_owned);
        let hashed = tokio::task::spawn_blocking(move || {
            let mut cache = cache_file.as_deref().map(HashCache::load);
            let r = hash_tree(&root_owned, cache.as_mut());
            if let (Ok(_), Some(c)) = (&r, &cache)
                && let Err(e) = c.save()
            {
                tracing::warn!("could not save the hash cache: {e}");
            }
            r
        })
        .await
        .map_err(|e| UploadError::Tree {
            root: root.display().to_string(),
            source: CasError::Transfer(e.to_string()),
        })?;
        let (manifest, files, stats) = hashed.map_err(|source| UploadError::Tree {
            root: root.display().to_string(),
            source,
        })?;
        let md = manifest.digest();
        let mut wanted = manifest.blobs();
        wanted.push(md);
        let answer = self.missing_blobs(&wanted).await?;
        let missing: std::collections::HashSet<String> = answer.missing.into_iter().collect();
        let mut report = UploadReport {
            manifest: Some(md),
            files: stats.files,
            bytes: stats.bytes,
            cached: stats.cached,
            ..Default::default()
        };
        let mut todo: Vec<(Digest, PathBuf, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for f in &files {
            if missing.contains(&f.digest.to_hex()) && seen.insert(f.digest) {
                if let Some(limit) = answer.max_blob_bytes
                    && f.size > limit
                {
                    return Err(UploadError::TooLarge {
                        path: f.path.display().to_string(),
                        size: f.size,
                        limit,
                    });
                }
                todo.push((f.digest, f.path.clone(), f.size));
            }
        }
        let results: Vec<Result<u64, ClientError>> = futures_util::stream::iter(todo)
            .map(|(d, path, size)| async move { self.put_blob_file(&d, &path).await.map(|_| size) })
            .buffer_unordered(4)
            .collect()
            .await;
        for r in results {
            report.uploaded_bytes += r?;
            report.uploaded_blobs += 1;
        }
        if missing.contains(&md.to_hex()) {
            let bytes = manifest.to_bytes();
            report.uploaded_bytes += bytes.len() as u64;
            report.uploaded_blobs += 1;
            self.put_blob_bytes(&md, bytes).await?;
        }
        Ok(report)
    }

    /// A job's artifacts.
    pub async fn job_artifacts(&self, job: i64) -> Result<Vec<ArtifactView>, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/jobs/{job}/artifacts", self.base)),
        )
        .await
    }

    /// The work item a task's last attempt ran.
    pub async fn task_work(&self, task: i64) -> Result<WorkItem, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/tasks/{task}/work", self.base)),
        )
        .await
    }

    /// Streams an artifact into `dest` (a new file), reporting progress as
    /// (bytes so far, total). The content is checked against its digest.
    pub async fn download_artifact(
        &self,
        artifact: &ArtifactView,
        dest: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, ClientError> {
        let url = format!("{}/api/v1/artifacts/{}", self.base, artifact.id);
        self.download_to(&url, &artifact.digest, artifact.size, dest, progress)
            .await
    }

    /// Streams a blob into `dest`.
    pub async fn download_blob(
        &self,
        digest: &Digest,
        size: u64,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/api/v1/blobs/{digest}", self.base);
        self.download_to(&url, &digest.to_hex(), size, dest, &mut |_, _| {})
            .await
    }

    async fn download_to(
        &self,
        url: &str,
        digest: &str,
        size: u64,
        dest: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, ClientError> {
        let req = self.authorize(self.http.get(url).timeout(TRANSFER_TIMEOUT));
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let resp = self.check(resp).await?;
        stream_to_file(resp, digest, size, dest, progress).await
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body: Option<testfleet_wire::api::ErrorBody> = serde_json::from_slice(&bytes).ok();
        let message = match &body {
            Some(b) => b.error.clone(),
            None => format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim()),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            body,
        })
    }
}

/// Writes a response body to `dest` chunk by chunk, hashing it; refuses
/// more than `size` bytes and a content that does not match `digest`.
async fn stream_to_file(
    resp: reqwest::Response,
    digest: &str,
    size: u64,
    dest: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<u64, ClientError> {
    use sha2::Digest as _;
    let io = |e: std::io::Error| ClientError::Decode(format!("{}: {e}", dest.display()));
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut written = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ClientError::Decode(format!("download interrupted: {e}")))?;
        written += chunk.len() as u64;
        if written > size {
            return Err(ClientError::Decode(format!(
                "the coordinator sent more than the {size} bytes expected"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
        progress(written, size);
    }
    file.flush().await.map_err(io)?;
    let actual = Digest::from_hasher(hasher).to_hex();
    if actual != digest {
        return Err(ClientError::Decode(format!(
            "downloaded content does not match its digest (expected {digest}, got {actual})"
        )));
    }
    Ok(written)
}

/// Blobs fetched through the client API (for `testfleet repro`).
impl Fetcher for ApiClient {
    fn fetch<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), CasError>> {
        Box::pin(async move {
            self.download_blob(digest, size, dest)
                .await
                .map(|_| ())
                .map_err(|e| CasError::Transfer(e.to_string()))
        })
    }
}

/// The agent's HTTP side: inputs in, artifacts out. An agent that knows
/// several coordinators has one client per coordinator and talks to the one
/// its socket is connected to ([`AgentHttp::use_coordinator`]): an attempt's
/// inputs and artifacts go where its reports go.
#[derive(Debug, Clone)]
pub struct AgentHttp {
    api: ApiClient,
    /// The coordinators after `api`, in the agent's order.
    fallbacks: Vec<ApiClient>,
    /// Which coordinator is in use: 0 is `api`, `i` is `fallbacks[i - 1]`.
    /// Shared by clones, so the runner's copies follow the session's switch.
    active: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    host: String,
    secret: Option<String>,
}

impl AgentHttp {
    pub fn new(api: ApiClient, host: &str, secret: Option<&str>) -> AgentHttp {
        AgentHttp {
            api,
            fallbacks: Vec::new(),
            active: std::sync::Arc::default(),
            host: host.to_owned(),
            secret: secret.map(str::to_owned),
        }
    }

    /// The same, also knowing the coordinators of `fallbacks`, in order.
    pub fn with_fallbacks(mut self, fallbacks: Vec<ApiClient>) -> AgentHttp {
        self.fallbacks = fallbacks;
        self
    }

    /// Talks to coordinator `index` from now on (0: the first; an index
    /// past the last falls back to the first).
    pub fn use_coordinator(&self, index: usize) {
        self.active
            .store(index, std::sync::atomic::Ordering::Relaxed);
    }

    /// The client of the coordinator in use.
    fn api(&self) -> &ApiClient {
        match self.active.load(std::sync::atomic::Ordering::Relaxed) {
            0 => &self.api,
            i => self.fallbacks.get(i - 1).unwrap_or(&self.api),
        }
    }

    fn sign(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = req.header("x-testfleet-host", &self.host);
        match &self.secret {
            Some(s) => req.header("x-testfleet-secret", s),
            None => req,
        }
    }

    /// Uploads one artifact of a running attempt, streamed from `file`.
    pub async fn put_artifact(
        &self,
        attempt: i64,
        path: &str,
        kind: &str,
        digest: &Digest,
        file: &Path,
    ) -> Result<(), ClientError> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Decode(format!("{}: {e}", file.display())))?;
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let api = self.api();
        let req = self
            .sign(
                api.http
                    .put(format!(
                        "{}/api/v1/agent/attempts/{attempt}/artifacts",
                        api.base
                    ))
                    .query(&[("path", path), ("kind", kind), ("digest", &digest.to_hex())]),
            )
            .header(reqwest::header::CONTENT_LENGTH, len)
            .timeout(TRANSFER_TIMEOUT)
            .body(body_of_file(f));
        api.send::<serde_json::Value>(req).await.map(|_| ())
    }
}

impl Fetcher for AgentHttp {
    fn fetch<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), CasError>> {
        Box::pin(async move {
            let api = self.api();
            let url = format!("{}/api/v1/agent/blobs/{digest}", api.base);
            let resp = self
                .sign(api.http.get(url).timeout(TRANSFER_TIMEOUT))
                .send()
                .await
                .map_err(|e| CasError::Transfer(api.unreachable(&e).to_string()))?;
            let resp = api
                .check(resp)
                .await
                .map_err(|e| CasError::Transfer(e.to_string()))?;
            stream_to_file(resp, &digest.to_hex(), size, dest, &mut |_, _| {})
                .await
                .map(|_| ())
                .map_err(|e| CasError::Transfer(e.to_string()))
        })
    }
}
