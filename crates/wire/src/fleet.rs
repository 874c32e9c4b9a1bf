//! What the dashboard's fleet and queues pages show, as their JSON twins
//! (`GET /api/v1/fleet`, `GET /api/v1/queues`) answer it, and the live
//! updates browsers receive over socket.io.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /api/v1/fleet`: every agent and a count per state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub summary: FleetSummary,
    pub agents: Vec<FleetAgent>,
}

/// How many agents are in each state. `alive` is `busy + idle`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub total: u64,
    pub alive: u64,
    pub busy: u64,
    pub idle: u64,
    pub offline: u64,
}

/// What an agent is doing, as the fleet page groups agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentActivity {
    /// Connected and running an attempt.
    Busy,
    /// Connected, with nothing to run.
    Idle,
    /// Not connected to this coordinator (it may still hold an attempt until
    /// its lease runs out).
    Offline,
    /// Retired by an administrator.
    Retired,
}

impl AgentActivity {
    /// The lowercase name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentActivity::Busy => "busy",
            AgentActivity::Idle => "idle",
            AgentActivity::Offline => "offline",
            AgentActivity::Retired => "retired",
        }
    }
}

impl std::fmt::Display for AgentActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One agent of the fleet page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAgent {
    pub hostname: String,
    pub activity: AgentActivity,
    pub labels: BTreeMap<String, String>,
    /// The agent's last reported status text (`testing`, `idle`, …).
    pub status: Option<String>,
    /// The attempt it runs now.
    pub current: Option<CurrentAttempt>,
    /// When its running attempt's lease runs out unless renewed (RFC 3339).
    pub lease_expires_at: Option<String>,
    /// When it last connected or reported (RFC 3339).
    pub last_seen: Option<String>,
    /// Its last reported load average, when it reports one.
    pub load: Option<f64>,
}

/// The attempt an agent runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentAttempt {
    pub job_id: i64,
    pub task_id: i64,
    pub attempt_id: i64,
    /// The agent's last detail message about it.
    pub detail: Option<String>,
}

/// `GET /api/v1/queues`: the fair-share queues, in the order they are served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuesView {
    pub queues: Vec<QueueView>,
}

/// One fair-share queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub name: String,
    /// Its configured weight (1 unless configured).
    pub weight: f64,
    /// Its attempts running now divided by its weight: the queue with the
    /// smallest share is served first.
    pub share: f64,
    /// Tasks waiting.
    pub depth: u64,
    /// Attempts running now.
    pub running: u64,
    /// When the oldest waiting task was queued (RFC 3339).
    pub oldest_queued_at: Option<String>,
    /// The first waiting tasks in dispatch order, each with why it waits.
    pub pending: Vec<PendingTask>,
}

/// A waiting task and why it has not started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTask {
    pub task_id: i64,
    pub job_id: i64,
    pub queued_at: String,
    pub why: Vec<String>,
}

/// What changed, in a [`LiveUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// New log output of a running attempt.
    Log,
    /// An attempt started.
    Started,
    /// An attempt ended (the task may have ended, or been queued again).
    Finished,
    /// Jobs or tasks were submitted, cancelled or retried.
    Jobs,
}

/// `tf:update`, pushed to the `browsers` room: a job or task changed. The
/// dashboard fetches what it shows again (it carries ids, not the data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveUpdate {
    pub kind: UpdateKind,
    pub job_id: Option<i64>,
    pub task_id: Option<i64>,
}
