//! The end of an attempt: its slot freed, its end committed (fenced in the
//! store), and the effect applied: a retry, a known-failure re-trigger, or
//! the task's end.

use super::*;
use testfleet_wire::reason::ReasonData;

impl Coordinator {
    /// Frees the agent's slot of a finishing attempt (call under the lock,
    /// then [`Coordinator::record_finish`] without it).
    pub(super) fn release_slot(sched: &mut Scheduler, run: &RunningAttempt) {
        if let Some(slot) = sched.agents.get_mut(&run.agent)
            && slot
                .running
                .as_ref()
                .is_some_and(|r| r.attempt_id == run.attempt_id)
        {
            slot.running = None;
            slot.runtime_limit = None;
            slot.ended_attempt = Some(run.attempt_id);
            sched.ended(run);
        }
    }

    /// Commits the end of an attempt whose slot is already released, then
    /// queues its retry or re-trigger and dispatches. Fenced in the store: a
    /// second end of the same attempt changes nothing.
    pub(super) async fn record_finish(
        &self,
        run: &RunningAttempt,
        outcome: AttemptOutcome,
        reason: Option<&str>,
        reason_data: Option<&ReasonData>,
        results: Option<&[testfleet_wire::results::Results]>,
    ) {
        let stage = match outcome {
            o if o.is_success() => Some(Stage::Done),
            _ => None,
        };
        let started = std::time::Instant::now();
        let finished = self
            .store
            .finish_attempt(
                run.attempt_id,
                None,
                outcome,
                reason,
                reason_data,
                results,
                stage,
                self.now(),
            )
            .await;
        self.metrics.finish.observe(started.elapsed());
        let effect = match finished {
            Ok(effect) => {
                // A late or repeated end changed nothing: not counted.
                if !matches!(effect, FinishEffect::Stale) {
                    self.metrics.attempt_ended(outcome);
                }
                effect
            }
            Err(e) => {
                tracing::error!(attempt = run.attempt_id, "failed to finish attempt: {e}");
                return;
            }
        };
        tracing::info!(agent = %run.agent, attempt = run.attempt_id, %outcome, "attempt finished");
        self.push_live(
            testfleet_wire::fleet::UpdateKind::Finished,
            Some(run.job_id),
            Some(run.task_id),
        )
        .await;
        if let FinishEffect::TaskFinished {
            task_id,
            state: testfleet_core::TaskState::Failed,
            ..
        } = &effect
            && outcome != AttemptOutcome::Cancelled
            && let Some(task) = self
                .known_failure_retrigger(*task_id, run.attempt_id, reason)
                .await
        {
            self.announce_queued([task.job_id]);
            self.sched.lock().await.enqueue(task);
            self.dispatch().await;
            return;
        }
        self.apply_effect(effect).await;
    }

    pub(super) async fn apply_effect(&self, effect: FinishEffect) {
        match effect {
            FinishEffect::Requeued(task) => {
                tracing::info!(task = task.id, "task re-queued for another attempt");
                self.announce_queued([task.job_id]);
                self.sched.lock().await.enqueue(task);
                self.dispatch().await;
            }
            FinishEffect::TaskFinished {
                task_id,
                job_id,
                state,
                job_state,
            } => {
                tracing::info!(task = task_id, job = job_id, %state, %job_state, "task finished");
            }
            FinishEffect::Stale => {}
        }
    }

    /// Re-queues a failed task whose reason or log matches a known-failure
    /// rule that still has re-triggers left.
    pub(super) async fn known_failure_retrigger(
        &self,
        task_id: i64,
        attempt_id: i64,
        reason: Option<&str>,
    ) -> Option<testfleet_store::QueuedTask> {
        if self.config.known_failures.is_empty() {
            return None;
        }
        let log = self
            .store
            .attempt_log_tail(attempt_id, 64 * 1024)
            .await
            .unwrap_or_default();
        let text = format!("{}\n{log}", reason.unwrap_or_default());
        let rule = self
            .config
            .known_failures
            .iter()
            .find(|r| r.pattern.is_match(&text))?;
        match self
            .store
            .retrigger(task_id, rule.pattern.as_str(), rule.retrigger, self.now())
            .await
        {
            Ok(Some(task)) => {
                tracing::info!(task = task_id, rule = %rule.pattern, "known failure: task re-triggered");
                Some(task)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(task = task_id, "failed to re-trigger: {e}");
                None
            }
        }
    }
}
