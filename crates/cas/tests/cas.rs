//! One suite, two backends: a local directory and a real S3 endpoint
//! (`moto_server` from PyPI `moto[server]`, on a free loopback port).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use testfleet_cas::{
    BlobBackend, BlobCache, BlobStore, CasError, Digest, Entry, EntryKind, HashCache, Manifest,
    S3Config, hash_tree, materialize,
};
use testfleet_testkit::moto::Moto;
use testfleet_testkit::rng::pseudo_random;

const LIMIT: u64 = 64 << 20;

/// A fresh bucket on moto (moto does not check signatures).
async fn s3_store(moto: &Moto, name: &str) -> BlobStore {
    // object_store's HTTP client needs a rustls provider; testfleet uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    moto.create_bucket(name);
    BlobStore::open(
        &BlobBackend::S3(S3Config {
            bucket: name.into(),
            endpoint: Some(moto.endpoint()),
            region: "us-east-1".into(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            prefix: "testfleet".into(),
        }),
        LIMIT,
    )
    .unwrap()
}

fn local_store(dir: &Path) -> BlobStore {
    BlobStore::open(
        &BlobBackend::Local {
            root: dir.join("blobs"),
        },
        LIMIT,
    )
    .unwrap()
}

/// Every test of the suite, against one store.
async fn suite(store: &BlobStore, work: &Path) {
    roundtrip_small_and_large(store).await;
    mismatch_is_refused(store).await;
    oversized_is_refused_before_reading(store).await;
    oversized_without_length_stops_at_the_limit(store).await;
    list_and_delete(store).await;
    tree_upload_twice_sends_nothing_then_materializes(store, work).await;
    corrupted_cache_blob_is_fetched_again(store, work).await;
}

async fn roundtrip_small_and_large(store: &BlobStore) {
    for len in [0usize, 5, 20 << 20] {
        let data = Bytes::from(pseudo_random(len, len as u64));
        let d = Digest::of(&data);
        assert_eq!(store.missing(&[d]).await.unwrap(), vec![d]);
        // Stream it in 1 MiB chunks, as the REST endpoint does.
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let size = store
            .put_stream(&d, Some(len as u64), futures_util::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(size, len as u64);
        assert!(store.missing(&[d]).await.unwrap().is_empty());
        let (size, mut stream) = store.get(&d).await.unwrap();
        assert_eq!(size, len as u64);
        let mut back = Vec::new();
        while let Some(c) = stream.next().await {
            back.extend_from_slice(&c.unwrap());
        }
        assert_eq!(Digest::of(&back), d, "content of a {len}-byte blob");
    }
}

async fn mismatch_is_refused(store: &BlobStore) {
    let claimed = Digest::of(b"what the client said");
    for data in [vec![7u8; 100], pseudo_random(12 << 20, 9)] {
        let err = store
            .put_bytes(&claimed, Bytes::from(data))
            .await
            .unwrap_err();
        assert!(matches!(err, CasError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match its digest"));
        assert!(!store.contains(&claimed).await.unwrap());
    }
    // No multipart leftovers are visible as blobs.
    let listed: Vec<_> = store.list().collect().await;
    assert!(listed.iter().all(|m| m.as_ref().unwrap().digest != claimed));
}

async fn oversized_is_refused_before_reading(store: &BlobStore) {
    let polled = Arc::new(AtomicBool::new(false));
    let p = polled.clone();
    let stream = futures_util::stream::poll_fn(move |_| {
        p.store(true, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(Bytes::from_static(b"x"))))
    });
    let d = Digest::of(b"big");
    let err = store
        .put_stream(&d, Some(LIMIT + 1), stream)
        .await
        .unwrap_err();
    assert!(matches!(err, CasError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("over the limit"));
    assert!(
        !polled.load(Ordering::SeqCst),
        "the body was read although its declared length is over the limit"
    );
}

async fn oversized_without_length_stops_at_the_limit(store: &BlobStore) {
    // An endless stream with no declared length: refused once past the limit.
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = read.clone();
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    let stream = futures_util::stream::poll_fn(move |_| {
        r.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(chunk.clone())))
    });
    let d = Digest::of(b"endless");
    let err = store.put_stream(&d, None, stream).await.unwrap_err();
    assert!(matches!(err, CasError::TooLarge { .. }), "{err}");
    assert!(read.load(Ordering::SeqCst) <= LIMIT + (1 << 20));
    assert!(!store.contains(&d).await.unwrap());
}

async fn list_and_delete(store: &BlobStore) {
    let d = Digest::of(b"to delete");
    store
        .put_bytes(&d, Bytes::from_static(b"to delete"))
        .await
        .unwrap();
    let listed: Vec<_> = store.list().map(|m| m.unwrap()).collect::<Vec<_>>().await;
    let me = listed.iter().find(|m| m.digest == d).expect("listed");
    assert_eq!(me.size, 9);
    assert!(me.last_modified_ms > 0);
    store.delete(&d).await.unwrap();
    assert!(!store.contains(&d).await.unwrap());
    store.delete(&d).await.unwrap();
    assert!(matches!(store.get(&d).await, Err(CasError::NotFound(_))));
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data/deep/er")).unwrap();
    std::fs::write(root.join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for i in 0..20 {
        std::fs::write(
            root.join(format!("data/deep/er/f{i}.bin")),
            pseudo_random(1000 * i, i as u64),
        )
        .unwrap();
    }
    // Two files with the same content: one blob.
    std::fs::write(root.join("data/a.txt"), "same").unwrap();
    std::fs::write(root.join("data/b.txt"), "same").unwrap();
    std::os::unix::fs::symlink("../bin/run.sh", root.join("data/run-link")).unwrap();
}

/// What the client does: ask which blobs are missing, upload only those.
async fn upload_tree(store: &BlobStore, root: &Path, cache: &mut HashCache) -> (Digest, usize) {
    let (manifest, files, _) = hash_tree(root, Some(cache)).unwrap();
    let bytes = manifest.to_bytes();
    let md = manifest.digest();
    let mut wanted = manifest.blobs();
    wanted.push(md);
    let missing = store.missing(&wanted).await.unwrap();
    for d in &missing {
        if *d == md {
            store
                .put_bytes(&md, Bytes::from(bytes.clone()))
                .await
                .unwrap();
        } else {
            let f = files.iter().find(|f| f.digest == *d).unwrap();
            let data = std::fs::read(&f.path).unwrap();
            store.put_bytes(d, Bytes::from(data)).await.unwrap();
        }
    }
    (md, missing.len())
}

async fn tree_upload_twice_sends_nothing_then_materializes(store: &BlobStore, work: &Path) {
    let root = work.join("tree");
    make_tree(&root);
    let mut cache = HashCache::load(&work.join("hash-cache.json"));
    let (md, sent) = upload_tree(store, &root, &mut cache).await;
    // 20 data files, one script, one shared blob, the manifest; the empty
    // file's blob is already there (the round-trip test stored it).
    assert_eq!(sent, 22);
    cache.save().unwrap();
    let mut cache = HashCache::load(&work.join("hash-cache.json"));
    let (md2, sent2) = upload_tree(store, &root, &mut cache).await;
    assert_eq!(md2, md, "an unchanged tree has the same manifest");
    assert_eq!(
        sent2, 0,
        "a second upload of an unchanged tree sends no blob"
    );

    let manifest =
        Manifest::from_bytes(&store.get_bytes(&md, 1 << 20).await.unwrap(), Some(&md)).unwrap();
    let blob_cache = BlobCache::open(&work.join("agent-cache"), 1 << 30).unwrap();
    let dest = work.join("run1");
    let stats = materialize(&manifest, &blob_cache, store, &dest)
        .await
        .unwrap();
    assert_eq!(stats.fetched, 22);
    assert_eq!(
        std::fs::read(dest.join("data/deep/er/f7.bin")).unwrap(),
        pseudo_random(7000, 7)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable");
    let mode = std::fs::metadata(dest.join("data/a.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "not executable");
    assert_eq!(
        std::fs::read_link(dest.join("data/run-link")).unwrap(),
        PathBuf::from("../bin/run.sh")
    );
    // Warm cache: nothing fetched.
    let stats = materialize(&manifest, &blob_cache, store, &work.join("run2"))
        .await
        .unwrap();
    assert_eq!(stats.fetched, 0);
}

async fn corrupted_cache_blob_is_fetched_again(store: &BlobStore, work: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let root = work.join("tree");
    let (manifest, _, _) = hash_tree(&root, None).unwrap();
    let blob_cache = BlobCache::open(&work.join("agent-cache"), 1 << 30).unwrap();
    let victim = manifest
        .entries
        .iter()
        .find(|e| e.path == "data/deep/er/f5.bin")
        .unwrap()
        .digest
        .unwrap();
    let cached = blob_cache.path_of(&victim);
    assert!(cached.exists());
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[10] ^= 0xff;
    // Cached blobs are read-only; a task that forces a write looks like this.
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&cached, bytes).unwrap();
    let dest = work.join("run3");
    let stats = materialize(&manifest, &blob_cache, store, &dest)
        .await
        .unwrap();
    assert_eq!(stats.refetched, 1, "the corrupted blob was fetched again");
    assert_eq!(
        std::fs::read(dest.join("data/deep/er/f5.bin")).unwrap(),
        pseudo_random(5000, 5)
    );
    assert_eq!(Digest::of_file(&cached).unwrap().0, victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    suite(&store, dir.path()).await;
    // Nothing is left in the store's staging area.
    let tmp = dir.path().join("blobs/tmp");
    let left = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "staging files left in {}", tmp.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_s3_moto() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = s3_store(&moto, "testfleet-suite").await;
    suite(&store, dir.path()).await;
}

#[tokio::test]
async fn s3_configuration_errors_are_clear() {
    let err = BlobStore::open(
        &BlobBackend::S3(S3Config {
            bucket: " ".into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            prefix: String::new(),
        }),
        LIMIT,
    )
    .unwrap_err();
    assert!(err.to_string().contains("bucket name is empty"), "{err}");
}

fn file_entry(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::File,
        executable: false,
        size: data.len() as u64,
        digest: Some(Digest::of(data)),
        target: None,
    }
}

#[tokio::test]
async fn hostile_manifests_write_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    store
        .put_bytes(&Digest::of(b"evil"), Bytes::from_static(b"evil"))
        .await
        .unwrap();
    let cache = BlobCache::open(&dir.path().join("cache"), 1 << 20).unwrap();
    let dest = dir.path().join("sandbox/run");
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (
            vec![file_entry("../escape.txt", b"evil")],
            "`..` would leave the tree",
        ),
        (vec![file_entry("a/../../escape.txt", b"evil")], "`..`"),
        (
            vec![file_entry("/tmp/escape.txt", b"evil")],
            "absolute paths",
        ),
        (
            vec![Entry {
                path: "link".into(),
                kind: EntryKind::Symlink,
                executable: false,
                size: 0,
                digest: None,
                target: Some("../..".into()),
            }],
            "outside the tree",
        ),
        (
            vec![Entry {
                path: "abs".into(),
                kind: EntryKind::Symlink,
                executable: false,
                size: 0,
                digest: None,
                target: Some("/etc".into()),
            }],
            "absolute path",
        ),
        (
            // A symlink then a file through it.
            vec![
                Entry {
                    path: "l".into(),
                    kind: EntryKind::Symlink,
                    executable: false,
                    size: 0,
                    digest: None,
                    target: Some("x".into()),
                },
                file_entry("l/escape.txt", b"evil"),
            ],
            "not a directory",
        ),
    ];
    for (entries, expected) in cases {
        let m = Manifest {
            version: 1,
            entries,
        };
        let _ = std::fs::remove_dir_all(&dest);
        let err = materialize(&m, &cache, &store, &dest).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert!(err.to_string().contains("unsafe path"), "{err}");
    }
    assert!(!dir.path().join("sandbox/escape.txt").exists());
    assert!(!dir.path().join("escape.txt").exists());
    assert!(!Path::new("/tmp/escape.txt").exists());
    // Refused up front: nothing at all was written.
    let written = std::fs::read_dir(&dest).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0);
}

#[test]
fn hostile_trees_are_refused_when_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    let err = hash_tree(&root, None).unwrap_err().to_string();
    assert!(
        err.contains("passwd") && err.contains("absolute path"),
        "{err}"
    );
    std::fs::remove_file(root.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../outside", root.join("up")).unwrap();
    let err = hash_tree(&root, None).unwrap_err().to_string();
    assert!(
        err.contains("`up`") && err.contains("outside the tree"),
        "{err}"
    );
    std::fs::remove_file(root.join("up")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(root.join(bad), "x").unwrap();
    let err = hash_tree(&root, None).unwrap_err().to_string();
    assert!(err.contains("not valid UTF-8"), "{err}");
    std::fs::remove_file(root.join(bad)).unwrap();
    let err = hash_tree(&root.join("ok.txt"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a directory"), "{err}");
    assert!(hash_tree(&root, None).is_ok());
}

#[test]
fn hash_cache_skips_unchanged_files_and_sees_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    make_tree(&root);
    // Age the files so the cache trusts them (racy-git rule).
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    for e in walk_files(&root) {
        std::fs::File::options()
            .write(true)
            .open(&e)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let path = dir.path().join("cache.json");
    let mut cache = HashCache::load(&path);
    let (m1, _, s1) = hash_tree(&root, Some(&mut cache)).unwrap();
    assert_eq!(s1.cached, 0);
    cache.save().unwrap();
    let mut cache = HashCache::load(&path);
    let (m2, _, s2) = hash_tree(&root, Some(&mut cache)).unwrap();
    assert_eq!(m1, m2);
    assert_eq!(s2.cached, s2.files);
    assert_eq!(s2.hashed_bytes, 0);
    // A changed file is hashed again.
    std::fs::write(root.join("data/a.txt"), "changed").unwrap();
    let (m3, _, s3) = hash_tree(&root, Some(&mut cache)).unwrap();
    assert_ne!(m3.digest(), m1.digest());
    assert_eq!(s3.cached, s3.files - 1);
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk_files(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn cache_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(1000, i)).collect();
    for b in &blobs {
        store
            .put_bytes(&Digest::of(b), Bytes::from(b.clone()))
            .await
            .unwrap();
    }
    let cache = BlobCache::open(&dir.path().join("cache"), 2500).unwrap();
    for (i, b) in blobs.iter().enumerate() {
        let m = Manifest {
            version: 1,
            entries: vec![file_entry("f", b)],
        };
        materialize(&m, &cache, &store, &dir.path().join(format!("r{i}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cache.total_bytes() <= 2500, "{}", cache.total_bytes());
    assert!(cache.contains(&Digest::of(&blobs[3])), "newest kept");
    assert!(!cache.contains(&Digest::of(&blobs[0])), "oldest evicted");
    // The order survives reopening.
    drop(cache);
    let cache = BlobCache::open(&dir.path().join("cache"), 1500).unwrap();
    assert!(cache.contains(&Digest::of(&blobs[3])));
    assert!(!cache.contains(&Digest::of(&blobs[2])));
}
