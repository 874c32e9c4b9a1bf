//! The jobs list and a job's tasks a page at a time.
//!
//! A list carries counts, not tasks: one `GROUP BY` over the listed jobs'
//! tasks, answered from the index `tasks_by_job_counts` (job, state,
//! outcome, attempts) without reading the tasks' rows. Tasks are paged by id
//! through `tasks_by_job_id` (job, id).

use std::collections::HashMap;
use std::fmt::Write;

use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_wire::api::{JobSummary, MAX_TASK_PAGE, OutcomeCounts, TaskPage, TaskStateCounts};

use super::{JobRow, TASK_COLUMNS, TaskRow, parse, time_text};
use crate::db::on_pool;
use crate::{Missing, Result, Store, StoreError};

/// The tasks of one job in one state with one outcome.
#[derive(sqlx::FromRow)]
struct CountRow {
    job_id: i64,
    state: String,
    outcome: Option<String>,
    tasks: i64,
    attempts: i64,
    retried: i64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl JobRow {
    fn into_summary(self) -> Result<JobSummary> {
        Ok(JobSummary {
            id: self.id,
            priority: i32::try_from(self.priority).map_err(|_| {
                StoreError::Corrupt(format!(
                    "job {} has priority {} out of range",
                    self.id, self.priority
                ))
            })?,
            state: parse::<JobState>(&self.state)?,
            created_at: testfleet_core::time_fmt::format_millis(self.created_at),
            finished_at: time_text(self.finished_at),
            name: self.name,
            queue: self.queue,
            integration_id: self.integration_id,
            tasks: TaskStateCounts::default(),
            outcomes: OutcomeCounts::default(),
            attempts: 0,
            retried: 0,
        })
    }
}

impl Store {
    /// The newest jobs first (at most `limit`), in `state` when given, each
    /// with its tasks counted per state and per outcome.
    pub async fn jobs(&self, limit: i64, state: Option<JobState>) -> Result<Vec<JobSummary>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, JobRow>(
            "SELECT id, name, queue, priority, state, created_at, finished_at, integration_id
             FROM jobs WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(state.map(JobState::as_str))
        .bind(limit)
        .fetch_all(p)
        .await)?;
        let mut jobs = rows
            .into_iter()
            .map(JobRow::into_summary)
            .collect::<Result<Vec<_>>>()?;
        self.count_tasks(&mut jobs).await?;
        Ok(jobs)
    }

    /// One job with its tasks counted, as [`Store::jobs`] lists it.
    pub async fn job_summary(&self, job_id: i64) -> Result<JobSummary> {
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, JobRow>(
            "SELECT id, name, queue, priority, state, created_at, finished_at, integration_id
             FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(p)
        .await)?
        .ok_or(StoreError::NotFound(Missing::Job(job_id)))?;
        let mut jobs = vec![row.into_summary()?];
        self.count_tasks(&mut jobs).await?;
        Ok(jobs.remove(0))
    }

    /// Fills in the counts of `jobs` in one `GROUP BY`.
    async fn count_tasks(&self, jobs: &mut [JobSummary]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // The ids are integers read from the database, so listing them in
        // the text is safe; a literal list lets both planners walk the index
        // once per job.
        let mut ids = String::new();
        for (i, j) in jobs.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(ids, "{sep}{}", j.id);
        }
        // `CAST(SUM(..))`: PostgreSQL sums BIGINT into NUMERIC.
        let sql = format!(
            "SELECT job_id, state, outcome, COUNT(*) AS tasks,
                    CAST(SUM(attempts) AS BIGINT) AS attempts,
                    COUNT(CASE WHEN attempts > 1 THEN 1 END) AS retried
             FROM tasks WHERE job_id IN ({ids})
             GROUP BY job_id, state, outcome"
        );
        let counts = on_pool!(&self.reader, p => sqlx::query_as::<_, CountRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await)?;
        let index: HashMap<i64, usize> = jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
        for row in counts {
            let Some(job) = index.get(&row.job_id).and_then(|&i| jobs.get_mut(i)) else {
                continue;
            };
            let n = count(row.tasks);
            job.tasks.add(parse::<TaskState>(&row.state)?, n);
            if let Some(outcome) = row.outcome.as_deref() {
                job.outcomes.add(parse::<AttemptOutcome>(outcome)?, n);
            }
            job.attempts += count(row.attempts);
            job.retried += count(row.retried);
        }
        Ok(())
    }

    /// The tasks of job `job_id` in id order: at most `limit` (clamped to
    /// 1..=[`MAX_TASK_PAGE`]) whose id is greater than `after`.
    pub async fn job_tasks(&self, job_id: i64, after: Option<i64>, limit: i64) -> Result<TaskPage> {
        let limit = limit.clamp(1, i64::from(MAX_TASK_PAGE));
        let total = on_pool!(&self.reader, p => sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE job_id = $1)
             FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(p)
        .await)?
        .ok_or(StoreError::NotFound(Missing::Job(job_id)))?;
        // One more than asked tells whether another page follows.
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.job_id = $1 AND t.id > $2
             ORDER BY t.id LIMIT $3"
        );
        let mut tasks =
            on_pool!(&self.reader, p => sqlx::query_as::<_, TaskRow>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .bind(after.unwrap_or(0))
            .bind(limit + 1)
            .fetch_all(p)
            .await)?
            .into_iter()
            .map(TaskRow::into_view)
            .collect::<Result<Vec<_>>>()?;
        let more = tasks.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_after = if more {
            tasks.last().map(|t| t.id)
        } else {
            None
        };
        Ok(TaskPage {
            job_id,
            total: count(total),
            tasks,
            next_after,
        })
    }
}
