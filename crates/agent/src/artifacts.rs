//! Inputs in and artifacts out, around a run.
//!
//! Inputs: the work item names a manifest digest; the manifest and its blobs
//! come through the agent's [`BlobCache`] (verified as they are used) and
//! are written under the checkout directory, never outside it.
//!
//! Artifacts: after the run, files matching the `always` globs (and the
//! `on_failure` ones when the attempt did not pass) are uploaded, with the
//! whole stdout and stderr of a failed attempt. Patterns and matches that
//! would leave the checkout (`..`, absolute paths, symlinks pointing out)
//! are refused and the refusal is written to the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use testfleet_cas::manifest::MAX_MANIFEST_BYTES;
use testfleet_cas::{BlobCache, CasError, Digest, Fetcher, Manifest, MaterializeStats};
use testfleet_wire::artifact::ArtifactKind;
use testfleet_wire::protocol::WorkItem;

/// Why an artifact was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The coordinator refused it or could not be reached.
    #[error(transparent)]
    Upload(#[from] testfleet_client::ClientError),
    /// Its path would leave the directory it goes to.
    #[error(transparent)]
    Path(#[from] CasError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where an agent's inputs come from.
#[derive(Clone)]
pub struct InputSource {
    pub cache: Arc<BlobCache>,
    pub fetcher: Arc<dyn Fetcher>,
}

impl std::fmt::Debug for InputSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSource")
            .field("cache", &self.cache.dir())
            .finish_non_exhaustive()
    }
}

/// Where kept files go (the coordinator, or a local directory).
pub trait ArtifactSink: Send + Sync + std::fmt::Debug {
    /// Keeps `file` as `path` (relative) of this attempt.
    fn put<'a>(
        &'a self,
        attempt_id: i64,
        path: &'a str,
        kind: ArtifactKind,
        digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), ArtifactError>>;
}

/// Fetches the manifest `digest` names and writes its tree under `dest`.
pub async fn materialize_inputs(
    digest: &str,
    inputs: &InputSource,
    dest: &Path,
) -> Result<MaterializeStats, CasError> {
    let md = Digest::parse_prefixed(digest)?;
    let path = inputs.cache.path_of(&md);
    let read = |path: &Path| std::fs::read(path).map_err(|e| CasError::io(path, e));
    let manifest = match read(&path).and_then(|b| Manifest::from_bytes(&b, Some(&md))) {
        Ok(m) => m,
        Err(_) => {
            inputs.cache.remove(&md);
            inputs
                .cache
                .fetch(inputs.fetcher.as_ref(), &md, MAX_MANIFEST_BYTES)
                .await?;
            Manifest::from_bytes(&read(&path)?, Some(&md))?
        }
    };
    testfleet_cas::materialize(&manifest, &inputs.cache, inputs.fetcher.as_ref(), dest).await
}

/// One file to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: String,
    pub kind: ArtifactKind,
    pub file: PathBuf,
    pub size: u64,
}

/// The files an attempt keeps, and what was refused (for the log).
pub fn select_artifacts(
    item: &WorkItem,
    src: &Path,
    failed: bool,
    logs: &[(ArtifactKind, PathBuf)],
) -> (Vec<Kept>, Vec<String>) {
    let mut kept: Vec<Kept> = Vec::new();
    let mut notes = Vec::new();
    let root = match src.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            notes.push(format!("artifacts: cannot read {}: {e}", src.display()));
            return (kept, notes);
        }
    };
    let mut patterns: Vec<(&str, ArtifactKind)> = item
        .artifacts
        .always
        .iter()
        .map(|p| (p.as_str(), ArtifactKind::Always))
        .collect();
    if failed {
        patterns.extend(
            item.artifacts
                .on_failure
                .iter()
                .map(|p| (p.as_str(), ArtifactKind::OnFailure)),
        );
    }
    for (pattern, kind) in patterns {
        if pattern.starts_with('/') || pattern.split('/').any(|p| p == "..") {
            notes.push(format!(
                "artifacts `{pattern}`: refused, the pattern must stay inside the checkout (no absolute path, no `..`)"
            ));
            continue;
        }
        let full = src.join(pattern).display().to_string();
        let matches = match glob::glob(&full) {
            Ok(m) => m,
            Err(e) => {
                notes.push(format!("artifacts `{pattern}`: bad pattern: {e}"));
                continue;
            }
        };
        let mut any = false;
        for path in matches.flatten() {
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                continue;
            }
            let rel = match path.strip_prefix(src).ok().and_then(Path::to_str) {
                Some(r) => r.to_owned(),
                None => {
                    notes.push(format!(
                        "artifacts: {} refused: the name is not valid UTF-8",
                        path.display()
                    ));
                    continue;
                }
            };
            // A symlink is kept only when it points at a file inside the checkout.
            let real = match path.canonicalize() {
                Ok(r) => r,
                Err(_) => {
                    notes.push(format!("artifacts: `{rel}` refused: a dangling symlink"));
                    continue;
                }
            };
            if !real.starts_with(&root) {
                notes.push(format!(
                    "artifacts: `{rel}` refused: it is a symlink pointing outside the checkout ({})",
                    real.display()
                ));
                continue;
            }
            let Ok(real_md) = std::fs::metadata(&real) else {
                continue;
            };
            if !real_md.is_file() {
                continue;
            }
            any = true;
            if kept.iter().any(|k| k.path == rel) {
                continue;
            }
            kept.push(Kept {
                path: rel,
                kind,
                file: real,
                size: real_md.len(),
            });
        }
        if !any {
            notes.push(format!("artifacts `{pattern}`: no file matched"));
        }
    }
    if failed {
        for (kind, file) in logs {
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            kept.push(Kept {
                path: format!(".testfleet/{kind}.log"),
                kind: *kind,
                file: file.clone(),
                size,
            });
        }
    }
    (kept, notes)
}

/// Uploads the kept files within `max_size` (the task's limit, when it set
/// one; the coordinator enforces its own too). Returns log lines.
pub async fn upload_artifacts(
    sink: &dyn ArtifactSink,
    attempt_id: i64,
    kept: &[Kept],
    max_size: Option<u64>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut used = 0u64;
    // The logs of a failed attempt first: they matter most.
    let mut order: Vec<&Kept> = kept
        .iter()
        .filter(|k| k.path.starts_with(".testfleet/"))
        .collect();
    order.extend(kept.iter().filter(|k| !k.path.starts_with(".testfleet/")));
    for k in order {
        if let Some(max) = max_size
            && used + k.size > max
        {
            lines.push(format!(
                "artifacts: `{}` ({} bytes) not kept: over the task's limit of {max} bytes",
                k.path, k.size
            ));
            continue;
        }
        let file = k.file.clone();
        let digest = match tokio::task::spawn_blocking(move || Digest::of_file(&file)).await {
            Ok(Ok((d, _))) => d,
            Ok(Err(e)) => {
                lines.push(format!("artifacts: `{}` not kept: {e}", k.path));
                continue;
            }
            Err(e) => {
                lines.push(format!("artifacts: `{}` not kept: {e}", k.path));
                continue;
            }
        };
        match sink
            .put(attempt_id, &k.path, k.kind, &digest, &k.file)
            .await
        {
            Ok(()) => {
                used += k.size;
                lines.push(format!("kept {} ({}, {} bytes)", k.path, k.kind, k.size));
            }
            Err(e) => lines.push(format!("artifacts: `{}` not kept: {e}", k.path)),
        }
    }
    lines
}

/// The coordinator, through the agent's HTTP routes.
impl ArtifactSink for testfleet_client::AgentHttp {
    fn put<'a>(
        &'a self,
        attempt_id: i64,
        path: &'a str,
        kind: ArtifactKind,
        digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), ArtifactError>> {
        Box::pin(async move {
            self.put_artifact(attempt_id, path, kind.as_str(), digest, file)
                .await
                .map_err(ArtifactError::from)
        })
    }
}

/// A local directory (`testfleet run`): files are copied under `dir`,
/// which the sink creates; paths were checked to be relative.
#[derive(Debug, Clone)]
pub struct DirSink {
    pub dir: PathBuf,
}

impl ArtifactSink for DirSink {
    fn put<'a>(
        &'a self,
        _attempt_id: i64,
        path: &'a str,
        _kind: ArtifactKind,
        _digest: &'a Digest,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<(), ArtifactError>> {
        Box::pin(async move {
            testfleet_cas::manifest::check_relative(path)?;
            let dest = self.dir.join(path);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|source| ArtifactError::Io {
                        path: parent.to_owned(),
                        source,
                    })?;
            }
            tokio::fs::copy(file, &dest)
                .await
                .map(|_| ())
                .map_err(|source| ArtifactError::Io { path: dest, source })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(always: &[&str], on_failure: &[&str]) -> WorkItem {
        let mut item: WorkItem = serde_json::from_value(serde_json::json!({
            "integrationId": "1", "integrationURL": null, "integrationTimestamp": "2024-01-01T00:00:00.000Z",
            "integrationData": [], "branch": "", "sha": ""
        }))
        .unwrap();
        item.artifacts.always = always.iter().map(|s| s.to_string()).collect();
        item.artifacts.on_failure = on_failure.iter().map(|s| s.to_string()).collect();
        item
    }

    #[test]
    fn hostile_artifact_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("out")).unwrap();
        std::fs::write(src.join("out/report.txt"), "ok").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("out/passwd")).unwrap();
        std::os::unix::fs::symlink("../../secret.txt", src.join("out/up")).unwrap();
        std::os::unix::fs::symlink("report.txt", src.join("out/inside")).unwrap();
        let it = item(&["out/*", "../secret.txt", "/etc/passwd"], &["core*"]);
        let (kept, notes) = select_artifacts(&it, &src, false, &[]);
        let paths: Vec<&str> = kept.iter().map(|k| k.path.as_str()).collect();
        assert_eq!(paths, vec!["out/inside", "out/report.txt"]);
        let notes = notes.join("\n");
        assert!(notes.contains("`../secret.txt`: refused"), "{notes}");
        assert!(notes.contains("`/etc/passwd`: refused"), "{notes}");
        assert!(
            notes.contains("`out/passwd` refused: it is a symlink pointing outside"),
            "{notes}"
        );
        assert!(notes.contains("`out/up` refused"), "{notes}");
        // on_failure patterns and logs only when the attempt failed.
        let log = dir.path().join("x.stdout");
        std::fs::write(&log, "out").unwrap();
        let (kept, _) = select_artifacts(&it, &src, true, &[(ArtifactKind::Stdout, log)]);
        assert!(
            kept.iter()
                .any(|k| k.path == ".testfleet/stdout.log" && k.kind == ArtifactKind::Stdout)
        );
    }
}
