//! The coordinator's blob store: one interface over a local directory
//! (default) or an S3-compatible bucket, both through `object_store`.
//!
//! Blobs live at `blobs/<first two hex digits>/<digest>`. A put is streamed:
//! small blobs are buffered and written once verified; large ones go through
//! a multipart upload to `tmp/` and are moved into place only when their
//! digest matched. A put past the size limit stops as soon as the limit is
//! crossed (or before reading, when the length is declared).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::{CasError, Digest};

/// Blobs smaller than this are buffered and written in one request.
const SMALL_BLOB: usize = 8 << 20;

/// Where blobs are kept.
#[derive(Debug, Clone)]
pub enum BlobBackend {
    /// A local directory (created when missing).
    Local {
        root: PathBuf,
    },
    S3(S3Config),
}

/// An S3-compatible bucket.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `http://127.0.0.1:9000` for a local endpoint; AWS when not given.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Keys are written under this prefix (e.g. `testfleet/`).
    pub prefix: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A stored blob, as listing shows it.
#[derive(Debug, Clone)]
pub struct BlobMeta {
    pub digest: Digest,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
}

/// A content-addressed blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    max_blob_bytes: u64,
    describe: String,
}

impl BlobStore {
    /// Opens the store; blobs over `max_blob_bytes` are refused.
    pub fn open(backend: &BlobBackend, max_blob_bytes: u64) -> Result<BlobStore, CasError> {
        match backend {
            BlobBackend::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| CasError::io(root, e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)?
                    .with_automatic_cleanup(true);
                Ok(BlobStore {
                    inner: Arc::new(fs),
                    prefix: String::new(),
                    max_blob_bytes,
                    describe: format!("local directory {}", root.display()),
                })
            }
            BlobBackend::S3(cfg) => {
                if cfg.bucket.trim().is_empty() {
                    return Err(CasError::Config("the S3 bucket name is empty".into()));
                }
                // object_store's HTTP client is reqwest with rustls and no
                // bundled provider; testfleet uses ring everywhere.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&cfg.bucket)
                    .with_region(&cfg.region);
                if let Some(endpoint) = &cfg.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(key) = &cfg.access_key_id {
                    b = b.with_access_key_id(key);
                }
                if let Some(secret) = &cfg.secret_access_key {
                    b = b.with_secret_access_key(secret);
                }
                let s3 = b.build().map_err(|e| CasError::Config(e.to_string()))?;
                let prefix = cfg.prefix.trim_matches('/');
                Ok(BlobStore {
                    inner: Arc::new(s3),
                    prefix: if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                    max_blob_bytes,
                    describe: format!(
                        "S3 bucket {} at {}",
                        cfg.bucket,
                        cfg.endpoint.as_deref().unwrap_or("AWS")
                    ),
                })
            }
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    fn key(&self, d: &Digest) -> ObjPath {
        let hex = d.to_hex();
        ObjPath::from(format!("{}blobs/{}/{hex}", self.prefix, &hex[..2]))
    }

    fn tmp_key(&self) -> ObjPath {
        let mut raw = [0u8; 16];
        let _ = getrandom::fill(&mut raw);
        ObjPath::from(format!("{}tmp/{}", self.prefix, hex::encode(raw)))
    }

    /// Whether the blob is stored.
    pub async fn contains(&self, d: &Digest) -> Result<bool, CasError> {
        match self.inner.head(&self.key(d)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a stored blob.
    pub async fn size(&self, d: &Digest) -> Result<u64, CasError> {
        match self.inner.head(&self.key(d)).await {
            Ok(m) => Ok(m.size),
            Err(object_store::Error::NotFound { .. }) => Err(CasError::NotFound(*d)),
            Err(e) => Err(e.into()),
        }
    }

    /// Which of `digests` are not stored, in their order, without duplicates.
    pub async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, CasError> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<Digest> = digests
            .iter()
            .filter(|d| seen.insert(**d))
            .copied()
            .collect();
        let found: Vec<(Digest, bool)> = futures_util::stream::iter(unique)
            .map(|d| async move { self.contains(&d).await.map(|c| (d, c)) })
            .buffered(32)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(d, _)| d)
            .collect())
    }

    /// Stores `bytes` under `expected` after checking it.
    pub async fn put_bytes(&self, expected: &Digest, bytes: Bytes) -> Result<(), CasError> {
        let len = bytes.len() as u64;
        self.put_stream(
            expected,
            Some(len),
            futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
        )
        .await
        .map(|_| ())
    }

    /// Streams a blob in, checking its digest and size as it comes. Returns
    /// the blob's size. `declared` (a Content-Length) over the limit is
    /// refused before anything is read; a blob already stored is not read.
    pub async fn put_stream<S, E>(
        &self,
        expected: &Digest,
        declared: Option<u64>,
        stream: S,
    ) -> Result<u64, CasError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.put_stream_limited(expected, declared, stream, self.max_blob_bytes)
            .await
    }

    /// As [`BlobStore::put_stream`] with a lower limit for this blob (what
    /// is left of a task's artifact budget).
    pub async fn put_stream_limited<S, E>(
        &self,
        expected: &Digest,
        declared: Option<u64>,
        stream: S,
        limit: u64,
    ) -> Result<u64, CasError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let limit = limit.min(self.max_blob_bytes);
        if let Some(size) = declared
            && size > limit
        {
            return Err(CasError::TooLarge { size, limit });
        }
        if let Ok(size) = self.size(expected).await {
            return Ok(size);
        }
        let mut stream = std::pin::pin!(stream);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut small: Vec<Bytes> = Vec::new();
        let mut small_len = 0usize;
        let mut upload: Option<(ObjPath, WriteMultipart)> = None;
        let fail = |upload: Option<(ObjPath, WriteMultipart)>, err: CasError| async move {
            if let Some((_, w)) = upload {
                let _ = w.abort().await;
            }
            Err::<u64, CasError>(err)
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return fail(upload, CasError::Transfer(e.to_string())).await,
            };
            total += chunk.len() as u64;
            if total > limit {
                return fail(upload, CasError::TooLarge { size: total, limit }).await;
            }
            hasher.update(&chunk);
            match &mut upload {
                Some((_, w)) => {
                    if let Err(e) = w.wait_for_capacity(4).await {
                        return fail(upload, e.into()).await;
                    }
                    w.put(chunk);
                }
                None => {
                    small_len += chunk.len();
                    small.push(chunk);
                    if small_len > SMALL_BLOB {
                        let tmp = self.tmp_key();
                        let mp = match self.inner.put_multipart(&tmp).await {
                            Ok(mp) => mp,
                            Err(e) => return Err(e.into()),
                        };
                        let mut w = WriteMultipart::new(mp);
                        for c in small.drain(..) {
                            w.put(c);
                        }
                        upload = Some((tmp, w));
                    }
                }
            }
        }
        let actual = Digest::from_hasher(hasher);
        if actual != *expected {
            return fail(
                upload,
                CasError::Mismatch {
                    expected: *expected,
                    actual,
                },
            )
            .await;
        }
        let key = self.key(expected);
        match upload {
            None => {
                self.inner.put(&key, PutPayload::from_iter(small)).await?;
            }
            Some((tmp, w)) => {
                w.finish().await?;
                let moved = self.inner.rename(&tmp, &key).await;
                if let Err(e) = moved {
                    let _ = self.inner.delete(&tmp).await;
                    return Err(e.into());
                }
            }
        }
        Ok(total)
    }

    /// The blob's size and its content as a stream.
    pub async fn get(
        &self,
        d: &Digest,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, CasError>>), CasError> {
        match self.inner.get(&self.key(d)).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok((size, r.into_stream().map_err(CasError::from).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(CasError::NotFound(*d)),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole blob in memory (manifests), refused over `max` bytes.
    pub async fn get_bytes(&self, d: &Digest, max: u64) -> Result<Bytes, CasError> {
        let (size, mut stream) = self.get(d).await?;
        if size > max {
            return Err(CasError::TooLarge { size, limit: max });
        }
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.into())
    }

    pub async fn delete(&self, d: &Digest) -> Result<(), CasError> {
        match self.inner.delete(&self.key(d)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored blob (keys that are not blobs are skipped).
    pub fn list(&self) -> BoxStream<'static, Result<BlobMeta, CasError>> {
        let prefix = ObjPath::from(format!("{}blobs", self.prefix));
        self.inner
            .list(Some(&prefix))
            .map_err(CasError::from)
            .try_filter_map(|meta| async move {
                let name = meta.location.filename().unwrap_or_default();
                Ok(name.parse::<Digest>().ok().map(|digest| BlobMeta {
                    digest,
                    size: meta.size,
                    last_modified_ms: meta.last_modified.timestamp_millis(),
                }))
            })
            .boxed()
    }
}

/// Blobs straight from a store (tests, and tools that read the store directly).
impl crate::cache::Fetcher for BlobStore {
    fn fetch<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        dest: &'a std::path::Path,
    ) -> futures_util::future::BoxFuture<'a, Result<(), CasError>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let (_, mut stream) = self.get(digest).await?;
            let mut file = tokio::fs::File::create(dest)
                .await
                .map_err(|e| CasError::io(dest, e))?;
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                if written > size {
                    return Err(CasError::TooLarge {
                        size: written,
                        limit: size,
                    });
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| CasError::io(dest, e))?;
            }
            file.flush().await.map_err(|e| CasError::io(dest, e))
        })
    }
}
