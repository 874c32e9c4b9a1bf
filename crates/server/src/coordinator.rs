//! The coordinator's live state: connected agents, the queue index and the
//! dispatch rule, over the durable store.
//!
//! The store is the truth; the in-memory [`Scheduler`] is an index rebuilt from
//! it at start-up. One mutex owns the scheduler, and every change that touches
//! both (claim, finish, cancel) commits to the store before memory changes, so
//! a coordinator killed between the two restarts from the store alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use testfleet_core::job::{IntegrationSpec, JobSpec, StepSpec, TaskSpec, Timestamp};
use testfleet_core::time_fmt::{UnixMillis, format_millis, parse_rfc3339_millis};
use testfleet_core::{AttemptOutcome, LabelSet, Stage};
use testfleet_store::{FinishEffect, NewTask, Progress, RunningAttempt, Store, StoreError};
use testfleet_wire::api::JobView;
use testfleet_wire::protocol::{
    AgentDataEntry, AttemptReport, CancelWork, LogChunk, MachineInfo, StatusUpdate, WorkItem,
    events,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

mod dispatch;
mod finish;
mod fleet;
mod leases;
mod reaper;

use crate::config::ServerConfig;
use crate::scheduler::{AgentSlot, RuntimeLimit, Scheduler};

/// Where the coordinator reads the time; tests inject their own.
pub trait Clock: Send + Sync {
    fn now_millis(&self) -> UnixMillis;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The coordinator's shared state.
pub struct Coordinator {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    io: SocketIo,
    clock: Arc<dyn Clock>,
    sched: Mutex<Scheduler>,
    connections: AtomicU64,
    /// Slows down repeated failed authentication per address.
    pub auth_failures: crate::auth::FailureLimiter,
    /// Digest nonce counts seen, to refuse replayed answers.
    pub digest_counts: crate::auth::DigestCounts,
    /// Connected browser clients (`agentData` is pushed only when some are).
    pub browsers: AtomicU64,
    /// When agent secrets were last checked for revocations.
    secrets_checked_at: std::sync::atomic::AtomicI64,
    /// When this coordinator last renewed its agents' leases in the store.
    leases_renewed_at: std::sync::atomic::AtomicI64,
    reaper: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Bumped whenever an agent secret is revoked or rotated, so credentials
    /// cached by the agent HTTP routes are checked again at once.
    pub agent_secrets_epoch: AtomicU64,
    /// Wakes the background dispatcher (new work arrived).
    dispatch_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Loads the queue and the running attempts from the store and starts the
    /// reaper (lease expiry, status requests).
    pub async fn start(
        store: Store,
        config: Arc<ServerConfig>,
        io: SocketIo,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Coordinator>, StoreError> {
        let now = clock.now_millis();
        store.set_lease(config.lease_timeout);
        let repaired = store.repair_job_states(now).await?;
        if repaired > 0 {
            tracing::info!(jobs = repaired, "settled jobs whose tasks had all ended");
        }
        let mut sched = Scheduler::new(config.queue_weights.clone());
        for agent in store.agents().await? {
            let labels = with_hostname(agent.labels, &agent.hostname);
            sched.agents.insert(agent.hostname, AgentSlot::new(labels));
        }
        for task in store.queued_tasks().await? {
            sched.enqueue(task);
        }
        for attempt in store.running_attempts().await? {
            // The agent keeps running its attempt while the coordinator is
            // down; it has until the lease expires to reconnect and say so.
            let slot = sched
                .agents
                .entry(attempt.agent.clone())
                .or_insert_with(|| AgentSlot::new(with_hostname(LabelSet::new(), &attempt.agent)));
            slot.offline_since = Some(now);
            let attempt_for_count = attempt.clone();
            slot.running = Some(attempt);
            sched.started(&attempt_for_count);
        }
        tracing::info!(
            queued = sched.queued(),
            agents = sched.agents.len(),
            "coordinator state loaded"
        );
        let coordinator = Arc::new(Coordinator {
            store,
            config,
            io,
            clock,
            sched: Mutex::new(sched),
            connections: AtomicU64::new(0),
            auth_failures: crate::auth::FailureLimiter::default(),
            digest_counts: crate::auth::DigestCounts::default(),
            browsers: AtomicU64::new(0),
            secrets_checked_at: std::sync::atomic::AtomicI64::new(SystemClock.now_millis()),
            leases_renewed_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            reaper: std::sync::Mutex::new(None),
            dispatch_wake: Arc::new(tokio::sync::Notify::new()),
            agent_secrets_epoch: AtomicU64::new(0),
        });
        // Submissions only queue their tasks and wake this task, so a submit
        // answers without waiting for the claims it makes possible.
        let weak = Arc::downgrade(&coordinator);
        let wake = coordinator.dispatch_wake.clone();
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let Some(c) = weak.upgrade() else { break };
                c.dispatch().await;
            }
        });
        let weak = Arc::downgrade(&coordinator);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                c.reap().await;
            }
        });
        if let Ok(mut slot) = coordinator.reaper.lock() {
            *slot = Some(handle);
        }
        Ok(coordinator)
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now_millis()
    }

    /// Stops background work and closes the store.
    pub async fn shutdown(&self) {
        if let Some(handle) = self.reaper.lock().ok().and_then(|mut h| h.take()) {
            handle.abort();
        }
        self.store.close().await;
    }

    // ----- jobs -------------------------------------------------------------

    /// Stores a validated job, fans out `each_agent` tasks and wakes idle agents.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobView, SubmitError> {
        let now = self.now();
        let fan_out_targets = if spec.tasks.iter().any(|t| t.each_agent) {
            let since =
                now - i64::try_from(self.config.agent_retention.as_millis()).unwrap_or(i64::MAX);
            self.store.agents_seen_since(since).await?
        } else {
            Vec::new()
        };
        let mut tasks = Vec::new();
        for task in &spec.tasks {
            let priority = spec.task_priority(task);
            let targets: Vec<&String> = if task.each_agent {
                fan_out_targets
                    .iter()
                    .filter(|(host, labels)| {
                        task.requires.matches(&with_hostname(labels.clone(), host))
                    })
                    .map(|(host, _)| host)
                    .collect()
            } else {
                Vec::new()
            };
            if targets.is_empty() {
                // No known agent matches yet: one task waits for the first that does.
                tasks.push(NewTask {
                    name: task.name.clone(),
                    spec: task.clone(),
                    priority,
                    pinned_agent: None,
                });
            } else {
                for host in targets {
                    tasks.push(NewTask {
                        name: format!("{}@{host}", task.name),
                        spec: task.clone(),
                        priority,
                        pinned_agent: Some(host.clone()),
                    });
                }
            }
        }
        let (job_id, queued) = self.store.submit_job(&spec, tasks, now).await?;
        tracing::info!(job_id, name = %spec.name, tasks = queued.len(), "job submitted");
        {
            let mut sched = self.sched.lock().await;
            for task in queued {
                sched.enqueue(task);
            }
        }
        self.dispatch_wake.notify_one();
        Ok(self.store.job(job_id).await?)
    }

    /// Cancels a job: queued tasks end, running agents are told to stop.
    pub async fn cancel(&self, job_id: i64) -> Result<JobView, StoreError> {
        let now = self.now();
        let mut sched = self.sched.lock().await;
        let running = self.store.cancel_job(job_id, now).await?;
        sched.cancelled_jobs.insert(job_id);
        for id in sched.job_tasks(job_id) {
            sched.dequeue(id);
        }
        for attempt in running {
            if let Some(slot) = sched.agents.get_mut(&attempt.agent) {
                let mine = slot
                    .running
                    .as_ref()
                    .is_some_and(|r| r.attempt_id == attempt.attempt_id);
                if mine {
                    slot.running = None;
                    slot.runtime_limit = None;
                }
                if let Some(socket) = &slot.socket {
                    let msg = CancelWork {
                        attempt_id: attempt.attempt_id,
                        reason: "cancelled by user".into(),
                    };
                    if let Err(e) = socket.emit(events::CANCEL_WORK, &msg) {
                        tracing::warn!(agent = %attempt.agent, "could not send cancel: {e}");
                    }
                }
                if mine {
                    sched.ended(&attempt);
                }
            }
        }
        drop(sched);
        tracing::info!(job_id, "job cancelled");
        self.store.job(job_id).await
    }

    // ----- agents -----------------------------------------------------------

    /// Registers a new connection of `host`; returns its connection id.
    pub async fn agent_connected(
        &self,
        host: &str,
        labels: LabelSet,
        machine: Option<MachineInfo>,
        socket: SocketRef,
    ) -> u64 {
        let now = self.now();
        let connection = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if let Err(e) = self
            .store
            .agent_connected(host, &labels, machine.as_ref(), now)
            .await
        {
            tracing::error!(agent = host, "failed to record agent: {e}");
        }
        let mut sched = self.sched.lock().await;
        let slot = sched
            .agents
            .entry(host.to_owned())
            .or_insert_with(|| AgentSlot::new(LabelSet::new()));
        slot.connected = true;
        if let Some(old) = slot.socket.replace(socket) {
            // The same host connected again: the newer connection wins.
            tracing::info!(agent = host, "replacing an older connection of this agent");
            let _ = old.disconnect();
        }
        slot.labels = with_hostname(labels, host);
        slot.connection = connection;
        slot.waiting = false;
        slot.offline_since = None;
        slot.last_connected = Some(now);
        slot.last_update_ts = None;
        tracing::info!(agent = host, "agent connected");
        drop(sched);
        self.push_agent_data().await;
        connection
    }

    /// Handles the end of a connection. `shutdown` retires the agent.
    pub async fn agent_disconnected(&self, host: &str, connection: u64, shutdown: bool) {
        let now = self.now();
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        slot.socket = None;
        slot.connected = false;
        slot.waiting = false;
        slot.offline_since = Some(now);
        drop(sched);
        if shutdown {
            tracing::info!(agent = host, "agent shut down; retired");
            if let Err(e) = self.store.retire_agent(host).await {
                tracing::error!(agent = host, "failed to retire agent: {e}");
            }
        } else {
            tracing::warn!(agent = host, "agent connection lost");
        }
        self.push_agent_data().await;
    }

    /// Applies a `statusUpdate`.
    pub async fn status_update(&self, host: &str, connection: u64, update: StatusUpdate) {
        let now = self.now();
        let ts = update
            .update_timestamp
            .as_ref()
            .and_then(parse_update_timestamp);
        let status_text = update.status.clone().unwrap_or_default();
        let stage = if status_text.is_empty() {
            Ok(Stage::Idle)
        } else {
            status_text.parse::<Stage>()
        };
        let stage = match stage {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(agent = host, "ignoring status update: {e}");
                return;
            }
        };
        let detail = update.detail_text();
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        if let (Some(ts), Some(last)) = (ts, slot.last_update_ts)
            && ts < last
        {
            tracing::debug!(agent = host, status = %stage, "ignoring an out-of-order status update");
            return;
        }
        if ts.is_some() {
            slot.last_update_ts = ts;
        }
        slot.status = Some(stage.as_str().to_owned());
        slot.detail = detail.clone();
        if let Some(load) = update.rest.get("load").and_then(Value::as_f64) {
            slot.load = Some(load);
        }
        let running = slot.running.clone();
        let matches_running = running.as_ref().is_some_and(|r| update_matches(&update, r));
        let attempt_id = running
            .as_ref()
            .filter(|_| matches_running)
            .map(|r| r.attempt_id);
        let log_integration = update.integration_id_text();
        let mut to_finish = None;
        match (stage, running) {
            (Stage::Idle, Some(run)) if self.work_lost(&sched, host, &run) => {
                // The agent is idle while we hold an attempt for it: it lost
                // that work (it restarted, or never received it).
                to_finish = Some((
                    run,
                    AttemptOutcome::InfraError,
                    Some(
                        "agent reported idle while this attempt was running (agent restarted?)"
                            .to_owned(),
                    ),
                ));
            }
            (Stage::Done | Stage::Error, Some(run)) if matches_running => {
                let (outcome, reason) = if stage == Stage::Done {
                    (AttemptOutcome::Passed, None)
                } else {
                    (
                        AttemptOutcome::Failed,
                        Some(
                            detail
                                .clone()
                                .unwrap_or_else(|| "agent reported error".into()),
                        ),
                    )
                };
                to_finish = Some((run, outcome, reason));
            }
            (s, Some(run)) if matches_running && s.rank().is_some() => {
                // Progress changes no scheduling decision: it goes to the
                // batched progress writer, without holding up dispatch.
                drop(sched);
                self.store.progress().send(Progress::Stage {
                    attempt_id: run.attempt_id,
                    stage: s,
                    detail: detail.clone(),
                    update_ts: ts,
                    now,
                });
                self.log_work(host, attempt_id, log_integration, stage, detail, now);
                self.push_agent_data().await;
                return;
            }
            (s, None) if s != Stage::Idle && !s.is_final() => {
                tracing::debug!(agent = host, status = %s, "status update for work this coordinator does not know");
            }
            _ => {}
        }
        if let Some((run, _, _)) = &to_finish {
            Self::release_slot(&mut sched, run);
        }
        drop(sched);
        if let Some((run, outcome, reason)) = to_finish {
            self.record_finish(&run, outcome, reason.as_deref(), None, None)
                .await;
        }
        self.log_work(host, attempt_id, log_integration, stage, detail, now);
        self.push_agent_data().await;
    }

    fn log_work(
        &self,
        host: &str,
        attempt_id: Option<i64>,
        integration_id: Option<String>,
        stage: Stage,
        detail: Option<String>,
        now: UnixMillis,
    ) {
        self.store.progress().send(Progress::WorkLog {
            hostname: host.to_owned(),
            attempt_id,
            integration_id,
            status: stage.as_str().to_owned(),
            detail,
            now,
        });
    }

    /// Handles `fetchWork`: answers with work now, or leaves the fetch open.
    pub async fn fetch_work(&self, host: &str, connection: u64) {
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection {
            return;
        }
        if slot.claiming {
            // Work is being claimed for it; this fetch crossed our pick.
            return;
        }
        let mut lost = None;
        if let Some(run) = slot.running.clone() {
            if !self.work_lost(&sched, host, &run) {
                // A fetch sent before our sendWork arrived: the work is on its way.
                tracing::debug!(agent = host, "fetchWork crossed a sendWork; ignored");
                return;
            }
            // Agents fetch only when idle, so the running attempt is gone.
            Self::release_slot(&mut sched, &run);
            lost = Some(run);
        }
        if let Some(slot) = sched.agents.get_mut(host) {
            slot.waiting = true;
        }
        drop(sched);
        if let Some(run) = lost {
            self.record_finish(
                &run,
                AttemptOutcome::InfraError,
                Some("agent asked for new work while this attempt was running (agent restarted?)"),
                None,
                None,
            )
            .await;
        }
        self.dispatch().await;
    }

    /// Whether an agent that says it is idle (or asks for work) has really
    /// lost the attempt we hold for it. Work sent on an earlier connection is
    /// lost for sure (the agent restarted or never got it). On the same
    /// connection, an `idle` or `fetchWork` sent just before our `sendWork`
    /// arrived can still be in flight, so only an answer well after the
    /// dispatch counts.
    fn work_lost(&self, sched: &Scheduler, host: &str, run: &RunningAttempt) -> bool {
        let Some(slot) = sched.agents.get(host) else {
            return true;
        };
        if slot.dispatched_on != slot.connection {
            return true;
        }
        self.now() - run.started_at >= DISPATCH_GRACE_MS
    }

    /// Dev mode `queryWork`: the head of the agent's queue, not removed.
    pub async fn query_work(&self, host: &str) -> Option<WorkItem> {
        let head = self.sched.lock().await.head_for(host)?;
        match self.store.work_item_for_task(head, None).await {
            Ok(item) => Some(item),
            Err(e) => {
                tracing::error!(task = head, "failed to build work item: {e}");
                None
            }
        }
    }

    /// Dev mode `mockItem`: queues a mock work item for this agent when its
    /// queue is empty.
    pub async fn mock_item(&self, host: &str) -> Result<bool, SubmitError> {
        if self.sched.lock().await.head_for(host).is_some() {
            return Ok(false);
        }
        let now = self.now();
        let id = format!("{}", 100_000_000 + now.rem_euclid(900_000_000));
        let spec = JobSpec {
            name: format!("mock-{host}-{id}"),
            queue: "default".into(),
            priority: 0,
            source: None,
            integration: Some(IntegrationSpec {
                id,
                timestamp: Some(Timestamp(now)),
                branch: Some("dev".into()),
                sha: Some(format!("{:040x}", u128::try_from(now).unwrap_or(0))),
                url: None,
                data: Vec::new(),
            }),
            env: BTreeMap::new(),
            inputs: None,
            tasks: vec![TaskSpec {
                name: "mock".into(),
                requires: testfleet_core::Requirements(BTreeMap::from([(
                    "hostname".to_owned(),
                    testfleet_core::Requirement::Exact(host.to_owned()),
                )])),
                each_agent: false,
                priority: None,
                steps: vec![StepSpec {
                    stage: testfleet_core::state::StepStage::Test,
                    run: "echo mock work item".into(),
                    timeout: testfleet_core::job::DurationSpec(Duration::from_secs(60)),
                    env: BTreeMap::new(),
                }],
                results: Vec::new(),
                artifacts: Default::default(),
                retries: Default::default(),
                env: BTreeMap::new(),
                max_runtime: None,
                silence_timeout: None,
                inputs: None,
            }],
        };
        self.submit(spec).await?;
        Ok(true)
    }

    /// testfleet's final report of an attempt.
    pub async fn attempt_report(&self, host: &str, report: AttemptReport) -> Result<(), String> {
        let mut sched = self.sched.lock().await;
        let running = sched.agents.get(host).and_then(|s| s.running.clone());
        match running {
            Some(run) if run.attempt_id == report.attempt_id => {
                Self::release_slot(&mut sched, &run);
                drop(sched);
                self.record_finish(
                    &run,
                    report.outcome,
                    report.reason.as_deref(),
                    report.reason_data.as_ref(),
                    Some(&report.results),
                )
                .await;
                Ok(())
            }
            _ => {
                drop(sched);
                // Not this agent's current attempt: a late report of a
                // superseded attempt. Record it only if it is still open.
                let effect = self
                    .store
                    .finish_attempt(
                        report.attempt_id,
                        Some(host),
                        report.outcome,
                        report.reason.as_deref(),
                        report.reason_data.as_ref(),
                        Some(&report.results),
                        None,
                        self.now(),
                    )
                    .await
                    .map_err(|e| format!("failed to store the report: {e}"))?;
                self.apply_effect(effect).await;
                Ok(())
            }
        }
    }

    /// Stores a chunk of a running attempt's output.
    pub async fn log_chunk(&self, host: &str, chunk: LogChunk) {
        match self
            .store
            .append_log(chunk.attempt_id, host, chunk.offset, &chunk.data)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::debug!(
                agent = host,
                attempt = chunk.attempt_id,
                "log chunk dropped (duplicate or not this agent's)"
            ),
            Err(e) => tracing::error!(agent = host, "failed to store log chunk: {e}"),
        }
    }

    // ----- internals --------------------------------------------------------

    /// Writes an audit entry; a failure to write is logged, not fatal.
    pub async fn audit(
        &self,
        who: &crate::auth::Identity,
        action: &str,
        target: Option<&str>,
        detail: Option<&Value>,
    ) {
        let peer = match who {
            crate::auth::Identity::Network(ip) => Some(ip.to_string()),
            _ => None,
        };
        if let Err(e) = self
            .store
            .audit(
                &who.actor(),
                peer.as_deref(),
                action,
                target,
                detail,
                self.now(),
            )
            .await
        {
            tracing::error!("failed to write the audit log: {e}");
        }
    }

    /// Why a task is still pending (or where it is), in words.
    pub async fn why(&self, task_id: i64) -> Result<Vec<String>, StoreError> {
        let detail = self.store.task(task_id).await?;
        let task = detail.task;
        Ok(match task.state {
            testfleet_core::TaskState::Queued => self.sched.lock().await.why_pending(task_id),
            testfleet_core::TaskState::Running => vec![format!(
                "it is running on `{}` (stage {})",
                task.agent.unwrap_or_default(),
                task.stage.unwrap_or_default()
            )],
            state => vec![format!(
                "it is not pending: it {state}{}",
                task.outcome.map(|o| format!(" ({o})")).unwrap_or_default()
            )],
        })
    }
}

/// How long after sending work an `idle` or `fetchWork` from the same
/// connection may still be one that crossed our `sendWork`.
const DISPATCH_GRACE_MS: i64 = 5_000;

/// Adds the implicit `hostname` label.
fn with_hostname(mut labels: LabelSet, host: &str) -> LabelSet {
    labels.insert("hostname".to_owned(), host.to_owned());
    labels
}

/// Whether a status update is about this attempt: by testfleet's attempt id
/// when the agent sends it, else by `integrationId` (Qt agents), else assumed.
fn update_matches(update: &StatusUpdate, run: &RunningAttempt) -> bool {
    if let Some(id) = update.attempt_id {
        return id == run.attempt_id;
    }
    match update.integration_id_text() {
        Some(id) => id == run.integration_id,
        None => true,
    }
}

/// `updateTimestamp` as an ISO-8601 string or milliseconds since the epoch.
fn parse_update_timestamp(v: &Value) -> Option<UnixMillis> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => parse_rfc3339_millis(s).or_else(|| s.trim().parse::<i64>().ok()),
        _ => None,
    }
}

/// A duration as `10s` or `2m`, for reasons shown to users.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_timestamps_in_both_shapes() {
        assert_eq!(
            parse_update_timestamp(&json!(1_676_034_673_000i64)),
            Some(1_676_034_673_000)
        );
        assert_eq!(
            parse_update_timestamp(&json!("2023-02-10T13:11:13.000Z")),
            Some(1_676_034_673_000)
        );
        assert_eq!(parse_update_timestamp(&json!("garbage")), None);
    }
}
