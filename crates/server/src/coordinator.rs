//! The coordinator's live state: connected agents, the queue index and the
//! dispatch rule, over the durable store. Its work is split by concern:
//! `jobs` (submit, cancel, why), `agents` (agent events), `dispatch`,
//! `finish` (an attempt's end and re-triggers), `reaper` (periodic work),
//! `leases`, `fleet` (what browsers and the agents' list see), `devmode`,
//! `sockets` (the agents' socket.io handles) and `records` (the writes HTTP
//! handlers ask for: artifact records, ResultsDB creates).
//!
//! The store is private to this module: handlers read through
//! [`Coordinator::views`] and write through named methods.
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

mod agents;
mod cluster;
mod devmode;
mod dispatch;
mod finish;
mod fleet;
mod gauges;
mod jobs;
mod leases;
mod live;
mod reaper;
mod records;
mod retry;
mod sockets;
mod trigger_events;

pub use cluster::ClusterConfig;
pub use gauges::{AgentGauge, Gauges, QueueGauge, labels_text};
pub use jobs::SubmitError;

use crate::auth::AuthState;
use crate::config::ServerConfig;
use crate::scheduler::{AgentSlot, RuntimeLimit, Scheduler};
use crate::views::Views;
use sockets::Sockets;

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

/// Why an agent's attempt report was not recorded; the agent is told.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("failed to store the report: {0}")]
    Store(StoreError),
}

/// The coordinator's shared state.
pub struct Coordinator {
    /// The truth. Private to the coordinator and its submodules: handlers
    /// read through `views` and write through the coordinator's methods.
    store: Store,
    /// The handlers' read-only handle on `store`.
    views: Views,
    pub config: Arc<ServerConfig>,
    io: SocketIo,
    clock: Arc<dyn Clock>,
    sched: Mutex<Scheduler>,
    /// The connected agents' sockets, by host (the scheduler holds plain data).
    sockets: Sockets,
    connections: AtomicU64,
    /// Failed authentications, Digest nonce counts, agent secrets' epoch.
    pub auth: AuthState,
    /// Connected browser clients (`agentData` is pushed only when some are).
    pub browsers: AtomicU64,
    /// When this coordinator last renewed its agents' leases in the store.
    leases_renewed_at: std::sync::atomic::AtomicI64,
    /// Background tasks (the reaper, the cluster's listener and catch-up),
    /// stopped at shutdown.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The other coordinators sharing the database (`None`: alone).
    cluster: Option<cluster::Cluster>,
    /// Wakes the background dispatcher (new work arrived).
    dispatch_wake: Arc<tokio::sync::Notify>,
    /// Wakes the `agentData` pusher (an agent changed, browsers watch).
    agent_data_wake: Arc<tokio::sync::Notify>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: crate::metrics::Recorder,
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
        let config_cluster = config.cluster.clone();
        let backend = store.backend();
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
            slot.resumed_offline(now);
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
            views: Views::new(store.clone()),
            store,
            config,
            io,
            clock,
            sched: Mutex::new(sched),
            sockets: Sockets::default(),
            connections: AtomicU64::new(0),
            // Wall-clock time: the admin command stamps secret changes with it.
            auth: AuthState::new(SystemClock.now_millis()),
            browsers: AtomicU64::new(0),
            leases_renewed_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            tasks: std::sync::Mutex::new(Vec::new()),
            cluster: cluster::Cluster::new(&config_cluster, backend, now),
            dispatch_wake: Arc::new(tokio::sync::Notify::new()),
            agent_data_wake: Arc::new(tokio::sync::Notify::new()),
            metrics: crate::metrics::Recorder::default(),
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
        coordinator.start_agent_data_pusher();
        let weak = Arc::downgrade(&coordinator);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                c.reap().await;
            }
        });
        if let Ok(mut tasks) = coordinator.tasks.lock() {
            tasks.push(handle);
        }
        coordinator.start_cluster();
        Ok(coordinator)
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now_millis()
    }

    /// The handlers' read-only handle on the store.
    /// Whether the store is closed (the coordinator is shutting down):
    /// background loops end.
    pub fn is_closing(&self) -> bool {
        self.store.is_closed()
    }

    pub fn views(&self) -> &Views {
        &self.views
    }

    /// Stops background work and closes the store.
    pub async fn shutdown(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            task.abort();
        }
        self.leave_cluster().await;
        self.store.close().await;
    }

    /// testfleet's final report of an attempt.
    pub async fn attempt_report(
        &self,
        host: &str,
        report: AttemptReport,
    ) -> Result<(), ReportError> {
        // The machine as prepared for this attempt, before the finish (the
        // series read it once the attempt has ended).
        if let Some(machine) = &report.machine
            && let Err(e) = self
                .store
                .set_attempt_machine(report.attempt_id, host, machine)
                .await
        {
            tracing::warn!(
                attempt = report.attempt_id,
                "failed to record the attempt's machine: {e}"
            );
        }
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
                    .map_err(ReportError::Store)?;
                self.apply_effect(effect).await;
                Ok(())
            }
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
}

/// How long after sending work an `idle` or `fetchWork` from the same
/// connection may still be one that crossed our `sendWork`.
const DISPATCH_GRACE_MS: i64 = 5_000;

/// Adds the implicit `hostname` label.
fn with_hostname(mut labels: LabelSet, host: &str) -> LabelSet {
    labels.insert("hostname".to_owned(), host.to_owned());
    labels
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
