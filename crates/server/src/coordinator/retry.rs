//! Retries on a user's request (`testfleet retry`): the failed tasks of a
//! finished job, or one failed task, queued again. The store commits the
//! retry first (one conditional update, see `testfleet_store::retry`); the
//! tasks then enter the scheduler's index and are dispatched.

use testfleet_store::Retried;
use testfleet_wire::api::RetryView;

use super::*;

impl Coordinator {
    /// Queues every failed task of a finished job again as new attempts.
    pub async fn retry_job(&self, job_id: i64) -> Result<RetryView, StoreError> {
        let retried = self.store.retry_job(job_id, self.now()).await?;
        let view = self.queue_retried(retried).await;
        self.push_live(testfleet_wire::fleet::UpdateKind::Jobs, Some(job_id), None)
            .await;
        view
    }

    /// Queues one failed task again as a new attempt.
    pub async fn retry_task(&self, task_id: i64) -> Result<RetryView, StoreError> {
        let retried = self.store.retry_task(task_id, self.now()).await?;
        let view = self.queue_retried(retried).await;
        self.push_live(testfleet_wire::fleet::UpdateKind::Jobs, None, Some(task_id))
            .await;
        view
    }

    /// Queues finished tasks again for one more attempt each, to confirm a
    /// comparison (`testfleet compare --confirm`); returns the ids of the
    /// tasks queued again (tasks not finished, or cancelled, are left alone).
    pub async fn rerun_tasks(&self, task_ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let tasks = self.store.rerun_tasks(task_ids, self.now()).await?;
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        if !tasks.is_empty() {
            self.announce_queued(tasks.iter().map(|t| t.job_id));
            let mut sched = self.sched.lock().await;
            for task in tasks {
                sched.cancelled_jobs.remove(&task.job_id);
                sched.enqueue(task);
            }
            drop(sched);
            self.dispatch_wake.notify_one();
            tracing::info!(tasks = ?ids, "finished tasks queued again to confirm a comparison");
        }
        Ok(ids)
    }

    async fn queue_retried(&self, retried: Retried) -> Result<RetryView, StoreError> {
        let ids: Vec<i64> = retried.tasks.iter().map(|t| t.id).collect();
        {
            let mut sched = self.sched.lock().await;
            // A cancelled job retried by a user runs again: its new claims
            // are sent, not ended as claims that raced the cancel.
            sched.cancelled_jobs.remove(&retried.job_id);
            self.announce_queued([retried.job_id]);
            for task in retried.tasks {
                sched.enqueue(task);
            }
        }
        self.dispatch_wake.notify_one();
        tracing::info!(job_id = retried.job_id, tasks = ?ids, "failed tasks queued again on request");
        Ok(RetryView {
            retried: ids,
            job: self.store.job(retried.job_id).await?,
        })
    }
}
