//! `retry`: failed tasks queued again for new attempts on a user's request
//! (`testfleet retry`), a whole finished job's or one task's; and finished
//! tasks run once more to confirm a comparison (`rerun_tasks`).
//!
//! Each retry is one conditional update: only tasks that are `failed` move,
//! and a job's only when none of its tasks is still queued or running, so
//! two writers (two users, two coordinators) cannot both queue a task again.
//! A retried task prefers another agent than the one its failed attempt
//! ran on, as automatic retries do. It keeps its failure counts: its retry
//! budgets are not refilled, and a pass on the new attempt marks it flaky.
//! The job's state is recomputed in the same transaction
//! (`attempts::refresh_job_state`), which clears the counts it stored when
//! it finished: the jobs list counts it live until it finishes again.

use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{JobState, TaskState};

use crate::attempts::refresh_job_state;
use crate::db::{Tx, on_tx};
use crate::ops::{QUEUED_COLUMNS, QueuedRow, RETRY_PRIORITY_BOOST};
use crate::{Missing, QueuedTask, Result, Store, StoreError};

/// The detail a retried task shows until its new attempt starts.
const DETAIL: &str = "queued again: retry requested";

/// The detail a re-run task shows until its new attempt starts.
const RERUN_DETAIL: &str = "queued again: re-run to confirm a comparison";

/// What a retry queued again.
#[derive(Debug, Clone, PartialEq)]
pub struct Retried {
    pub job_id: i64,
    /// The job's state after the retry.
    pub job_state: JobState,
    /// The tasks queued again, in id order, with the priority boost of a
    /// retry (as the scheduler indexes them).
    pub tasks: Vec<QueuedTask>,
}

impl Store {
    /// Queues every failed task of a finished job again. Refused (a
    /// [`StoreError::Conflict`]) while a task of the job is queued or
    /// running, or when none failed; [`StoreError::NotFound`] for an
    /// unknown job.
    pub async fn retry_job(&self, job_id: i64, now: UnixMillis) -> Result<Retried> {
        crate::retry_conflicts(|| self.retry_job_once(job_id, now)).await
    }

    async fn retry_job_once(&self, job_id: i64, now: UnixMillis) -> Result<Retried> {
        let mut tx = self.writer.begin().await?;
        let ids: Vec<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "UPDATE tasks SET state = 'queued', current_attempt = NULL, detail_message = $1,
             last_agent = COALESCE(agent, last_agent),
             queued_at = $2, updated_at = $2
             WHERE job_id = $3 AND state = 'failed'
               AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.job_id = $3 AND o.state IN ('queued', 'running'))
             RETURNING id",
        )
        .bind(DETAIL)
        .bind(now)
        .bind(job_id)
        .fetch_all(c)
        .await)?;
        if ids.is_empty() {
            return Err(why_job_not_retried(&mut tx, job_id).await);
        }
        let sql = format!(
            "SELECT {QUEUED_COLUMNS} WHERE t.job_id = $1 AND t.state = 'queued' ORDER BY t.id"
        );
        let rows = on_tx!(&mut tx, c => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(c)
            .await)?;
        let job_state = refresh_job_state(&mut tx, job_id, None, now).await?;
        let tasks = boosted(rows)?;
        tx.commit().await?;
        Ok(Retried {
            job_id,
            job_state,
            tasks,
        })
    }

    /// Queues one failed task again (its job may still be running).
    /// Refused (a [`StoreError::Conflict`]) when the task is not failed;
    /// [`StoreError::NotFound`] for an unknown task.
    pub async fn retry_task(&self, task_id: i64, now: UnixMillis) -> Result<Retried> {
        crate::retry_conflicts(|| self.retry_task_once(task_id, now)).await
    }

    async fn retry_task_once(&self, task_id: i64, now: UnixMillis) -> Result<Retried> {
        let mut tx = self.writer.begin().await?;
        let job_id: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "UPDATE tasks SET state = 'queued', current_attempt = NULL, detail_message = $1,
             last_agent = COALESCE(agent, last_agent),
             queued_at = $2, updated_at = $2
             WHERE id = $3 AND state = 'failed'
             RETURNING job_id",
        )
        .bind(DETAIL)
        .bind(now)
        .bind(task_id)
        .fetch_optional(c)
        .await)?;
        let Some(job_id) = job_id else {
            return Err(why_task_not_retried(&mut tx, task_id).await);
        };
        let sql = format!("SELECT {QUEUED_COLUMNS} WHERE t.id = $1");
        let rows = on_tx!(&mut tx, c => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(c)
            .await)?;
        let job_state = refresh_job_state(&mut tx, job_id, None, now).await?;
        let tasks = boosted(rows)?;
        tx.commit().await?;
        Ok(Retried {
            job_id,
            job_state,
            tasks,
        })
    }
}

impl Store {
    /// Queues finished tasks (passed or failed) again for one more attempt
    /// each, so a comparison can pool more repetitions (`testfleet compare
    /// --confirm`). Tasks that are queued, running or cancelled, and unknown
    /// ids, are left alone: the answer lists only the tasks queued again, in
    /// id order, with a retry's priority boost.
    ///
    /// Each task moves in one conditional update (`WHERE state IN ('passed',
    /// 'failed')`), so two writers cannot both queue it; the jobs' states are
    /// recomputed in the same transaction. A pinned (`each_agent`) task keeps
    /// its pin; an unpinned one forgets its last agent, so the new attempt
    /// does not avoid the host that measured the first (benchmark series are
    /// per host). Failure counts and retry budgets stay as they were.
    pub async fn rerun_tasks(&self, task_ids: &[i64], now: UnixMillis) -> Result<Vec<QueuedTask>> {
        crate::retry_conflicts(|| self.rerun_tasks_once(task_ids, now)).await
    }

    async fn rerun_tasks_once(&self, task_ids: &[i64], now: UnixMillis) -> Result<Vec<QueuedTask>> {
        let mut ids: Vec<i64> = task_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.writer.begin().await?;
        let mut jobs: Vec<i64> = Vec::new();
        let mut rows: Vec<QueuedRow> = Vec::new();
        for id in ids {
            let job_id: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
                "UPDATE tasks SET state = 'queued', current_attempt = NULL, detail_message = $1,
                 last_agent = NULL, queued_at = $2, updated_at = $2
                 WHERE id = $3 AND state IN ('passed', 'failed')
                 RETURNING job_id",
            )
            .bind(RERUN_DETAIL)
            .bind(now)
            .bind(id)
            .fetch_optional(c)
            .await)?;
            let Some(job_id) = job_id else { continue };
            if !jobs.contains(&job_id) {
                jobs.push(job_id);
            }
            let sql = format!("SELECT {QUEUED_COLUMNS} WHERE t.id = $1");
            let row = on_tx!(&mut tx, c => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_one(c)
                .await)?;
            rows.push(row);
        }
        // In id order: two writers lock jobs' rows in the same order.
        jobs.sort_unstable();
        for job_id in jobs {
            refresh_job_state(&mut tx, job_id, None, now).await?;
        }
        let tasks = boosted(rows)?;
        tx.commit().await?;
        Ok(tasks)
    }
}

/// The queued tasks with a retry's priority boost.
fn boosted(rows: Vec<QueuedRow>) -> Result<Vec<QueuedTask>> {
    rows.into_iter()
        .map(|row| {
            let mut task = row.into_task()?;
            task.priority = task.priority.saturating_add(RETRY_PRIORITY_BOOST);
            Ok(task)
        })
        .collect()
}

/// Why a job's retry queued nothing: unknown, still running, or nothing failed.
async fn why_job_not_retried(tx: &mut Tx, job_id: i64) -> StoreError {
    let state = on_tx!(tx, c => sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(c)
        .await);
    let state = match state {
        Ok(Some(s)) => s,
        Ok(None) => return StoreError::NotFound(Missing::Job(job_id)),
        Err(e) => return e.into(),
    };
    let unfinished = on_tx!(tx, c => sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND state IN ('queued', 'running')",
    )
    .bind(job_id)
    .fetch_one(c)
    .await);
    match unfinished {
        Ok(n) if n > 0 => StoreError::Conflict(format!(
            "job {job_id} is still running ({n} task(s) queued or running); retry it once it has \
             finished, or retry one failed task of it with `testfleet retry --task ID`"
        )),
        Ok(_) => {
            let how = match state.parse::<JobState>() {
                Ok(JobState::Passed) => "every task passed".to_owned(),
                Ok(JobState::Cancelled) => "it was cancelled before any task failed".to_owned(),
                _ => format!("it is {state}"),
            };
            StoreError::Conflict(format!("job {job_id} has no failed task to retry: {how}"))
        }
        Err(e) => e.into(),
    }
}

/// Why a task's retry queued nothing: unknown, or not failed.
async fn why_task_not_retried(tx: &mut Tx, task_id: i64) -> StoreError {
    let state = on_tx!(tx, c => sqlx::query_scalar::<_, String>("SELECT state FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_optional(c)
        .await);
    match state {
        Ok(None) => StoreError::NotFound(Missing::Task(task_id)),
        Ok(Some(s)) => {
            let how = match s.parse::<TaskState>() {
                Ok(TaskState::Queued) => "is queued, waiting for an agent".to_owned(),
                Ok(TaskState::Running) => "is still running".to_owned(),
                Ok(TaskState::Passed) => "passed".to_owned(),
                Ok(TaskState::Cancelled) => "was cancelled".to_owned(),
                _ => format!("is {s}"),
            };
            StoreError::Conflict(format!(
                "task {task_id} {how}; only a failed task can be retried"
            ))
        }
        Err(e) => e.into(),
    }
}
