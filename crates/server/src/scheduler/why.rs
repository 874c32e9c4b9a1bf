//! Why a queued task is still waiting, in words (`testfleet why`, the
//! task page).

use super::{AgentSlot, QueueKey, Scheduler};

impl Scheduler {
    /// Why a queued task is still waiting, in words.
    pub fn why_pending(&self, task_id: i64) -> Vec<String> {
        let Some(task) = self.get(task_id) else {
            return vec![
                "the task is not in the queue index (it may have just started or ended)".into(),
            ];
        };
        let mut reasons = Vec::new();
        let candidates: Vec<(&String, &AgentSlot)> = match &task.pinned_agent {
            Some(pinned) => {
                reasons.push(format!(
                    "it is pinned to agent `{pinned}` (each_agent fan-out)"
                ));
                self.agents.iter().filter(|(h, _)| *h == pinned).collect()
            }
            None => self
                .agents
                .iter()
                .filter(|(_, s)| task.requires.matches(&s.labels))
                .collect(),
        };
        if candidates.is_empty() {
            if task.pinned_agent.is_some() {
                reasons.push("that agent is unknown to this coordinator".into());
            } else if self.agents.is_empty() {
                reasons.push("no agent has ever connected".into());
            } else {
                let reqs: Vec<String> = task
                    .requires
                    .0
                    .iter()
                    .map(|(k, r)| format!("{k} = {r}"))
                    .collect();
                reasons.push(format!(
                    "no agent matches its requirements ({})",
                    reqs.join(", ")
                ));
                for (host, slot) in self.agents.iter().take(5) {
                    if let Some((key, req)) = task.requires.first_mismatch(&slot.labels) {
                        let has = slot
                            .labels
                            .get(key)
                            .map_or("nothing".to_owned(), |v| format!("`{v}`"));
                        reasons.push(format!(
                            "  agent `{host}`: `{key}` must be {req}, it has {has}"
                        ));
                    }
                }
            }
            return reasons;
        }
        let online: Vec<_> = candidates.iter().filter(|(_, s)| s.online()).collect();
        if online.is_empty() {
            reasons.push(format!(
                "all {} matching agent(s) are offline",
                candidates.len()
            ));
            return reasons;
        }
        let idle: Vec<_> = online.iter().filter(|(_, s)| s.running.is_none()).collect();
        if idle.is_empty() {
            reasons.push(format!(
                "all {} matching online agent(s) are busy",
                online.len()
            ));
        } else {
            let waiting = idle.iter().filter(|(_, s)| s.waiting()).count();
            if waiting == 0 {
                reasons.push(format!(
                    "{} matching agent(s) are idle but have not asked for work yet",
                    idle.len()
                ));
            }
        }
        if let Some(last) = &task.last_agent {
            reasons.push(format!(
                "it is a retry; it avoids `{last}`, where it failed, while another agent fits"
            ));
        }
        // What is ahead of it.
        let order = self.queues_by_share();
        let position = order
            .iter()
            .position(|(name, _)| **name == task.queue)
            .unwrap_or(0);
        if position > 0 {
            let ahead: Vec<String> = order[..position]
                .iter()
                .map(|(n, q)| format!("`{n}` ({} running)", q.running))
                .collect();
            reasons.push(format!(
                "fair share: queue `{}` ({} running, weight {}) is served after {}",
                task.queue,
                self.queues.get(&task.queue).map_or(0, |q| q.running),
                self.weight(&task.queue),
                ahead.join(", ")
            ));
        }
        if let Some(q) = self.queues.get(&task.queue) {
            let key = QueueKey::of(task);
            let before = q.tasks.range(..key).count();
            if before > 0 {
                reasons.push(format!(
                    "{before} task(s) are ahead of it in queue `{}` (priority, then longest first)",
                    task.queue
                ));
            }
        }
        reasons
    }
}
