//! Measures the inputs-and-artifacts targets (docs/artifacts.md) against an
//! in-process coordinator on loopback, with the real HTTP paths:
//!
//! 1. re-submitting an unchanged 10,000-file, 1 GB input tree: bytes uploaded
//!    and seconds end to end (hash with the hash cache, ask what is missing,
//!    submit the job);
//! 2. materializing that tree from a warm agent cache;
//! 3. a 2 GB blob uploaded and downloaded through the coordinator: peak RSS of
//!    this process, which holds both the client and the coordinator.
//!
//! `cargo run --release -p testfleet --example inputs_bench -- [--files N]
//! [--file-size BYTES] [--big BYTES] [--dir DIR]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use testfleet_cas::{BlobCache, Digest, Manifest};
use testfleet_client::{AgentHttp, ApiClient};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_path(name: &str) -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
}

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn make_tree(root: &Path, files: u64, size: u64) -> std::io::Result<()> {
    let marker = root.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    let mut buf = vec![0u8; size as usize];
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir)?;
        fill(&mut buf, i + 1);
        std::fs::write(dir.join(format!("f{i:05}.bin")), &buf)?;
    }
    std::fs::write(marker, b"")
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // Linux: writing 5 resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = arg("--files", 10_000);
    let file_size = arg("--file-size", 100_000);
    let big = arg("--big", 2_000_000_000);
    let scratch = tempfile::Builder::new()
        .prefix("testfleet-inputs-bench-")
        .tempdir()?;
    let tree = arg_path("--dir").unwrap_or_else(|| scratch.path().join("tree"));
    eprintln!(
        "making a tree of {files} files × {file_size} bytes in {}",
        tree.display()
    );
    make_tree(&tree, files, file_size)
        .map_err(|e| format!("cannot write the bench tree under {}: {e}", tree.display()))?;

    // An in-process coordinator on loopback.
    let mut config =
        testfleet_server::ServerConfig::new("127.0.0.1:0".parse()?, scratch.path().join("server"));
    config.blobs.max_blob_bytes = 4 << 30;
    // Loopback only; the bench's agent side presents no secret.
    config.allow_any_agent = true;
    let server = testfleet_server::Server::build(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let api = ApiClient::new(&url);
    let hash_cache = scratch.path().join("hash-cache.json");

    let t = Instant::now();
    let first = api.upload_tree(&tree, Some(&hash_cache)).await?;
    println!(
        "first upload: {} files, {} bytes; uploaded {} blobs, {} bytes in {:.2} s",
        first.files,
        first.bytes,
        first.uploaded_blobs,
        first.uploaded_bytes,
        t.elapsed().as_secs_f64()
    );
    // The hash cache does not trust files modified in the last 2 s (racy
    // entries); a real tree is older than that.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let _ = api.upload_tree(&tree, Some(&hash_cache)).await?;

    let t = Instant::now();
    let again = api.upload_tree(&tree, Some(&hash_cache)).await?;
    let md = again.manifest.ok_or("no manifest")?;
    let job = api
        .submit(
            &serde_json::json!({
                "name": "inputs-bench",
                "inputs": format!("sha256:{md}"),
                "task": [{"name": "t", "steps": [{"stage": "test", "run": "true"}]}]
            })
            .to_string(),
        )
        .await?;
    println!(
        "re-submit unchanged tree: {} files ({} from the hash cache), {} bytes uploaded, {} blobs; job {} submitted in {:.3} s end to end",
        again.files,
        again.cached,
        again.uploaded_bytes,
        again.uploaded_blobs,
        job.id,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (_, _, stats) = testfleet_cas::hash_tree(&tree, None)?;
    println!(
        "hash without the cache: {} bytes in {:.3} s",
        stats.hashed_bytes,
        t.elapsed().as_secs_f64()
    );

    // Materialize: cold (fetch through the agent route), then warm.
    let agent = Arc::new(AgentHttp::new(ApiClient::new(&url), "bench-agent", None));
    let cache = BlobCache::open(&scratch.path().join("agent-cache"), 4 << 30)?;
    let manifest_bytes = {
        let p = scratch.path().join("manifest");
        api.download_blob(&md, 1 << 30, &p).await?;
        std::fs::read(&p)?
    };
    let manifest = Manifest::from_bytes(&manifest_bytes, Some(&md))?;
    let t = Instant::now();
    let cold = testfleet_cas::materialize(
        &manifest,
        &cache,
        agent.as_ref(),
        &scratch.path().join("m1"),
    )
    .await?;
    println!(
        "materialize, cold cache: {} files, {} bytes fetched in {:.2} s",
        cold.files,
        cold.fetched_bytes,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(scratch.path().join("m1"));
    let t = Instant::now();
    let warm = testfleet_cas::materialize(
        &manifest,
        &cache,
        agent.as_ref(),
        &scratch.path().join("m2"),
    )
    .await?;
    println!(
        "materialize, warm cache: {} files, {} bytes (every blob hashed), {} fetched, in {:.3} s",
        warm.files,
        warm.bytes,
        warm.fetched,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(scratch.path().join("m2"));
    let _ = std::fs::remove_dir_all(scratch.path().join("agent-cache"));

    // A big blob, streamed both ways.
    let big_file = scratch.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big_file)?);
        let mut buf = vec![0u8; 8 << 20];
        let mut left = big;
        let mut seed = 99;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], seed);
            seed += 1;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    let (d, _) = Digest::of_file(&big_file)?;
    reset_peak_rss();
    let base = peak_rss_kb();
    let t = Instant::now();
    api.put_blob_file(&d, &big_file).await?;
    let up = t.elapsed().as_secs_f64();
    let up_rss = peak_rss_kb();
    let _ = std::fs::remove_file(&big_file);
    reset_peak_rss();
    let t = Instant::now();
    let n = api
        .download_blob(&d, big, &scratch.path().join("big.out"))
        .await?;
    println!(
        "{} bytes uploaded in {up:.1} s (peak RSS {} MB, {} MB before), downloaded in {:.1} s (peak RSS {} MB) — client and coordinator in this one process",
        n,
        up_rss / 1024,
        base / 1024,
        t.elapsed().as_secs_f64(),
        peak_rss_kb() / 1024
    );
    Ok(())
}
