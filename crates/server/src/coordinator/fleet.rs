//! The fleet as browsers and the REST API see it: `agentData`, pushed to
//! watching browsers, and the agents' list.

use super::*;

impl Coordinator {
    /// `agentData` for browsers.
    pub async fn agent_data(&self) -> Vec<AgentDataEntry> {
        let mut peers = self.peer_agents();
        let sched = self.sched.lock().await;
        let mut data: Vec<AgentDataEntry> = sched
            .agents
            .iter()
            .filter(|(host, slot)| slot.online() || !peers.contains_key(*host))
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
            .collect();
        // Agents connected to another coordinator, as it published them.
        peers.retain(|host, _| !sched.agents.get(host).is_some_and(AgentSlot::online));
        data.extend(peers.into_values().map(|p| AgentDataEntry {
            current_job: p.running.map(|r| {
                json!({
                    "integrationId": r.integration_id,
                    "jobId": r.job_id,
                    "taskId": r.task_id,
                    "attemptId": r.attempt_id,
                    "status": p.status,
                    "detailMessage": p.detail,
                })
            }),
            online: true,
            last_connected: p.last_connected.map(format_millis),
            agent: p.hostname,
        }));
        data.sort_by(|a, b| a.agent.cmp(&b.agent));
        data
    }

    /// The agents connected to other coordinators, by host (none alone).
    pub(super) fn peer_agents(&self) -> BTreeMap<String, testfleet_store::AgentPresence> {
        self.cluster
            .as_ref()
            .map(|c| {
                c.peer_agents()
                    .into_iter()
                    .map(|(_, a)| (a.hostname.clone(), a))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Agents for the REST API: online state from memory, the rest from the store.
    pub async fn agents(&self) -> Result<Vec<testfleet_wire::api::AgentView>, StoreError> {
        let stored = self.store.agents().await?;
        let peers = self.peer_agents();
        let sched = self.sched.lock().await;
        Ok(stored
            .into_iter()
            .map(|agent| {
                let slot = sched.agents.get(&agent.hostname);
                let online_here = slot.is_some_and(AgentSlot::online);
                // Online on another coordinator: as that one published it.
                let peer = (!online_here).then(|| peers.get(&agent.hostname)).flatten();
                testfleet_wire::api::AgentView {
                    online: online_here || peer.is_some(),
                    current_attempt: match peer {
                        Some(p) => p.running.as_ref().map(|r| r.attempt_id),
                        None => slot.and_then(|s| s.running.as_ref().map(|r| r.attempt_id)),
                    },
                    status: match peer {
                        Some(p) => p.status.clone(),
                        None => slot.and_then(|s| s.status.clone()),
                    },
                    hostname: agent.hostname,
                    retired: agent.retired,
                    labels: agent.labels,
                    last_connected: Some(format_millis(agent.last_connected)),
                    machine: agent.machine,
                }
            })
            .collect())
    }

    /// Tells watching browsers that an agent changed. The list goes out at
    /// once, then at most once per [`AGENT_DATA_PACE`] with the latest
    /// state: each push lists the whole fleet, and with thousands of agents
    /// a push per status update cost more than the updates themselves.
    pub(super) async fn push_agent_data(&self) {
        if self.browsers.load(Ordering::Relaxed) == 0 {
            // Nobody is watching: don't build the list on every status update.
            return;
        }
        self.agent_data_wake.notify_one();
    }

    /// Starts the task that sends `agentData` when woken, paced.
    pub(super) fn start_agent_data_pusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = self.agent_data_wake.clone();
        let handle = tokio::spawn(async move {
            loop {
                // Changes made meanwhile leave one wake-up: one push for all.
                wake.notified().await;
                let Some(c) = weak.upgrade() else { break };
                let data = c.agent_data().await;
                if let Err(e) =
                    c.io.to(crate::sio::BROWSERS_ROOM)
                        .emit(events::AGENT_DATA, &data)
                        .await
                {
                    tracing::debug!("could not push agentData: {e}");
                }
                drop(c);
                tokio::time::sleep(AGENT_DATA_PACE).await;
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }
}

/// The shortest time between two `agentData` pushes.
const AGENT_DATA_PACE: Duration = Duration::from_millis(200);
