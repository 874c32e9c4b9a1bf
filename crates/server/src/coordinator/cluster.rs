//! Several coordinators on one PostgreSQL database (docs/scale-out.md).
//!
//! Every decision two coordinators could race on is already made by the
//! database (a claim, a finish, a lease), so what they share here is only
//! knowledge: each tells the others, over `LISTEN/NOTIFY`, that a job's
//! tasks were queued or a job cancelled, that its agents changed, that
//! browsers should refresh; and each reads back from the tables, every
//! `poll_interval`, what a lost notice would have told it: the queued tasks
//! (added to its index, or dropped when another claimed or cancelled them),
//! the attempts it holds that another ended, and the other coordinators'
//! agents. Notices only make that catch-up sooner, so a setup where they
//! never arrive (PgBouncer in transaction mode) still works, a poll later.

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;

use super::*;
use testfleet_store::{AgentPresence, ClusterNotice, NoticeKind, PresentAttempt};
use testfleet_wire::fleet::UpdateKind;

/// `[server.cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `None`: on with PostgreSQL, off with SQLite (which one coordinator
    /// has to itself).
    pub enabled: Option<bool>,
    /// How often the queue, ended attempts and the other coordinators'
    /// agents are read back from the database.
    pub poll_interval: Duration,
    /// This coordinator's name among the others (default: the machine's
    /// host name and the process id).
    pub name: Option<String>,
    /// Listen for the others' notices (`LISTEN`). Off behind a pooler that
    /// cannot keep a session (PgBouncer in transaction mode): the poll
    /// then finds everything, a poll later.
    pub listen: bool,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            enabled: None,
            poll_interval: Duration::from_secs(2),
            name: None,
            listen: true,
        }
    }
}

/// Jobs named in one `Live` notice at most; beyond, the notice says "some".
const LIVE_JOBS_MAX: usize = 32;

/// How often (ms) this coordinator's agents are compared with what it
/// published, between polls.
const PRESENCE_EVERY: i64 = 1000;

/// How often `Live` notices go out (the changes of that time in one).
const LIVE_FLUSH: Duration = Duration::from_millis(250);

/// Claimed tasks named in one `Claimed` notice at most (about 1 KB of the
/// 8,000 bytes a notice may carry). As many waiting make a notice go out
/// at once; fewer go out with the next `Live` flush.
const CLAIMED_MAX: usize = 128;

/// What this coordinator knows of the others.
pub(super) struct Cluster {
    pub(super) id: String,
    started_at: UnixMillis,
    /// The other coordinators' agents, by host: (coordinator, agent).
    peers: std::sync::Mutex<BTreeMap<String, (String, AgentPresence)>>,
    /// The agents this coordinator last published.
    published: std::sync::Mutex<Option<Vec<AgentPresence>>>,
    /// Jobs changed since the last `Live` notice (`None` in it: too many).
    live: std::sync::Mutex<Option<Vec<i64>>>,
    live_pending: std::sync::atomic::AtomicBool,
    /// Tasks claimed here since the last `Claimed` notice.
    claimed: std::sync::Mutex<Vec<i64>>,
    /// Whether the last read of the coordinators found another live one:
    /// alone, a coordinator on PostgreSQL sends no `Claimed` notices.
    shared: std::sync::atomic::AtomicBool,
    last_poll: AtomicI64,
    last_heartbeat: AtomicI64,
    last_presence: AtomicI64,
}

impl Cluster {
    /// The cluster state, when `config` and the store's engine ask for it.
    pub(super) fn new(
        config: &ClusterConfig,
        backend: testfleet_store::Backend,
        now: UnixMillis,
    ) -> Option<Cluster> {
        let postgres = backend == testfleet_store::Backend::Postgres;
        if !config.enabled.unwrap_or(postgres) || !postgres {
            return None;
        }
        let id = config.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "coordinator".into());
            format!("{host}:{}:{now}", std::process::id())
        });
        Some(Cluster {
            id,
            started_at: now,
            peers: std::sync::Mutex::default(),
            published: std::sync::Mutex::default(),
            live: std::sync::Mutex::new(Some(Vec::new())),
            live_pending: std::sync::atomic::AtomicBool::new(false),
            claimed: std::sync::Mutex::default(),
            shared: std::sync::atomic::AtomicBool::new(false),
            last_poll: AtomicI64::new(i64::MIN),
            last_heartbeat: AtomicI64::new(i64::MIN),
            last_presence: AtomicI64::new(i64::MIN),
        })
    }

    /// When this coordinator started: leases in the database are not reaped
    /// before a lease has passed since (agents need that time to come back).
    pub(super) fn started_at(&self) -> UnixMillis {
        self.started_at
    }

    /// Every agent the others have.
    pub(super) fn peer_agents(&self) -> Vec<(String, AgentPresence)> {
        self.peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    fn note_live(&self, job: Option<i64>) {
        if let Ok(mut live) = self.live.lock() {
            match (live.as_mut(), job) {
                (Some(jobs), Some(job)) if jobs.len() < LIVE_JOBS_MAX => {
                    if !jobs.contains(&job) {
                        jobs.push(job);
                    }
                }
                _ => *live = None,
            }
            self.live_pending.store(true, Ordering::Relaxed);
        }
    }

    /// Adds claimed tasks; a full notice's worth when there is one. Nothing
    /// while no other coordinator is live.
    fn note_claimed(&self, tasks: &[i64]) -> Option<Vec<i64>> {
        if !self.shared.load(Ordering::Relaxed) {
            return None;
        }
        let mut claimed = self.claimed.lock().ok()?;
        claimed.extend_from_slice(tasks);
        (claimed.len() >= CLAIMED_MAX).then(|| std::mem::take(&mut *claimed))
    }

    fn take_claimed(&self) -> Vec<i64> {
        self.claimed
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    fn take_live(&self) -> Option<Vec<i64>> {
        if !self.live_pending.swap(false, Ordering::Relaxed) {
            return None;
        }
        let mut live = self.live.lock().ok()?;
        Some(live.replace(Vec::new()).unwrap_or_default())
    }
}

impl Coordinator {
    /// Starts listening for the other coordinators and the periodic
    /// catch-up; nothing without a cluster.
    pub(super) fn start_cluster(self: &Arc<Coordinator>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        tracing::info!(coordinator = %cluster.id, "sharing the database with other coordinators");
        let weak = Arc::downgrade(self);
        let store = self.store.clone();
        let listening = self.config.cluster.listen;
        let listen = tokio::spawn(async move {
            if !listening {
                return;
            }
            loop {
                let mut listener = match store.cluster_listener().await {
                    Ok(Some(l)) => l,
                    Ok(None) => return,
                    Err(e) => {
                        if store.is_closed() {
                            return;
                        }
                        tracing::warn!(
                            "failed to listen for other coordinators ({e}); reading the database every poll meanwhile"
                        );
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                };
                loop {
                    let received = listener.recv().await;
                    let Some(c) = weak.upgrade() else { return };
                    match received {
                        Ok(Some(notice)) => c.on_notice(notice).await,
                        // Notices sent while the connection was down are gone.
                        Ok(None) => c.catch_up().await,
                        Err(e) => {
                            if !c.is_closing() {
                                tracing::warn!(
                                    "lost the other coordinators' notices ({e}); listening again"
                                );
                            }
                            break;
                        }
                    }
                }
            }
        });
        let weak = Arc::downgrade(self);
        let poll = tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIVE_FLUSH);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                if c.is_closing() {
                    break;
                }
                c.flush_live().await;
                let Some(cluster) = &c.cluster else { break };
                let now = c.now();
                let every =
                    i64::try_from(c.config.cluster.poll_interval.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(cluster.last_poll.load(Ordering::Relaxed)) >= every {
                    cluster.last_poll.store(now, Ordering::Relaxed);
                    cluster.last_presence.store(now, Ordering::Relaxed);
                    c.catch_up().await;
                } else if now.saturating_sub(cluster.last_presence.load(Ordering::Relaxed))
                    >= PRESENCE_EVERY
                {
                    cluster.last_presence.store(now, Ordering::Relaxed);
                    c.publish_agents(false).await;
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(listen);
            tasks.push(poll);
        }
    }

    /// Tells the other coordinators, after the commit it announces; a
    /// failure is logged (their next poll finds out anyway).
    pub(super) fn announce(&self, what: NoticeKind) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let notice = ClusterNotice {
            from: cluster.id.clone(),
            what,
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.notify(&notice).await
                && !store.is_closed()
            {
                tracing::warn!(?notice, "failed to tell the other coordinators: {e}");
            }
        });
    }

    /// Announces that tasks of these jobs were queued.
    pub(super) fn announce_queued(&self, jobs: impl IntoIterator<Item = i64>) {
        if self.cluster.is_none() {
            return;
        }
        let jobs: std::collections::BTreeSet<i64> = jobs.into_iter().collect();
        for job_id in jobs {
            self.announce(NoticeKind::Queued { job_id });
        }
    }

    /// Keeps a browser update for the other coordinators' browsers.
    pub(super) fn share_live(&self, job: Option<i64>) {
        if let Some(cluster) = &self.cluster {
            cluster.note_live(job);
        }
    }

    async fn flush_live(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Some(jobs) = cluster.take_live() {
            self.announce(NoticeKind::Live { jobs });
        }
        self.announce_claimed(cluster.take_claimed());
    }

    /// Tells the others which tasks this coordinator claimed: every one
    /// indexes every queued task, and without word of a claim a task stays
    /// in their index until their next poll, where their picks take it in
    /// vain (each such claim a lost round trip, and a wait on the row when
    /// both claim it at once).
    pub(super) fn share_claimed(&self, tasks: &[i64]) {
        if tasks.is_empty() {
            return;
        }
        if let Some(full) = self.cluster.as_ref().and_then(|c| c.note_claimed(tasks)) {
            self.announce_claimed(full);
        }
    }

    fn announce_claimed(&self, tasks: Vec<i64>) {
        for chunk in tasks.chunks(CLAIMED_MAX) {
            self.announce(NoticeKind::Claimed {
                tasks: chunk.to_vec(),
            });
        }
    }

    async fn on_notice(&self, notice: ClusterNotice) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if notice.from == cluster.id {
            return;
        }
        match notice.what {
            NoticeKind::Queued { job_id } => match self.store.queued_tasks_of_job(job_id).await {
                Ok(tasks) => self.index_remote(tasks).await,
                Err(e) => tracing::warn!(
                    job_id,
                    "failed to read the tasks another coordinator queued: {e}"
                ),
            },
            NoticeKind::Cancelled { job_id } => {
                self.stop_cancelled(job_id, "cancelled by user").await;
                self.push_browsers(UpdateKind::Jobs, Some(job_id), None)
                    .await;
            }
            NoticeKind::Fleet => {
                self.read_peers().await;
                self.push_agent_data().await;
            }
            NoticeKind::Claimed { tasks } => {
                let mut sched = self.sched.lock().await;
                for id in tasks {
                    sched.dequeue(id);
                }
            }
            NoticeKind::Live { jobs } if jobs.is_empty() => {
                self.push_browsers(UpdateKind::Jobs, None, None).await;
            }
            NoticeKind::Live { jobs } => {
                for job in jobs {
                    self.push_browsers(UpdateKind::Jobs, Some(job), None).await;
                }
            }
        }
    }

    /// Indexes tasks another coordinator queued (those already indexed stay).
    async fn index_remote(&self, tasks: Vec<testfleet_store::QueuedTask>) {
        if tasks.is_empty() {
            return;
        }
        let mut sched = self.sched.lock().await;
        for task in tasks {
            if sched.get(task.id).is_none() {
                // Queued again after a cancel: a retry on a user's request.
                sched.cancelled_jobs.remove(&task.job_id);
                sched.enqueue(task);
            }
        }
        drop(sched);
        self.dispatch_wake.notify_one();
    }

    /// Reads back what notices would have said: the queue, the attempts
    /// others ended, the other coordinators' agents; and publishes this
    /// one's agents with its heartbeat.
    pub(super) async fn catch_up(&self) {
        if let Err(e) = self.sync_queue().await {
            tracing::warn!("failed to read the shared queue: {e}");
        }
        if let Err(e) = self.drop_ended_attempts().await {
            tracing::warn!("failed to read which attempts other coordinators ended: {e}");
        }
        // A coordinator killed between a task's end and its job's settling
        // repairs that at its start; if it never starts again, this does.
        match self.store.repair_job_states(self.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "settled jobs whose tasks had all ended"),
            Err(e) => tracing::warn!("failed to settle jobs whose tasks had all ended: {e}"),
        }
        self.publish_agents(true).await;
        self.read_peers().await;
    }

    /// The index against the database: queued tasks it lacks are added,
    /// tasks no longer queued (claimed or cancelled elsewhere) dropped.
    async fn sync_queue(&self) -> Result<(), StoreError> {
        let queued: HashSet<i64> = self.store.queued_task_ids().await?.into_iter().collect();
        let (missing, gone): (Vec<i64>, Vec<i64>) = {
            let sched = self.sched.lock().await;
            let indexed: HashSet<i64> = sched
                .queues
                .values()
                .flat_map(|q| q.tasks.values().map(|t| t.id))
                .collect();
            (
                queued
                    .iter()
                    .filter(|id| !indexed.contains(id))
                    .copied()
                    .collect(),
                indexed
                    .iter()
                    .filter(|id| !queued.contains(id))
                    .copied()
                    .collect(),
            )
        };
        if !gone.is_empty() {
            // A task indexed after the read above is queued in the database:
            // asked again, it stays.
            let still: HashSet<i64> = self.store.still_queued(&gone).await?.into_iter().collect();
            let mut sched = self.sched.lock().await;
            for id in gone.iter().filter(|id| !still.contains(id)) {
                sched.dequeue(*id);
            }
        }
        if !missing.is_empty() {
            let tasks = self.store.queued_tasks_in(&missing).await?;
            self.index_remote(tasks).await;
        }
        Ok(())
    }

    /// Attempts this coordinator holds that another ended (a cancel, an
    /// expired lease): their slots are freed and their agents told to stop.
    async fn drop_ended_attempts(&self) -> Result<(), StoreError> {
        let held: Vec<i64> = {
            let sched = self.sched.lock().await;
            sched
                .agents
                .values()
                .filter_map(|s| s.running.as_ref().map(|r| r.attempt_id))
                .collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let ended: HashSet<i64> = self
            .store
            .ended_attempts(&held)
            .await?
            .into_iter()
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let mut sched = self.sched.lock().await;
        let runs: Vec<RunningAttempt> = sched
            .agents
            .values()
            .filter_map(|s| s.running.clone())
            .filter(|r| ended.contains(&r.attempt_id))
            .collect();
        self.stop_held(&mut sched, runs, "ended by another coordinator");
        Ok(())
    }

    /// Stops a cancelled job's work here: its queued tasks leave the index
    /// and the agents running its attempts are told (the store already
    /// ended them).
    pub(super) async fn stop_cancelled(&self, job_id: i64, reason: &str) {
        let mut sched = self.sched.lock().await;
        sched.cancelled_jobs.insert(job_id);
        for id in sched.job_tasks(job_id) {
            sched.dequeue(id);
        }
        let runs: Vec<RunningAttempt> = sched
            .agents
            .values()
            .filter_map(|s| s.running.clone())
            .filter(|r| r.job_id == job_id)
            .collect();
        self.stop_held(&mut sched, runs, reason);
    }

    /// Frees the slots of attempts the store already ended and tells their
    /// agents, where connected here, to stop them.
    fn stop_held(&self, sched: &mut Scheduler, runs: Vec<RunningAttempt>, reason: &str) {
        for run in runs {
            Self::release_slot(sched, &run);
            if let Some(socket) = self.sockets.get(&run.agent) {
                let msg = CancelWork {
                    attempt_id: run.attempt_id,
                    reason: reason.to_owned(),
                };
                if let Err(e) = socket.emit(events::CANCEL_WORK, &msg) {
                    tracing::warn!(agent = %run.agent, "could not send cancel: {e}");
                }
            }
        }
    }

    /// Writes the heartbeat, with this coordinator's agents when they
    /// changed (and then tells the others). Called every second: agents
    /// that came or went, or took or ended work, are written at once; a
    /// change of status only with the next `full` call (each poll), and
    /// the bare heartbeat at least every half lease.
    async fn publish_agents(&self, full: bool) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let agents: Vec<AgentPresence> = {
            let sched = self.sched.lock().await;
            sched
                .agents
                .iter()
                .filter(|(_, s)| s.online())
                .map(|(host, s)| AgentPresence {
                    hostname: host.clone(),
                    status: s.status.clone(),
                    detail: s.detail.clone(),
                    load: s.load,
                    last_connected: s.last_connected,
                    running: s.running.as_ref().map(|r| PresentAttempt {
                        job_id: r.job_id,
                        task_id: r.task_id,
                        attempt_id: r.attempt_id,
                        integration_id: r.integration_id.clone(),
                    }),
                })
                .collect()
        };
        let shape = |list: &[AgentPresence]| -> Vec<(String, Option<i64>)> {
            list.iter()
                .map(|a| (a.hostname.clone(), a.running.as_ref().map(|r| r.attempt_id)))
                .collect()
        };
        let (changed, reshaped) = match cluster.published.lock() {
            Ok(p) => match p.as_ref() {
                Some(old) => (old != &agents, shape(old) != shape(&agents)),
                None => (true, true),
            },
            Err(_) => (true, true),
        };
        let now = self.now();
        let lease = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let due = now.saturating_sub(cluster.last_heartbeat.load(Ordering::Relaxed)) >= lease / 2;
        let write_agents = reshaped || (full && changed);
        if !write_agents && !due && !full {
            return;
        }
        let written = self
            .store
            .heartbeat(
                &cluster.id,
                cluster.started_at,
                now,
                write_agents.then_some(&agents[..]),
            )
            .await;
        match written {
            Ok(()) => {
                cluster.last_heartbeat.store(now, Ordering::Relaxed);
                if write_agents {
                    if let Ok(mut p) = cluster.published.lock() {
                        *p = Some(agents);
                    }
                    self.announce(NoticeKind::Fleet);
                }
            }
            Err(e) => tracing::warn!("failed to write this coordinator's heartbeat: {e}"),
        }
    }

    /// The other coordinators' agents, from rows whose heartbeat is recent.
    async fn read_peers(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let lease = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let poll = i64::try_from(self.config.cluster.poll_interval.as_millis()).unwrap_or(0);
        let fresh = lease.max(poll.saturating_mul(3));
        match self
            .store
            .coordinators(self.now().saturating_sub(fresh))
            .await
        {
            Ok(rows) => {
                // Each coordinator takes its part of the queue first: the
                // live ones in id order, this one included.
                let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                if !ids.contains(&cluster.id.as_str()) {
                    ids.push(&cluster.id);
                }
                ids.sort_unstable();
                let partition = ids
                    .iter()
                    .position(|id| *id == cluster.id)
                    .map(|index| (index as u64, ids.len() as u64));
                cluster.shared.store(ids.len() > 1, Ordering::Relaxed);
                self.store.set_shared(ids.len() > 1);
                self.sched.lock().await.set_partition(partition);
                let peers = rows
                    .into_iter()
                    .filter(|r| r.id != cluster.id)
                    .flat_map(|r| {
                        let id = r.id;
                        r.agents
                            .into_iter()
                            .map(move |a| (a.hostname.clone(), (id.clone(), a)))
                    })
                    .collect();
                if let Ok(mut p) = cluster.peers.lock() {
                    *p = peers;
                }
            }
            Err(e) => tracing::warn!("failed to read the other coordinators: {e}"),
        }
    }

    /// Removes this coordinator's row when it shuts down.
    pub(super) async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let week_ago = self.now().saturating_sub(7 * 24 * 3600 * 1000);
        if let Err(e) = self.store.forget_coordinators(&cluster.id, week_ago).await {
            tracing::warn!("failed to remove this coordinator's row: {e}");
        }
    }

    /// An agent that came from another coordinator says it runs attempt
    /// `attempt_id`: when the store agrees (open, this agent's), this
    /// coordinator takes it over, so its updates and its end are applied.
    pub(super) async fn adopt_attempt(&self, host: &str, connection: u64, attempt_id: i64) {
        {
            let sched = self.sched.lock().await;
            match sched.agents.get(host) {
                // Not one it just ended here (its `done` after its report):
                // that would be a read of the store per task for nothing.
                Some(slot)
                    if slot.connection == connection
                        && slot.running.is_none()
                        && slot.ended_attempt != Some(attempt_id) => {}
                _ => return,
            }
        }
        let run = match self.store.open_attempt(attempt_id, host).await {
            Ok(Some(run)) => run,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    agent = host,
                    attempt_id,
                    "failed to read the attempt an agent reports: {e}"
                );
                return;
            }
        };
        let mut sched = self.sched.lock().await;
        let Some(slot) = sched.agents.get_mut(host) else {
            return;
        };
        if slot.connection != connection || slot.running.is_some() {
            return;
        }
        slot.dispatched_on = connection;
        slot.last_status_request = self.now();
        slot.running = Some(run.clone());
        sched.started(&run);
        tracing::info!(
            agent = host,
            attempt_id,
            "took over an attempt the agent ran for another coordinator"
        );
    }
}
