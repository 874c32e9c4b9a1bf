//! Input trees: a directory hashed into a [`Manifest`] of (path, mode, size,
//! digest), with the path rules that keep a tree inside its directory.
//!
//! Hashing runs on every core; a [`HashCache`] keyed like git's index by
//! (path, size, mtime, inode) lets an unchanged tree be described without
//! reading a byte of it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::{CasError, Digest};

/// Manifests larger than this are refused (about a million entries).
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    /// A symbolic link whose target stays inside the tree.
    Symlink,
}

/// One file or symlink of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, no `.` or `..` components.
    pub path: String,
    pub kind: EntryKind,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub size: u64,
    /// The content's digest (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The link's target (symlinks only), relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A tree: entries sorted by path. Its canonical form is its JSON
/// serialization, and its digest is the digest of that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The canonical bytes (what is stored as a blob).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Parses and validates stored bytes; `expected` is checked first.
    pub fn from_bytes(bytes: &[u8], expected: Option<&Digest>) -> Result<Manifest, CasError> {
        if let Some(expected) = expected {
            let actual = Digest::of(bytes);
            if actual != *expected {
                return Err(CasError::Mismatch {
                    expected: *expected,
                    actual,
                });
            }
        }
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| CasError::Manifest(format!("not a testfleet manifest: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Total bytes of the files.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The distinct blob digests of the files.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| e.digest)
            .filter(|d| seen.insert(*d))
            .collect()
    }

    /// Checks every rule a tree must follow before anything is written from it.
    pub fn validate(&self) -> Result<(), CasError> {
        if self.version != 1 {
            return Err(CasError::Manifest(format!(
                "version {} is not supported (this testfleet reads version 1)",
                self.version
            )));
        }
        let mut prev: Option<&str> = None;
        let mut taken: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for e in &self.entries {
            check_relative(&e.path)?;
            if let Some(p) = prev
                && p >= e.path.as_str()
            {
                return Err(CasError::Manifest(format!(
                    "entries are not sorted and unique (`{p}` before `{}`)",
                    e.path
                )));
            }
            prev = Some(&e.path);
            // No entry may sit under another file or symlink: writing
            // `link/x` would follow `link` out of the tree.
            for (i, b) in e.path.bytes().enumerate() {
                if b == b'/' && taken.contains(&e.path[..i]) {
                    return Err(CasError::unsafe_path(
                        e.path.clone(),
                        format!("it lies under `{}`, which is not a directory", &e.path[..i]),
                    ));
                }
            }
            taken.insert(&e.path);
            match e.kind {
                EntryKind::File => {
                    if e.digest.is_none() {
                        return Err(CasError::Manifest(format!(
                            "file `{}` has no digest",
                            e.path
                        )));
                    }
                }
                EntryKind::Symlink => {
                    let target = e.target.as_deref().ok_or_else(|| {
                        CasError::Manifest(format!("symlink `{}` has no target", e.path))
                    })?;
                    check_link_target(&e.path, target)?;
                }
            }
        }
        Ok(())
    }
}

/// A relative, normalized, `/`-separated path with no `..`.
pub fn check_relative(path: &str) -> Result<(), CasError> {
    let bad = |reason: &str| Err(CasError::unsafe_path(path, reason));
    if path.is_empty() {
        return bad("the path is empty");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed; paths are relative to the tree");
    }
    if path.contains('\0') {
        return bad("the path contains a NUL byte");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("the path has an empty component (`//` or a trailing `/`)"),
            "." => return bad("`.` components are not allowed"),
            ".." => return bad("`..` would leave the tree"),
            _ => {}
        }
    }
    Ok(())
}

/// A symlink at `path` pointing at `target` must stay inside the tree.
pub fn check_link_target(path: &str, target: &str) -> Result<(), CasError> {
    if target.starts_with('/') {
        return Err(CasError::unsafe_path(
            path,
            format!("the symlink points at the absolute path `{target}`, outside the tree"),
        ));
    }
    // Resolve lexically from the link's directory.
    let mut depth: Vec<&str> = path.split('/').collect();
    depth.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err(CasError::unsafe_path(
                        path,
                        format!("the symlink points at `{target}`, outside the tree"),
                    ));
                }
            }
            p => depth.push(p),
        }
    }
    Ok(())
}

/// A file of a hashed tree: where it is on disk, for uploading.
#[derive(Debug, Clone)]
pub struct TreeFile {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
}

/// What was hashed.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashStats {
    pub files: usize,
    pub bytes: u64,
    /// Files whose digest came from the cache.
    pub cached: usize,
    /// Bytes actually read and hashed.
    pub hashed_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    digest: Digest,
}

/// Digests of files known by (path, size, mtime, inode), kept in a file.
#[derive(Debug, Default)]
pub struct HashCache {
    file: Option<PathBuf>,
    entries: HashMap<String, CacheEntry>,
}

impl HashCache {
    /// Loads the cache kept at `file` (empty when missing or unreadable).
    pub fn load(file: &Path) -> HashCache {
        let entries = std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            file: Some(file.to_owned()),
            entries,
        }
    }

    /// Writes the cache back. Entries modified in the last two seconds are
    /// left out: a file written again within the same mtime tick must not be
    /// trusted (git's "racy" entries).
    pub fn save(&self) -> Result<(), CasError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let keep: BTreeMap<&String, &CacheEntry> = self
            .entries
            .iter()
            .filter(|(_, e)| now - e.mtime_ns > 2_000_000_000)
            .collect();
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CasError::io(dir, e))?;
        }
        let tmp = file.with_extension("tmp");
        let bytes = serde_json::to_vec(&keep).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(|e| CasError::io(&tmp, e))?;
        std::fs::rename(&tmp, file).map_err(|e| CasError::io(file, e))
    }
}

struct Pending {
    rel: String,
    abs: PathBuf,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    executable: bool,
}

/// Hashes the tree under `root`. Refuses symlinks that leave the tree,
/// special files and names that are not UTF-8, naming the path.
pub fn hash_tree(
    root: &Path,
    mut cache: Option<&mut HashCache>,
) -> Result<(Manifest, Vec<TreeFile>, HashStats), CasError> {
    let meta = std::fs::metadata(root).map_err(|e| CasError::io(root, e))?;
    if !meta.is_dir() {
        return Err(CasError::io(
            root,
            std::io::Error::other("inputs must be a directory"),
        ));
    }
    let mut files: Vec<Pending> = Vec::new();
    let mut links: Vec<Entry> = Vec::new();
    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.into());
            CasError::io(&path, e.into())
        })?;
        let abs = item.path();
        let rel_path = abs.strip_prefix(root).unwrap_or(abs);
        let rel = rel_path
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str().map(str::to_owned).ok_or_else(|| {
                    CasError::unsafe_path(
                        rel_path.to_string_lossy(),
                        "the name is not valid UTF-8; rename the file (testfleet stores paths as UTF-8)",
                    )
                }),
                _ => Err(CasError::unsafe_path(
                    rel_path.to_string_lossy(),
                    "unexpected path component",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join("/");
        let ft = item.file_type();
        if ft.is_dir() {
            continue;
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(abs).map_err(|e| CasError::io(abs, e))?;
            let target = target.to_str().ok_or_else(|| {
                CasError::unsafe_path(&rel, "the symlink's target is not valid UTF-8")
            })?;
            check_link_target(&rel, target)?;
            links.push(Entry {
                path: rel,
                kind: EntryKind::Symlink,
                executable: false,
                size: 0,
                digest: None,
                target: Some(target.to_owned()),
            });
            continue;
        }
        if !ft.is_file() {
            return Err(CasError::unsafe_path(
                rel,
                "only regular files, directories and symlinks can be inputs (this is a socket, FIFO or device)",
            ));
        }
        let md = item.metadata().map_err(|e| CasError::io(abs, e.into()))?;
        files.push(Pending {
            rel,
            abs: abs.to_owned(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ino: md.ino(),
            executable: md.mode() & 0o111 != 0,
        });
    }

    // Look up the cache, then hash the rest on every core.
    let mut digests: Vec<Option<Digest>> = vec![None; files.len()];
    let mut stats = HashStats {
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        ..HashStats::default()
    };
    if let Some(cache) = cache.as_deref() {
        for (i, f) in files.iter().enumerate() {
            if let Some(e) = cache.entries.get(&f.rel)
                && e.size == f.size
                && e.mtime_ns == f.mtime_ns
                && e.ino == f.ino
            {
                digests[i] = Some(e.digest);
                stats.cached += 1;
            }
        }
    }
    let todo: Vec<usize> = (0..files.len()).filter(|i| digests[*i].is_none()).collect();
    stats.hashed_bytes = todo.iter().map(|i| files[*i].size).sum();
    let results: Mutex<Vec<(usize, Digest)>> = Mutex::new(Vec::with_capacity(todo.len()));
    let failure: Mutex<Option<CasError>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(k) else { break };
                    match Digest::of_file(&files[i].abs) {
                        Ok((d, len)) if len == files[i].size => results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, d)),
                        Ok(_) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(CasError::io(
                                    &files[i].abs,
                                    std::io::Error::other(
                                        "the file changed while it was being hashed",
                                    ),
                                ));
                            break;
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
    for (i, d) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        digests[i] = Some(d);
    }

    let mut entries = links;
    let mut tree_files = Vec::with_capacity(files.len());
    for (f, d) in files.into_iter().zip(digests) {
        let Some(digest) = d else {
            return Err(CasError::Manifest(format!("`{}` was not hashed", f.rel)));
        };
        if let Some(cache) = cache.as_deref_mut() {
            cache.entries.insert(
                f.rel.clone(),
                CacheEntry {
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    ino: f.ino,
                    digest,
                },
            );
        }
        tree_files.push(TreeFile {
            digest,
            size: f.size,
            path: f.abs,
        });
        entries.push(Entry {
            path: f.rel,
            kind: EntryKind::File,
            executable: f.executable,
            size: f.size,
            digest: Some(digest),
            target: None,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        version: 1,
        entries,
    };
    manifest.validate()?;
    Ok((manifest, tree_files, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_only() {
        assert!(check_relative("a/b.txt").is_ok());
        for bad in ["", "/etc/passwd", "a/../../x", "..", "a//b", "./a", "a/"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_targets_stay_inside() {
        assert!(check_link_target("a/b", "c").is_ok());
        assert!(check_link_target("a/b", "../c").is_ok());
        assert!(check_link_target("a/b", "../../c").is_err());
        assert!(check_link_target("b", "/etc/passwd").is_err());
        assert!(check_link_target("a/b", "./../x/../../y").is_err());
    }

    #[test]
    fn manifests_refuse_entries_under_files() {
        let d = Digest::of(b"x");
        let file = |p: &str| Entry {
            path: p.into(),
            kind: EntryKind::File,
            executable: false,
            size: 1,
            digest: Some(d),
            target: None,
        };
        let m = Manifest {
            version: 1,
            entries: vec![file("a"), file("a/b")],
        };
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        let unsorted = Manifest {
            version: 1,
            entries: vec![file("b"), file("a")],
        };
        assert!(unsorted.validate().is_err());
    }
}
