//! The queue index and the dispatch policy (SPEC §5): label matching,
//! priority, longest-first by runtime history, retries to a different agent
//! when one fits, and weighted fair share across queues.
//!
//! Plain data, no IO: the coordinator holds it under its lock and commits
//! every decision to the store before acting on it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use socketioxide::extract::SocketRef;
use testfleet_core::LabelSet;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{QueuedTask, RunningAttempt};

/// Order inside a queue: higher priority first, then the longest expected
/// runtime (unknown counts as longest: a new task may be long), then older.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueKey {
    priority: Reverse<i32>,
    expected_ms: Reverse<i64>,
    queued_at: UnixMillis,
    task_id: i64,
}

impl QueueKey {
    fn of(task: &QueuedTask) -> QueueKey {
        QueueKey {
            priority: Reverse(task.priority),
            expected_ms: Reverse(task.expected_ms.map_or(i64::MAX, |ms| ms as i64)),
            queued_at: task.queued_at,
            task_id: task.id,
        }
    }
}

/// One fair-share queue.
#[derive(Debug, Default)]
pub struct QueueState {
    pub tasks: BTreeMap<QueueKey, QueuedTask>,
    /// Attempts of this queue running now.
    pub running: u32,
}

/// A limit on an attempt's runtime, derived from history or set by the admin.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeLimit {
    pub stop_at: UnixMillis,
    pub limit_ms: i64,
    /// How the limit came about, for the stopped attempt's reason.
    pub basis: serde_json::Value,
}

/// One agent as the coordinator tracks it.
#[derive(Debug)]
pub struct AgentSlot {
    pub labels: LabelSet,
    pub socket: Option<SocketRef>,
    /// Connected now (set together with `socket`).
    pub connected: bool,
    /// Identifies the current connection; events from a replaced one are dropped.
    pub connection: u64,
    /// An unanswered `fetchWork` is open (the long poll).
    pub waiting: bool,
    /// A task is being claimed for this agent (the store has not answered
    /// yet): it gets nothing else meanwhile.
    pub claiming: bool,
    pub running: Option<RunningAttempt>,
    /// The connection the running attempt was sent on (0: before a restart).
    pub dispatched_on: u64,
    pub runtime_limit: Option<RuntimeLimit>,
    pub status: Option<String>,
    pub detail: Option<String>,
    /// The machine's 1-minute load average, as the agent last reported it.
    pub load: Option<f64>,
    pub last_update_ts: Option<UnixMillis>,
    pub last_connected: Option<UnixMillis>,
    pub offline_since: Option<UnixMillis>,
    pub last_status_request: UnixMillis,
}

impl AgentSlot {
    pub fn new(labels: LabelSet) -> AgentSlot {
        AgentSlot {
            labels,
            socket: None,
            connected: false,
            connection: 0,
            waiting: false,
            claiming: false,
            running: None,
            dispatched_on: 0,
            runtime_limit: None,
            status: None,
            detail: None,
            load: None,
            last_update_ts: None,
            last_connected: None,
            offline_since: None,
            last_status_request: 0,
        }
    }

    pub fn online(&self) -> bool {
        self.connected
    }

    /// The openQA-style scale of this agent's time limits (label `timeout_scale`).
    pub fn timeout_scale(&self) -> f64 {
        self.labels
            .get("timeout_scale")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(1.0)
    }
}

/// The queues and the agents.
#[derive(Debug, Default)]
pub struct Scheduler {
    pub queues: BTreeMap<String, QueueState>,
    keys: HashMap<i64, (String, QueueKey)>,
    pub agents: BTreeMap<String, AgentSlot>,
    /// Fair-share weights by queue name; unlisted queues weigh 1.
    pub weights: BTreeMap<String, f64>,
    /// Jobs cancelled since start-up: a claim that commits after its job's
    /// cancel is ended at once instead of being sent.
    pub cancelled_jobs: std::collections::HashSet<i64>,
}

impl Scheduler {
    pub fn new(weights: BTreeMap<String, f64>) -> Scheduler {
        Scheduler {
            weights,
            ..Scheduler::default()
        }
    }

    pub fn queued(&self) -> usize {
        self.keys.len()
    }

    pub fn enqueue(&mut self, task: QueuedTask) {
        let key = QueueKey::of(&task);
        if let Some(old) = self.keys.insert(task.id, (task.queue.clone(), key)) {
            // Re-queued while still indexed: keep one entry.
            if let Some(q) = self.queues.get_mut(&old.0) {
                q.tasks.remove(&old.1);
            }
        }
        self.queues
            .entry(task.queue.clone())
            .or_default()
            .tasks
            .insert(key, task);
    }

    pub fn dequeue(&mut self, task_id: i64) -> Option<QueuedTask> {
        let (queue, key) = self.keys.remove(&task_id)?;
        self.queues.get_mut(&queue)?.tasks.remove(&key)
    }

    pub fn get(&self, task_id: i64) -> Option<&QueuedTask> {
        let (queue, key) = self.keys.get(&task_id)?;
        self.queues.get(queue)?.tasks.get(key)
    }

    /// Every queued task of a job.
    pub fn job_tasks(&self, job_id: i64) -> Vec<i64> {
        self.queues
            .values()
            .flat_map(|q| q.tasks.values())
            .filter(|t| t.job_id == job_id)
            .map(|t| t.id)
            .collect()
    }

    pub fn started(&mut self, attempt: &RunningAttempt) {
        self.reserve(&attempt.queue);
    }

    pub fn ended(&mut self, attempt: &RunningAttempt) {
        self.release(&attempt.queue);
    }

    /// Counts a task of `queue` as running (from the moment it is picked, so
    /// the fair share holds while its claim commits).
    pub fn reserve(&mut self, queue: &str) {
        self.queues.entry(queue.to_owned()).or_default().running += 1;
    }

    pub fn release(&mut self, queue: &str) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.running = q.running.saturating_sub(1);
        }
    }

    fn weight(&self, queue: &str) -> f64 {
        self.weights
            .get(queue)
            .copied()
            .filter(|w| *w > 0.0)
            .unwrap_or(1.0)
    }

    /// Queues in the order they are served: the one using least of its share first.
    fn queues_by_share(&self) -> Vec<(&String, &QueueState)> {
        let mut order: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.tasks.is_empty())
            .collect();
        order.sort_by(|(a, qa), (b, qb)| {
            let share_a = f64::from(qa.running) / self.weight(a);
            let share_b = f64::from(qb.running) / self.weight(b);
            share_a.total_cmp(&share_b).then_with(|| a.cmp(b))
        });
        order
    }

    /// Whether `host` may take `task` now.
    fn eligible(&self, task: &QueuedTask, host: &str, labels: &LabelSet) -> bool {
        match &task.pinned_agent {
            Some(pinned) => pinned == host,
            None => {
                if !task.requires.matches(labels) {
                    return false;
                }
                // A retry goes to a different agent when another one fits.
                if task.last_agent.as_deref() == Some(host) {
                    let other_fits = self
                        .agents
                        .iter()
                        .any(|(h, s)| h != host && s.online() && task.requires.matches(&s.labels));
                    return !other_fits;
                }
                true
            }
        }
    }

    /// The task this agent gets next: from the queue furthest below its
    /// share, the first task it may take.
    pub fn head_for(&self, host: &str) -> Option<i64> {
        let labels = &self.agents.get(host)?.labels;
        for (_, queue) in self.queues_by_share() {
            if let Some(t) = queue
                .tasks
                .values()
                .find(|t| self.eligible(t, host, labels))
            {
                return Some(t.id);
            }
        }
        None
    }

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
            let waiting = idle.iter().filter(|(_, s)| s.waiting).count();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        id: i64,
        queue: &str,
        priority: i32,
        expected: Option<f64>,
        queued_at: i64,
    ) -> QueuedTask {
        QueuedTask {
            id,
            job_id: 1,
            queue: queue.into(),
            priority,
            pinned_agent: None,
            requires: Default::default(),
            last_agent: None,
            queued_at,
            task_key: format!("k{id}"),
            expected_ms: expected,
        }
    }

    fn sched_with(hosts: &[&str]) -> Scheduler {
        let mut s = Scheduler::default();
        for h in hosts {
            s.agents.insert(
                (*h).into(),
                AgentSlot::new(LabelSet::from([("hostname".to_owned(), (*h).to_owned())])),
            );
        }
        s
    }

    fn running(queue: &str) -> RunningAttempt {
        RunningAttempt {
            attempt_id: 1,
            task_id: 1,
            job_id: 1,
            agent: "x".into(),
            integration_id: "i".into(),
            last_update_ts: None,
            queue: queue.into(),
            task_key: "k".into(),
            started_at: 0,
        }
    }

    #[test]
    fn priority_then_longest_first_then_age() {
        let mut s = sched_with(&["a"]);
        s.enqueue(task(1, "q", 0, Some(100.0), 1));
        s.enqueue(task(2, "q", 0, Some(5_000.0), 2));
        s.enqueue(task(3, "q", 0, None, 3));
        s.enqueue(task(4, "q", 1, Some(1.0), 4));
        let mut order = Vec::new();
        while let Some(id) = s.head_for("a") {
            order.push(id);
            s.dequeue(id);
        }
        assert_eq!(order, vec![4, 3, 2, 1]);
    }

    #[test]
    fn fair_share_serves_the_queue_below_its_share() {
        let mut s = sched_with(&["a"]);
        for i in 0..1000 {
            s.enqueue(task(i, "flood", 0, None, i));
        }
        s.enqueue(task(5000, "small", 0, None, 5000));
        // The flood already runs 3 attempts; the small queue none.
        for _ in 0..3 {
            s.started(&running("flood"));
        }
        assert_eq!(s.head_for("a"), Some(5000));
        // Weights shift the share: flood weighs 10, so 3 running is below small's 1/1.
        s.weights.insert("flood".into(), 10.0);
        s.started(&running("small"));
        assert_eq!(s.head_for("a"), Some(0));
    }

    #[test]
    fn retry_prefers_another_agent_when_one_fits() {
        let mut s = sched_with(&["a", "b"]);
        let mut t = task(1, "q", 0, None, 0);
        t.last_agent = Some("a".into());
        s.enqueue(t);
        // b is offline: a may take its own retry.
        assert_eq!(s.head_for("a"), Some(1));
        // With b online, a skips it and b gets it.
        for slot in s.agents.values_mut() {
            slot.connected = true;
        }
        assert_eq!(s.head_for("a"), None);
        assert_eq!(s.head_for("b"), Some(1));
        assert!(s.why_pending(1).iter().any(|r| r.contains("avoids `a`")));
    }

    #[test]
    fn pinned_work_goes_only_to_its_agent() {
        let mut s = sched_with(&["a", "b"]);
        let mut t = task(7, "q", 0, None, 0);
        t.pinned_agent = Some("b".into());
        s.enqueue(t);
        assert_eq!(s.head_for("a"), None);
        assert_eq!(s.head_for("b"), Some(7));
    }

    #[test]
    fn why_names_the_mismatching_label() {
        let mut s = sched_with(&["a"]);
        let mut t = task(9, "q", 0, None, 0);
        t.requires = toml::from_str("pool = \"benchmark\"").unwrap();
        s.enqueue(t);
        let why = s.why_pending(9).join("\n");
        assert!(
            why.contains("no agent matches its requirements (pool = benchmark)"),
            "{why}"
        );
        assert!(
            why.contains("agent `a`: `pool` must be benchmark, it has nothing"),
            "{why}"
        );
    }
}
