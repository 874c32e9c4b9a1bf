//! Jobs: submission (with `each_agent` fan-out), cancellation, and why a
//! task is still pending.

use super::*;

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Coordinator {
    /// Stores a validated job, fans out `each_agent` tasks and wakes idle agents.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobView, SubmitError> {
        let now = self.now();
        let tasks = self.new_tasks(&spec, now).await?;
        let (job_id, queued) = self.store.submit_job(&spec, tasks, now).await?;
        tracing::info!(job_id, name = %spec.name, tasks = queued.len(), "job submitted");
        self.enqueue(queued).await;
        self.push_live(testfleet_wire::fleet::UpdateKind::Jobs, Some(job_id), None)
            .await;
        Ok(self.store.job(job_id).await?)
    }

    /// The tasks a job is stored as: one per task, or one per known agent
    /// that matches an `each_agent` task (pinned to it).
    pub(crate) async fn new_tasks(
        &self,
        spec: &JobSpec,
        now: UnixMillis,
    ) -> Result<Vec<NewTask>, StoreError> {
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
        Ok(tasks)
    }

    /// Indexes newly committed queued tasks and wakes the dispatcher.
    pub(crate) async fn enqueue(&self, queued: Vec<testfleet_store::QueuedTask>) {
        {
            let mut sched = self.sched.lock().await;
            self.announce_queued(queued.iter().map(|t| t.job_id));
            for task in queued {
                sched.enqueue(task);
            }
        }
        self.dispatch_wake.notify_one();
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
                if let Some(socket) = self.sockets.get(&attempt.agent) {
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
        self.announce(testfleet_store::NoticeKind::Cancelled { job_id });
        tracing::info!(job_id, "job cancelled");
        self.push_live(testfleet_wire::fleet::UpdateKind::Jobs, Some(job_id), None)
            .await;
        self.store.job(job_id).await
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
