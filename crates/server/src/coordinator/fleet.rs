//! The fleet as browsers and the REST API see it: `agentData`, pushed to
//! watching browsers, and the agents' list.

use super::*;

impl Coordinator {
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

    pub(super) async fn push_agent_data(&self) {
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
