//! Dispatch: queued work to agents with an open fetch. Picks are made under
//! the scheduler lock; claims commit in the store's batches without it.

use super::*;
use testfleet_wire::reason::RuntimeBasis;

impl Coordinator {
    /// Hands queued work to every agent with an open fetch.
    ///
    /// The picks are made under the scheduler lock; their claims commit
    /// together (the store batches them) with the lock released, so events
    /// from other agents go on meanwhile. A picked agent is marked
    /// `claiming` and gets nothing else until its claim is answered.
    pub(super) async fn dispatch(&self) {
        loop {
            let picks = {
                let mut sched = self.sched.lock().await;
                sched.pick()
            };
            if picks.is_empty() {
                return;
            }
            let now = self.now();
            let claims = futures_util::future::join_all(picks.iter().map(|(host, task)| async {
                let started = std::time::Instant::now();
                let claim = self.store.claim(task.id, host, now).await;
                self.metrics.claim.observe(started.elapsed());
                claim
            }))
            .await;
            let mut again = false;
            let mut cancelled = Vec::new();
            let mut started = Vec::new();
            {
                let mut sched = self.sched.lock().await;
                for ((host, task), claim) in picks.into_iter().zip(claims) {
                    let cancelled_job = sched.cancelled_jobs.contains(&task.job_id);
                    let Some(slot) = sched.agents.get_mut(&host) else {
                        continue;
                    };
                    match claim {
                        Ok(Some(claimed)) if cancelled_job => {
                            // The job was cancelled while its claim committed.
                            sched.claim_answered(&host, false);
                            again = true;
                            cancelled.push(claimed.attempt);
                        }
                        Ok(Some(claimed)) => {
                            slot.claim_answered(true);
                            let waited = u64::try_from(now - task.queued_at).unwrap_or(0);
                            self.metrics
                                .start_wait
                                .observe(std::time::Duration::from_millis(waited));
                            slot.status = Some(Stage::New.as_str().to_owned());
                            if let Some(socket) = self.sockets.get(&host)
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
                            started.push((task.job_id, task.id));
                            slot.running = Some(claimed.attempt);
                            continue;
                        }
                        Ok(None) => {
                            // Claimed by another coordinator, or cancelled
                            // meanwhile: the agent still wants work.
                            self.metrics.claim_lost();
                            tracing::debug!(agent = %host, task = task.id, "claim lost: the task is no longer queued");
                            sched.claim_answered(&host, false);
                            again = true;
                        }
                        Err(e) => {
                            tracing::error!(task = task.id, "failed to claim task: {e}");
                            sched.claim_answered(&host, false);
                            sched.enqueue(task.clone());
                        }
                    }
                    sched.release(&task.queue);
                }
            }
            let claimed: Vec<i64> = started.iter().map(|&(_, task)| task).collect();
            self.share_claimed(&claimed);
            for (job, task) in started {
                self.push_live(
                    testfleet_wire::fleet::UpdateKind::Started,
                    Some(job),
                    Some(task),
                )
                .await;
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
}

/// The runtime limit of a new attempt: the task's own `max_runtime`
/// (admin-set, wins), else `runtime_factor` × the p95 of this task key's
/// history once it has `runtime_min_runs` runs; scaled by the agent's
/// `timeout_scale` label.
pub(super) fn runtime_limit(
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
                RuntimeBasis::MaxRuntime {
                    max_runtime_ms: d.as_millis() as u64,
                    timeout_scale: scale,
                },
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
                RuntimeBasis::History {
                    task_key: run.task_key.clone(),
                    runs: stats.runs,
                    p95_ms: stats.p95_ms,
                    mean_ms: stats.mean_ms,
                    factor,
                    timeout_scale: scale,
                },
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
