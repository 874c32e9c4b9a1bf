//! Inputs and artifacts through the real binary: a `testfleet server`
//! process, a `testfleet agent` process and the CLI (docs/artifacts.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testfleet_testkit::moto::Moto;
use testfleet_testkit::process::{KillOnDrop, ServerProcess};
use testfleet_testkit::rng::pseudo_random;

const SECRET: &str = "artifacts-secret";

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.env_remove("TESTFLEET_SERVER")
        .env_remove("TESTFLEET_CONFIG")
        .env("TESTFLEET_LOG", "warn");
    cmd
}

/// A server process on a free port; `config` is written to a config file.
fn start_server(dir: &Path, config: &str) -> (ServerProcess, String) {
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, config).unwrap();
    let server = ServerProcess::start(
        bin()
            .arg("--config")
            .arg(&cfg)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--agent-secret", SECRET]),
    );
    let url = server.url().to_owned();
    (server, url)
}

fn start_agent(url: &str, dir: &Path, name: &str) -> KillOnDrop {
    KillOnDrop::spawn(
        bin()
            .args([
                "agent",
                "--server",
                url,
                "--hostname",
                name,
                "--secret",
                SECRET,
            ])
            .arg("--work-dir")
            .arg(dir.join(name))
            .arg("--cache-dir")
            .arg(dir.join(format!("{name}-cache")))
            .args(["--cache-size", "1GB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn cli(url: &str, args: &[&str], cwd: &Path) -> Output {
    let out = bin()
        .arg("--server")
        .arg(url)
        .args(args)
        .current_dir(cwd)
        .env("XDG_CACHE_HOME", cwd.join("user-cache"))
        .output()
        .unwrap();
    println!(
        "$ testfleet {}\n{}{}(exit {:?})",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One raw HTTP/1.1 exchange (so a test controls exactly what is sent).
fn raw_http(url: &str, head: &str, body: &[u8]) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    text(&out)
}

fn sha256_hex(data: &[u8]) -> String {
    testfleet_cas::Digest::of(data).to_hex()
}

fn wait_job_done(url: &str, job: i64, cwd: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = bin()
            .args(["--server", url, "show", &job.to_string(), "--json"])
            .current_dir(cwd)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let state = v["state"].as_str().unwrap_or("");
        if ["passed", "failed", "cancelled"].contains(&state) {
            return v;
        }
        assert!(Instant::now() < deadline, "job {job} did not end: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn inputs_artifacts_downloads_and_repro() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_server, url) = start_server(root, "");
    let _agent = start_agent(&url, root, "art-agent");

    // An input tree: a script, data, a shared blob.
    let tree = root.join("proj/tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(
        tree.join("check.sh"),
        "#!/bin/sh\nset -e\ntest \"$(cat data/a.txt)\" = alpha\ncmp data/big.bin data/big-copy.bin\necho inputs-ok\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tree.join("check.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(tree.join("data/a.txt"), "alpha").unwrap();
    let big = pseudo_random(3 << 20, 7);
    std::fs::write(tree.join("data/big.bin"), &big).unwrap();
    std::fs::write(tree.join("data/big-copy.bin"), &big).unwrap();
    // 40,000 numbered lines on stdout and 2,000 on stderr: kept whole.
    std::fs::write(
        root.join("proj/job.toml"),
        r#"
name = "artifacts-e2e"
inputs = "tree"

[[task]]
name = "uses-inputs"
steps = [{ stage = "test", run = "./check.sh && mkdir -p out && echo report > out/report.txt" }]
artifacts = { always = ["out/*.txt"], on_failure = ["never-kept*"] }

[[task]]
name = "fails"
steps = [{ stage = "test", run = "seq 1 40000; seq 1 2000 >&2; echo dumped > core.123; ln -s /etc/passwd leak; exit 7" }]
artifacts = { on_failure = ["core.*", "leak"] }
retries = { tests = 0, infra = 0 }
"#,
    )
    .unwrap();
    let proj = root.join("proj");

    let first = cli(&url, &["submit", "job.toml", "--wait"], &proj);
    assert_eq!(first.status.code(), Some(1), "the job fails (task `fails`)");
    let err = text(&first.stderr);
    // check.sh, a.txt, one blob for the two big files, and the manifest.
    assert!(err.contains("uploaded 4 blob(s)"), "{err}");

    let second = cli(&url, &["submit", "job.toml"], &proj);
    assert_eq!(second.status.code(), Some(0));
    let err = text(&second.stderr);
    assert!(
        err.contains("uploaded 0 blob(s), 0 bytes"),
        "a second upload of an unchanged tree sends no blob: {err}"
    );
    let job1 = wait_job_done(&url, 1, &proj);
    let passed = job1["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "uses-inputs")
        .unwrap();
    assert_eq!(passed["outcome"], "passed", "{job1}");
    let fails_task = job1["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fails")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // Artifacts: the always glob of the passing task; the failing task's
    // on_failure glob and its whole stdout and stderr; hostile ones refused.
    let list = cli(&url, &["artifacts", "list", "1", "--json"], &proj);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let paths: Vec<(&str, &str)> = list
        .iter()
        .map(|a| {
            (
                a["task_name"].as_str().unwrap(),
                a["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        paths.contains(&("uses-inputs", "out/report.txt")),
        "{paths:?}"
    );
    assert!(paths.contains(&("fails", "core.123")), "{paths:?}");
    assert!(
        paths.contains(&("fails", ".testfleet/stdout.log")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("fails", ".testfleet/stderr.log")),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|(_, p)| p.contains("passwd") || *p == "leak"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|(_, p)| p.contains("never-kept")),
        "{paths:?}"
    );
    let log = cli(&url, &["logs", &fails_task.to_string()], &proj);
    let log = text(&log.stdout);
    assert!(
        log.contains("`leak` refused: it is a symlink pointing outside"),
        "{log}"
    );
    // A glob leaving the checkout (`../../../etc/passwd`) is refused at
    // submit now (crates/testfleet/tests/cli_fixes.rs); the agent's own
    // refusal is tested in crates/agent/src/artifacts.rs.

    let dl = proj.join("dl");
    let out = cli(
        &url,
        &["artifacts", "download", "1", "--failed", "-o", "dl"],
        &proj,
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = std::fs::read_to_string(dl.join("fails/attempt-1/.testfleet/stdout.log")).unwrap();
    let expected: String = (1..=40000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        stdout, expected,
        "stdout of the failed attempt is kept whole"
    );
    let stderr = std::fs::read_to_string(dl.join("fails/attempt-1/.testfleet/stderr.log")).unwrap();
    assert_eq!(stderr.lines().count(), 2000);
    assert_eq!(
        std::fs::read_to_string(dl.join("fails/attempt-1/core.123")).unwrap(),
        "dumped\n"
    );
    assert!(
        !dl.join("uses-inputs").exists(),
        "--failed leaves passed attempts out"
    );
    let out = cli(
        &url,
        &[
            "artifacts",
            "download",
            "1",
            "--task",
            "uses-inputs",
            "--attempt",
            "1",
            "-o",
            "dl2",
        ],
        &proj,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(proj.join("dl2/uses-inputs/attempt-1/out/report.txt")).unwrap(),
        "report\n"
    );

    // Fencing: the finished attempt may not add artifacts any more.
    let attempt = list.iter().find(|a| a["task_name"] == "fails").unwrap()["attempt_id"]
        .as_i64()
        .unwrap();
    let digest = sha256_hex(b"late");
    let resp = raw_http(
        &url,
        &format!(
            "PUT /api/v1/agent/attempts/{attempt}/artifacts?path=late.txt&kind=always&digest={digest} HTTP/1.1\r\nHost: x\r\nx-testfleet-host: art-agent\r\nx-testfleet-secret: {SECRET}\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        ),
        b"late",
    );
    assert!(resp.starts_with("HTTP/1.1 409"), "{resp}");
    assert!(
        resp.contains("only the attempt that holds its task"),
        "{resp}"
    );

    // repro: the failed task, run here as its agent ran it, directory kept.
    let out = cli(
        &url,
        &["repro", &fails_task.to_string(), "--keep-temp"],
        &proj,
    );
    assert_eq!(out.status.code(), Some(1));
    let so = text(&out.stdout);
    assert!(so.contains("NOT_OK: step"), "{so}");
    assert!(so.contains("exited with status 7"), "{so}");
    let kept = so
        .lines()
        .find_map(|l| l.strip_prefix("kept "))
        .expect("repro prints the kept directory");
    let kept = PathBuf::from(kept);
    assert_eq!(
        std::fs::read_to_string(kept.join("src/data/a.txt")).unwrap(),
        "alpha",
        "the inputs were fetched"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("src/core.123")).unwrap(),
        "dumped\n"
    );
    let _ = std::fs::remove_dir_all(kept.parent().unwrap().parent().unwrap());

    // A corrupted blob in the agent's cache is detected and fetched again.
    let cache = root.join("art-agent-cache");
    let victim = cache
        .join(&sha256_hex(b"alpha")[..2])
        .join(sha256_hex(b"alpha"));
    assert!(victim.exists(), "{} is cached", victim.display());
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&victim, "tampered").unwrap();
    let again = cli(&url, &["submit", "job.toml", "--wait"], &proj);
    assert_eq!(again.status.code(), Some(1));
    let job3 = wait_job_done(&url, 3, &proj);
    let t = job3["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "uses-inputs")
        .unwrap();
    assert_eq!(t["outcome"], "passed", "{job3}");
    // Whichever task of the job ran first found the corrupted blob.
    let logs: String = job3["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["id"].as_i64().unwrap().to_string();
            text(&cli(&url, &["logs", &id], &proj).stdout)
        })
        .collect();
    assert_eq!(
        logs.matches("1 corrupted in cache and fetched again")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"alpha");
}

#[test]
fn hostile_and_oversized_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_server, url) = start_server(
        root,
        "[server.blobs]\nmax_blob_size = \"1MB\"\nmax_artifact_size = \"64KB\"\n",
    );

    // Declared over the limit: refused before a byte of the body is read.
    let digest = sha256_hex(b"whatever");
    let resp = raw_http(
        &url,
        &format!(
            "PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\nConnection: close\r\n\r\n"
        ),
        b"",
    );
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("over the limit of 1000000 bytes"), "{resp}");

    // Streamed without a length: cut off once past the limit.
    let head = format!(
        "PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b'x'; 64 << 10];
    let mut body = Vec::new();
    for _ in 0..48 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_http(&url, &head, &body);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let stored: u64 = files_under(&root.join("data/blobs"))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(stored < 1_100_000, "{stored} bytes kept after refusals");

    // Content that does not match its digest.
    let resp = raw_http(
        &url,
        &format!(
            "PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        ),
        b"other",
    );
    assert!(resp.starts_with("HTTP/1.1 422"), "{resp}");
    assert!(resp.contains("does not match its digest"), "{resp}");
    let resp = raw_http(
        &url,
        "GET /api/v1/blobs/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("not a SHA-256 digest"), "{resp}");

    // Agent routes: secrets checked, hostile artifact paths refused.
    let put = |path: &str, secret: &str| {
        raw_http(
            &url,
            &format!(
                "PUT /api/v1/agent/attempts/1/artifacts?path={path}&kind=always&digest={digest} HTTP/1.1\r\nHost: x\r\nx-testfleet-host: h\r\nx-testfleet-secret: {secret}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            b"",
        )
    };
    let resp = put("ok.txt", "wrong");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("wrong secret"), "{resp}");
    for (path, why) in [
        ("..%2F..%2Fescape.txt", "`..` would leave the tree"),
        ("%2Fetc%2Fpasswd", "absolute paths are not allowed"),
    ] {
        let resp = put(path, SECRET);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains(why), "{resp}");
    }

    // The client: a symlink leaving the tree, and a file over the limit.
    let proj = root.join("proj");
    std::fs::create_dir_all(proj.join("tree")).unwrap();
    std::fs::write(
        proj.join("job.toml"),
        "name = \"hostile\"\ninputs = \"tree\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", proj.join("tree/passwd")).unwrap();
    let out = cli(&url, &["submit", "job.toml"], &proj);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("unsafe path `passwd`"), "{err}");
    assert!(err.contains("outside the tree"), "{err}");
    std::fs::remove_file(proj.join("tree/passwd")).unwrap();
    std::fs::write(proj.join("tree/huge.bin"), vec![0u8; 2_000_000]).unwrap();
    let out = cli(&url, &["submit", "job.toml"], &proj);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("over the coordinator's limit of 1000000 bytes"),
        "{err}"
    );
    // A job naming a directory instead of an uploaded tree is refused.
    let out = cli(&url, &["jobs", "--json"], &proj);
    assert_eq!(text(&out.stdout).trim(), "[]", "nothing was submitted");
    let raw_job = "name = \"raw\"\ninputs = \"tree\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
    let resp = raw_http(
        &url,
        &format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            raw_job.len()
        ),
        raw_job.as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 422"), "{resp}");
    assert!(resp.contains("is not an uploaded input tree"), "{resp}");
}

#[test]
fn run_locally_prints_ok_or_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path();
    std::fs::create_dir_all(proj.join("in")).unwrap();
    std::fs::write(proj.join("in/value.txt"), "42").unwrap();
    std::fs::write(
        proj.join("job.toml"),
        r#"
name = "local"
inputs = "in"
[[task]]
name = "good"
steps = [{ stage = "test", run = "test \"$(cat value.txt)\" = 42 && echo fine > out.txt" }]
artifacts = { always = ["out.txt"] }
[[task]]
name = "bad"
steps = [{ stage = "test", run = "echo broken; exit 4" }]
"#,
    )
    .unwrap();
    let work = proj.join("work");
    let out = bin()
        .args(["run", "job.toml", "--work-dir"])
        .arg(&work)
        .current_dir(proj)
        .output()
        .unwrap();
    let so = text(&out.stdout);
    println!("{so}{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert!(so.contains("good: OK"), "{so}");
    assert!(
        so.contains("bad: NOT_OK: step `echo broken; exit 4` (test) exited with status 4"),
        "{so}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("good/artifacts/out.txt")).unwrap(),
        "fine\n"
    );
    let out = bin()
        .args(["run", "job.toml", "--task", "good"])
        .current_dir(proj)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().last(), Some("good: OK"));
    let out = bin()
        .args(["run", "job.toml", "--task", "nope"])
        .current_dir(proj)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no task named `nope`"));
}

/// moto with the bucket `testfleet-e2e`, and its endpoint; `None` under
/// the peer rule.
fn start_moto() -> Option<(Moto, String)> {
    let moto = Moto::start()?;
    moto.create_bucket("testfleet-e2e");
    let endpoint = moto.endpoint();
    Some((moto, endpoint))
}

#[test]
fn coordinator_keeps_blobs_in_s3() {
    let Some((_moto, endpoint)) = start_moto() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_server, url) = start_server(
        root,
        &format!(
            "[server.blobs.s3]\nbucket = \"testfleet-e2e\"\nendpoint = \"{endpoint}\"\nprefix = \"ci\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n"
        ),
    );
    let _agent = start_agent(&url, root, "s3-agent");
    let proj = root.join("proj");
    std::fs::create_dir_all(proj.join("tree")).unwrap();
    std::fs::write(proj.join("tree/in.txt"), "from s3").unwrap();
    std::fs::write(
        proj.join("job.toml"),
        r#"
name = "s3"
inputs = "tree"
[[task]]
name = "t"
steps = [{ stage = "test", run = "cat in.txt > out.txt; exit 1" }]
artifacts = { on_failure = ["out.txt"] }
retries = { tests = 0, infra = 0 }
"#,
    )
    .unwrap();
    let out = cli(&url, &["submit", "job.toml", "--wait"], &proj);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("uploaded 2 blob(s)"));
    let out = cli(&url, &["submit", "job.toml"], &proj);
    assert!(text(&out.stderr).contains("uploaded 0 blob(s), 0 bytes"));
    let out = cli(&url, &["artifacts", "download", "1", "-o", "dl"], &proj);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(proj.join("dl/t/attempt-1/out.txt")).unwrap(),
        "from s3"
    );
    let stdout =
        std::fs::read_to_string(proj.join("dl/t/attempt-1/.testfleet/stdout.log")).unwrap();
    assert_eq!(stdout, "");
    // Nothing went to the local directory: the bucket holds the blobs.
    assert!(files_under(&root.join("data/blobs")).is_empty());
    let listing = raw_http(
        &endpoint,
        "GET /testfleet-e2e?list-type=2&prefix=ci/blobs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert!(listing.contains(&sha256_hex(b"from s3")), "{listing}");
}
