//! The agent's blob cache and [`materialize`].
//!
//! The cache is a directory of blobs named by digest with a size limit;
//! least recently used blobs are evicted first (use is recorded in the
//! file's mtime, so the order survives a restart). A blob is hashed every
//! time it is used, while it is copied into a run directory: a corrupted
//! blob is dropped and fetched again, never handed to a task.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use crate::manifest::{EntryKind, Manifest};
use crate::{CasError, Digest};

/// Where missing blobs come from (the coordinator, or a local tree).
pub trait Fetcher: Send + Sync {
    /// Writes the blob's content to `dest` (a new file). `size` is the
    /// expected size; a source sending more must be cut off.
    fn fetch<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), CasError>>;
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Digest, (u64, SystemTime)>,
    total: u64,
}

/// A local directory of blobs with a size limit and LRU eviction.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
}

/// What [`materialize`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaterializeStats {
    pub files: usize,
    pub bytes: u64,
    /// Blobs fetched because the cache did not have them.
    pub fetched: usize,
    pub fetched_bytes: u64,
    /// Cached blobs found corrupted and fetched again.
    pub refetched: usize,
}

impl BlobCache {
    /// Opens (creating) the cache in `dir`, holding at most `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> Result<BlobCache, CasError> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| CasError::io(dir, e))?;
        let mut index = Index::default();
        for shard in std::fs::read_dir(dir).map_err(|e| CasError::io(dir, e))? {
            let shard = shard.map_err(|e| CasError::io(dir, e))?;
            if shard.file_name().len() != 2 {
                continue;
            }
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let Some(d) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Digest>().ok())
                else {
                    continue;
                };
                if let Ok(md) = f.metadata() {
                    let used = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    index.total += md.len();
                    index.entries.insert(d, (md.len(), used));
                }
            }
        }
        // Leftovers of interrupted fetches.
        if let Ok(tmp) = std::fs::read_dir(dir.join("tmp")) {
            for f in tmp.flatten() {
                let _ = std::fs::remove_file(f.path());
            }
        }
        let cache = BlobCache {
            dir: dir.to_owned(),
            limit,
            index: Mutex::new(index),
        };
        cache.evict(&Default::default());
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.lock().entries.contains_key(d)
    }

    /// Where the blob is (or would be) kept.
    pub fn path_of(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tmp_path(&self) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        self.dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Drops a blob (corrupted, or evicted).
    pub fn remove(&self, d: &Digest) {
        let _ = std::fs::remove_file(self.path_of(d));
        let mut index = self.lock();
        if let Some((size, _)) = index.entries.remove(d) {
            index.total -= size;
        }
    }

    /// Fetches a blob into the cache, verifying it before it is kept.
    pub async fn fetch(
        &self,
        fetcher: &dyn Fetcher,
        d: &Digest,
        size: u64,
    ) -> Result<(), CasError> {
        let tmp = self.tmp_path();
        let result = async {
            fetcher.fetch(d, size, &tmp).await?;
            let tmp2 = tmp.clone();
            let (actual, len) = tokio::task::spawn_blocking(move || Digest::of_file(&tmp2))
                .await
                .map_err(|e| CasError::Transfer(e.to_string()))??;
            if actual != *d {
                return Err(CasError::Mismatch {
                    expected: *d,
                    actual,
                });
            }
            let dest = self.path_of(d);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| CasError::io(parent, e))?;
            }
            std::fs::rename(&tmp, &dest).map_err(|e| CasError::io(&dest, e))?;
            let mut index = self.lock();
            if let Some((old, _)) = index.entries.insert(*d, (len, SystemTime::now())) {
                index.total -= old;
            }
            index.total += len;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Evicts least recently used blobs until the cache fits its limit,
    /// keeping the blobs in `keep`.
    pub fn evict(&self, keep: &std::collections::HashSet<Digest>) {
        let mut index = self.lock();
        if index.total <= self.limit {
            return;
        }
        let mut by_age: Vec<(SystemTime, Digest, u64)> = index
            .entries
            .iter()
            .filter(|(d, _)| !keep.contains(*d))
            .map(|(d, (size, used))| (*used, *d, *size))
            .collect();
        by_age.sort();
        for (_, d, size) in by_age {
            if index.total <= self.limit {
                break;
            }
            let _ = std::fs::remove_file(self.path_of(&d));
            index.entries.remove(&d);
            index.total -= size;
        }
    }

    fn touch(&self, d: &Digest, when: SystemTime) {
        if let Some(e) = self.lock().entries.get_mut(d) {
            e.1 = when;
        }
    }
}

/// Writes `manifest`'s tree under `dest`, fetching missing blobs through the
/// cache. Every blob is hashed as it is copied; a corrupted cached blob is
/// fetched again. Nothing is written outside `dest`: parents are real
/// directories (never symlinks) and files are created new (an existing file
/// or symlink at a path is an error, not overwritten).
pub async fn materialize(
    manifest: &Manifest,
    cache: &BlobCache,
    fetcher: &dyn Fetcher,
    dest: &Path,
) -> Result<MaterializeStats, CasError> {
    manifest.validate()?;
    std::fs::create_dir_all(dest).map_err(|e| CasError::io(dest, e))?;
    let mut stats = MaterializeStats {
        files: manifest
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count(),
        bytes: manifest.total_size(),
        ..Default::default()
    };
    let sizes: HashMap<Digest, u64> = manifest
        .entries
        .iter()
        .filter_map(|e| e.digest.map(|d| (d, e.size)))
        .collect();
    let keep: std::collections::HashSet<Digest> = sizes.keys().copied().collect();

    let mut pending: Vec<usize> = (0..manifest.entries.len())
        .filter(|i| manifest.entries[*i].kind == EntryKind::File)
        .collect();
    for round in 0..2 {
        // Fetch what the cache lacks.
        let mut wanted: Vec<Digest> = pending
            .iter()
            .filter_map(|i| manifest.entries[*i].digest)
            .filter(|d| !cache.contains(d))
            .collect();
        wanted.sort();
        wanted.dedup();
        // Eight at a time. (A plain loop over chunks: stream combinators
        // holding closures across awaits make the future not `Send` for
        // every lifetime, which `tokio::spawn` of a caller needs.)
        for chunk in wanted.chunks(8) {
            let mut fetches = Vec::with_capacity(chunk.len());
            for d in chunk {
                fetches.push(cache.fetch(fetcher, d, sizes[d]));
            }
            futures_util::future::try_join_all(fetches).await?;
        }
        stats.fetched += wanted.len();
        stats.fetched_bytes += wanted.iter().map(|d| sizes[d]).sum::<u64>();

        // Copy while hashing, on every core.
        let corrupt = {
            let dest = dest.to_owned();
            let entries: Vec<(String, bool, Digest, PathBuf)> = pending
                .iter()
                .map(|i| {
                    let e = &manifest.entries[*i];
                    let d = e.digest.unwrap_or(Digest([0; 32]));
                    (e.path.clone(), e.executable, d, cache.path_of(&d))
                })
                .collect();
            tokio::task::spawn_blocking(move || place_files(&dest, &entries))
                .await
                .map_err(|e| CasError::Transfer(e.to_string()))??
        };
        let now = SystemTime::now();
        for d in &keep {
            cache.touch(d, now);
        }
        if corrupt.is_empty() {
            pending.clear();
            break;
        }
        if round == 1 {
            return Err(CasError::Transfer(format!(
                "blob {} was corrupted again after being fetched again",
                corrupt[0].1
            )));
        }
        let bad: std::collections::HashSet<Digest> = corrupt.iter().map(|(_, d)| *d).collect();
        for d in &bad {
            tracing::warn!(blob = %d, "cached blob is corrupted; fetching it again");
            cache.remove(d);
        }
        stats.refetched += bad.len();
        pending = corrupt.iter().map(|(i, _)| pending[*i]).collect();
    }

    for e in manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
    {
        let link = dest.join(&e.path);
        if let Some(parent) = link.parent() {
            create_dirs(dest, parent)?;
        }
        std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &link)
            .map_err(|err| CasError::io(&link, err))?;
    }
    cache.evict(&keep);
    Ok(stats)
}

/// Creates `dir` (inside `root`), refusing to go through a symlink.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), CasError> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| CasError::unsafe_path(dir.display().to_string(), "outside the destination"))?;
    let mut cur = root.to_owned();
    for part in rel.components() {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(CasError::unsafe_path(
                    cur.display().to_string(),
                    "a parent directory is not a directory",
                ));
            }
            Err(_) => match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CasError::io(&cur, e)),
            },
        }
    }
    Ok(())
}

/// Copies each cached blob to its path under `dest`, hashing it on the
/// way. Returns the (index, digest) of entries whose blob was corrupted;
/// their files are removed.
fn place_files(
    dest: &Path,
    entries: &[(String, bool, Digest, PathBuf)],
) -> Result<Vec<(usize, Digest)>, CasError> {
    // Directories first, once each, in order.
    let mut dirs: Vec<&str> = entries
        .iter()
        .filter_map(|(p, ..)| p.rsplit_once('/').map(|(d, _)| d))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    for d in dirs {
        create_dirs(dest, &dest.join(d))?;
    }
    let next = AtomicUsize::new(0);
    let corrupt = Mutex::new(Vec::new());
    let failure: Mutex<Option<CasError>> = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(entries.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, exec, digest, src)) = entries.get(i) else {
                        break;
                    };
                    let target = dest.join(path);
                    match copy_verified(src, &target, *exec, digest, &mut buf) {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = std::fs::remove_file(&target);
                            corrupt
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((i, *digest));
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(corrupt.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Places the cached blob `src` at `target` (a new path), returning whether
/// its content matched `digest`; a missing `src` counts as corrupted.
///
/// The blob is hashed first, then hard-linked: cached blobs are read-only
/// (0444, or 0555 for an executable entry), so a task cannot change its
/// inputs in place by accident, and a task that forces it (chmod, then
/// write) only damages a blob that the next use hashes and fetches again.
/// When the blob's mode is the other one, or linking fails (another
/// filesystem), the blob is copied instead, while it is hashed.
fn copy_verified(
    src: &Path,
    target: &Path,
    exec: bool,
    digest: &Digest,
    buf: &mut [u8],
) -> Result<bool, CasError> {
    let mut input = match std::fs::File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CasError::io(src, e)),
    };
    let meta = input.metadata().map_err(|e| CasError::io(src, e))?;
    let mode = meta.permissions().mode() & 0o777;
    let wanted = if exec { 0o555 } else { 0o444 };
    if mode == wanted || (mode != 0o444 && mode != 0o555) {
        let mut hasher = Sha256::new();
        loop {
            let n = input.read(buf).map_err(|e| CasError::io(src, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if Digest::from_hasher(hasher) != *digest {
            return Ok(false);
        }
        if mode != wanted {
            // First use of a freshly fetched blob decides its mode.
            input
                .set_permissions(std::fs::Permissions::from_mode(wanted))
                .map_err(|e| CasError::io(src, e))?;
        }
        // Record the use for LRU eviction after a restart.
        let _ = input.set_modified(SystemTime::now());
        match std::fs::hard_link(src, target) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CasError::io(target, e));
            }
            Err(_) => {
                use std::io::Seek;
                input
                    .seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| CasError::io(src, e))?;
            }
        }
    }
    copy_hashing(input, src, target, exec, digest, buf)
}

/// Copies while hashing into a new, writable file.
fn copy_hashing(
    mut input: std::fs::File,
    src: &Path,
    target: &Path,
    exec: bool,
    digest: &Digest,
    buf: &mut [u8],
) -> Result<bool, CasError> {
    // `create_new` (O_EXCL) never follows a symlink planted at `target`.
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| CasError::io(target, e))?;
    let mut hasher = Sha256::new();
    loop {
        let n = input.read(buf).map_err(|e| CasError::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| CasError::io(target, e))?;
    }
    if Digest::from_hasher(hasher) != *digest {
        return Ok(false);
    }
    let mode = if exec { 0o755 } else { 0o644 };
    output
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| CasError::io(target, e))?;
    let _ = input.set_modified(SystemTime::now());
    Ok(true)
}
