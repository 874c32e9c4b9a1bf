//! `cargo xtask compare`: testfleet's throughput next to two reference job
//! queues, measured in one go on this machine and printed as one JSON report.
//!
//! - beanstalkd with its binlog fsynced on every write (`-f 0`), 4 producer and
//!   4 consumer processes: put, reserve, delete (bench/reference/beanstalkd);
//! - graphile-worker on the local PostgreSQL, a fresh database per run, jobs
//!   queued first, then drained at concurrency 10 (bench/reference/graphile);
//! - `testfleet bench` (100 simulated agents, no-op tasks) on SQLite, and on
//!   the local PostgreSQL in a fresh database per run.
//!
//! Each part runs `--runs` times (3 by default), interleaved so that a change
//! in the machine's load touches every part alike; the report gives each
//! part's median and all its runs, and ratios of the medians. Everything
//! stays on loopback.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{apt_install, install_python_requirements, is_root, root, run};

const PG_HOST: &str = "127.0.0.1";
const PG_PORT: &str = "5432";
const PG_USER: &str = "postgres";
const GRAPHILE_DIR: &str = "bench/reference/graphile";
const BEANSTALKD_SCRIPT: &str = "bench/reference/beanstalkd/run.py";
const BENCH_TIMEOUT: &str = "600s";
const BEANSTALKD_REQUIREMENTS: &str = "bench/reference/beanstalkd/requirements.txt";

const USAGE: &str =
    "usage: cargo xtask compare [--runs N] [--jobs N] [--references-only] [--testfleet PATH]

Measures beanstalkd (fsync on every write, 4 producer + 4 consumer processes),
graphile-worker (PostgreSQL, concurrency 10) and `testfleet bench --agents 100`
on SQLite and PostgreSQL, N runs each (default 3), N jobs/tasks each (default
20000), and prints one JSON report. --references-only skips testfleet (no build);
--testfleet PATH measures that binary instead of building target/release/testfleet.";

struct Options {
    runs: usize,
    jobs: usize,
    references_only: bool,
    testfleet: Option<std::path::PathBuf>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 3,
        jobs: 20_000,
        references_only: false,
        testfleet: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize> {
            let n: usize = it
                .next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match arg.as_str() {
            "--runs" => o.runs = number("--runs")?,
            "--jobs" => o.jobs = number("--jobs")?,
            "--references-only" => o.references_only = true,
            "--testfleet" => {
                o.testfleet = Some(it.next().context("--testfleet needs a path")?.into());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

pub fn compare(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let root = root();
    install(&root)?;
    let testfleet = if o.references_only {
        None
    } else {
        Some(Testfleet::build(&root, o.testfleet.as_deref())?)
    };

    let mut beanstalkd = Vec::new();
    let mut graphile = Vec::new();
    let mut sqlite = Vec::new();
    let mut postgres = Vec::new();
    for i in 1..=o.runs {
        eprintln!("xtask: run {i} of {}: beanstalkd", o.runs);
        beanstalkd.push(run_json(
            Command::new(root.join(".venv/bin/python"))
                .current_dir(&root)
                .arg(BEANSTALKD_SCRIPT)
                .args(["--jobs", &o.jobs.to_string()]),
        )?);
        eprintln!("xtask: run {i} of {}: graphile-worker", o.runs);
        graphile.push(run_json(
            Command::new("node")
                .current_dir(root.join(GRAPHILE_DIR))
                .arg("drain.js")
                .args(["--jobs", &o.jobs.to_string(), "--concurrency", "10"])
                .args(["--host", PG_HOST, "--port", PG_PORT, "--user", PG_USER]),
        )?);
        if let Some(t) = &testfleet {
            eprintln!("xtask: run {i} of {}: testfleet bench on SQLite", o.runs);
            sqlite.push(t.bench(o.jobs, None)?);
            if t.has_database {
                eprintln!(
                    "xtask: run {i} of {}: testfleet bench on PostgreSQL",
                    o.runs
                );
                let db = format!("testfleet_compare_{}_{i}", std::process::id());
                pg_tool("createdb", &db)?;
                let url = format!("postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}");
                let result = t.bench(o.jobs, Some(&url));
                let dropped = pg_tool("dropdb", &db);
                postgres.push(result?);
                dropped?;
            }
        }
    }

    let (beanstalkd, beanstalkd_median) = summary(beanstalkd, "jobs_per_second");
    let (graphile, graphile_median) = summary(graphile, "jobs_per_second");
    let mut report = json!({
        "jobs": o.jobs,
        "runs": o.runs,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "beanstalkd": with(beanstalkd, json!({
            "what": "beanstalkd -f 0 (binlog fsynced on every write); 4 producer + 4 consumer \
                     processes (Python, greenstalk): put, reserve, delete; first put to last delete",
            "command": format!(".venv/bin/python {BEANSTALKD_SCRIPT} --jobs {}", o.jobs),
        })),
        "graphile_worker": with(graphile, json!({
            "what": "graphile-worker on PostgreSQL, fresh database per run; jobs queued with \
                     addJobs first, then drained at concurrency 10; run() to queue empty",
            "command": format!(
                "cd {GRAPHILE_DIR} && node drain.js --jobs {} --concurrency 10",
                o.jobs
            ),
        })),
    });
    let mut ratios = serde_json::Map::new();
    if let Some(t) = &testfleet {
        let (sqlite, sqlite_median) = summary(sqlite, "tasks_per_second");
        report["testfleet_sqlite"] =
            with(sqlite, json!({ "command": t.command_line(o.jobs, None) }));
        ratios.insert(
            "sqlite_over_beanstalkd".into(),
            ratio(sqlite_median, beanstalkd_median),
        );
        if t.has_database {
            let (postgres, postgres_median) = summary(postgres, "tasks_per_second");
            let url = format!("postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/<fresh database>");
            report["testfleet_postgres"] = with(
                postgres,
                json!({ "command": t.command_line(o.jobs, Some(&url)) }),
            );
            ratios.insert(
                "postgres_over_sqlite".into(),
                ratio(postgres_median, sqlite_median),
            );
            ratios.insert(
                "postgres_over_graphile".into(),
                ratio(postgres_median, graphile_median),
            );
        } else {
            report["testfleet_postgres"] = json!({
                "skipped": "`testfleet bench --help` lists no --database flag"
            });
        }
    } else {
        report["testfleet_sqlite"] = json!({ "skipped": "--references-only" });
        report["testfleet_postgres"] = json!({ "skipped": "--references-only" });
    }
    report["ratios"] = Value::Object(ratios);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Installs what the comparison needs and is missing: beanstalkd, Node and
/// the PostgreSQL client tools from Debian, greenstalk into .venv, and
/// graphile-worker from bench/reference/graphile/package-lock.json. Checks
/// that the local PostgreSQL answers (and starts it, as root, when it does not).
fn install(root: &Path) -> Result<()> {
    let mut apt = Vec::new();
    if !on_path("beanstalkd") {
        apt.push("beanstalkd");
    }
    if !on_path("node") || !on_path("npm") {
        apt.extend(["nodejs", "npm"]);
    }
    if !on_path("createdb") || !on_path("pg_isready") {
        apt.push("postgresql-client");
    }
    apt_install(&apt)?;
    install_python_requirements(BEANSTALKD_REQUIREMENTS, ".requirements-beanstalkd")?;

    // `npm ci` only when the installed tree is not that of the lock file.
    let dir = root.join(GRAPHILE_DIR);
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .with_context(|| format!("failed to read {GRAPHILE_DIR}/package-lock.json"))?;
    let stamp = dir.join("node_modules/.xtask-package-lock.json");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        eprintln!("xtask: npm ci in {GRAPHILE_DIR}");
        run(Command::new("npm").current_dir(&dir).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]))?;
        std::fs::write(&stamp, lock)?;
    }

    ensure_postgres()
}

/// Starts the local PostgreSQL (as root, when it is installed and down) and
/// checks that it answers on 127.0.0.1:5432.
pub fn ensure_postgres() -> Result<()> {
    let ready = || {
        Command::new("pg_isready")
            .args(["-q", "-h", PG_HOST, "-p", PG_PORT])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() && is_root() {
        // As .ci/run does on this machine kind.
        if let Some(version) = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        {
            eprintln!("xtask: starting PostgreSQL");
            let _ = Command::new("pg_ctlcluster")
                .arg("--skip-systemctl-redirect")
                .arg(version.file_name())
                .args(["main", "start"])
                .status();
        }
    }
    if !ready() {
        bail!(
            "no PostgreSQL on {PG_HOST}:{PG_PORT}: start one (trust auth for user {PG_USER}), \
             e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        );
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `createdb` or `dropdb` of `db` on the local PostgreSQL.
fn pg_tool(tool: &str, db: &str) -> Result<()> {
    run(Command::new(tool).args(["-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, db]))
}

/// Runs a reference script and parses the JSON object on its last stdout line.
fn run_json(cmd: &mut Command) -> Result<Value> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(line)
        .with_context(|| format!("{shown} printed no JSON line: {stdout:?}"))?;
    eprintln!("xtask:   {line}");
    Ok(value)
}

struct Testfleet {
    exe: std::path::PathBuf,
    has_json: bool,
    has_database: bool,
}

impl Testfleet {
    /// `exe`, or the release build of the checkout (built now).
    fn build(root: &Path, exe: Option<&Path>) -> Result<Testfleet> {
        let exe = match exe {
            Some(exe) if !exe.is_file() => {
                bail!(
                    "--testfleet {}: no such file (give the path of a testfleet binary)",
                    exe.display()
                )
            }
            Some(exe) => exe.to_path_buf(),
            None => {
                run(Command::new(env!("CARGO")).current_dir(root).args([
                    "build",
                    "--release",
                    "--quiet",
                    "--package",
                    "testfleet",
                ]))?;
                root.join("target/release/testfleet")
            }
        };
        let help = Command::new(&exe)
            .args(["bench", "--help"])
            .output()
            .context("failed to run testfleet bench --help")?;
        let help = String::from_utf8_lossy(&help.stdout);
        let t = Testfleet {
            exe,
            has_json: help.contains("--json"),
            has_database: help.contains("--database"),
        };
        if !t.has_database {
            eprintln!("xtask: `testfleet bench` has no --database yet: PostgreSQL part skipped");
        }
        Ok(t)
    }

    fn args(&self, tasks: usize, database: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = ["bench", "--agents", "100", "--tasks"]
            .map(String::from)
            .into();
        args.push(tasks.to_string());
        // bench stops a run after 120 s by default, which a slow store can
        // reach with 20,000 tasks: such a run is no throughput figure.
        args.extend(["--timeout".into(), BENCH_TIMEOUT.into()]);
        if self.has_json {
            args.push("--json".into());
        }
        if let Some(url) = database {
            args.extend(["--database".into(), url.into()]);
        }
        args
    }

    fn command_line(&self, tasks: usize, database: Option<&str>) -> String {
        format!(
            "target/release/testfleet {}",
            self.args(tasks, database).join(" ")
        )
    }

    /// One `testfleet bench`; its report's `tasks_per_second`, and whether
    /// it lost or duplicated anything.
    fn bench(&self, tasks: usize, database: Option<&str>) -> Result<Value> {
        let out = Command::new(&self.exe)
            .args(self.args(tasks, database))
            .output()
            .context("failed to start testfleet bench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The report is the JSON object that ends stdout.
        let report: Value = serde_json::from_str(stdout.trim())
            .ok()
            .or_else(|| {
                let start = stdout.rfind("\n{")? + 1;
                serde_json::from_str(&stdout[start..]).ok()
            })
            .with_context(|| {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "testfleet bench ({}) printed no JSON report; stdout: {stdout:?}; \
                     stderr ends with:\n{}",
                    out.status,
                    tail.join("\n")
                )
            })?;
        let Some(tps) = report["tasks_per_second"].as_f64() else {
            bail!("testfleet bench's report has no tasks_per_second: {report}");
        };
        let run = json!({
            "tasks_per_second": tps,
            "finished": report["finished"],
            "lost": report["lost"],
            "duplicated": report["duplicated"],
            "timed_out": report["timed_out"],
            "clean": out.status.success(),
        });
        eprintln!("xtask:   {run}");
        Ok(run)
    }
}

/// A part's figure (`key` of each run): every run's figure and the median
/// of the clean ones (a testfleet run that lost or duplicated a task, or
/// timed out, says `"clean": false`; it is listed but not in the median),
/// then each run's details; and that median alone.
fn summary(runs: Vec<Value>, key: &str) -> (Value, Option<f64>) {
    let all: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    let unclean: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i]["clean"] == json!(false))
        .map(|i| i + 1)
        .collect();
    let mut sorted: Vec<f64> = runs
        .iter()
        .filter(|r| r["clean"] != json!(false))
        .filter_map(|r| r[key].as_f64())
        .collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(round1((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0)),
    };
    let mut figure = json!({ "median": median, "runs": all });
    if !unclean.is_empty() {
        figure["unclean_runs_not_in_median"] = json!(unclean);
    }
    let value = json!({
        key: figure,
        "details": runs,
    });
    (value, median)
}

/// `summary` with `extra`'s fields added.
fn with(mut summary: Value, extra: Value) -> Value {
    if let (Some(s), Value::Object(e)) = (summary.as_object_mut(), extra) {
        s.extend(e);
    }
    summary
}

/// a / b to three decimals, or null when either is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
