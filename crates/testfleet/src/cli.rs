//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "testfleet",
    version,
    about = "Run tests and benchmarks on a fleet of machines"
)]
pub struct Cli {
    /// The coordinator's URL, for client commands. For `agent`, several
    /// coordinators sharing one store may be listed, separated by commas:
    /// the agent tries them in order and fails over to the next.
    #[arg(long, global = true, env = "TESTFLEET_SERVER")]
    pub server: Option<String>,
    /// Configuration file (default: ~/.config/testfleet/config.toml when it exists).
    #[arg(long, global = true, env = "TESTFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator.
    Server(ServerArgs),
    /// Run an agent on this machine.
    Agent(AgentArgs),
    /// The privileged benchmark host-preparation helper the agent calls
    /// (through sudo or a systemd unit): apply or restore sysfs changes.
    HostPrep(crate::cmd::host_prep::HostPrepArgs),
    /// Submit a job file.
    Submit {
        /// The job file (TOML, or its JSON form).
        job: PathBuf,
        /// Follow the job until it ends; the exit code says whether it passed.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
        /// An input tree for every task (overrides `inputs` of the job file):
        /// uploaded (only the blobs the coordinator lacks) before submitting.
        #[arg(long, value_name = "DIR")]
        inputs: Option<PathBuf>,
    },
    /// A job's artifacts: list or download them.
    Artifacts {
        #[command(subcommand)]
        action: ArtifactsCommand,
    },
    /// Run a job file here, with no coordinator, as an agent would; prints
    /// `OK` or `NOT_OK` with the reason (exit code 0 or 1).
    Run {
        /// The job file (TOML, or its JSON form).
        job: PathBuf,
        /// Only this task (default: every task, in order).
        #[arg(long)]
        task: Option<String>,
        /// Keep the run directories (default: a temporary directory, kept
        /// only when a task fails).
        #[arg(long)]
        keep_temp: bool,
        /// Run under this directory instead of a temporary one.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Fill the job file's `{{NAME}}` placeholders (docs/triggers.md),
        /// such as `--var item=xchat-0.5-1.fc20`; repeat for each.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// How many agents each label set wants now, as `[server.autoscale]`
    /// decides (docs/scale-out.md); with a hook configured, the coordinator
    /// calls it itself: this only shows the decisions.
    Scale {
        /// Required: the command never starts or stops agents itself.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Merge-request bots: `testfleet bot gitlab|github --once [--dry-run]`
    /// runs one pass of `[server.bots.gitlab]` or `[server.bots.github]` and
    /// says what it did (or would do).
    Bot {
        #[command(subcommand)]
        action: BotCommand,
    },
    /// Trigger rules (docs/triggers.md).
    Trigger {
        #[command(subcommand)]
        action: TriggerCommand,
    },
    /// Fetch a submitted task's work item and inputs, and run it here exactly
    /// as an agent did.
    Repro {
        task: i64,
        /// Leave the run directory for inspection and print where it is.
        #[arg(long)]
        keep_temp: bool,
    },
    /// Follow a job's progress until it ends; exit code 0 when it passed.
    Watch {
        job: i64,
        /// Print the final job as JSON instead of the live display.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only jobs in this state (queued, running, passed, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a job with its tasks, outcomes and metrics.
    Show {
        job: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel {
        job: i64,
        #[arg(long)]
        json: bool,
    },
    /// Re-run failed tasks as new attempts: every failed task of a finished
    /// job, or one failed task with --task. Needs write access (a token or a
    /// user, as `cancel` does).
    Retry {
        /// The finished job whose failed tasks to re-run.
        #[arg(required_unless_present = "task", conflicts_with = "task")]
        job: Option<i64>,
        /// Re-run this one failed task instead (its job may still be running).
        #[arg(long, value_name = "TASK")]
        task: Option<i64>,
        /// Follow the job until it ends; the exit code says whether it passed.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's log.
    Logs {
        task: i64,
        /// Keep printing until the task ends.
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// A job's results as one report: merged JUnit XML, or Taskotron-style TAP 13.
    Report {
        job: i64,
        /// `junit` or `tap`.
        #[arg(long, default_value = "junit")]
        format: String,
    },
    /// The seed-000 run summary of an attempt (JSON): integration, host,
    /// platform, executed tests with their values, crashed tests with logs.
    Summary { attempt: i64 },
    /// The exporters' delivery status: pending and delivered points, last error.
    Exporters {
        #[arg(long)]
        json: bool,
    },
    /// Say why a task is still pending.
    Why {
        task: i64,
        #[arg(long)]
        json: bool,
    },
    /// Statistics: attempts stopped per threshold, runtimes per task key, flaky tasks.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// List agents.
    Agents {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<AgentsCommand>,
    },
    /// Manage users (on the coordinator's host: acts on its data directory).
    Users {
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// Manage API tokens (on the coordinator's host: acts on its data directory).
    Tokens {
        #[command(subcommand)]
        action: TokensCommand,
    },
    /// The coordinator's store (on its host): copy it into another database.
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// Parse a result file (QtTest, TAP, JUnit, Google Benchmark) and print it.
    Parse {
        file: PathBuf,
        /// The format (detected from content when not given): qtest-xml, qtest-lightxml,
        /// qtest-txt, qtest-csv, qtest-junitxml, qtest-tap, qtest-teamcity, tap, junit, gbench.
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a coordinator and two agents in one process on a bundled example job.
    Demo {
        /// Keep the demo's database, checkouts and logs here (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Keep serving the dashboard after the job ends, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Load-test a coordinator with simulated agents (in process without --server).
    Bench(BenchArgs),
    /// Change points of a benchmark series: a CSV file (`index,value`,
    /// `time,value` or `value` columns) analysed here without a coordinator,
    /// or a stored series with --series.
    Changes {
        /// The CSV file; `-` reads standard input.
        #[arg(required_unless_present = "series", conflicts_with = "series")]
        file: Option<PathBuf>,
        /// A stored series instead (its id from `testfleet series`).
        #[arg(long, value_name = "ID")]
        series: Option<i64>,
        /// Which way the CSV's metric improves, to tell a regression from an
        /// improvement: `lower` (times, the default) or `higher` (throughput).
        #[arg(long, value_enum, default_value_t = BetterArg::Lower)]
        better: BetterArg,
        #[arg(long)]
        json: bool,
    },
    /// Benchmark series: list them, narrowed by the filters, or show one
    /// (its noise model, machine fingerprints and last points).
    Series {
        /// Show this series instead of listing.
        id: Option<i64>,
        #[arg(long, conflicts_with = "id")]
        host: Option<String>,
        /// The test program (QtTest test class, benchmark binary).
        #[arg(long, conflicts_with = "id")]
        program: Option<String>,
        /// The test function (benchmark).
        #[arg(long, conflicts_with = "id")]
        function: Option<String>,
        #[arg(long, conflicts_with = "id")]
        metric: Option<String>,
        /// A substring of program, function or data tag.
        #[arg(long, conflicts_with = "id")]
        search: Option<String>,
        /// Series with ids above this (the next page, as the list says).
        #[arg(long, conflicts_with = "id")]
        after: Option<i64>,
        /// Series per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Points to show of one series (the newest).
        #[arg(long, default_value_t = 20)]
        points: u32,
        #[arg(long)]
        json: bool,
    },
    /// Compare every benchmark of two jobs (or two sets of jobs): a verdict
    /// per benchmark metric and host (slower, faster, same, unknown).
    Compare {
        /// The baseline: a job id, or ids separated by commas.
        baseline: JobIds,
        /// The contender: a job id, or ids separated by commas.
        contender: JobIds,
        /// Re-run both sides while a verdict is UNKNOWN, before answering
        /// (submits jobs: needs write access).
        #[arg(long)]
        confirm: bool,
        /// Confirmation rounds at most (default 3).
        #[arg(long, requires = "confirm", value_name = "N")]
        max_rounds: Option<u32>,
        /// Exit with 1 when any benchmark is slower (default: 0 whatever the
        /// verdicts).
        #[arg(long)]
        fail_on_regression: bool,
        #[arg(long)]
        json: bool,
    },
    /// Regressions across all series, newest first, grouped per test, host
    /// and commit, with their acknowledgements.
    /// The events log: trigger events received (webhooks), the rules they
    /// matched and the jobs they created, or why none; newest first.
    Events {
        /// Only events of this source (`github`, `gitlab`, `gerrit`).
        #[arg(long)]
        source: Option<String>,
        /// Only events with this outcome (`queued`, `ignored`, `duplicate`,
        /// `dropped`, `error`).
        #[arg(long)]
        outcome: Option<String>,
        /// Only events since this time: RFC 3339, or an age such as `1d`.
        #[arg(long)]
        since: Option<String>,
        /// Events at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    Regressions {
        /// Only changes since this time: RFC 3339, or an age such as `7d`.
        #[arg(long)]
        since: Option<String>,
        /// Groups at most.
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a regression (the change at a commit in a series, and the
    /// same change in the test's other metrics) with a note or a bug link.
    Ack {
        /// The series (its id from `testfleet series` or `regressions`).
        series: i64,
        /// The commit the change starts at.
        #[arg(long)]
        sha: String,
        /// Why it is accepted, or what is being done about it.
        #[arg(long)]
        note: String,
        /// A bug tracker link.
        #[arg(long, value_name = "URL")]
        bug: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Which way a CSV series' metric improves (`testfleet changes FILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BetterArg {
    Lower,
    Higher,
}

/// One job id or several separated by commas: `12` or `12,13,14`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIds(pub Vec<i64>);

impl std::str::FromStr for JobIds {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<JobIds, anyhow::Error> {
        let ids = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "`{part}` is not a job id (expected ids such as `12` or `12,13`)"
                        )
                    })
            })
            .collect::<Result<Vec<i64>, anyhow::Error>>()?;
        Ok(JobIds(ids))
    }
}

/// Where admin commands find the coordinator's store.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The coordinator's data directory (default: `[server] data_dir` of the config file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The coordinator's store, when not SQLite in its data directory
    /// (default: `[server] database` of the config file).
    #[arg(long, env = "TESTFLEET_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a whole store, ids kept, into a new, empty database: SQLite to
    /// PostgreSQL or back. Stop the coordinator first: the copy reads one
    /// snapshot. Prints the row count of every table, verified in the target.
    Copy {
        /// The store to copy, `sqlite://PATH` or `postgres://…` (default: the
        /// coordinator's, `[server] database` or SQLite in its data directory).
        #[arg(long, env = "TESTFLEET_DATABASE", hide_env_values = true)]
        from: Option<String>,
        /// The coordinator's data directory, when --from is not given.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new store, `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`;
        /// its schema is created, and it must hold no rows.
        #[arg(long)]
        to: String,
        /// Print the per-table row counts as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BotCommand {
    /// The GitLab bot (`[server.bots.gitlab]`).
    Gitlab(BotArgs),
    /// The GitHub bot (`[server.bots.github]`).
    Github(BotArgs),
}

/// `testfleet bot gitlab|github`.
#[derive(Debug, clap::Args)]
pub struct BotArgs {
    /// Run one pass and exit (the bot otherwise runs inside `testfleet server`).
    #[arg(long)]
    pub once: bool,
    /// Say what the pass would do; write nothing (the host, store, queue).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Print the jobs an event would submit, with no coordinator: each
    /// rule's verdict (or why not), then each rendered job file. Exit 0 when
    /// at least one job, 1 when no rule matched, 2 on bad input.
    Test {
        /// A rules file, or a directory of `*.toml` rules files.
        rules: PathBuf,
        /// The event's JSON body (a fedora-messaging message body, a webhook payload).
        event: PathBuf,
        /// amqp, gerrit, gitlab, github or manual (amqp when only --topic is given).
        #[arg(long)]
        source: Option<String>,
        /// The AMQP routing key, such as
        /// `org.fedoraproject.prod.buildsys.build.state.change`.
        #[arg(long)]
        topic: Option<String>,
        /// The webhook kind (default: Gerrit's `type`, GitLab's `object_kind`
        /// of the body); needed for GitHub, such as `pull_request`.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// List a job's artifacts (per task and attempt).
    List {
        job: i64,
        #[arg(long)]
        json: bool,
    },
    /// Download a job's artifacts into DIR/<task>/attempt-<n>/<path>.
    Download {
        job: i64,
        /// Only attempts that did not pass.
        #[arg(long)]
        failed: bool,
        /// Only this task (its name or id).
        #[arg(long)]
        task: Option<String>,
        /// Only this attempt number (1 = the first run of a task).
        #[arg(long)]
        attempt: Option<i64>,
        /// Where to write (default: artifacts-JOB).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Per-host agent secrets (stored hashed; they take precedence over the shared secret).
    Secret {
        #[command(subcommand)]
        action: SecretCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a host's secret, read from TESTFLEET_AGENT_SECRET or standard input.
    Set {
        host: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Give a host a new random secret and print it once.
    Rotate {
        host: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Revoke a host's secret: its agent is disconnected and refused.
    Revoke {
        host: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add (or update) a user; the password comes from TESTFLEET_PASSWORD or standard input.
    Add {
        name: String,
        /// May administer (tokens, users, agent secrets through the API).
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    Remove {
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    List {
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once (only its SHA-256 is stored).
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    List {
        #[command(flatten)]
        data: DataDirArg,
    },
}

impl Command {
    /// Long-running services log at info by default.
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Server(_) | Command::Agent(_))
    }
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where the coordinator keeps its files (and its SQLite database by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite://PATH` (default: DATA_DIR/testfleet.db) or
    /// `postgres://USER@HOST:PORT/DB`, shared by several coordinators.
    #[arg(long, env = "TESTFLEET_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// A secret shared by all agents.
    #[arg(long, env = "TESTFLEET_AGENT_SECRET", hide_env_values = true)]
    pub agent_secret: Option<String>,
    /// Start without any agent secret: every host that reaches the
    /// coordinator may connect as an agent (a trusted network only).
    #[arg(
        long,
        env = "TESTFLEET_ALLOW_ANY_AGENT",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_any_agent: bool,
    /// Allow the dev-mode events `queryWork` and `mockItem`.
    #[arg(long)]
    pub dev: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This machine's name, as the coordinator knows it.
    #[arg(long)]
    pub hostname: Option<String>,
    /// The agent secret.
    #[arg(long, env = "TESTFLEET_AGENT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Labels, `key=value,key=value`.
    #[arg(long)]
    pub labels: Option<String>,
    /// Where checkouts, the git cache and runs live.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds between fetches while idle.
    #[arg(long)]
    pub poll_interval: Option<humantime::Duration>,
    /// Trust this CA certificate (PEM) for an https coordinator.
    #[arg(long, env = "TESTFLEET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The blob cache for inputs (default: WORK_DIR/blob-cache).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The most the blob cache keeps, such as `20GB` (default 10GiB).
    #[arg(long)]
    pub cache_size: Option<String>,
    /// The sysfs tree benchmark host preparation writes (default /sys).
    #[arg(long, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,
    /// The host-prep journal (default WORK_DIR/host-prep.journal).
    #[arg(long, value_name = "FILE")]
    pub prep_journal: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Simulated agents (each one socket.io connection); a list such as
    /// `100,5000` runs each size in turn and compares it with the first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100",
        value_name = "N[,N…]"
    )]
    pub agents: Vec<usize>,
    /// Start this many `testfleet server` processes and spread the agents
    /// over them (more than one needs --database postgres://…); a list
    /// such as `1,2` runs each count in turn. Without it, the coordinator
    /// runs in process (or is --server URL1,URL2).
    #[arg(long, value_delimiter = ',', value_name = "N[,N…]")]
    pub coordinators: Vec<usize>,
    /// Once the agents are connected, all leave at once as agents shutting
    /// down do, then all reconnect at once; both are timed.
    #[arg(long)]
    pub storm: bool,
    /// Tasks to submit.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// `noop` or `heavy-tailed` (seeded Pareto task durations).
    #[arg(long, default_value = "noop")]
    pub workload: testfleet_loadgen::Workload,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the heavy-tailed suite twice: in random order and longest first.
    #[arg(long)]
    pub policy_compare: bool,
    /// The agent secret of the target coordinator.
    #[arg(long, env = "TESTFLEET_AGENT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Each run stops by itself after this long.
    #[arg(long, default_value = "120s")]
    pub timeout: humantime::Duration,
    /// Tasks per submitted job.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// The in-process or spawned coordinators' store (default: SQLite in a
    /// temporary directory); `postgres://…` names a server on which each run
    /// gets a fresh database of its own, dropped after the run.
    #[arg(long)]
    pub database: Option<String>,
    /// Every N-th task (by id) reports a result file of --report-cases
    /// test cases, to time claims while large reports are finished (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub report_every: usize,
    /// Test cases in each large report (with --report-every).
    #[arg(long, default_value_t = 10_000, value_name = "CASES")]
    pub report_cases: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
