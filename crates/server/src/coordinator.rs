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

mod leases;

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

    /// `agentData` for browsers.
    pub async fn agent_data(&self) -> Vec<AgentDataEntry> {
        let sched = self.sched.lock().await;
        sched
            .agents
            .iter()
            .map(|(host, slot)| AgentDataEntry {
                agent: host.clone(),
                current_job: slot.running.as_ref().map(|r| {
                    json!({
                        "integrationId": r.integration_id,
                        "jobId": r.job_id,
                        "taskId": r.task_id,
                        "attemptId": r.attempt_id,
                        "status": slot.status,
                        "detailMessage": slot.detail,
                    })
                }),
                online: slot.online(),
                last_connected: slot.last_connected.map(format_millis),
            })
            .collect()
    }

    /// Agents for the REST API: online state from memory, the rest from the store.
    pub async fn agents(&self) -> Result<Vec<testfleet_wire::api::AgentView>, StoreError> {
        let stored = self.store.agents().await?;
        let sched = self.sched.lock().await;
        Ok(stored
            .into_iter()
            .map(|agent| {
                let slot = sched.agents.get(&agent.hostname);
                testfleet_wire::api::AgentView {
                    online: slot.is_some_and(AgentSlot::online),
                    current_attempt: slot.and_then(|s| s.running.as_ref().map(|r| r.attempt_id)),
                    status: slot.and_then(|s| s.status.clone()),
                    hostname: agent.hostname,
                    retired: agent.retired,
                    labels: agent.labels,
                    last_connected: Some(format_millis(agent.last_connected)),
                    machine: agent.machine,
                }
            })
            .collect())
    }

    // ----- internals --------------------------------------------------------

    /// Hands queued work to every agent with an open fetch.
    ///
    /// The picks are made under the scheduler lock; their claims commit
    /// together (the store batches them) with the lock released, so events
    /// from other agents go on meanwhile. A picked agent is marked
    /// `claiming` and gets nothing else until its claim is answered.
    async fn dispatch(&self) {
        loop {
            let picks = {
                let mut sched = self.sched.lock().await;
                pick_work(&mut sched)
            };
            if picks.is_empty() {
                return;
            }
            let now = self.now();
            let claims = futures_util::future::join_all(
                picks
                    .iter()
                    .map(|(host, task)| self.store.claim(task.id, host, now)),
            )
            .await;
            let mut again = false;
            let mut cancelled = Vec::new();
            {
                let mut sched = self.sched.lock().await;
                for ((host, task), claim) in picks.into_iter().zip(claims) {
                    let cancelled_job = sched.cancelled_jobs.contains(&task.job_id);
                    let Some(slot) = sched.agents.get_mut(&host) else {
                        continue;
                    };
                    slot.claiming = false;
                    match claim {
                        Ok(Some(claimed)) if cancelled_job => {
                            // The job was cancelled while its claim committed.
                            slot.waiting = true;
                            again = true;
                            cancelled.push(claimed.attempt);
                        }
                        Ok(Some(claimed)) => {
                            slot.waiting = false;
                            slot.status = Some(Stage::New.as_str().to_owned());
                            if let Some(socket) = &slot.socket
                                && let Err(e) = socket.emit(events::SEND_WORK, &claimed.work)
                            {
                                // The lease reaps it if the agent does not come back.
                                tracing::warn!(agent = %host, "could not send work: {e}");
                            }
                            tracing::info!(agent = %host, task = task.id, attempt = claimed.attempt.attempt_id, "work sent");
                            slot.dispatched_on = slot.connection;
                            // Asking for its status right away would race the work.
                            slot.last_status_request = now;
                            slot.runtime_limit = runtime_limit(
                                &self.config,
                                &claimed.attempt,
                                claimed.max_runtime,
                                claimed.history.as_ref(),
                                slot.timeout_scale(),
                            );
                            slot.running = Some(claimed.attempt);
                            continue;
                        }
                        Ok(None) => {
                            // Cancelled meanwhile: the agent still wants work.
                            slot.waiting = true;
                            again = true;
                        }
                        Err(e) => {
                            tracing::error!(task = task.id, "failed to claim task: {e}");
                            slot.waiting = true;
                            sched.enqueue(task.clone());
                        }
                    }
                    sched.release(&task.queue);
                }
            }
            for run in cancelled {
                // A cancelled attempt ends its task; nothing is re-queued.
                if let Err(e) = self
                    .store
                    .finish_attempt(
                        run.attempt_id,
                        None,
                        AttemptOutcome::Cancelled,
                        Some("job cancelled before the work was sent"),
                        None,
                        None,
                        None,
                        now,
                    )
                    .await
                {
                    tracing::error!(
                        attempt = run.attempt_id,
                        "failed to end a cancelled claim: {e}"
                    );
                }
            }
            if !again {
                return;
            }
        }
    }

    /// Frees the agent's slot of a finishing attempt (call under the lock,
    /// then [`Coordinator::record_finish`] without it).
    fn release_slot(sched: &mut Scheduler, run: &RunningAttempt) {
        if let Some(slot) = sched.agents.get_mut(&run.agent)
            && slot
                .running
                .as_ref()
                .is_some_and(|r| r.attempt_id == run.attempt_id)
        {
            slot.running = None;
            slot.runtime_limit = None;
            sched.ended(run);
        }
    }

    /// Commits the end of an attempt whose slot is already released, then
    /// queues its retry or re-trigger and dispatches. Fenced in the store: a
    /// second end of the same attempt changes nothing.
    async fn record_finish(
        &self,
        run: &RunningAttempt,
        outcome: AttemptOutcome,
        reason: Option<&str>,
        reason_data: Option<&Value>,
        results: Option<&[testfleet_wire::results::Results]>,
    ) {
        let stage = match outcome {
            o if o.is_success() => Some(Stage::Done),
            _ => None,
        };
        let effect = match self
            .store
            .finish_attempt(
                run.attempt_id,
                None,
                outcome,
                reason,
                reason_data,
                results,
                stage,
                self.now(),
            )
            .await
        {
            Ok(effect) => effect,
            Err(e) => {
                tracing::error!(attempt = run.attempt_id, "failed to finish attempt: {e}");
                return;
            }
        };
        tracing::info!(agent = %run.agent, attempt = run.attempt_id, %outcome, "attempt finished");
        if let FinishEffect::TaskFinished {
            task_id,
            state: testfleet_core::TaskState::Failed,
            ..
        } = &effect
            && outcome != AttemptOutcome::Cancelled
            && let Some(task) = self
                .known_failure_retrigger(*task_id, run.attempt_id, reason)
                .await
        {
            self.sched.lock().await.enqueue(task);
            self.dispatch().await;
            return;
        }
        self.apply_effect(effect).await;
    }

    async fn apply_effect(&self, effect: FinishEffect) {
        match effect {
            FinishEffect::Requeued(task) => {
                tracing::info!(task = task.id, "task re-queued for another attempt");
                self.sched.lock().await.enqueue(task);
                self.dispatch().await;
            }
            FinishEffect::TaskFinished {
                task_id,
                job_id,
                state,
                job_state,
            } => {
                tracing::info!(task = task_id, job = job_id, %state, %job_state, "task finished");
            }
            FinishEffect::Stale => {}
        }
    }

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

    /// Re-queues a failed task whose reason or log matches a known-failure
    /// rule that still has re-triggers left.
    async fn known_failure_retrigger(
        &self,
        task_id: i64,
        attempt_id: i64,
        reason: Option<&str>,
    ) -> Option<testfleet_store::QueuedTask> {
        if self.config.known_failures.is_empty() {
            return None;
        }
        let log = self
            .store
            .attempt_log_tail(attempt_id, 64 * 1024)
            .await
            .unwrap_or_default();
        let text = format!("{}\n{log}", reason.unwrap_or_default());
        let rule = self
            .config
            .known_failures
            .iter()
            .find(|r| r.pattern.is_match(&text))?;
        match self
            .store
            .retrigger(task_id, rule.pattern.as_str(), rule.retrigger, self.now())
            .await
        {
            Ok(Some(task)) => {
                tracing::info!(task = task_id, rule = %rule.pattern, "known failure: task re-triggered");
                Some(task)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(task = task_id, "failed to re-trigger: {e}");
                None
            }
        }
    }

    /// Agents whose secret was revoked or rotated since the last check are
    /// disconnected; their reconnect is checked against the new secret.
    async fn disconnect_revoked_agents(&self) {
        let since = self.secrets_checked_at.load(Ordering::Relaxed);
        // Wall-clock time: the admin command stamps changes with it.
        let now = SystemClock.now_millis();
        let changed = match self.store.agent_secrets_changed_since(since).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("failed to check agent secrets: {e}");
                return;
            }
        };
        self.secrets_checked_at.store(now, Ordering::Relaxed);
        if changed.is_empty() {
            return;
        }
        self.agent_secrets_epoch.fetch_add(1, Ordering::Relaxed);
        let sched = self.sched.lock().await;
        for host in changed {
            if let Some(socket) = sched.agents.get(&host).and_then(|s| s.socket.clone()) {
                tracing::warn!(agent = %host, "agent secret revoked or rotated: disconnecting");
                let _ = socket.emit(
                    events::ERROR,
                    "your secret was revoked or rotated; reconnect with the new one",
                );
                let _ = socket.disconnect();
            }
        }
    }

    /// Runs the periodic work once now (tests with a manual clock call this).
    pub async fn tick(&self) {
        self.reap().await;
    }

    /// Periodic work: expire leases of lost agents, stop attempts past their
    /// runtime limit, ask running agents for status.
    async fn reap(&self) {
        self.disconnect_revoked_agents().await;
        let now = self.now();
        let lease = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut sched = self.sched.lock().await;
        let mut ended = Vec::new();
        let overdue: Vec<(RunningAttempt, RuntimeLimit, Option<f64>)> = sched
            .agents
            .values()
            .filter_map(|s| {
                let limit = s.runtime_limit.as_ref().filter(|l| now >= l.stop_at)?;
                Some((s.running.clone()?, limit.clone(), s.load))
            })
            .collect();
        for (run, limit, load) in overdue {
            let elapsed = now - run.started_at;
            let reason = format!(
                "stalled: running for {}s, beyond its limit of {}s ({})",
                elapsed / 1000,
                limit.limit_ms / 1000,
                if limit.basis["source"] == "max_runtime" {
                    "max_runtime"
                } else {
                    "derived from this task's history"
                }
            );
            let data = json!({"kind": "runtime_threshold", "elapsed_ms": elapsed, "limit_ms": limit.limit_ms,
                              "basis": limit.basis, "agent_load": load});
            if let Some(socket) = sched.agents.get(&run.agent).and_then(|s| s.socket.as_ref()) {
                let _ = socket.emit(
                    events::CANCEL_WORK,
                    &CancelWork {
                        attempt_id: run.attempt_id,
                        reason: reason.clone(),
                    },
                );
            }
            Self::release_slot(&mut sched, &run);
            ended.push((run, AttemptOutcome::Stalled, reason, data));
        }
        let expired: Vec<RunningAttempt> = sched
            .agents
            .values()
            .filter(|s| s.offline_since.is_some_and(|t| now - t >= lease))
            .filter_map(|s| s.running.clone())
            .collect();
        for run in expired {
            let reason = format!(
                "agent `{}` lost: disconnected for more than {}",
                run.agent,
                humanize(self.config.lease_timeout)
            );
            Self::release_slot(&mut sched, &run);
            ended.push((
                run,
                AttemptOutcome::InfraError,
                reason,
                json!({"kind": "lease_expired"}),
            ));
        }
        let normal =
            i64::try_from(self.config.request_status_interval.as_millis()).unwrap_or(i64::MAX);
        let in_test = i64::try_from(self.config.request_status_interval_in_test.as_millis())
            .unwrap_or(i64::MAX);
        for slot in sched.agents.values_mut() {
            let Some(socket) = &slot.socket else { continue };
            if slot.running.is_none() {
                continue;
            }
            let interval = if slot.status.as_deref() == Some("test") {
                in_test
            } else {
                normal
            };
            if now - slot.last_status_request >= interval {
                slot.last_status_request = now;
                let _ = socket.emit(events::REQUEST_STATUS, &());
            }
        }
        drop(sched);
        ended.extend(self.reap_leases(now).await);
        // Committed together: the store batches concurrent finishes.
        futures_util::future::join_all(ended.iter().map(|(run, outcome, reason, data)| {
            self.record_finish(run, *outcome, Some(reason), Some(data), None)
        }))
        .await;
    }

    async fn push_agent_data(&self) {
        if self.browsers.load(Ordering::Relaxed) == 0 {
            // Nobody is watching: don't build the list on every status update.
            return;
        }
        let data = self.agent_data().await;
        if let Err(e) = self
            .io
            .to(crate::sio::BROWSERS_ROOM)
            .emit(events::AGENT_DATA, &data)
            .await
        {
            tracing::debug!("could not push agentData: {e}");
        }
    }
}

/// How long after sending work an `idle` or `fetchWork` from the same
/// connection may still be one that crossed our `sendWork`.
const DISPATCH_GRACE_MS: i64 = 5_000;

/// The runtime limit of a new attempt: the task's own `max_runtime`
/// (admin-set, wins), else `runtime_factor` × the p95 of this task key's
/// history once it has `runtime_min_runs` runs; scaled by the agent's
/// `timeout_scale` label.
fn runtime_limit(
    config: &ServerConfig,
    run: &RunningAttempt,
    max_runtime: Option<Duration>,
    history: Option<&testfleet_store::TaskStats>,
    scale: f64,
) -> Option<RuntimeLimit> {
    let (limit_ms, basis) = match max_runtime {
        Some(d) => {
            let ms = d.as_millis() as f64 * scale;
            (
                ms,
                json!({"source": "max_runtime", "max_runtime_ms": d.as_millis() as u64, "timeout_scale": scale}),
            )
        }
        None => {
            let factor = config.runtime_factor?;
            let stats = history?;
            if stats.runs < config.runtime_min_runs {
                return None;
            }
            // Never below a floor: tiny tasks jitter far beyond k × p95.
            let ms = (stats.p95_ms * factor).max(config.runtime_floor.as_millis() as f64) * scale;
            (
                ms,
                json!({"source": "history", "task_key": run.task_key, "runs": stats.runs, "p95_ms": stats.p95_ms,
                       "mean_ms": stats.mean_ms, "factor": factor, "timeout_scale": scale}),
            )
        }
    };
    let limit_ms = limit_ms as i64;
    Some(RuntimeLimit {
        stop_at: run.started_at + limit_ms,
        limit_ms,
        basis,
    })
}

/// Picks, for every agent with an open fetch, the task it gets next, and
/// marks it `claiming` until the claim is answered.
fn pick_work(sched: &mut Scheduler) -> Vec<(String, testfleet_store::QueuedTask)> {
    let waiting: Vec<String> = sched
        .agents
        .iter()
        .filter(|(_, s)| s.online() && s.waiting && !s.claiming && s.running.is_none())
        .map(|(h, _)| h.clone())
        .collect();
    let mut picks = Vec::new();
    for host in waiting {
        let Some(task) = sched.head_for(&host).and_then(|id| sched.dequeue(id)) else {
            continue;
        };
        if let Some(slot) = sched.agents.get_mut(&host) {
            slot.waiting = false;
            slot.claiming = true;
        }
        sched.reserve(&task.queue);
        picks.push((host, task));
    }
    picks
}

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
