//! What the dashboard's fleet and queues pages show (`FleetView`,
//! `QueuesView`), built from the scheduler's live state, and the
//! `tf:update` pushes that tell watching browsers a job or task changed.

use super::*;
use testfleet_wire::fleet::{
    AgentActivity, CurrentAttempt, FleetAgent, FleetSummary, FleetView, LiveUpdate, PendingTask,
    QueueView, QueuesView, UpdateKind,
};

/// Waiting tasks per queue whose reasons the queues view spells out.
const PENDING_EXPLAINED: usize = 5;

impl Coordinator {
    /// Every agent the store knows, with what the scheduler knows of it now.
    pub async fn fleet_view(&self) -> Result<FleetView, StoreError> {
        let stored = self.store.agents().await?;
        let lease_ms = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let renewed = self.leases_renewed_at.load(Ordering::Relaxed);
        let peers = self.peer_agents();
        let sched = self.sched.lock().await;
        let mut summary = FleetSummary::default();
        let agents = stored
            .into_iter()
            .map(|agent| {
                let slot = sched.agents.get(&agent.hostname);
                let online = slot.is_some_and(AgentSlot::online);
                // Connected to another coordinator: as that one published it.
                if !online && let Some(peer) = peers.get(&agent.hostname) {
                    let busy = peer.running.is_some();
                    summary.total += 1;
                    if busy {
                        summary.busy += 1;
                    } else {
                        summary.idle += 1;
                    }
                    return FleetAgent {
                        activity: if busy {
                            AgentActivity::Busy
                        } else {
                            AgentActivity::Idle
                        },
                        labels: agent.labels,
                        status: peer.status.clone(),
                        current: peer.running.as_ref().map(|r| CurrentAttempt {
                            job_id: r.job_id,
                            task_id: r.task_id,
                            attempt_id: r.attempt_id,
                            detail: peer.detail.clone(),
                        }),
                        lease_expires_at: None,
                        last_seen: peer.last_connected.map(format_millis),
                        load: peer.load,
                        hostname: agent.hostname,
                    };
                }
                let running = slot.and_then(|s| s.running.as_ref());
                let activity = match (agent.retired, online, running) {
                    (true, false, _) => AgentActivity::Retired,
                    (_, false, _) => AgentActivity::Offline,
                    (_, true, Some(_)) => AgentActivity::Busy,
                    (_, true, None) => AgentActivity::Idle,
                };
                summary.total += 1;
                match activity {
                    AgentActivity::Busy => summary.busy += 1,
                    AgentActivity::Idle => summary.idle += 1,
                    AgentActivity::Offline | AgentActivity::Retired => summary.offline += 1,
                }
                let last_seen = slot
                    .and_then(|s| s.last_update_ts.max(s.last_connected))
                    .unwrap_or(agent.last_connected);
                FleetAgent {
                    activity,
                    labels: agent.labels,
                    status: slot.and_then(|s| s.status.clone()),
                    current: running.map(|r| CurrentAttempt {
                        job_id: r.job_id,
                        task_id: r.task_id,
                        attempt_id: r.attempt_id,
                        detail: slot.and_then(|s| s.detail.clone()),
                    }),
                    // Renewed together for every connected agent's attempt.
                    lease_expires_at: running
                        .filter(|_| online && renewed > 0)
                        .map(|_| format_millis(renewed.saturating_add(lease_ms))),
                    last_seen: Some(format_millis(last_seen)),
                    load: slot.and_then(|s| s.load),
                    hostname: agent.hostname,
                }
            })
            .collect();
        summary.alive = summary.busy + summary.idle;
        Ok(FleetView { summary, agents })
    }

    /// The fair-share queues in the order they are served, each with its
    /// first waiting tasks and why they wait.
    pub async fn queues_view(&self) -> QueuesView {
        let sched = self.sched.lock().await;
        let mut queues: Vec<QueueView> = sched
            .queues
            .iter()
            .map(|(name, q)| {
                let weight = sched.weights.get(name).copied().filter(|w| *w > 0.0);
                let weight = weight.unwrap_or(1.0);
                let oldest = q.tasks.values().map(|t| t.queued_at).min();
                QueueView {
                    name: name.clone(),
                    weight,
                    share: f64::from(q.running) / weight,
                    depth: q.tasks.len() as u64,
                    running: u64::from(q.running),
                    oldest_queued_at: oldest.map(format_millis),
                    pending: q
                        .tasks
                        .values()
                        .take(PENDING_EXPLAINED)
                        .map(|t| PendingTask {
                            task_id: t.id,
                            job_id: t.job_id,
                            queued_at: format_millis(t.queued_at),
                            why: sched.why_pending(t.id),
                        })
                        .collect(),
                }
            })
            .collect();
        // Served first: the queue furthest below its share.
        queues.sort_by(|a, b| {
            a.share
                .total_cmp(&b.share)
                .then_with(|| a.name.cmp(&b.name))
        });
        QueuesView { queues }
    }

    /// Tells watching browsers that a job or task changed, here and (in a
    /// `Live` notice every quarter second) on the other coordinators.
    pub(super) async fn push_live(
        &self,
        kind: UpdateKind,
        job_id: Option<i64>,
        task_id: Option<i64>,
    ) {
        self.share_live(job_id);
        self.push_browsers(kind, job_id, task_id).await;
    }

    /// Tells this coordinator's watching browsers that a job or task changed
    /// (nothing when no browser is connected).
    pub(super) async fn push_browsers(
        &self,
        kind: UpdateKind,
        job_id: Option<i64>,
        task_id: Option<i64>,
    ) {
        if self.browsers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let update = LiveUpdate {
            kind,
            job_id,
            task_id,
        };
        if let Err(e) = self
            .io
            .to(crate::sio::BROWSERS_ROOM)
            .emit(events::LIVE_UPDATE, &update)
            .await
        {
            tracing::debug!("could not push a live update: {e}");
        }
    }

    /// [`Coordinator::push_live`] for new log output of the attempt `host` runs.
    pub(super) async fn push_log_update(&self, host: &str, attempt_id: i64) {
        if self.browsers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let ids = {
            let sched = self.sched.lock().await;
            sched
                .agents
                .get(host)
                .and_then(|s| s.running.as_ref())
                .filter(|r| r.attempt_id == attempt_id)
                .map(|r| (r.job_id, r.task_id))
        };
        if let Some((job, task)) = ids {
            self.push_live(UpdateKind::Log, Some(job), Some(task)).await;
        }
    }
}
