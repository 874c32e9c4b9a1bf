//! Development chores: `cargo xtask test` installs what the test suite needs
//! and runs it, then the slow group (`--fast` leaves it out), and lists the
//! tests skipped for a missing peer; `cargo xtask measure` prints the spine's performance figures;
//! `cargo xtask compare` measures testfleet's throughput against beanstalkd
//! and graphile-worker (see compare.rs); `cargo xtask accuracy` measures
//! change-point detection beside Apache Otava (see accuracy.rs); `cargo xtask aa`
//! runs A/A and A/B comparisons of a real QtTest benchmark (see aa.rs).
//!
//! Installing is idempotent: each step checks first and does nothing when
//! the thing is already there, so the command is cheap to run again.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod aa;
mod accuracy;
mod compare;

/// Debian packages the tests use: git for checkouts, Qt 6 and CMake for the
/// real QtTest benchmark, curl for ad-hoc checks.
const APT_PACKAGES: &[&str] = &[
    "git",
    "qt6-base-dev",
    "cmake",
    "g++",
    "make",
    "python3-venv",
    // A real InfluxDB 1.x for the exporter tests (crates/server/tests/exporters.rs).
    "influxdb",
    // QtTest's `-callgrind` (instruction counts) for the lab test (crates/testfleet/tests/slow_lab.rs).
    "valgrind",
    // Headless Chromium for the dashboard's browser tests
    // (crates/server/tests/dashboard.rs, driven by tests/browser).
    "chromium",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("setup") => setup(),
        Some("measure") => measure(),
        Some("compare") => compare::compare(&args[1..]),
        Some("accuracy") => accuracy::accuracy(&args[1..]),
        Some("aa") => aa::aa(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test [--fast] [--allow-skips] [cargo test args…] | setup | measure | compare [--help] | accuracy [--json FILE] [--no-gate] | aa [--help]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Whether the Debian package `name` is installed.
fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs those of `packages` that are missing (as root; otherwise says how).
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: install them with `sudo apt-get install {}`",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Installs a requirements file (relative to the repository) into .venv,
/// unless the stamp `.venv/<stamp>` says that exact file is installed already.
fn install_python_requirements(requirements: &str, stamp: &str) -> Result<()> {
    let root = root();
    let venv = root.join(".venv");
    let path = root.join(requirements);
    let stamp = venv.join(stamp);
    let wanted =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {requirements}"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!("xtask: installing {requirements} into .venv");
        if !venv.join("bin/python").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&path))?;
        std::fs::write(&stamp, wanted)?;
    }
    Ok(())
}

/// Installs everything the tests need.
fn setup() -> Result<()> {
    apt_install(APT_PACKAGES)?;
    // The PostgreSQL store tests use the server on 127.0.0.1:5432.
    if let Err(e) = compare::ensure_postgres() {
        eprintln!("xtask: warning: {e:#}; the PostgreSQL tests will fail under CI=true");
    }
    // The AMQP trigger tests use RabbitMQ on 127.0.0.1:5672 (a vhost per test).
    if let Err(e) = ensure_rabbitmq() {
        eprintln!("xtask: warning: {e:#}; the AMQP tests will fail under CI=true");
    }
    // The browser tests' driver (npm playwright-core) in tests/browser.
    install_node_modules("tests/browser")?;
    // The Python peers (python-socketio and friends) live in .venv.
    install_python_requirements("tests/peers/requirements.txt", ".requirements")
}

/// `npm ci` in `dir` (relative to the repository) unless its
/// `node_modules/.package-lock.json` says that exact lock file is installed.
fn install_node_modules(dir: &str) -> Result<()> {
    let dir = root().join(dir);
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .with_context(|| format!("failed to read {}/package-lock.json", dir.display()))?;
    let stamp = dir.join("node_modules/.testfleet-lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return Ok(());
    }
    eprintln!("xtask: npm ci in {}", dir.display());
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))
    .context("failed to install the browser tests' driver (Node.js 20 and npm are needed)")?;
    std::fs::write(&stamp, lock)?;
    Ok(())
}

/// Starts RabbitMQ (as this machine kind does) when it does not answer.
fn ensure_rabbitmq() -> Result<()> {
    let ready = || {
        Command::new("rabbitmq-diagnostics")
            .args(["-q", "ping"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() && is_root() {
        eprintln!("xtask: starting RabbitMQ");
        let _ = Command::new("rabbitmq-server").arg("-detached").status();
        for _ in 0..60 {
            if ready() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if !ready() {
        bail!("no RabbitMQ on 127.0.0.1:5672: start one with `rabbitmq-server -detached`");
    }
    Ok(())
}

/// The test binaries of the slow group (`crates/*/tests/slow_*.rs`): their
/// tests are `#[ignore = "slow: …"]`, so a plain `cargo test` skips them.
const SLOW_TESTS: &str = "slow_*";

/// The same group as a cargo-nextest filter.
const SLOW_FILTER: &str = "binary(/^slow_/)";

/// Whether cargo-nextest is installed (this machine kind has it).
fn has_nextest() -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo xtask test [--fast] [--allow-skips] [--cargo-test] [cargo args…] [-- filters…]`:
/// installs what the tests need, runs the workspace's tests, then (unless
/// `--fast`) the slow group, and prints how long each phase took and which
/// tests were skipped for a missing peer.
///
/// The tests run under cargo-nextest when it is installed: each test in a
/// process of its own, several at a time (`.config/nextest.toml`: most
/// tests wait on a database, a broker or a child process, not on a core),
/// which takes the suite from about a quarter hour to a few minutes on two
/// cores; the slow group runs two at a time. `--cargo-test` (or no nextest)
/// runs plain `cargo test`, one test binary after the other.
///
/// It sets `CI=true` (a missing peer fails its test instead of skipping)
/// unless `--allow-skips`, which also lets a failed install through; the
/// test kit appends each skip to the file named by `TESTFLEET_SKIP_REPORT`.
fn test(args: &[String]) -> Result<()> {
    let mut fast = false;
    let mut allow_skips = false;
    let mut plain = false;
    let mut cargo_args = Vec::new();
    let mut harness_args = Vec::new();
    let mut after_separator = false;
    for arg in args {
        match arg.as_str() {
            "--" if !after_separator => after_separator = true,
            _ if after_separator => harness_args.push(arg.clone()),
            "--fast" => fast = true,
            "--allow-skips" => allow_skips = true,
            "--cargo-test" => plain = true,
            _ => cargo_args.push(arg.clone()),
        }
    }
    if let Err(e) = setup() {
        if !allow_skips {
            return Err(e);
        }
        eprintln!("xtask: warning: {e:#}; tests that need what is missing will be skipped");
    }
    let nextest = !plain && has_nextest();
    let root = root();
    let report = root.join("target/testfleet-skipped.txt");
    std::fs::create_dir_all(root.join("target"))?;
    if let Err(e) = std::fs::remove_file(&report)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e).with_context(|| format!("failed to remove {}", report.display()));
    }
    // `slow`: the slow group's phase.
    let tests = |slow: bool| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root);
        if nextest {
            cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            if slow {
                cmd.args([
                    "--run-ignored",
                    "only",
                    "--test-threads",
                    "2",
                    "-E",
                    SLOW_FILTER,
                ]);
            }
            cmd.args(&cargo_args);
            if !harness_args.is_empty() {
                cmd.arg("--").args(&harness_args);
            }
        } else {
            // Every failing test binary is reported, not only the first.
            cmd.args(["test", "--workspace", "--no-fail-fast"]);
            if slow {
                cmd.args(["--test", SLOW_TESTS]);
            }
            cmd.args(&cargo_args).arg("--");
            if slow {
                cmd.arg("--ignored");
            }
            cmd.args(&harness_args);
        }
        cmd.env("TESTFLEET_SKIP_REPORT", &report);
        if allow_skips {
            cmd.env_remove("CI");
        } else {
            cmd.env("CI", "true");
        }
        cmd
    };

    let started = Instant::now();
    let mut suite = run(&mut tests(false));
    if nextest && suite.is_ok() && cargo_args.is_empty() && harness_args.is_empty() {
        // cargo-nextest does not run doctests.
        suite = run(Command::new(env!("CARGO")).current_dir(&root).args([
            "test",
            "--workspace",
            "--doc",
        ]));
    }
    let suite_time = started.elapsed();
    let slow = match (&suite, fast) {
        (Ok(()), false) => {
            let started = Instant::now();
            let result = run(&mut tests(true));
            Some((result, started.elapsed()))
        }
        _ => None,
    };

    let runner = if nextest {
        "cargo nextest run"
    } else {
        "cargo test"
    };
    eprintln!(
        "xtask: {runner} --workspace: {:.1} s",
        suite_time.as_secs_f64()
    );
    match &slow {
        Some((_, took)) => eprintln!(
            "xtask: the slow group ({SLOW_TESTS}, ignored tests): {:.1} s",
            took.as_secs_f64()
        ),
        None if fast => eprintln!("xtask: the slow group: not run (--fast)"),
        None => eprintln!("xtask: the slow group: not run (the suite failed)"),
    }
    let skipped = std::fs::read_to_string(&report).unwrap_or_default();
    let skipped: Vec<&str> = skipped.lines().filter(|l| !l.is_empty()).collect();
    eprintln!(
        "xtask: {} test(s) skipped for a missing peer",
        skipped.len()
    );
    for line in &skipped {
        eprintln!("  {line}");
    }
    suite?;
    if let Some((result, _)) = slow {
        result?;
    }
    Ok(())
}

/// Measures the spine's targets with the release binary and prints JSON.
fn measure() -> Result<()> {
    let root = root();
    run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        "testfleet",
    ]))?;
    let exe = root.join("target/release/testfleet");
    let dir = std::env::temp_dir().join(format!("testfleet-measure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // The demo, end to end.
    let started = Instant::now();
    let demo = Command::new(&exe)
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.join("demo"))
        .stdout(Stdio::null())
        .status()?;
    let demo_s = started.elapsed().as_secs_f64();
    if !demo.success() {
        bail!("the demo failed");
    }

    // A server and one idle agent, as processes.
    let mut server = Command::new(&exe)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-secret",
            "m",
            "--data-dir",
        ])
        .arg(dir.join("server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("no stdout")?),
        &mut line,
    )?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("no URL from the server")?
        .to_owned();
    let mut agent = Command::new(&exe)
        .args([
            "agent",
            "--server",
            &url,
            "--hostname",
            "idle-agent",
            "--secret",
            "m",
            "--work-dir",
        ])
        .arg(dir.join("agent"))
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", agent.id()))?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:").map(|v| {
                v.trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);

    // Submit → the idle agent has started the step (the task's stage turns
    // `test`), over several runs, through the REST API.
    let rt = tokio::runtime::Runtime::new()?;
    let api = testfleet_client::ApiClient::new(&url);
    let mut latencies = Vec::new();
    for i in 0..30 {
        let job = format!(
            "name = \"latency-{i}\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"sleep 0.2\" }}]\n"
        );
        let started = Instant::now();
        let view = rt.block_on(api.submit(&job))?;
        let task = view.tasks[0].id;
        loop {
            let t = rt.block_on(api.task(task))?;
            if t.task.stage.as_deref() == Some("test") || t.task.state.is_terminal() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("task {task} did not start");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        // Let the agent finish and go idle again before the next submit.
        while !rt.block_on(api.job(view.id))?.state.is_terminal() {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort_by(f64::total_cmp);
    let _ = agent.kill();
    let _ = server.kill();
    let _ = agent.wait();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let report = serde_json::json!({
        "demo_seconds": (demo_s * 100.0).round() / 100.0,
        "idle_agent_rss_mb": (rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "idle_agent_submit_to_step_started_ms": {
            "runs": latencies.len(),
            "p50": (latencies[latencies.len() / 2] * 10.0).round() / 10.0,
            "max": (latencies[latencies.len() - 1] * 10.0).round() / 10.0,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
