//! The jobs list and a job's tasks a page at a time.
//!
//! A list carries counts, not tasks. A finished job's counts are stored on
//! its row (migrations sqlite/0016, postgres/0004) by the transaction that
//! makes it finished, under the job's row lock ([`count_job_in`],
//! [`store_job_state`], called by `attempts::refresh_job_state`), and
//! cleared by any transaction that queues a task of it again; the list reads
//! them from there. Only the listed jobs still queued or running are
//! counted live: one `GROUP BY` over their tasks, answered from the index
//! `tasks_by_job_counts` (job, state, outcome, attempts) without reading the
//! tasks' rows. Tasks are paged by id through `tasks_by_job_id` (job, id).

use std::collections::HashMap;
use std::fmt::Write;

use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{AttemptOutcome, JobState, TaskState};
use testfleet_wire::api::{JobSummary, MAX_TASK_PAGE, OutcomeCounts, TaskPage, TaskStateCounts};

use super::{JobRow, TASK_COLUMNS, TaskRow, parse, time_text};
use crate::db::{Tx, on_pool, on_tx};
use crate::{Missing, Result, Store, StoreError};

/// The columns of [`JobRow`] and [`StoredCounts`], for `FROM jobs`.
const LISTED_COLUMNS: &str =
    "id, name, queue, priority, state, created_at, finished_at, integration_id,
     tasks_queued, tasks_running, tasks_passed, tasks_failed, tasks_cancelled,
     outcomes_passed, outcomes_failed, outcomes_flaky, outcomes_timed_out, outcomes_stalled,
     outcomes_crashed, outcomes_infra_error, outcomes_cancelled, attempts_total, tasks_retried";

/// The counts of the tasks that match `filter` (a condition on `job_id`),
/// per job, state and outcome.
fn count_sql(filter: &str) -> String {
    // `CAST(SUM(..))`: PostgreSQL sums BIGINT into NUMERIC.
    format!(
        "SELECT job_id, state, outcome, COUNT(*) AS tasks,
                CAST(SUM(attempts) AS BIGINT) AS attempts,
                COUNT(CASE WHEN attempts > 1 THEN 1 END) AS retried
         FROM tasks WHERE {filter}
         GROUP BY job_id, state, outcome"
    )
}

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

/// What the list shows of a job's tasks ([`JobSummary`]'s counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobCounts {
    tasks: TaskStateCounts,
    outcomes: OutcomeCounts,
    attempts: u64,
    retried: u64,
}

impl JobCounts {
    fn add(&mut self, row: &CountRow) -> Result<()> {
        let n = count(row.tasks);
        self.tasks.add(parse::<TaskState>(&row.state)?, n);
        if let Some(outcome) = row.outcome.as_deref() {
            self.outcomes.add(parse::<AttemptOutcome>(outcome)?, n);
        }
        self.attempts += count(row.attempts);
        self.retried += count(row.retried);
        Ok(())
    }

    /// The job's state as these counts tell it.
    pub(crate) fn job_state(&self) -> JobState {
        let t = &self.tasks;
        JobState::from_tasks(
            [
                (TaskState::Queued, t.queued),
                (TaskState::Running, t.running),
                (TaskState::Passed, t.passed),
                (TaskState::Failed, t.failed),
                (TaskState::Cancelled, t.cancelled),
            ]
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(state, _)| state),
        )
    }

    fn apply(self, job: &mut JobSummary) {
        job.tasks = self.tasks;
        job.outcomes = self.outcomes;
        job.attempts = self.attempts;
        job.retried = self.retried;
    }
}

/// The counts a finished job keeps on its row, in the order of the
/// `tasks_queued` … `tasks_retried` columns; all NULL while it is queued or
/// running.
#[derive(sqlx::FromRow)]
struct StoredCounts {
    tasks_queued: Option<i64>,
    tasks_running: Option<i64>,
    tasks_passed: Option<i64>,
    tasks_failed: Option<i64>,
    tasks_cancelled: Option<i64>,
    outcomes_passed: Option<i64>,
    outcomes_failed: Option<i64>,
    outcomes_flaky: Option<i64>,
    outcomes_timed_out: Option<i64>,
    outcomes_stalled: Option<i64>,
    outcomes_crashed: Option<i64>,
    outcomes_infra_error: Option<i64>,
    outcomes_cancelled: Option<i64>,
    attempts_total: Option<i64>,
    tasks_retried: Option<i64>,
}

impl StoredCounts {
    /// The stored counts of job `job_id`; `None` when the job has none (it
    /// is counted live then).
    fn into_counts(self, job_id: i64) -> Result<Option<JobCounts>> {
        let columns = [
            ("tasks_queued", self.tasks_queued),
            ("tasks_running", self.tasks_running),
            ("tasks_passed", self.tasks_passed),
            ("tasks_failed", self.tasks_failed),
            ("tasks_cancelled", self.tasks_cancelled),
            ("outcomes_passed", self.outcomes_passed),
            ("outcomes_failed", self.outcomes_failed),
            ("outcomes_flaky", self.outcomes_flaky),
            ("outcomes_timed_out", self.outcomes_timed_out),
            ("outcomes_stalled", self.outcomes_stalled),
            ("outcomes_crashed", self.outcomes_crashed),
            ("outcomes_infra_error", self.outcomes_infra_error),
            ("outcomes_cancelled", self.outcomes_cancelled),
            ("attempts_total", self.attempts_total),
            ("tasks_retried", self.tasks_retried),
        ];
        // Written and cleared together; a row with some missing (edited by
        // hand) is counted live rather than shown incomplete.
        if columns.iter().any(|(_, v)| v.is_none()) {
            return Ok(None);
        }
        let mut n = [0_u64; 15];
        for (slot, (name, value)) in n.iter_mut().zip(columns) {
            *slot = value.and_then(|v| u64::try_from(v).ok()).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job {job_id} has a stored count {name} of {value:?}, not a count"
                ))
            })?;
        }
        let [
            q,
            r,
            p,
            f,
            c,
            op,
            of,
            ofl,
            ot,
            os,
            ocr,
            oi,
            oc,
            attempts,
            retried,
        ] = n;
        Ok(Some(JobCounts {
            tasks: TaskStateCounts {
                total: q + r + p + f + c,
                queued: q,
                running: r,
                passed: p,
                failed: f,
                cancelled: c,
            },
            outcomes: OutcomeCounts {
                passed: op,
                failed: of,
                flaky: ofl,
                timed_out: ot,
                stalled: os,
                crashed: ocr,
                infra_error: oi,
                cancelled: oc,
            },
            attempts,
            retried,
        }))
    }
}

/// A listed job with what it stores of its counts.
#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    job: JobRow,
    #[sqlx(flatten)]
    counts: StoredCounts,
}

impl ListedRow {
    /// The job's summary, and whether its tasks are still to be counted.
    fn into_summary(self) -> Result<(JobSummary, bool)> {
        let id = self.job.id;
        let mut job = self.job.into_summary()?;
        match self.counts.into_counts(id)? {
            Some(counts) => {
                counts.apply(&mut job);
                Ok((job, false))
            }
            None => Ok((job, true)),
        }
    }
}

/// Counts the tasks of job `job_id` inside `tx` (the same `GROUP BY` as the
/// list's live count). `attempts::refresh_job_state` calls it under the
/// job's row lock when the job has finished, and stores the result with
/// [`store_job_state`] in the same transaction.
pub(crate) async fn count_job_in(tx: &mut Tx, job_id: i64) -> Result<JobCounts> {
    let rows = on_tx!(tx, c => sqlx::query_as::<_, CountRow>(sqlx::AssertSqlSafe(count_sql("job_id = $1")))
        .bind(job_id)
        .fetch_all(c)
        .await)?;
    let mut counts = JobCounts::default();
    for row in &rows {
        counts.add(row)?;
    }
    Ok(counts)
}

/// Stores a job's state, when it finished and its counts: `Some` for a
/// finished job, `None` (the columns cleared, the list counts it live)
/// while it is queued or running.
pub(crate) async fn store_job_state(
    tx: &mut Tx,
    job_id: i64,
    state: JobState,
    finished_at: Option<UnixMillis>,
    counts: Option<&JobCounts>,
) -> Result<()> {
    let n = |f: fn(&JobCounts) -> u64| counts.map(|c| i64::try_from(f(c)).unwrap_or(i64::MAX));
    on_tx!(tx, c => sqlx::query(
        "UPDATE jobs SET state = $1, finished_at = $2,
                tasks_queued = $3, tasks_running = $4, tasks_passed = $5, tasks_failed = $6,
                tasks_cancelled = $7, outcomes_passed = $8, outcomes_failed = $9,
                outcomes_flaky = $10, outcomes_timed_out = $11, outcomes_stalled = $12,
                outcomes_crashed = $13, outcomes_infra_error = $14, outcomes_cancelled = $15,
                attempts_total = $16, tasks_retried = $17
         WHERE id = $18",
    )
    .bind(state.as_str())
    .bind(finished_at)
    .bind(n(|c| c.tasks.queued))
    .bind(n(|c| c.tasks.running))
    .bind(n(|c| c.tasks.passed))
    .bind(n(|c| c.tasks.failed))
    .bind(n(|c| c.tasks.cancelled))
    .bind(n(|c| c.outcomes.passed))
    .bind(n(|c| c.outcomes.failed))
    .bind(n(|c| c.outcomes.flaky))
    .bind(n(|c| c.outcomes.timed_out))
    .bind(n(|c| c.outcomes.stalled))
    .bind(n(|c| c.outcomes.crashed))
    .bind(n(|c| c.outcomes.infra_error))
    .bind(n(|c| c.outcomes.cancelled))
    .bind(n(|c| c.attempts))
    .bind(n(|c| c.retried))
    .bind(job_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
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
    /// with its tasks counted per state and per outcome: a finished job's
    /// counts as it stored them, the others' counted now.
    pub async fn jobs(&self, limit: i64, state: Option<JobState>) -> Result<Vec<JobSummary>> {
        let sql = format!(
            "SELECT {LISTED_COLUMNS}
             FROM jobs WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2"
        );
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, ListedRow>(sqlx::AssertSqlSafe(sql))
            .bind(state.map(JobState::as_str))
            .bind(limit)
            .fetch_all(p)
            .await)?;
        self.summaries(rows).await
    }

    /// One job with its tasks counted, as [`Store::jobs`] lists it.
    pub async fn job_summary(&self, job_id: i64) -> Result<JobSummary> {
        let sql = format!("SELECT {LISTED_COLUMNS} FROM jobs WHERE id = $1");
        let row =
            on_pool!(&self.reader, p => sqlx::query_as::<_, ListedRow>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_optional(p)
            .await)?
            .ok_or(StoreError::NotFound(Missing::Job(job_id)))?;
        let mut jobs = self.summaries(vec![row]).await?;
        jobs.pop().ok_or(StoreError::NotFound(Missing::Job(job_id)))
    }

    /// The rows' summaries: stored counts where the job has them, the
    /// others' counted in one `GROUP BY`.
    async fn summaries(&self, rows: Vec<ListedRow>) -> Result<Vec<JobSummary>> {
        let mut jobs = Vec::with_capacity(rows.len());
        let mut live = Vec::new();
        for row in rows {
            let (job, uncounted) = row.into_summary()?;
            if uncounted {
                live.push(job.id);
            }
            jobs.push(job);
        }
        self.count_tasks(&mut jobs, &live).await?;
        Ok(jobs)
    }

    /// Fills in the counts of the jobs of `jobs` whose id is in `live`, in
    /// one `GROUP BY`.
    async fn count_tasks(&self, jobs: &mut [JobSummary], live: &[i64]) -> Result<()> {
        if live.is_empty() {
            return Ok(());
        }
        // The ids are integers read from the database, so listing them in
        // the text is safe; a literal list lets both planners walk the index
        // once per job.
        let mut ids = String::new();
        for (i, id) in live.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(ids, "{sep}{id}");
        }
        let sql = count_sql(&format!("job_id IN ({ids})"));
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, CountRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await)?;
        let mut counts: HashMap<i64, JobCounts> = HashMap::with_capacity(live.len());
        for row in &rows {
            counts.entry(row.job_id).or_default().add(row)?;
        }
        for job in jobs.iter_mut() {
            if let Some(c) = counts.remove(&job.id) {
                c.apply(job);
            }
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
