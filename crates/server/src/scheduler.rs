//! The queue index and the dispatch policy (SPEC §5): label matching,
//! priority, longest-first by runtime history, retries to a different agent
//! when one fits, and weighted fair share across queues.
//!
//! Plain data, no IO: the coordinator holds it under its lock and commits
//! every decision to the store before acting on it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use testfleet_core::LabelSet;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{QueuedTask, RunningAttempt};

mod head;
mod waiting;
mod why;
pub use waiting::WaitingIndex;

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
    pub basis: testfleet_wire::reason::RuntimeBasis,
}

/// Where an agent is in its conversation with the coordinator. Its running
/// attempt, if any, is kept beside it in [`AgentSlot::running`]: an agent
/// keeps its attempt while it is offline, until its lease runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Not connected to this coordinator; `since` is when it went away
    /// (`None`: not seen since start-up). `claiming`: a claim made for it
    /// before it went away has not been answered yet.
    Offline {
        since: Option<UnixMillis>,
        claiming: bool,
    },
    /// Connected, with no open `fetchWork`.
    Idle,
    /// Connected, with an unanswered `fetchWork` open (the long poll).
    Waiting,
    /// Connected; a task is being claimed for it (the store has not answered
    /// yet): it gets nothing else meanwhile.
    Claiming,
}

impl AgentState {
    /// Not connected, no claim pending, never seen since start-up.
    pub const UNSEEN: AgentState = AgentState::Offline {
        since: None,
        claiming: false,
    };

    pub fn online(self) -> bool {
        !matches!(self, AgentState::Offline { .. })
    }

    /// A claim for this agent is in flight, connected or not.
    pub fn claiming(self) -> bool {
        matches!(
            self,
            AgentState::Claiming | AgentState::Offline { claiming: true, .. }
        )
    }
}

/// One agent as the coordinator tracks it.
#[derive(Debug)]
pub struct AgentSlot {
    pub labels: LabelSet,
    /// Connected or not, waiting for work, being claimed for. Changed
    /// through the transition methods below.
    state: AgentState,
    /// Identifies the current connection; events from a replaced one are dropped.
    pub connection: u64,
    pub running: Option<RunningAttempt>,
    /// The attempt this coordinator last ended for it: a status naming it
    /// is a late one, not work brought from another coordinator.
    pub ended_attempt: Option<i64>,
    /// The connection the running attempt was sent on (0: before a restart).
    pub dispatched_on: u64,
    pub runtime_limit: Option<RuntimeLimit>,
    pub status: Option<String>,
    pub detail: Option<String>,
    /// The machine's 1-minute load average, as the agent last reported it.
    pub load: Option<f64>,
    pub last_update_ts: Option<UnixMillis>,
    pub last_connected: Option<UnixMillis>,
    pub last_status_request: UnixMillis,
}

impl AgentSlot {
    pub fn new(labels: LabelSet) -> AgentSlot {
        AgentSlot {
            labels,
            state: AgentState::UNSEEN,
            connection: 0,
            running: None,
            ended_attempt: None,
            dispatched_on: 0,
            runtime_limit: None,
            status: None,
            detail: None,
            load: None,
            last_update_ts: None,
            last_connected: None,
            last_status_request: 0,
        }
    }

    pub fn state(&self) -> AgentState {
        self.state
    }

    pub fn online(&self) -> bool {
        self.state.online()
    }

    /// Connected with a `fetchWork` open.
    pub fn waiting(&self) -> bool {
        self.state == AgentState::Waiting
    }

    /// When it went offline, while it is offline.
    pub fn offline_since(&self) -> Option<UnixMillis> {
        match self.state {
            AgentState::Offline { since, .. } => since,
            _ => None,
        }
    }

    /// It connected (again) on `connection`. A fetch of an older connection
    /// is gone; a claim in flight stays in flight.
    pub fn connected(&mut self, connection: u64, now: UnixMillis) {
        self.state = if self.state.claiming() {
            AgentState::Claiming
        } else {
            AgentState::Idle
        };
        self.connection = connection;
        self.last_connected = Some(now);
        self.last_update_ts = None;
    }

    /// Its connection ended at `now`.
    pub fn disconnected(&mut self, now: UnixMillis) {
        self.state = AgentState::Offline {
            since: Some(now),
            claiming: self.state.claiming(),
        };
    }

    /// Loaded at start-up with an attempt it was running: offline since
    /// `now`, so its lease counts from the coordinator's start.
    pub fn resumed_offline(&mut self, now: UnixMillis) {
        self.state = AgentState::Offline {
            since: Some(now),
            claiming: false,
        };
    }

    /// It asked for work (`fetchWork`). Ignored while offline or while a
    /// claim for it is in flight (the fetch crossed that pick).
    pub fn fetch_opened(&mut self) {
        if matches!(self.state, AgentState::Idle | AgentState::Waiting) {
            self.state = AgentState::Waiting;
        }
    }

    /// A task was picked for it: it gets nothing else until the claim is
    /// answered. Only a waiting agent can be picked.
    pub fn claim_started(&mut self) {
        if self.state == AgentState::Waiting {
            self.state = AgentState::Claiming;
        }
    }

    /// Its claim was answered: `sent` when it got the work, else it still
    /// waits for some. An agent that went offline meanwhile stays offline.
    pub fn claim_answered(&mut self, sent: bool) {
        self.state = match self.state {
            AgentState::Claiming if sent => AgentState::Idle,
            AgentState::Claiming => AgentState::Waiting,
            AgentState::Offline { since, .. } => AgentState::Offline {
                since,
                claiming: false,
            },
            other => other,
        };
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
    /// The agents waiting for work, so a pick need not scan the fleet.
    waiting: WaitingIndex,
    /// This coordinator's part of the queue, (index, count), when several
    /// share the database ([`Scheduler::head_for`]).
    partition: Option<(u64, u64)>,
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
        // Agents that found nothing before may take it.
        self.waiting.recheck_all();
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

    /// `host` asked for work (`fetchWork`); see [`AgentSlot::fetch_opened`].
    pub fn fetch_opened(&mut self, host: &str) {
        if let Some(slot) = self.agents.get_mut(host) {
            slot.fetch_opened();
            if slot.waiting() {
                self.waiting.asked(host);
            }
        }
    }

    /// `host`'s claim was answered; see [`AgentSlot::claim_answered`]. An
    /// agent that did not get the work waits for other work.
    pub fn claim_answered(&mut self, host: &str, sent: bool) {
        if let Some(slot) = self.agents.get_mut(host) {
            slot.claim_answered(sent);
            if slot.waiting() {
                self.waiting.asked(host);
            }
        }
    }

    /// `host`'s connection ended at `now`; see [`AgentSlot::disconnected`].
    pub fn disconnected(&mut self, host: &str, now: UnixMillis) {
        if let Some(slot) = self.agents.get_mut(host) {
            slot.disconnected(now);
            self.waiting.remove(host);
            // A retry that avoided `host`'s last agent because this one
            // fitted may now go back to it.
            self.waiting.recheck_all();
        }
    }

    /// Picks, for every agent waiting for work, the task it gets next
    /// ([`Scheduler::head_for`]), marks the agent `claiming` until its claim
    /// is answered and counts the task as running in its queue. Looks at the
    /// agents that asked since the last pick, or at every waiting one when
    /// work was queued or an agent left since; at none while nothing is
    /// queued.
    pub fn pick(&mut self) -> Vec<(String, QueuedTask)> {
        if self.keys.is_empty() {
            return Vec::new();
        }
        let mut picks = Vec::new();
        for host in self.waiting.take_candidates() {
            if self.keys.is_empty() {
                // The rest stay waiting; new work makes the next pick look at them.
                break;
            }
            let can_take = self
                .agents
                .get(&host)
                .is_some_and(|s| s.waiting() && s.running.is_none());
            if !can_take {
                self.waiting.remove(&host);
                continue;
            }
            let Some(task) = self.head_for(&host).and_then(|id| self.dequeue(id)) else {
                continue;
            };
            if let Some(slot) = self.agents.get_mut(&host) {
                slot.claim_started();
            }
            self.waiting.remove(&host);
            self.reserve(&task.queue);
            picks.push((host, task));
        }
        picks
    }

    /// Agents indexed as waiting for work.
    #[cfg(test)]
    pub fn waiting_agents(&self) -> usize {
        self.waiting.len()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn task(
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

    pub(super) fn sched_with(hosts: &[&str]) -> Scheduler {
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

    fn pick(s: &mut Scheduler) -> Vec<(String, i64)> {
        s.pick().into_iter().map(|(host, t)| (host, t.id)).collect()
    }

    fn online(s: &mut Scheduler, hosts: &[&str]) {
        for (i, h) in hosts.iter().enumerate() {
            if let Some(slot) = s.agents.get_mut(*h) {
                slot.connected(i as u64 + 1, 0);
            }
        }
    }

    #[test]
    fn a_pick_offers_work_to_waiting_agents_only() {
        let mut s = sched_with(&["a", "b", "c"]);
        online(&mut s, &["a", "b", "c"]);
        // Nothing queued: asking changes nothing yet.
        s.fetch_opened("a");
        s.fetch_opened("b");
        assert!(pick(&mut s).is_empty());
        assert_eq!(s.waiting_agents(), 2);
        // New work reaches every waiting agent, not `c`, which did not ask.
        s.enqueue(task(1, "q", 0, None, 1));
        s.enqueue(task(2, "q", 0, None, 2));
        s.enqueue(task(3, "q", 0, None, 3));
        assert_eq!(pick(&mut s), [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(s.waiting_agents(), 0);
        // `c` asks: only it is looked at, and it gets the last task.
        s.fetch_opened("c");
        assert_eq!(pick(&mut s), [("c".into(), 3)]);
        // `a`'s claim failed: it waits again and gets re-queued work.
        s.claim_answered("a", false);
        s.enqueue(task(1, "q", 0, None, 1));
        assert_eq!(pick(&mut s), [("a".into(), 1)]);
    }

    #[test]
    fn an_agent_that_left_is_not_offered_work() {
        let mut s = sched_with(&["a", "b"]);
        online(&mut s, &["a", "b"]);
        s.fetch_opened("a");
        s.fetch_opened("b");
        s.disconnected("a", 5);
        s.enqueue(task(1, "q", 0, None, 1));
        assert_eq!(pick(&mut s), [("b".into(), 1)]);
        // A running agent is not offered work even if indexed.
        s.claim_answered("b", true);
        if let Some(slot) = s.agents.get_mut("b") {
            slot.running = Some(running("q"));
        }
        s.fetch_opened("b");
        s.enqueue(task(2, "q", 0, None, 2));
        assert!(pick(&mut s).is_empty());
        assert_eq!(s.waiting_agents(), 0);
    }

    #[test]
    fn a_retry_goes_back_to_its_agent_once_the_other_one_left() {
        let mut s = sched_with(&["a", "b"]);
        online(&mut s, &["a", "b"]);
        let mut retry = task(1, "q", 0, None, 1);
        retry.last_agent = Some("a".into());
        s.enqueue(retry);
        // `b` is online and fits, so `a` does not get its own retry...
        s.fetch_opened("a");
        assert!(pick(&mut s).is_empty());
        // ...until `b` leaves: `a`, still waiting, gets it without asking again.
        s.disconnected("b", 5);
        assert_eq!(pick(&mut s), [("a".into(), 1)]);
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
            slot.connected(1, 0);
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

    #[test]
    fn an_agent_moves_through_its_states() {
        let mut slot = AgentSlot::new(LabelSet::new());
        assert_eq!(slot.state(), AgentState::UNSEEN);
        slot.fetch_opened();
        assert_eq!(slot.state(), AgentState::UNSEEN, "no fetch while offline");
        slot.connected(1, 100);
        assert_eq!(slot.state(), AgentState::Idle);
        assert_eq!(slot.last_connected, Some(100));
        slot.claim_started();
        assert_eq!(
            slot.state(),
            AgentState::Idle,
            "only a waiting agent is picked"
        );
        slot.fetch_opened();
        assert!(slot.waiting());
        slot.claim_started();
        assert_eq!(slot.state(), AgentState::Claiming);
        slot.fetch_opened();
        assert_eq!(
            slot.state(),
            AgentState::Claiming,
            "a fetch crossed the pick"
        );
        slot.claim_answered(false);
        assert!(slot.waiting(), "nothing was sent: it still waits");
        slot.claim_started();
        slot.claim_answered(true);
        assert_eq!(slot.state(), AgentState::Idle);
        slot.disconnected(200);
        assert!(!slot.online());
        assert_eq!(slot.offline_since(), Some(200));
    }

    #[test]
    fn a_claim_in_flight_survives_a_reconnect() {
        let mut slot = AgentSlot::new(LabelSet::new());
        slot.connected(1, 0);
        slot.fetch_opened();
        slot.claim_started();
        slot.disconnected(10);
        assert!(slot.state().claiming() && !slot.online());
        slot.connected(2, 20);
        assert_eq!(
            slot.state(),
            AgentState::Claiming,
            "the new connection gets nothing else until the claim is answered"
        );
        slot.disconnected(30);
        slot.claim_answered(true);
        assert_eq!(
            slot.state(),
            AgentState::Offline {
                since: Some(30),
                claiming: false
            }
        );
        slot.connected(3, 40);
        assert_eq!(slot.state(), AgentState::Idle);
    }

    #[test]
    fn only_online_agents_count_for_a_retry_elsewhere() {
        let mut s = sched_with(&["a", "b"]);
        let mut t = task(1, "q", 0, None, 0);
        t.last_agent = Some("a".into());
        s.enqueue(t);
        if let Some(b) = s.agents.get_mut("b") {
            b.connected(1, 0);
            b.disconnected(5);
        }
        assert_eq!(s.head_for("a"), Some(1), "b went offline: a may retry");
    }
}
