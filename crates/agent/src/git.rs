//! Checkouts through a per-URL bare mirror cache, with the git CLI.
//!
//! The mirror is fetched under a file lock (several agents may share a work
//! directory), then the checkout is a local clone of the mirror, which
//! hard-links objects instead of copying them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("failed to run git (is it installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("failed to prepare {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to lock the mirror cache {path}")]
    Lock { path: String, source: nix::Error },
    /// A repository URL or revision that git would read as an option.
    #[error("refusing {what} `{value}`: it starts with `-`, which git would read as an option")]
    LooksLikeOption { what: &'static str, value: String },
}

/// The mirror directory for a repository URL: readable, and unique by a hash.
pub fn mirror_path(cache_dir: &Path, url: &str) -> PathBuf {
    let readable: String = url
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    cache_dir.join(format!("{readable}-{hash:016x}.git"))
}

async fn git(args: &[&str], cwd: Option<&Path>) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().await.map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Brings the mirror of `url` up to date and checks `rev` out into `dest`
/// (which must not exist). Returns the checked-out commit.
pub async fn checkout(
    cache_dir: &Path,
    url: &str,
    rev: &str,
    dest: &Path,
) -> Result<String, GitError> {
    // A job's source can come from a trigger event's body: never let it
    // become one of git's options (`--upload-pack=…`).
    for (what, value) in [("repository URL", url), ("revision", rev)] {
        if value.starts_with('-') {
            return Err(GitError::LooksLikeOption {
                what,
                value: value.to_owned(),
            });
        }
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| GitError::Io {
        path: cache_dir.display().to_string(),
        source,
    })?;
    let mirror = mirror_path(cache_dir, url);
    let lock_path = mirror.with_extension("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| GitError::Io {
            path: lock_path.display().to_string(),
            source,
        })?;
    let lock = tokio::task::spawn_blocking(move || Flock::lock(lock_file, FlockArg::LockExclusive))
        .await
        .map_err(|e| GitError::Io {
            path: lock_path.display().to_string(),
            source: std::io::Error::other(e),
        })?
        .map_err(|(_, source)| GitError::Lock {
            path: mirror.display().to_string(),
            source,
        })?;

    let mirror_str = mirror.display().to_string();
    if mirror.join("HEAD").exists() {
        git(&["remote", "update", "--prune"], Some(&mirror)).await?;
    } else {
        let tmp = mirror.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let tmp_str = tmp.display().to_string();
        git(&["clone", "--mirror", "--quiet", "--", url, &tmp_str], None).await?;
        std::fs::rename(&tmp, &mirror).map_err(|source| GitError::Io {
            path: mirror_str.clone(),
            source,
        })?;
    }
    let dest_str = dest.display().to_string();
    git(
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--",
            &mirror_str,
            &dest_str,
        ],
        None,
    )
    .await?;
    drop(lock);
    git(&["checkout", "--quiet", "--detach", rev], Some(dest)).await?;
    git(&["remote", "set-url", "origin", url], Some(dest)).await?;
    git(&["rev-parse", "HEAD"], Some(dest)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_or_revision_that_looks_like_an_option_is_refused_before_git_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("checkout");
        let marker = dir.path().join("pwned");
        let evil = format!("--upload-pack=touch {}", marker.display());
        let err = checkout(dir.path(), &evil, "main", &dest)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GitError::LooksLikeOption {
                    what: "repository URL",
                    ..
                }
            ),
            "{err}"
        );
        let err = checkout(dir.path(), "/srv/repo.git", "--orphan=x", &dest)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GitError::LooksLikeOption {
                    what: "revision",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!marker.exists());
        assert!(!dest.exists());
    }
}
