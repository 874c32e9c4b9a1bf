//! `testfleet bench`: a load generator for the coordinator.
//!
//! It starts a coordinator in process (or targets a given one), connects N
//! simulated agents over real socket.io, submits M tasks through the REST API
//! in jobs of [`BenchConfig::batch`] tasks, and measures end-to-end throughput,
//! submit-to-start latency and the makespan against its lower bound. It also
//! checks the coordinator's guarantees from the agents' side: no task is lost
//! and none is delivered or finished twice.
//!
//! The coordinators can also be several: given (`--server URL1,URL2`) or
//! spawned as `testfleet server` processes (`--coordinators N`, see
//! `coordinators`), with the agents spread round-robin over them; several
//! fleet sizes can run in one invocation (`sizes`), and `--storm` makes
//! every agent leave and come back at once (`storm`).
//!
//! Every run is bounded by [`BenchConfig::timeout`] and talks only to
//! 127.0.0.1 or the given servers.

mod agent;
mod checks;
mod coordinators;
pub mod dist;
mod fleet;
mod recorder;
mod server;
mod sizes;
mod storm;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use testfleet_client::{ApiClient, ClientError};
use tokio::time::Instant;

pub use agent::BENCH_MS_VAR;
pub use coordinators::{CoordinatorFigures, FleetFigures, SpawnError};
pub use dist::{HeavyTailed, Rng};
pub use recorder::Percentiles;
pub use sizes::{SizedRun, SizesReport, combinations, run_sizes};
pub use storm::StormReport;

use fleet::{Fleet, FleetSpec};
use recorder::{Recorder, Records, Submitted, round3};
use target::Target;

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid bench settings: {0}")]
    Invalid(String),
    #[error("in-process coordinator: {0}")]
    Server(String),
    #[error("simulated agent `{agent}` could not connect")]
    Connect {
        agent: String,
        #[source]
        source: testfleet_sio::ConnectError,
    },
    #[error("failed to submit a bench job")]
    Submit(#[source] ClientError),
    #[error("failed to start the bench's coordinators")]
    Coordinators(#[source] SpawnError),
    #[error("the bench ran out of time ({0:?}) while {1}")]
    Timeout(Duration, &'static str),
}

/// What the simulated tasks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every task finishes at once: measures the coordinator's overhead.
    Noop,
    /// Task durations from [`HeavyTailed::default`].
    HeavyTailed,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "noop" => Ok(Workload::Noop),
            "heavy-tailed" | "heavy_tailed" => Ok(Workload::HeavyTailed),
            other => Err(format!(
                "unknown workload `{other}` (expected noop or heavy-tailed)"
            )),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Noop => "noop",
            Workload::HeavyTailed => "heavy-tailed",
        })
    }
}

/// The settings of a bench.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The coordinators to load (agents and jobs spread round-robin over
    /// them); empty starts one in process, or [`BenchConfig::coordinators`].
    pub server: Vec<String>,
    /// Spawn this many `testfleet server` processes (0: none).
    pub coordinators: usize,
    /// The `testfleet` binary spawned coordinators run.
    pub server_program: Option<PathBuf>,
    /// After the agents connect, all leave and reconnect at once (see `storm`).
    pub storm: bool,
    pub agents: usize,
    pub tasks: usize,
    pub workload: Workload,
    pub seed: u64,
    /// Run the heavy-tailed suite twice: in draw order and longest first.
    pub policy_compare: bool,
    /// The agent secret (a fresh one is made for the in-process coordinator).
    pub secret: Option<String>,
    /// Each run stops by itself after this long.
    pub timeout: Duration,
    /// Tasks per submitted job.
    pub batch: usize,
    /// Print progress to stderr.
    pub progress: bool,
    /// Let the in-process coordinator send its periodic `requestStatus`
    /// (its default). Off pushes the interval beyond any run, which hides the
    /// race where an `idle` answer crosses a fresh `sendWork` (see `agent`).
    pub status_requests: bool,
    /// The in-process or spawned coordinators' store: `None` is SQLite in a
    /// temporary directory; a PostgreSQL URL names the server on which each
    /// run gets a fresh database of its own (dropped after the run).
    pub database: Option<testfleet_store::DatabaseUrl>,
    /// Every `report_every`-th task (by id; 0 = none) reports a result
    /// file of `report_cases` test cases, so claims can be timed while the
    /// coordinator finishes large reports.
    pub report_every: usize,
    pub report_cases: usize,
}

impl BenchConfig {
    /// A bench of `agents` agents and `tasks` tasks on an in-process
    /// coordinator, with the defaults of `testfleet bench`.
    pub fn new(agents: usize, tasks: usize, workload: Workload) -> BenchConfig {
        BenchConfig {
            server: Vec::new(),
            coordinators: 0,
            server_program: None,
            storm: false,
            agents,
            tasks,
            workload,
            seed: 1,
            policy_compare: false,
            secret: None,
            timeout: Duration::from_secs(120),
            batch: 100,
            progress: false,
            status_requests: true,
            database: None,
            report_every: 0,
            report_cases: 0,
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub agents: usize,
    pub tasks: usize,
    pub workload: Workload,
    pub seed: u64,
    /// `in-process`, the servers' URLs, or `N spawned (store)`.
    pub server: String,
    /// Spawned coordinators (0: in process or given).
    pub coordinators: usize,
    /// Finished tasks / (last finish − first submit).
    pub tasks_per_second: f64,
    pub submit_to_start_ms: Percentiles,
    /// From an idle agent's `fetchWork` to the `sendWork` that answered it
    /// (while work was queued): the claim as an agent sees it.
    pub fetch_to_work_ms: Percentiles,
    /// Tasks whose report carried `report_cases` test cases.
    pub big_reports: usize,
    /// From a task's delivery to its acknowledged report, minus its synthetic run time.
    pub start_to_finish_overhead_ms: Percentiles,
    /// Last finish − first submit.
    pub makespan_s: f64,
    /// max(longest task, total work / agents).
    pub lower_bound_s: f64,
    /// makespan / lower bound; `null` when the work is nil (noop).
    pub makespan_ratio: Option<f64>,
    pub longest_task_s: f64,
    pub total_work_s: f64,
    /// Time spent submitting all jobs.
    pub submit_s: f64,
    pub finished: usize,
    /// Submitted but not finished before the deadline.
    pub lost: usize,
    /// Never submitted (the deadline hit first).
    pub not_submitted: usize,
    /// Tasks delivered or finished more than once.
    pub duplicated: usize,
    /// Extra deliveries beyond the first, over all tasks.
    pub duplicate_deliveries: usize,
    /// Deliveries of tasks this bench did not submit.
    pub foreign_deliveries: usize,
    pub report_errors: u64,
    pub disconnects: u64,
    /// Agent connections that failed and were tried again.
    pub connect_retries: u64,
    /// Lost connections that the agents made again (as a real agent does).
    pub reconnections: u64,
    pub protocol_violations: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violation_examples: Vec<String>,
    /// Tasks the coordinator itself does not show as passed after the run
    /// (`null` when it could not be asked).
    pub server_not_passed: Option<usize>,
    /// Attempts beyond one per task, as the coordinator counts them.
    pub server_extra_attempts: Option<i64>,
    /// Why retried tasks' failed attempts ended, as the coordinator says: reason → count.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub server_retry_reasons: BTreeMap<String, usize>,
    /// A few of those attempts verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_retry_examples: Vec<String>,
    pub timed_out: bool,
    /// The spawned coordinators: memory and log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetFigures>,
    /// `--storm`: the fleet leaving and reconnecting at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormReport>,
}

impl RunReport {
    /// No task lost or duplicated, a storm fully recorded, no ERROR line
    /// in a spawned coordinator's log, and nothing else went wrong.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.not_submitted == 0
            && self.duplicated == 0
            && self.report_errors == 0
            && self.protocol_violations == 0
            && self.server_not_passed.unwrap_or(0) == 0
            && self.storm.as_ref().is_none_or(|s| s.complete)
            && self.fleet.as_ref().is_none_or(|f| f.error_lines == 0)
    }
}

/// `--policy-compare`: the same heavy-tailed suite in two submission orders.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub agents: usize,
    pub tasks: usize,
    pub workload: Workload,
    pub seed: u64,
    pub distribution: HeavyTailed,
    pub lower_bound_s: f64,
    pub fifo: RunReport,
    pub longest_first_submit_order: RunReport,
    pub lost: usize,
    pub duplicated: usize,
}

/// The result of [`run`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // made once per bench and printed
pub enum BenchReport {
    Single(RunReport),
    Compare(CompareReport),
    Sizes(SizesReport),
}

impl BenchReport {
    /// Every run of the report is clean (see [`RunReport::is_clean`]).
    pub fn is_clean(&self) -> bool {
        match self {
            BenchReport::Single(r) => r.is_clean(),
            BenchReport::Compare(c) => c.fifo.is_clean() && c.longest_first_submit_order.is_clean(),
            BenchReport::Sizes(s) => s.is_clean(),
        }
    }
}

/// Runs the bench described by `config`.
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    validate(&config)?;
    let secret = config.secret.clone().unwrap_or_else(fresh_secret);
    let dist = HeavyTailed::default();
    let durations = match config.workload {
        Workload::Noop if !config.policy_compare => vec![0; config.tasks],
        _ => dist.durations(config.seed, config.tasks),
    };
    if !config.policy_compare {
        let order: Vec<usize> = (0..config.tasks).collect();
        let label = config.workload.to_string();
        let report = run_once(&config, &secret, &label, &durations, &order).await?;
        return Ok(BenchReport::Single(report));
    }
    // The draws are independent, so draw order is a random order.
    let fifo_order: Vec<usize> = (0..config.tasks).collect();
    let mut longest_first = fifo_order.clone();
    longest_first.sort_by_key(|&i| std::cmp::Reverse(durations[i]));
    let mut cfg = config.clone();
    cfg.workload = Workload::HeavyTailed;
    let fifo = run_once(&cfg, &secret, "fifo", &durations, &fifo_order).await?;
    let lf = run_once(&cfg, &secret, "longest-first", &durations, &longest_first).await?;
    Ok(BenchReport::Compare(CompareReport {
        agents: cfg.agents,
        tasks: cfg.tasks,
        workload: Workload::HeavyTailed,
        seed: cfg.seed,
        distribution: dist,
        lower_bound_s: fifo.lower_bound_s,
        lost: fifo.lost + lf.lost,
        duplicated: fifo.duplicated + lf.duplicated,
        fifo,
        longest_first_submit_order: lf,
    }))
}

fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    let invalid = |m: &str| Err(BenchError::Invalid(m.to_owned()));
    if config.agents == 0 || config.tasks == 0 || config.batch == 0 {
        return invalid("--agents, --tasks and the batch size must be at least 1");
    }
    if config.coordinators > 0 && !config.server.is_empty() {
        return invalid("give either --server or --coordinators, not both");
    }
    if config.coordinators > 0 && config.server_program.is_none() {
        return invalid("spawned coordinators need the path of the testfleet binary");
    }
    let postgres = matches!(
        config.database,
        Some(testfleet_store::DatabaseUrl::Postgres(_))
    );
    if config.coordinators > 1 && !postgres {
        return invalid(
            "several coordinators share a PostgreSQL database: give --database postgres://…",
        );
    }
    if config.server.iter().any(|s| s.trim().is_empty()) {
        return invalid("--server: an empty URL in the list");
    }
    Ok(())
}

fn fresh_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = Rng::new(nanos ^ u64::from(std::process::id()));
    format!("bench-{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// The job file for tasks `indices` (submitted in that order).
pub fn job_toml(name: &str, seed: u64, indices: &[usize], durations: &[u64]) -> String {
    let mut s = format!("name = \"{name}\"\nqueue = \"bench\"\n");
    for &i in indices {
        let _ = write!(
            s,
            "\n[[task]]\nname = \"{}\"\nrequires = {{ pool = \"bench\" }}\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n",
            task_name(seed, i)
        );
        if let Some(ms) = durations.get(i).filter(|ms| **ms > 0) {
            let _ = writeln!(s, "env = {{ {BENCH_MS_VAR} = \"{ms}\" }}");
        }
    }
    s
}

/// A stable, distinct name per task of a seeded suite, so the coordinator can
/// learn per-task history across runs.
pub fn task_name(seed: u64, index: usize) -> String {
    format!("bench-s{seed}-{index:05}")
}

async fn run_once(
    config: &BenchConfig,
    secret: &str,
    label: &str,
    durations: &[u64],
    order: &[usize],
) -> Result<RunReport, BenchError> {
    let deadline = Instant::now() + config.timeout;
    let mut target = Target::start(config, secret).await?;
    let run = Run {
        config,
        secret,
        label,
        durations,
        order,
        deadline,
    };
    let result = run.drive(&mut target).await;
    let server = target.describe(config);
    let fleet = target.stop().await;
    let mut report = result?;
    report.server = server;
    report.coordinators = config.coordinators;
    report.fleet = fleet.map(|f| f.with_agents(config.agents));
    Ok(report)
}

/// One run's inputs.
struct Run<'a> {
    config: &'a BenchConfig,
    secret: &'a str,
    label: &'a str,
    durations: &'a [u64],
    order: &'a [usize],
    deadline: Instant,
}

impl Run<'_> {
    async fn drive(&self, target: &mut Target) -> Result<RunReport, BenchError> {
        let (config, label, deadline) = (self.config, self.label, self.deadline);
        let urls = target.urls();
        let recorder = Arc::new(Recorder::new());
        let apis: Vec<ApiClient> = urls.iter().map(|u| ApiClient::new(u)).collect();
        let spec = FleetSpec {
            urls: Arc::new(urls.clone()),
            secret: self.secret.to_owned(),
            agents: config.agents,
            recorder: recorder.clone(),
            big_reports: (config.report_every > 0 && config.report_cases > 0)
                .then(|| agent::BigReports::new(config.report_every, config.report_cases)),
            retries: Arc::new(AtomicU64::new(0)),
            reconnections: Arc::new(AtomicU64::new(0)),
            timeout: config.timeout,
        };

        // Connect every agent before submitting anything.
        let mut fleet = Fleet::connect(&spec, deadline).await?;
        if config.progress {
            eprintln!(
                "bench {label}: {} agents connected to {}",
                config.agents,
                urls.join(", ")
            );
        }
        if let Target::Spawned(c) = target {
            // Idle a second, then the coordinators' memory with the fleet.
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.sample_connected();
        }
        let storm = if config.storm {
            let (rejoined, report) =
                storm::run(fleet, &spec, &apis[0], deadline, config.progress).await?;
            fleet = rejoined;
            Some(report)
        } else {
            None
        };
        if config.progress {
            eprintln!("bench {label}: submitting {} tasks", config.tasks);
        }

        let (job_ids, submitted, submit_s, mut timed_out) =
            match self.submit(&apis, &recorder).await {
                Ok(done) => done,
                Err(e) => {
                    fleet.shutdown().await;
                    return Err(e);
                }
            };

        // Wait for every submitted task to finish, or the deadline.
        let mut last_progress = Instant::now();
        loop {
            let done = recorder.finished_count();
            if done >= submitted {
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            if config.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                eprintln!(
                    "bench {label}: {done}/{} finished ({:.1} s)",
                    config.tasks,
                    recorder.now().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A short grace period so that a late duplicate delivery is still seen.
        tokio::time::sleep(Duration::from_millis(300)).await;
        fleet.shutdown().await;

        let server_view = checks::check_server(&apis[0], &job_ids).await;
        let records = recorder.take();
        let mut report = summarize(config, &records, submitted, submit_s);
        report.timed_out = timed_out;
        report.report_errors = recorder.report_errors.load(Ordering::Relaxed);
        report.disconnects = recorder.disconnects.load(Ordering::Relaxed);
        report.connect_retries = spec.retries.load(Ordering::Relaxed);
        report.reconnections = spec.reconnections.load(Ordering::Relaxed);
        report.server_not_passed = server_view.not_passed;
        report.server_extra_attempts = server_view.extra_attempts;
        report.server_retry_reasons = server_view.retry_reasons;
        report.server_retry_examples = server_view.retry_examples;
        report.storm = storm;
        if config.progress {
            eprintln!(
                "bench {label}: {}/{} finished in {:.2} s",
                report.finished, config.tasks, report.makespan_s
            );
        }
        Ok(report)
    }

    /// Submits the tasks in jobs of `batch`, round-robin over the
    /// coordinators, while the agents already work: the job ids, how many
    /// tasks were submitted, how long it took and whether the deadline hit.
    async fn submit(
        &self,
        apis: &[ApiClient],
        recorder: &Recorder,
    ) -> Result<(Vec<i64>, usize, f64, bool), BenchError> {
        let config = self.config;
        let mut job_ids = Vec::new();
        let mut submitted = 0usize;
        let started = recorder.now();
        let mut timed_out = false;
        for (n, chunk) in self.order.chunks(config.batch).enumerate() {
            if Instant::now() >= self.deadline {
                timed_out = true;
                break;
            }
            let name = format!("bench-{}-s{}-{n:04}", self.label, config.seed);
            let toml = job_toml(&name, config.seed, chunk, self.durations);
            let at = recorder.now();
            let api = &apis[n % apis.len()];
            let view = match tokio::time::timeout_at(self.deadline, api.submit(&toml)).await {
                Ok(Ok(view)) => view,
                Ok(Err(e)) => return Err(BenchError::Submit(e)),
                Err(_) => {
                    timed_out = true;
                    break;
                }
            };
            let by_name: HashMap<String, usize> = chunk
                .iter()
                .map(|&i| (task_name(config.seed, i), i))
                .collect();
            for task in &view.tasks {
                if let Some(&index) = by_name.get(&task.name) {
                    recorder.submitted(
                        task.id,
                        Submitted {
                            at,
                            duration_ms: self.durations.get(index).copied().unwrap_or(0),
                        },
                    );
                    submitted += 1;
                }
            }
            job_ids.push(view.id);
        }
        let submit_s = (recorder.now() - started).as_secs_f64();
        Ok((job_ids, submitted, submit_s, timed_out))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Turns the records into figures.
fn summarize(config: &BenchConfig, r: &Records, submitted: usize, submit_s: f64) -> RunReport {
    let mut submit_to_start = Vec::new();
    let mut overhead = Vec::new();
    let mut finished = 0;
    let mut duplicated = 0;
    let mut duplicate_deliveries = 0;
    let mut first_submit: Option<Duration> = None;
    let mut last_finish: Option<Duration> = None;
    let mut longest_ms = 0u64;
    let mut total_ms = 0u64;
    for (task_id, sub) in &r.submitted {
        longest_ms = longest_ms.max(sub.duration_ms);
        total_ms += sub.duration_ms;
        first_submit = Some(first_submit.map_or(sub.at, |f| f.min(sub.at)));
        let starts = r.starts.get(task_id).map_or(&[][..], Vec::as_slice);
        let finishes = r.finishes.get(task_id).map_or(&[][..], Vec::as_slice);
        if starts.len() > 1 || finishes.len() > 1 {
            duplicated += 1;
        }
        duplicate_deliveries += starts.len().saturating_sub(1);
        if let Some(start) = starts.first() {
            submit_to_start.push(ms(start.at.saturating_sub(sub.at)));
        }
        if let Some(finish) = finishes.first() {
            finished += 1;
            last_finish = Some(last_finish.map_or(finish.at, |l| l.max(finish.at)));
            if let Some(start) = starts.iter().find(|s| s.attempt_id == finish.attempt_id) {
                overhead.push(ms(finish.at.saturating_sub(start.at)) - sub.duration_ms as f64);
            }
        }
    }
    let foreign_deliveries = r
        .starts
        .iter()
        .filter(|(id, _)| !r.submitted.contains_key(id))
        .map(|(_, s)| s.len())
        .sum();
    let makespan = match (first_submit, last_finish) {
        (Some(f), Some(l)) => l.saturating_sub(f).as_secs_f64(),
        _ => 0.0,
    };
    let agents = config.agents.max(1);
    let lower_bound = (longest_ms as f64 / 1000.0).max(total_ms as f64 / 1000.0 / agents as f64);
    RunReport {
        agents: config.agents,
        tasks: config.tasks,
        workload: config.workload,
        seed: config.seed,
        server: String::new(),
        coordinators: 0,
        tasks_per_second: if makespan > 0.0 {
            round3(finished as f64 / makespan)
        } else {
            0.0
        },
        submit_to_start_ms: Percentiles::of(submit_to_start),
        fetch_to_work_ms: Percentiles::of(r.claims_ms.clone()),
        big_reports: if config.report_every > 0 && config.report_cases > 0 {
            r.finishes
                .keys()
                .filter(|id| **id % i64::try_from(config.report_every).unwrap_or(i64::MAX) == 0)
                .count()
        } else {
            0
        },
        start_to_finish_overhead_ms: Percentiles::of(overhead),
        makespan_s: round3(makespan),
        lower_bound_s: round3(lower_bound),
        makespan_ratio: (lower_bound > 0.0 && finished == submitted)
            .then(|| round3(makespan / lower_bound)),
        longest_task_s: round3(longest_ms as f64 / 1000.0),
        total_work_s: round3(total_ms as f64 / 1000.0),
        submit_s: round3(submit_s),
        finished,
        lost: submitted - finished,
        not_submitted: config.tasks.saturating_sub(submitted),
        duplicated,
        duplicate_deliveries,
        foreign_deliveries,
        report_errors: 0,
        disconnects: 0,
        connect_retries: 0,
        reconnections: 0,
        protocol_violations: r.violation_count,
        violation_examples: r.violations.clone(),
        server_not_passed: None,
        server_extra_attempts: None,
        server_retry_reasons: BTreeMap::new(),
        server_retry_examples: Vec::new(),
        timed_out: false,
        fleet: None,
        storm: None,
    }
}
