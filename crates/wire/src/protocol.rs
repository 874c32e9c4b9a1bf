//! The socket.io agent protocol (SPEC §3): the seed-000 events that Qt's own
//! host and agent speak, and testfleet's documented additions.
//!
//! Qt's keys are camelCase and must stay so; a Qt agent ignores the keys it
//! does not know, so testfleet's own keys ride along in the same objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use testfleet_core::job::{ArtifactSpec, IntegrationChange, ResultSpec, SourceSpec, StepSpec};

/// Version of testfleet's additions to the seed-000 contract.
pub const PROTOCOL_VERSION: u32 = 1;

/// Event names. The seed-000 ones first, then testfleet's (`tf:` prefix).
pub mod events {
    pub const STATUS_UPDATE: &str = "statusUpdate";
    pub const FETCH_WORK: &str = "fetchWork";
    pub const SEND_WORK: &str = "sendWork";
    pub const REQUEST_STATUS: &str = "requestStatus";
    pub const QUERY_WORK: &str = "queryWork";
    pub const MOCK_ITEM: &str = "mockItem";
    pub const ERROR: &str = "error";
    pub const GET_AGENTS: &str = "getAgents";
    pub const AGENT_DATA: &str = "agentData";
    pub const GET_WORK_LOG: &str = "getWorkLog";
    pub const WORK_LOG_DATA: &str = "workLogData";
    /// Server → browsers: a job or task changed ([`crate::fleet::LiveUpdate`]).
    pub const LIVE_UPDATE: &str = "tf:update";

    /// Agent → server: a batch of a running attempt's output ([`super::LogChunk`]).
    pub const LOG_CHUNK: &str = "tf:log";
    /// Server → agent: stop the attempt ([`super::CancelWork`]).
    pub const CANCEL_WORK: &str = "tf:cancel";
    /// Agent → server, acknowledged: the attempt's final report
    /// ([`super::AttemptReport`]). Sent before the `done`/`error` status.
    pub const ATTEMPT_REPORT: &str = "tf:report";
}

/// The handshake `auth` payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HandshakeAuth {
    #[serde(rename = "clientType", default)]
    pub client_type: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    /// testfleet: a browser's API token, for a coordinator whose reads are
    /// closed (a browser's WebSocket cannot carry an `Authorization`
    /// header it was not given by HTTP authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// testfleet: the agent's labels (`key → value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// testfleet: the protocol version of testfleet's additions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// testfleet: what the machine is (fills the seed-000 InfluxDB tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineInfo>,
}

/// An agent's machine fingerprint, reported at every connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Operating system and version, such as `Debian GNU/Linux 12 (bookworm)`.
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub os_version: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub cores: u32,
    /// The C/C++ compiler's version (gcc's, as the seed-000 `gcc` tag), when present.
    #[serde(default)]
    pub compiler: String,
    /// How the host was prepared for the attempt (`[task.bench]`): every step
    /// done, and every step it could not do. Left out when empty, so an
    /// unprepared host's fingerprint is what it was before preparation existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prep: Vec<PrepStep>,
}

/// One step of a host's preparation for an attempt, as it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepStep {
    pub step: PrepAction,
    /// What it acted on: `cpu0`, `turbo`, `cpus 0-1`, `steps`.
    #[serde(default)]
    pub target: String,
    pub status: PrepStatus,
    /// What changed (`powersave -> performance`), or why nothing did.
    #[serde(default)]
    pub detail: String,
}

/// What a preparation step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrepAction {
    /// A CPU's cpufreq governor.
    Governor,
    /// Turbo / boost (`intel_pstate/no_turbo` or `cpufreq/boost`).
    Turbo,
    /// A hyperthread sibling of a pinned CPU taken offline.
    SiblingOffline,
    /// The steps pinned to a CPU set.
    Pin,
    /// The steps' niceness.
    Nice,
    /// The steps' I/O class.
    Ionice,
    /// The wait for the host's load to fall under `max_load`.
    Load,
    /// A step a newer peer knows and this version does not.
    #[serde(other)]
    Unknown,
}

/// How a preparation step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrepStatus {
    /// Done (and undone after the attempt).
    Applied,
    /// The host already was so; nothing to do or undo.
    AlreadySet,
    /// The machine has no such knob (file missing, value not offered).
    Unsupported,
    /// The agent may not do it (no helper, or the helper was refused).
    NotPermitted,
    /// Tried, and the kernel or the helper refused.
    Failed,
    /// A status a newer peer knows and this version does not.
    #[serde(other)]
    Unknown,
}

/// A work item as `sendWork` carries it: every key of Qt's `WorkItem`, then
/// testfleet's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    #[serde(rename = "integrationId")]
    pub integration_id: String,
    #[serde(rename = "integrationURL")]
    pub integration_url: Option<String>,
    /// UTC, `YYYY-MM-DDTHH:MM:SS.fffZ`.
    #[serde(rename = "integrationTimestamp")]
    pub integration_timestamp: String,
    #[serde(rename = "integrationData")]
    pub integration_data: Vec<IntegrationChange>,
    pub branch: String,
    pub sha: String,

    #[serde(rename = "jobId", default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(rename = "taskId", default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    #[serde(rename = "attemptId", default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<i64>,
    #[serde(rename = "jobName", default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(rename = "taskName", default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ResultSpec>,
    #[serde(default, skip_serializing_if = "is_default_artifacts")]
    pub artifacts: ArtifactSpec,
    /// Stop a step that prints nothing for this long (`stalled`).
    #[serde(
        rename = "silenceTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub silence_timeout: Option<testfleet_core::job::DurationSpec>,
    /// The input tree: the digest (64 hex digits) of its manifest, a blob the
    /// agent fetches from `/api/v1/agent/blobs/{digest}` and materializes
    /// into the checkout directory before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// How many times to run the `test` steps (the task's `repeat`); left out
    /// when 1, so an item that does not repeat is exactly Qt's.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: u32,
    /// How the agent prepares its host (the task's `[task.bench]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<testfleet_core::job::BenchSpec>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Where a work item is going: ids in the store, or none for a local run
/// (`testfleet run`), and what stands in when the job names no integration.
#[derive(Debug, Clone)]
pub struct WorkOrigin {
    pub job_id: Option<i64>,
    pub task_id: Option<i64>,
    pub attempt_id: Option<i64>,
    /// `integrationId` when the job has no `[integration]`.
    pub integration_id: String,
    /// `integrationTimestamp` when the job's integration has none.
    pub timestamp: testfleet_core::time_fmt::UnixMillis,
}

impl WorkItem {
    /// The work item for `task` of `job`: Qt's keys from the job's
    /// integration (or the origin's stand-ins), testfleet's from the task.
    /// The coordinator and `testfleet run` both build items here, so a local
    /// run gets exactly what an agent would.
    pub fn for_task(
        job: &testfleet_core::job::JobSpec,
        task: &testfleet_core::job::TaskSpec,
        task_name: &str,
        origin: WorkOrigin,
        inputs: Option<String>,
    ) -> WorkItem {
        let integration = job.integration.as_ref();
        let mut env = job.env.clone();
        env.extend(task.env.clone());
        WorkItem {
            integration_id: integration.map_or(origin.integration_id, |i| i.id.clone()),
            integration_url: integration.and_then(|i| i.url.clone()),
            integration_timestamp: testfleet_core::time_fmt::format_millis(
                integration
                    .and_then(|i| i.timestamp)
                    .map_or(origin.timestamp, |t| t.0),
            ),
            integration_data: integration.map(|i| i.data.clone()).unwrap_or_default(),
            branch: integration
                .and_then(|i| i.branch.clone())
                .unwrap_or_default(),
            sha: integration
                .and_then(|i| i.sha.clone())
                .or_else(|| job.source.as_ref().map(|s| s.rev.clone()))
                .unwrap_or_default(),
            job_id: origin.job_id,
            task_id: origin.task_id,
            attempt_id: origin.attempt_id,
            job_name: Some(job.name.clone()),
            task_name: Some(task_name.to_owned()),
            source: job.source.clone(),
            steps: task.steps.clone(),
            env,
            results: task.results.clone(),
            artifacts: task.artifacts.clone(),
            silence_timeout: task.silence_timeout,
            inputs,
            repeat: task.repeat,
            bench: task.bench.clone(),
        }
    }
}

fn is_default_artifacts(a: &ArtifactSpec) -> bool {
    a.always.is_empty() && a.on_failure.is_empty() && a.max_size.is_none()
}

/// A `statusUpdate`, as testfleet's agent sends it and the coordinator receives it.
/// Every field is optional because agents differ: Qt's sends `{}` when idle,
/// testfleet's sends its ids and load too. The keys Qt's agents fill in loosely
/// (`integrationId` as a string or a number, `updateTimestamp` as text or
/// milliseconds) stay JSON values; keys nobody here knows are kept in `rest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(
        rename = "integrationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub integration_id: Option<Value>,
    #[serde(
        rename = "integrationURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub integration_url: Option<String>,
    #[serde(
        rename = "integrationTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub integration_timestamp: Option<String>,
    #[serde(
        rename = "integrationData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub integration_data: Option<Vec<IntegrationChange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(
        rename = "detailMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub detail_message: Option<Value>,
    /// An ISO-8601 string or milliseconds since the epoch.
    #[serde(
        rename = "updateTimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub update_timestamp: Option<Value>,
    #[serde(rename = "jobId", default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(rename = "taskId", default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    #[serde(rename = "attemptId", default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<i64>,
    #[serde(rename = "jobName", default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(rename = "taskName", default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// testfleet: the machine's 1-minute load average (kept with the reasons of
    /// attempts stopped by a threshold). Anything but a number reads as unknown.
    #[serde(
        default,
        deserialize_with = "number_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub load: Option<f64>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// A number, or `None` for anything else (a status update is never refused for it).
fn number_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(Value::as_f64))
}

impl StatusUpdate {
    /// An idle agent's status.
    pub fn idle(update_timestamp: String, load: Option<f64>) -> StatusUpdate {
        StatusUpdate {
            status: Some("idle".to_owned()),
            update_timestamp: Some(Value::String(update_timestamp)),
            load,
            ..StatusUpdate::default()
        }
    }

    /// The status of an agent working on `item`: the item's Qt keys and ids (not its
    /// steps, environment or specs, which keeps the update small), the stage and its
    /// detail.
    pub fn working(
        item: &WorkItem,
        status: &str,
        detail: &str,
        update_timestamp: String,
        load: Option<f64>,
    ) -> StatusUpdate {
        StatusUpdate {
            status: Some(status.to_owned()),
            integration_id: Some(Value::String(item.integration_id.clone())),
            integration_url: item.integration_url.clone(),
            integration_timestamp: Some(item.integration_timestamp.clone()),
            integration_data: Some(item.integration_data.clone()),
            branch: Some(item.branch.clone()),
            sha: Some(item.sha.clone()),
            detail_message: Some(Value::String(detail.to_owned())),
            update_timestamp: Some(Value::String(update_timestamp)),
            job_id: item.job_id,
            task_id: item.task_id,
            attempt_id: item.attempt_id,
            job_name: item.job_name.clone(),
            task_name: item.task_name.clone(),
            load,
            rest: serde_json::Map::new(),
        }
    }

    /// `integrationId` as text, whether the agent sent a string or a number.
    pub fn integration_id_text(&self) -> Option<String> {
        match self.integration_id.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn detail_text(&self) -> Option<String> {
        match self.detail_message.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// testfleet: a batch of output of a running attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    #[serde(rename = "attemptId")]
    pub attempt_id: i64,
    /// Byte offset of `data` in the attempt's log, so a resend after a
    /// reconnect is stored once.
    pub offset: u64,
    pub data: String,
}

/// testfleet: stop this attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelWork {
    #[serde(rename = "attemptId")]
    pub attempt_id: i64,
    pub reason: String,
}

/// testfleet: how an attempt ended, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    #[serde(rename = "attemptId")]
    pub attempt_id: i64,
    pub outcome: testfleet_core::AttemptOutcome,
    /// A short reason when the outcome is not `passed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Structured details of the reason (step, exit code, timeout).
    #[serde(default)]
    pub reason_data: Option<crate::reason::ReasonData>,
    /// Parsed result files, when the task named any.
    #[serde(default)]
    pub results: Vec<crate::results::Results>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The attempt's machine fingerprint when it differs from the one the
    /// agent reported at connection: a host prepared for a benchmark, with
    /// its `prep` steps. Left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Box<MachineInfo>>,
}

/// One entry of `agentData`, as the seed-000 dashboard expects it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDataEntry {
    pub agent: String,
    #[serde(rename = "currentJob")]
    pub current_job: Option<Value>,
    pub online: bool,
    #[serde(rename = "lastConnected")]
    pub last_connected: Option<String>,
}

/// One entry of `workLogData` (the answer to `getWorkLog`): a status change
/// an agent reported. Fields in alphabetical order of their keys, as the
/// answer has always had them (it was first built as a sorted JSON map).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkLogEntry {
    #[serde(rename = "attemptId")]
    pub attempt_id: Option<i64>,
    #[serde(rename = "detailMessage")]
    pub detail_message: Option<String>,
    pub hostname: String,
    #[serde(rename = "integrationId")]
    pub integration_id: Option<String>,
    pub status: String,
    /// RFC 3339.
    pub timestamp: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item() -> WorkItem {
        serde_json::from_value(json!({
            "integrationId": "42", "integrationURL": null,
            "integrationTimestamp": "2024-01-02T03:04:05.000Z",
            "integrationData": [{"subject": "s", "sha": "abc", "url": "u"}],
            "branch": "dev", "sha": "abc", "jobId": 1, "taskId": 2, "attemptId": 3,
            "jobName": "j", "taskName": "t",
            "env": {"A": "1"}
        }))
        .expect("work item")
    }

    #[test]
    fn an_unprepared_machine_serializes_as_before_and_unknown_prep_values_parse() {
        let m = MachineInfo {
            cpu_model: "Xeon".into(),
            ..MachineInfo::default()
        };
        let v = serde_json::to_value(&m).expect("json");
        assert!(v.get("prep").is_none(), "{v}");
        let old: MachineInfo = serde_json::from_value(json!({"cpu_model": "Xeon"})).expect("old");
        assert_eq!(old, m);
        let newer: MachineInfo = serde_json::from_value(json!({
            "prep": [{"step": "smt_off", "target": "host", "status": "rebooted", "detail": ""}]
        }))
        .expect("newer");
        assert_eq!(newer.prep[0].step, PrepAction::Unknown);
        assert_eq!(newer.prep[0].status, PrepStatus::Unknown);
    }

    #[test]
    fn working_status_carries_the_qt_keys_and_ids_but_not_the_steps() {
        let update = StatusUpdate::working(
            &item(),
            "testing",
            "step 1/1",
            "2024-01-02T03:04:06.000Z".into(),
            Some(0.5),
        );
        let v = serde_json::to_value(&update).expect("json");
        assert_eq!(
            v,
            json!({"status": "testing", "integrationId": "42",
                   "integrationTimestamp": "2024-01-02T03:04:05.000Z",
                   "integrationData": [{"subject": "s", "sha": "abc", "url": "u"}],
                   "branch": "dev", "sha": "abc", "detailMessage": "step 1/1",
                   "updateTimestamp": "2024-01-02T03:04:06.000Z",
                   "jobId": 1, "taskId": 2, "attemptId": 3, "jobName": "j", "taskName": "t",
                   "load": 0.5})
        );
        let back: StatusUpdate = serde_json::from_value(v).expect("parse");
        assert_eq!(back, update);
        assert!(back.rest.is_empty());
    }

    #[test]
    fn idle_status_and_what_other_agents_send() {
        let idle = StatusUpdate::idle("2024-01-02T03:04:06.000Z".into(), None);
        assert_eq!(
            serde_json::to_value(&idle).expect("json"),
            json!({"status": "idle", "updateTimestamp": "2024-01-02T03:04:06.000Z"})
        );
        // Qt's agent: `{}` when idle; a numeric id; unknown keys; a load that is no number.
        let qt: StatusUpdate = serde_json::from_value(json!({})).expect("empty");
        assert_eq!(qt, StatusUpdate::default());
        let odd: StatusUpdate = serde_json::from_value(
            json!({"status": "building", "integrationId": 7, "updateTimestamp": 1_700_000_000_000i64,
                   "load": "high", "extra": true}),
        )
        .expect("lenient");
        assert_eq!(odd.integration_id_text().as_deref(), Some("7"));
        assert_eq!(odd.load, None);
        assert_eq!(odd.rest.get("extra"), Some(&json!(true)));
    }

    #[test]
    fn repeat_rides_along_only_when_more_than_once() {
        let once = item();
        assert_eq!(once.repeat, 1);
        let v = serde_json::to_value(&once).expect("json");
        assert!(v.get("repeat").is_none(), "{v}");
        let job = testfleet_core::JobSpec::from_toml(
            "name = \"j\"\n[[task]]\nname = \"t\"\nrepeat = 5\nsteps = [{ stage = \"test\", run = \"true\" }]\n",
        )
        .expect("job");
        let origin = WorkOrigin {
            job_id: Some(1),
            task_id: Some(2),
            attempt_id: Some(3),
            integration_id: "tf-1".into(),
            timestamp: 0,
        };
        let five = WorkItem::for_task(&job, &job.tasks[0], "t", origin, None);
        assert_eq!(five.repeat, 5);
        let v = serde_json::to_value(&five).expect("json");
        assert_eq!(v.get("repeat"), Some(&json!(5)));
        let back: WorkItem = serde_json::from_value(v).expect("parse");
        assert_eq!(back, five);
    }

    #[test]
    fn report_reason_data_is_typed() {
        let report: AttemptReport = serde_json::from_value(json!({
            "attemptId": 3, "outcome": "failed", "reason": "1 test case(s) failed",
            "reason_data": {"kind": "test_failures", "count": 1}
        }))
        .expect("report");
        assert_eq!(
            report.reason_data,
            Some(crate::reason::ReasonData::TestFailures { count: 1 })
        );
    }
}
