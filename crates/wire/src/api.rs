//! REST JSON bodies of `/api/v1` (documented in docs/api.md and served as an
//! OpenAPI document at `/api/v1/openapi.json`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use testfleet_core::{AttemptOutcome, JobState, TaskState};

/// A job and its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: i64,
    pub name: String,
    pub queue: String,
    pub priority: i32,
    pub state: JobState,
    /// RFC 3339.
    pub created_at: String,
    pub finished_at: Option<String>,
    pub integration_id: Option<String>,
    pub tasks: Vec<TaskView>,
    /// Counts of test cases per outcome over all tasks' latest attempts.
    #[serde(default)]
    pub counts: CaseCounts,
}

/// A job in a list (`GET /api/v1/jobs`): its counts, not its tasks. The
/// tasks are read from `GET /api/v1/jobs/{id}/tasks`, a page at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: i64,
    pub name: String,
    pub queue: String,
    pub priority: i32,
    pub state: JobState,
    /// RFC 3339.
    pub created_at: String,
    pub finished_at: Option<String>,
    pub integration_id: Option<String>,
    /// The job's tasks per state.
    pub tasks: TaskStateCounts,
    /// The job's tasks per outcome of their last attempt; tasks never run
    /// have none and are not counted here.
    pub outcomes: OutcomeCounts,
    /// Attempts over all tasks.
    pub attempts: u64,
    /// Tasks run more than once (retried or re-triggered).
    pub retried: u64,
}

/// Tasks per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateCounts {
    /// Every task of the job.
    pub total: u64,
    pub queued: u64,
    pub running: u64,
    pub passed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl TaskStateCounts {
    /// Adds `n` tasks in `state` (and to the total).
    pub fn add(&mut self, state: TaskState, n: u64) {
        self.total += n;
        *match state {
            TaskState::Queued => &mut self.queued,
            TaskState::Running => &mut self.running,
            TaskState::Passed => &mut self.passed,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        } += n;
    }

    /// Tasks that have finished (passed, failed or cancelled).
    pub fn finished(&self) -> u64 {
        self.passed + self.failed + self.cancelled
    }
}

/// Tasks per outcome of their last attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub passed: u64,
    pub failed: u64,
    pub flaky: u64,
    pub timed_out: u64,
    pub stalled: u64,
    pub crashed: u64,
    pub infra_error: u64,
    pub cancelled: u64,
}

impl OutcomeCounts {
    /// Adds `n` tasks whose last attempt ended with `outcome`.
    pub fn add(&mut self, outcome: AttemptOutcome, n: u64) {
        *match outcome {
            AttemptOutcome::Passed => &mut self.passed,
            AttemptOutcome::Failed => &mut self.failed,
            AttemptOutcome::Flaky => &mut self.flaky,
            AttemptOutcome::TimedOut => &mut self.timed_out,
            AttemptOutcome::Stalled => &mut self.stalled,
            AttemptOutcome::Crashed => &mut self.crashed,
            AttemptOutcome::InfraError => &mut self.infra_error,
            AttemptOutcome::Cancelled => &mut self.cancelled,
        } += n;
    }

    /// How many tasks have an outcome.
    pub fn total(&self) -> u64 {
        self.passed
            + self.failed
            + self.flaky
            + self.timed_out
            + self.stalled
            + self.crashed
            + self.infra_error
            + self.cancelled
    }
}

/// The most tasks one [`TaskPage`] carries; larger `limit`s are clamped.
pub const MAX_TASK_PAGE: u32 = 1000;

/// One page of a job's tasks (`GET /api/v1/jobs/{id}/tasks`), in task id
/// order. Ask for the next page with `after=<next_after>`; the last page has
/// no `next_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub job_id: i64,
    /// How many tasks the job has in all.
    pub total: u64,
    pub tasks: Vec<TaskView>,
    /// The cursor of the next page: the id of this page's last task, when
    /// more tasks follow.
    pub next_after: Option<i64>,
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: i64,
    pub job_id: i64,
    pub name: String,
    pub state: TaskState,
    /// The stage the current (or last) attempt reached.
    pub stage: Option<String>,
    /// The outcome of the last attempt.
    pub outcome: Option<AttemptOutcome>,
    /// The agent running (or that ran) the last attempt.
    pub agent: Option<String>,
    /// The agent this task is pinned to (`each_agent` fan-out).
    pub pinned_agent: Option<String>,
    pub detail_message: Option<String>,
    pub attempts: i64,
    pub flaky: bool,
    #[serde(default)]
    pub counts: CaseCounts,
    #[serde(default)]
    pub metrics: Vec<MetricView>,
}

/// Test cases per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseCounts {
    pub pass: u64,
    pub fail: u64,
    pub error: u64,
    pub skip: u64,
    pub xfail: u64,
    pub xpass: u64,
    pub crash: u64,
}

impl CaseCounts {
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.error + self.skip + self.xfail + self.xpass + self.crash
    }

    pub fn add(&mut self, other: &CaseCounts) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.error += other.error;
        self.skip += other.skip;
        self.xfail += other.xfail;
        self.xpass += other.xpass;
        self.crash += other.crash;
    }
}

/// One benchmark value of a task's last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricView {
    pub suite: String,
    pub case: String,
    pub data_tag: Option<String>,
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub iterations: Option<u64>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub id: i64,
    pub task_id: i64,
    pub number: i64,
    pub agent: String,
    pub stage: Option<String>,
    pub outcome: Option<AttemptOutcome>,
    pub reason: Option<String>,
    pub reason_data: Option<crate::reason::ReasonData>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// A task with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub attempts_list: Vec<AttemptView>,
}

/// An agent as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub hostname: String,
    pub online: bool,
    pub retired: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    pub last_connected: Option<String>,
    pub current_attempt: Option<i64>,
    pub status: Option<String>,
    #[serde(default)]
    pub machine: Option<crate::protocol::MachineInfo>,
}

/// A slice of a task's log. Read on from `next_offset`; when `complete` is
/// true the attempt has finished and nothing more will come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSlice {
    pub task_id: i64,
    pub attempt_id: Option<i64>,
    pub offset: u64,
    pub next_offset: u64,
    pub data: String,
    pub complete: bool,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// The seed-000 run summary of one agent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(rename = "integrationId")]
    pub integration_id: String,
    #[serde(rename = "integrationTimestamp")]
    pub integration_timestamp: String,
    pub hostname: String,
    pub platform: String,
    #[serde(rename = "executedTests")]
    pub executed_tests: Vec<ExecutedTest>,
    pub crashed: Vec<CrashedEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutedTest {
    pub test_name: String,
    pub test_function: String,
    pub result: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashedEntry {
    pub test_name: String,
    pub log: String,
}

/// `POST /api/v1/blobs/missing`: which of these blobs does the coordinator lack?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingBlobs {
    /// SHA-256 digests, 64 lowercase hex digits each.
    pub digests: Vec<String>,
}

/// The answer to [`MissingBlobs`]: the digests to upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingBlobsAnswer {
    pub missing: Vec<String>,
    /// The largest blob the coordinator accepts.
    #[serde(default)]
    pub max_blob_bytes: Option<u64>,
}

/// One kept file of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactView {
    pub id: i64,
    pub job_id: i64,
    pub task_id: i64,
    pub task_name: String,
    pub attempt_id: i64,
    /// The attempt's number within its task (1 = first run).
    pub attempt: i64,
    /// The attempt's outcome, once known.
    pub outcome: Option<AttemptOutcome>,
    /// Relative to the task's checkout; `stdout.log` / `stderr.log` for the
    /// output of a failed attempt.
    pub path: String,
    /// `always`, `on_failure`, `stdout` or `stderr`.
    pub kind: crate::artifact::ArtifactKind,
    pub digest: String,
    pub size: u64,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /api/v1/stats`: attempts stopped per threshold, runtime history per
/// task key, flaky counts per task key.
///
/// The fields of this struct and of its rows are declared in alphabetical
/// order: the answer was first built as a `serde_json` map, which sorts its
/// keys, and clients have seen that order since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// The most flaky task keys first.
    pub flaky: Vec<FlakyStats>,
    /// The longest p95 runtime first.
    pub runtimes: Vec<RuntimeStats>,
    /// One row per kind of stop, by name.
    pub thresholds: Vec<ThresholdStats>,
}

/// One kind of threshold stop (`step_timeout`, `silence`,
/// `runtime_threshold`, `lease_expired`): how many attempts it stopped, how
/// long they had run, and the agent's load when they were stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStats {
    /// None when no stopped attempt recorded the agent's load.
    pub max_agent_load: Option<f64>,
    pub max_runtime_ms: Option<i64>,
    /// None when no stopped attempt recorded the agent's load.
    pub mean_agent_load: Option<f64>,
    pub mean_runtime_ms: Option<f64>,
    pub stopped_attempts: i64,
    /// The kind of stop.
    pub threshold: String,
}

/// One task key's runtime history: what the runtime thresholds are derived
/// from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStats {
    pub mean_ms: f64,
    pub p95_ms: f64,
    pub runs: i64,
    pub task_key: String,
}

/// One task key's flaky count: finished tasks that failed, then passed on
/// retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyStats {
    /// How many of `runs` were flaky.
    pub flaky: i64,
    /// Finished (passed or failed) tasks of this key.
    pub runs: i64,
    pub task_key: String,
}

/// `GET /api/v1/tasks/{id}/why`: why a task is still pending, in words.
///
/// Fields in alphabetical order: the answer was first built as a
/// `serde_json` map, which sorts its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyView {
    /// One sentence per reason; empty when nothing holds the task back.
    pub reasons: Vec<String>,
    pub task_id: i64,
}

/// `GET /api/v1/exporters`: the delivery state of every configured sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportersView {
    pub exporters: Vec<ExporterStatus>,
}

/// One exporter's outbox: what waits, what went, the last failure.
///
/// Fields in alphabetical order, as the `serde_json` map it replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExporterStatus {
    /// Whether the coordinator's configuration names this sink.
    pub configured: bool,
    /// Points (InfluxDB) or results (ResultsDB) acknowledged by the receiver.
    pub delivered: i64,
    /// Items the receiver refused as malformed; skipped, never retried.
    pub dropped: i64,
    /// Failed deliveries since the last success.
    pub failures: i64,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_error_at: Option<String>,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    /// `influxdb` or `resultsdb`.
    pub name: String,
    /// Finished attempts not yet delivered.
    pub pending: i64,
    /// Where the sink delivers, when configured.
    pub url: Option<String>,
}

/// `POST /api/v1/jobs/{id}/retry` and `POST /api/v1/tasks/{id}/retry`: the
/// failed tasks queued again for a new attempt, and their job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryView {
    /// The ids of the tasks queued again, in id order.
    pub retried: Vec<i64>,
    /// The job as it is after the retry (running or queued again).
    pub job: JobView,
}
