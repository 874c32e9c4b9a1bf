//! Configuration of blobs, inputs and artifacts: `[server.blobs]` (and
//! `[server.blobs.s3]`) for the coordinator, the blob cache for agents, the
//! hash cache for clients. Part of `settings`: defaults → file →
//! `TESTFLEET_*` → flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_core::job::ByteSize;

/// `[server.blobs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsSection {
    /// Largest single blob accepted (`8GiB`).
    pub max_blob_size: Option<String>,
    /// What one attempt may keep when its task does not say (`4GiB`).
    pub max_artifact_size: Option<String>,
    /// Artifacts older than this are deleted (`30d`).
    pub retention_max_age: Option<String>,
    /// The oldest artifacts go while all weigh more than this (`100GiB`).
    pub retention_max_size: Option<String>,
    /// How often retention runs (`1h`).
    pub retention_interval: Option<String>,
    /// Keep blobs in an S3-compatible bucket instead of `<data_dir>/blobs`.
    pub s3: Option<S3Section>,
}

/// `[server.blobs.s3]`. Credentials may also come from
/// `TESTFLEET_S3_ACCESS_KEY_ID` and `TESTFLEET_S3_SECRET_ACCESS_KEY`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub bucket: String,
    /// `http://127.0.0.1:9000` for a local endpoint (plain HTTP is allowed).
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn size(field: &str, text: Option<&str>, default: u64) -> Result<u64> {
    match text {
        None => Ok(default),
        Some(t) => ByteSize::parse(t)
            .map(|b| b.0)
            .map_err(|e| anyhow::anyhow!("config `{field}`: {e}")),
    }
}

fn duration(
    field: &str,
    text: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).with_context(|| {
            format!("config `{field}`: `{t}` is not a duration (write it like \"30d\" or \"12h\")")
        }),
    }
}

/// Applies `[server.blobs]` to the coordinator's configuration.
pub fn apply_server(s: &BlobsSection, config: &mut testfleet_server::ServerConfig) -> Result<()> {
    let b = &mut config.blobs;
    b.max_blob_bytes = size(
        "server.blobs.max_blob_size",
        s.max_blob_size.as_deref(),
        b.max_blob_bytes,
    )?;
    b.max_artifact_bytes = size(
        "server.blobs.max_artifact_size",
        s.max_artifact_size.as_deref(),
        b.max_artifact_bytes,
    )?;
    b.retention_max_bytes = size(
        "server.blobs.retention_max_size",
        s.retention_max_size.as_deref(),
        b.retention_max_bytes,
    )?;
    b.retention_max_age = duration(
        "server.blobs.retention_max_age",
        s.retention_max_age.as_deref(),
        b.retention_max_age,
    )?;
    b.retention_interval = duration(
        "server.blobs.retention_interval",
        s.retention_interval.as_deref(),
        b.retention_interval,
    )?;
    if b.retention_interval.is_zero() {
        bail!("config `server.blobs.retention_interval`: must be longer than zero");
    }
    if let Some(s3) = &s.s3 {
        if s3.bucket.trim().is_empty() {
            bail!("config `server.blobs.s3.bucket`: must not be empty");
        }
        if let Some(e) = &s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            bail!("config `server.blobs.s3.endpoint`: `{e}` must start with http:// or https://");
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        b.backend = Some(testfleet_cas::BlobBackend::S3(testfleet_cas::S3Config {
            bucket: s3.bucket.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id: env("TESTFLEET_S3_ACCESS_KEY_ID").or_else(|| s3.access_key_id.clone()),
            secret_access_key: env("TESTFLEET_S3_SECRET_ACCESS_KEY")
                .or_else(|| s3.secret_access_key.clone()),
            prefix: s3.prefix.clone(),
        }));
    }
    Ok(())
}

/// The agent's blob cache: flags, then `[agent] cache_dir` / `cache_size`.
pub fn apply_agent(
    dir_flag: Option<&Path>,
    size_flag: Option<&str>,
    dir_file: Option<&Path>,
    size_file: Option<&str>,
    config: &mut testfleet_agent::AgentConfig,
) -> Result<()> {
    config.cache_dir = dir_flag.or(dir_file).map(Path::to_path_buf);
    if let Some(t) = size_flag.or(size_file) {
        config.cache_limit = ByteSize::parse(t)
            .map(|b| b.0)
            .map_err(|e| anyhow::anyhow!("agent cache size: {e}"))?;
    }
    Ok(())
}

/// Where the client keeps its per-tree hash caches and repro's blob cache.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("testfleet")
}
