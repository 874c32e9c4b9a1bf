//! Spawned coordinators (`--coordinators N`): N `testfleet server` child
//! processes, each with its own data directory, config file and port (the
//! OS picks a free one: each listens on 127.0.0.1:0 and prints its URL),
//! one shared agent secret, and one store: SQLite in the data directory
//! when there is one coordinator and no `--database`, else a fresh
//! PostgreSQL database made for the run and dropped after it. With more
//! than one, `[server.cluster] enabled = true`.
//!
//! Their stderr goes to files in the run's temporary directory; at the end
//! the lines at level ERROR and WARN are counted. Their resident memory
//! (`VmRSS` in `/proc/<pid>/status`) is read after start-up, with no agent,
//! and again once the agents are connected.
//!
//! The children are killed when this value is dropped (an error, a
//! timeout, an interrupted bench), and stopped with SIGTERM by
//! [`Coordinators::stop`]: none outlives the bench.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use testfleet_client::ApiClient;
use testfleet_store::{DatabaseUrl, ScratchDatabase};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a coordinator may take to print its URL and answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Coordinators::stop`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept verbatim, over all coordinators.
const KEPT_LOG_EXAMPLES: usize = 5;

/// Why the coordinators could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to create the run's temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the bench database")]
    Database(#[source] testfleet_store::StoreError),
    #[error("failed to start {program}")]
    Start {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "coordinator {index} exited before printing its URL ({status}); its log is {log}:\n{tail}"
    )]
    Exited {
        index: usize,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("coordinator {index} did not print its URL within {START_TIMEOUT:?}")]
    NoUrl { index: usize },
    #[error("coordinator {index} at {url} did not answer within {START_TIMEOUT:?}")]
    NoAnswer { index: usize, url: String },
    #[error("failed to read the output of coordinator {index}")]
    Read {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

/// One coordinator's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinatorFigures {
    pub url: String,
    pub pid: u32,
    /// Agents connected to it.
    pub agents: usize,
    /// Resident memory after start-up, with no agent.
    pub rss_idle_kib: Option<u64>,
    /// Resident memory with its agents connected and idle for a second.
    pub rss_connected_kib: Option<u64>,
    /// Lines its log had at level ERROR.
    pub error_lines: usize,
    /// Lines its log had at level WARN.
    pub warn_lines: usize,
}

/// The spawned coordinators' figures for one run.
#[derive(Debug, Clone, Serialize)]
pub struct FleetFigures {
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Whether `[server.cluster] enabled = true` was set.
    pub cluster: bool,
    pub coordinators: Vec<CoordinatorFigures>,
    /// (Sum of every coordinator's resident memory growth) / agents, in
    /// KiB; `null` when memory could not be read.
    pub memory_per_agent_kib: Option<f64>,
    /// Log lines at level ERROR, over all coordinators.
    pub error_lines: usize,
    /// Log lines at level WARN, over all coordinators.
    pub warn_lines: usize,
    /// A few of those lines verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_examples: Vec<String>,
}

/// A running child and where its log goes.
struct Spawned {
    child: Child,
    pid: u32,
    url: String,
    log: PathBuf,
    rss_idle_kib: Option<u64>,
    rss_connected_kib: Option<u64>,
}

/// The coordinators of one run.
pub(crate) struct Coordinators {
    spawned: Vec<Spawned>,
    dir: tempfile::TempDir,
    scratch: Option<ScratchDatabase>,
    store: String,
    cluster: bool,
    /// See [`crate::BenchConfig::status_requests`].
    status_requests: bool,
}

impl Coordinators {
    /// Starts `count` coordinators from `program` and waits until each
    /// answers; then reads their memory after a second of rest.
    pub async fn start(
        program: &Path,
        count: usize,
        secret: &str,
        database: Option<&DatabaseUrl>,
        status_requests: bool,
    ) -> Result<Coordinators, SpawnError> {
        let dir = tempfile::Builder::new()
            .prefix("testfleet-bench-fleet-")
            .tempdir()
            .map_err(SpawnError::TempDir)?;
        let scratch = match database {
            Some(DatabaseUrl::Postgres(server)) => Some(
                ScratchDatabase::create(server, "testfleet_bench")
                    .await
                    .map_err(SpawnError::Database)?,
            ),
            _ => None,
        };
        let store_url = match (&scratch, database) {
            (Some(db), _) => Some(db.url().clone()),
            (None, db) => db.cloned(),
        };
        let cluster = count > 1;
        let mut this = Coordinators {
            spawned: Vec::with_capacity(count),
            dir,
            scratch,
            store: store_url
                .as_ref()
                .map_or("sqlite", |u| u.backend().as_str())
                .to_owned(),
            cluster,
            status_requests,
        };
        for index in 0..count {
            match this
                .spawn_one(program, index, secret, store_url.as_ref())
                .await
            {
                Ok(s) => this.spawned.push(s),
                Err(e) => {
                    this.stop().await;
                    return Err(e);
                }
            }
        }
        // Settle, then the memory with no agent.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in &mut this.spawned {
            s.rss_idle_kib = rss_kib(s.pid);
        }
        Ok(this)
    }

    async fn spawn_one(
        &self,
        program: &Path,
        index: usize,
        secret: &str,
        database: Option<&DatabaseUrl>,
    ) -> Result<Spawned, SpawnError> {
        let data_dir = self.dir.path().join(format!("coordinator-{index}"));
        std::fs::create_dir_all(&data_dir).map_err(|source| SpawnError::Write {
            path: data_dir.clone(),
            source,
        })?;
        let config = self.dir.path().join(format!("coordinator-{index}.toml"));
        let mut text = String::new();
        if !self.status_requests {
            // Beyond any run (see `BenchConfig::status_requests`).
            text.push_str(
                "[server]\nrequest_status_interval = \"1000years\"\n\
                 request_status_interval_in_test = \"1000years\"\n",
            );
        }
        text.push_str(&format!("[server.cluster]\nname = \"bench-{index}\"\n"));
        if self.cluster {
            text.push_str("enabled = true\n");
        }
        std::fs::write(&config, text).map_err(|source| SpawnError::Write {
            path: config.clone(),
            source,
        })?;
        let log = self.dir.path().join(format!("coordinator-{index}.log"));
        let log_file = std::fs::File::create(&log).map_err(|source| SpawnError::Write {
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new(program);
        // The bench's own TESTFLEET_* settings (a server URL, a config file,
        // a database) are not the children's: only the log filter passes.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && k.starts_with("TESTFLEET_")
                && k != "TESTFLEET_LOG"
            {
                cmd.env_remove(k);
            }
        }
        cmd.arg("server")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            // Through the environment, so neither shows in `ps`.
            .env("TESTFLEET_AGENT_SECRET", secret)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        if let Some(db) = database {
            let raw = match db {
                DatabaseUrl::Postgres(url) => url.clone(),
                DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            };
            cmd.env("TESTFLEET_DATABASE", raw);
        }
        let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
            program: program.to_owned(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let Some(url) = read_url(&mut child, index).await? else {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("status unknown: {e}"),
            };
            return Err(SpawnError::Exited {
                index,
                status,
                tail: tail_of(&log),
                log,
            });
        };
        let api = ApiClient::new(&url);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), api.agents()).await {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SpawnError::NoAnswer { index, url });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Spawned {
            child,
            pid,
            url,
            log,
            rss_idle_kib: None,
            rss_connected_kib: None,
        })
    }

    /// The coordinators' URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.spawned.iter().map(|s| s.url.clone()).collect()
    }

    /// Reads every coordinator's memory now (its agents connected).
    pub fn sample_connected(&mut self) {
        for s in &mut self.spawned {
            s.rss_connected_kib = rss_kib(s.pid);
        }
    }

    /// Stops every coordinator (SIGTERM, SIGKILL after 10 s), drops the
    /// run's database and returns the figures, `agents` being how many
    /// simulated agents were spread over them.
    pub async fn stop(mut self) -> FleetFigures {
        for s in &self.spawned {
            if let Ok(pid) = i32::try_from(s.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for s in &mut self.spawned {
            if tokio::time::timeout(STOP_TIMEOUT, s.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    pid = s.pid,
                    "a bench coordinator ignored SIGTERM; killing it"
                );
                let _ = s.child.kill().await;
            }
        }
        if let Some(db) = self.scratch.take()
            && let Err(e) = db.drop().await
        {
            tracing::warn!("failed to drop the bench database: {e}");
        }
        let mut examples = Vec::new();
        let coordinators: Vec<CoordinatorFigures> = self
            .spawned
            .iter()
            .map(|s| {
                let counts = count_log_lines(&s.log, &mut examples);
                CoordinatorFigures {
                    url: s.url.clone(),
                    pid: s.pid,
                    agents: 0,
                    rss_idle_kib: s.rss_idle_kib,
                    rss_connected_kib: s.rss_connected_kib,
                    error_lines: counts.errors,
                    warn_lines: counts.warnings,
                }
            })
            .collect();
        FleetFigures {
            store: self.store.clone(),
            cluster: self.cluster,
            memory_per_agent_kib: None,
            error_lines: coordinators.iter().map(|c| c.error_lines).sum(),
            warn_lines: coordinators.iter().map(|c| c.warn_lines).sum(),
            log_examples: examples,
            coordinators,
        }
    }
}

impl FleetFigures {
    /// Fills in how many agents each coordinator had (round-robin) and the
    /// memory per agent.
    pub(crate) fn with_agents(mut self, agents: usize) -> FleetFigures {
        let n = self.coordinators.len().max(1);
        for (i, c) in self.coordinators.iter_mut().enumerate() {
            c.agents = agents / n + usize::from(i < agents % n);
        }
        let growth: Option<i64> = self
            .coordinators
            .iter()
            .map(|c| match (c.rss_idle_kib, c.rss_connected_kib) {
                (Some(a), Some(b)) => Some(b as i64 - a as i64),
                _ => None,
            })
            .sum();
        self.memory_per_agent_kib = growth
            .filter(|_| agents > 0)
            .map(|g| crate::recorder::round3(g as f64 / agents as f64));
        self
    }
}

/// Reads the child's stdout until the line with its URL; `None` when the
/// child closed it first (it exited).
async fn read_url(child: &mut Child, index: usize) -> Result<Option<String>, SpawnError> {
    let Some(stdout) = child.stdout.take() else {
        return Ok(None);
    };
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(url) = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    {
                        return Ok(Some(url.trim_end_matches('/').to_owned()));
                    }
                }
                Ok(None) => return Ok(None),
                Err(source) => return Err(SpawnError::Read { index, source }),
            }
        }
    })
    .await
    .map_err(|_| SpawnError::NoUrl { index })??;
    // Keep reading, so the child never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The last lines of a log, for a coordinator that would not start.
fn tail_of(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[derive(Debug, Default, PartialEq)]
struct LogCounts {
    errors: usize,
    warnings: usize,
}

/// Counts a log's ERROR and WARN lines, keeping the first few in `examples`.
fn count_log_lines(log: &Path, examples: &mut Vec<String>) -> LogCounts {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    count_levels(&text, examples)
}

fn count_levels(text: &str, examples: &mut Vec<String>) -> LogCounts {
    let mut counts = LogCounts::default();
    for raw in text.lines() {
        let line = strip_ansi(raw);
        // `tracing`'s format: `<time> <LEVEL> <target>: <message>`.
        match line.split_whitespace().nth(1) {
            Some("ERROR") => counts.errors += 1,
            Some("WARN") => counts.warnings += 1,
            _ => continue,
        }
        if examples.len() < KEPT_LOG_EXAMPLES {
            examples.push(line.chars().take(300).collect());
        }
    }
    counts
}

/// The line without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\ttestfleet\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn error_and_warn_lines_are_counted_with_or_without_colours() {
        let log = "2026-11-30T10:00:00.000001Z  INFO testfleet_server: agent connected\n\
                   2026-11-30T10:00:00.000002Z  WARN testfleet_server: agent connection lost\n\
                   \u{1b}[2m2026-11-30T10:00:00.000003Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x: failed to retire agent\n\
                   a message that mentions ERROR in passing\n";
        let mut examples = Vec::new();
        let counts = count_levels(log, &mut examples);
        assert_eq!(
            counts,
            LogCounts {
                errors: 1,
                warnings: 1
            }
        );
        assert_eq!(examples.len(), 2);
        assert!(examples[1].contains("ERROR x: failed to retire agent"));
    }

    #[test]
    fn memory_per_agent_is_the_summed_growth_over_the_agents() {
        let c = |idle, connected| CoordinatorFigures {
            url: String::new(),
            pid: 1,
            agents: 0,
            rss_idle_kib: Some(idle),
            rss_connected_kib: Some(connected),
            error_lines: 0,
            warn_lines: 0,
        };
        let figures = FleetFigures {
            store: "postgres".into(),
            cluster: true,
            coordinators: vec![c(10_000, 30_000), c(10_000, 40_000)],
            memory_per_agent_kib: None,
            error_lines: 0,
            warn_lines: 0,
            log_examples: Vec::new(),
        }
        .with_agents(1001);
        assert_eq!(figures.coordinators[0].agents, 501);
        assert_eq!(figures.coordinators[1].agents, 500);
        assert_eq!(figures.memory_per_agent_kib, Some(49.95));
    }
}
