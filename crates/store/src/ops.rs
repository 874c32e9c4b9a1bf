//! The store's operations, one function per state change (graphile-worker's
//! shape): submit, claim, stage, finish, cancel, logs, agents.

use serde_json::Value;
use sqlx::Row;
use testfleet_core::job::{JobSpec, TaskSpec};
use testfleet_core::state::{AfterAttempt, RetryUse, after_attempt};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{AttemptOutcome, JobState, LabelSet, Requirements, Stage, TaskState};
use testfleet_wire::protocol::{WorkItem, WorkOrigin};
use testfleet_wire::results::Results;

use sqlx::{Sqlite, Transaction};

use crate::batch::{FinishArgs, JobCache, WriteOp};
use crate::{Result, Store, StoreError};

/// How much a retry's priority is raised so that stragglers go first.
pub const RETRY_PRIORITY_BOOST: i32 = 100;

/// A task to insert with its job.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub name: String,
    pub spec: TaskSpec,
    pub priority: i32,
    pub pinned_agent: Option<String>,
}

/// A task waiting for an agent, as the scheduler indexes it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedTask {
    pub id: i64,
    pub job_id: i64,
    pub queue: String,
    pub priority: i32,
    pub pinned_agent: Option<String>,
    pub requires: Requirements,
    /// The agent of the previous failed attempt; a retry prefers another.
    pub last_agent: Option<String>,
    pub queued_at: UnixMillis,
    /// Job name and task name: shared by repeated submissions, so runtime
    /// history follows it.
    pub task_key: String,
    /// Mean runtime of this task key so far (longest-first ordering).
    pub expected_ms: Option<f64>,
}

/// Runtime history of one task key.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStats {
    pub runs: i64,
    pub mean_ms: f64,
    pub p95_ms: f64,
}

/// How many recent durations a task key keeps.
const HISTORY: usize = 50;

/// The task key of a task: pinned fan-out copies (`name@host`) share one.
pub fn task_key(job_name: &str, task_name: &str) -> String {
    format!("{job_name}/{task_name}")
}

/// An attempt that has been handed to an agent and has not finished.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningAttempt {
    pub attempt_id: i64,
    pub task_id: i64,
    pub job_id: i64,
    pub agent: String,
    pub integration_id: String,
    pub last_update_ts: Option<UnixMillis>,
    /// The job's fair-share queue.
    pub queue: String,
    pub task_key: String,
    pub started_at: UnixMillis,
}

/// What finishing an attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishEffect {
    /// The task went back to the queue for another attempt.
    Requeued(QueuedTask),
    /// The task is finished.
    TaskFinished {
        task_id: i64,
        job_id: i64,
        state: TaskState,
        job_state: JobState,
    },
    /// The attempt was already finished or superseded; nothing changed.
    Stale,
}

/// A claimed task: the new attempt and the work item to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub attempt: RunningAttempt,
    pub work: WorkItem,
    /// The task's admin-set runtime limit.
    pub max_runtime: Option<std::time::Duration>,
    /// The task key's runtime history when the claim committed.
    pub history: Option<TaskStats>,
}

impl Store {
    /// Stores a validated job and its tasks in one transaction; returns the job id
    /// and the queued tasks.
    pub async fn submit_job(
        &self,
        spec: &JobSpec,
        tasks: Vec<NewTask>,
        now: UnixMillis,
    ) -> Result<(i64, Vec<QueuedTask>)> {
        let mut tx = self.writer.begin().await?;
        let job_id: i64 = sqlx::query(
            "INSERT INTO jobs (name, queue, priority, spec, state, created_at, integration_id)
             VALUES (?, ?, ?, ?, 'queued', ?, ?) RETURNING id",
        )
        .bind(&spec.name)
        .bind(&spec.queue)
        .bind(spec.priority)
        .bind(serde_json::to_string(spec)?)
        .bind(now)
        .bind(spec.integration.as_ref().map(|i| i.id.clone()))
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        // Runtime history of every task key of the job, in one query.
        let keys: Vec<String> = tasks
            .iter()
            .map(|t| task_key(&spec.name, &t.spec.name))
            .collect();
        let expected: std::collections::HashMap<String, f64> = sqlx::query(
            "SELECT task_key, mean_ms FROM task_stats
             WHERE task_key IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&keys)?)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<f64, _>(1)))
        .collect();
        let mut queued = Vec::with_capacity(tasks.len());
        // Multi-row inserts: a job of thousands of tasks is a few statements.
        // SQLite numbers the rows of one INSERT in VALUES order (rowid is
        // max + 1 each), so sorted ids line up with the tasks.
        let mut tasks = tasks.into_iter().zip(keys).peekable();
        while tasks.peek().is_some() {
            let chunk: Vec<(NewTask, String)> = tasks.by_ref().take(1000).collect();
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO tasks (job_id, name, spec, priority, pinned_agent, state, queued_at, updated_at, task_key) ",
            );
            let mut specs = Vec::with_capacity(chunk.len());
            for (task, _) in &chunk {
                specs.push(serde_json::to_string(&task.spec)?);
            }
            insert.push_values(
                chunk.iter().zip(&specs),
                |mut row, ((task, key), spec_json)| {
                    row.push_bind(job_id)
                        .push_bind(task.name.clone())
                        .push_bind(spec_json.clone())
                        .push_bind(task.priority)
                        .push_bind(task.pinned_agent.clone())
                        .push_bind("queued")
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(key.clone());
                },
            );
            insert.push(" RETURNING id");
            let mut ids: Vec<i64> = insert
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            ids.sort_unstable();
            if ids.len() != chunk.len() {
                return Err(StoreError::Corrupt(format!(
                    "inserted {} tasks, expected {}",
                    ids.len(),
                    chunk.len()
                )));
            }
            for (id, (task, key)) in ids.into_iter().zip(chunk) {
                queued.push(QueuedTask {
                    id,
                    job_id,
                    queue: spec.queue.clone(),
                    priority: task.priority,
                    pinned_agent: task.pinned_agent,
                    requires: task.spec.requires,
                    last_agent: None,
                    queued_at: now,
                    expected_ms: expected.get(&key).copied(),
                    task_key: key,
                });
            }
        }
        tx.commit().await?;
        Ok((job_id, queued))
    }

    /// Every queued task, for the scheduler's index at start-up.
    pub async fn queued_tasks(&self) -> Result<Vec<QueuedTask>> {
        let rows = sqlx::query(
            "SELECT t.id, t.job_id, j.queue, t.priority, t.pinned_agent, t.spec, t.last_agent, t.queued_at,
                    t.task_key, s.mean_ms
             FROM tasks t JOIN jobs j ON j.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key
             WHERE t.state = 'queued' ORDER BY t.id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let spec: TaskSpec = serde_json::from_str(r.get::<&str, _>(5))?;
                Ok(QueuedTask {
                    id: r.get(0),
                    job_id: r.get(1),
                    queue: r.get(2),
                    priority: r.get(3),
                    pinned_agent: r.get(4),
                    requires: spec.requires,
                    last_agent: r.get(6),
                    queued_at: r.get(7),
                    task_key: r.get(8),
                    expected_ms: r.get(9),
                })
            })
            .collect()
    }

    /// Every attempt handed out and not finished, for re-attaching agents after a restart.
    pub async fn running_attempts(&self) -> Result<Vec<RunningAttempt>> {
        let rows = sqlx::query(
            "SELECT a.id, a.task_id, t.job_id, a.agent, COALESCE(j.integration_id, 'tf-' || j.id), a.last_update_ts,
                    j.queue, t.task_key, a.started_at
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             WHERE a.outcome IS NULL ORDER BY a.id",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| RunningAttempt {
                attempt_id: r.get(0),
                task_id: r.get(1),
                job_id: r.get(2),
                agent: r.get(3),
                integration_id: r.get(4),
                last_update_ts: r.get(5),
                queue: r.get(6),
                task_key: r.get(7),
                started_at: r.get(8),
            })
            .collect())
    }

    /// Starts an attempt of a queued task on `agent`. Returns `None` when the
    /// task is no longer queued (cancelled meanwhile).
    pub async fn claim(
        &self,
        task_id: i64,
        agent: &str,
        now: UnixMillis,
    ) -> Result<Option<Claimed>> {
        self.batcher
            .run(WriteOp::Claim {
                task_id,
                agent: agent.to_owned(),
                now,
            })
            .await?
            .into_claimed()
    }

    /// The work item of a running attempt (for `queryWork` and re-sends).
    pub async fn work_item_for_task(
        &self,
        task_id: i64,
        attempt_id: Option<i64>,
    ) -> Result<WorkItem> {
        let row = sqlx::query(
            "SELECT t.job_id, t.name, t.spec, j.spec, j.created_at FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?",
        )
        .bind(task_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
        let task: TaskSpec = serde_json::from_str(row.get::<&str, _>(2))?;
        let job: JobSpec = serde_json::from_str(row.get::<&str, _>(3))?;
        let mut item = work_item(
            &job,
            row.get(0),
            row.get(4),
            task_id,
            row.get::<&str, _>(1),
            &task,
            0,
        );
        item.attempt_id = attempt_id;
        Ok(item)
    }

    /// Ends an attempt and moves its task on (retry or finish). Fenced: an
    /// attempt that already ended, or is no longer its task's current one,
    /// changes nothing.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one column of the finished attempt"
    )]
    pub async fn finish_attempt(
        &self,
        attempt_id: i64,
        by_agent: Option<&str>,
        outcome: AttemptOutcome,
        reason: Option<&str>,
        reason_data: Option<&Value>,
        results: Option<&[Results]>,
        stage: Option<Stage>,
        now: UnixMillis,
    ) -> Result<FinishEffect> {
        self.batcher
            .run(WriteOp::Finish(FinishArgs {
                attempt_id,
                by_agent: by_agent.map(str::to_owned),
                outcome,
                reason: reason.map(str::to_owned),
                reason_data: reason_data.cloned(),
                results: results.map(<[Results]>::to_vec),
                stage,
                now,
            }))
            .await?
            .into_finished()
    }

    /// Puts a failed task back in the queue because its failure matched a
    /// known-failure rule. Returns `None` when the task is not failed or has
    /// used `limit` re-triggers already.
    pub async fn retrigger(
        &self,
        task_id: i64,
        rule: &str,
        limit: u32,
        now: UnixMillis,
    ) -> Result<Option<QueuedTask>> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE tasks SET state = 'queued', current_attempt = NULL, retriggers = retriggers + 1,
             detail_message = ?, queued_at = ?, updated_at = ?
             WHERE id = ? AND state = 'failed' AND retriggers < ?",
        )
        .bind(format!("re-triggered: known failure `{rule}`"))
        .bind(now)
        .bind(now)
        .bind(task_id)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT t.job_id, j.queue, t.priority, t.pinned_agent, t.spec, t.last_agent, t.task_key, s.mean_ms
             FROM tasks t JOIN jobs j ON j.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key WHERE t.id = ?",
        )
        .bind(task_id)
        .fetch_one(&mut *tx)
        .await?;
        let job_id: i64 = row.get(0);
        sqlx::query("UPDATE jobs SET state = 'running', finished_at = NULL WHERE id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        let spec: TaskSpec = serde_json::from_str(row.get::<&str, _>(4))?;
        tx.commit().await?;
        Ok(Some(QueuedTask {
            id: task_id,
            job_id,
            queue: row.get(1),
            priority: row.get::<i32, _>(2).saturating_add(RETRY_PRIORITY_BOOST),
            pinned_agent: row.get(3),
            requires: spec.requires,
            last_agent: row.get(5),
            queued_at: now,
            task_key: row.get(6),
            expected_ms: row.get(7),
        }))
    }

    /// The last `max` bytes of an attempt's log.
    pub async fn attempt_log_tail(&self, attempt_id: i64, max: usize) -> Result<String> {
        let rows = sqlx::query(
            "SELECT data FROM log_chunks WHERE attempt_id = ? ORDER BY offset DESC LIMIT 64",
        )
        .bind(attempt_id)
        .fetch_all(&self.reader)
        .await?;
        let mut parts: Vec<String> = Vec::new();
        let mut size = 0;
        for r in rows {
            let data: String = r.get(0);
            size += data.len();
            parts.push(data);
            if size >= max {
                break;
            }
        }
        parts.reverse();
        Ok(parts.concat())
    }

    /// The runtime history of a task key.
    pub async fn task_stats(&self, key: &str) -> Result<Option<TaskStats>> {
        Ok(
            sqlx::query("SELECT runs, mean_ms, p95_ms FROM task_stats WHERE task_key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?
                .map(|r| TaskStats {
                    runs: r.get(0),
                    mean_ms: r.get(1),
                    p95_ms: r.get(2),
                }),
        )
    }

    /// Cancels a job: queued tasks end at once, running attempts are marked
    /// cancelled and returned so their agents can be told to stop.
    pub async fn cancel_job(&self, job_id: i64, now: UnixMillis) -> Result<Vec<RunningAttempt>> {
        let mut tx = self.writer.begin().await?;
        let exists = sqlx::query("SELECT id FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("job {job_id}")));
        }
        let running = sqlx::query(
            "SELECT a.id, a.task_id, a.agent, COALESCE(j.integration_id, 'tf-' || j.id), a.last_update_ts,
                    j.queue, t.task_key, a.started_at
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             WHERE t.job_id = ? AND a.outcome IS NULL",
        )
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE attempts SET outcome = 'cancelled', reason = 'cancelled by user', finished_at = ?
             WHERE outcome IS NULL AND task_id IN (SELECT id FROM tasks WHERE job_id = ?)",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'cancelled', outcome = 'cancelled', detail_message = 'cancelled by user', updated_at = ?
             WHERE job_id = ? AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        refresh_job_state(&mut tx, job_id, None, now).await?;
        tx.commit().await?;
        Ok(running
            .iter()
            .map(|r| RunningAttempt {
                attempt_id: r.get(0),
                task_id: r.get(1),
                job_id,
                agent: r.get(2),
                integration_id: r.get(3),
                last_update_ts: r.get(4),
                queue: r.get(5),
                task_key: r.get(6),
                started_at: r.get(7),
            })
            .collect())
    }

    /// Stores a chunk of an attempt's log; a chunk re-sent after a reconnect
    /// (same offset) is stored once.
    /// Only the attempt's own agent may write to it; returns false otherwise.
    pub async fn append_log(
        &self,
        attempt_id: i64,
        agent: &str,
        offset: u64,
        data: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO log_chunks (attempt_id, offset, data)
             SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM attempts WHERE id = ? AND agent = ?)",
        )
        .bind(attempt_id)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(data)
        .bind(attempt_id)
        .bind(agent)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an agent's connection and labels.
    pub async fn agent_connected(
        &self,
        hostname: &str,
        labels: &LabelSet,
        machine: Option<&testfleet_wire::protocol::MachineInfo>,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (hostname, labels, machine, first_seen, last_connected, retired) VALUES (?, ?, ?, ?, ?, 0)
             ON CONFLICT (hostname) DO UPDATE SET labels = excluded.labels, machine = excluded.machine,
             last_connected = excluded.last_connected, retired = 0",
        )
        .bind(hostname)
        .bind(serde_json::to_string(labels)?)
        .bind(machine.map(serde_json::to_string).transpose()?)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Retires an agent (it disconnected with reason `shutdown`): no more
    /// fan-out work is queued for it.
    pub async fn retire_agent(&self, hostname: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET retired = 1 WHERE hostname = ?")
            .bind(hostname)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Agents seen since `since` and not retired, with their labels (fan-out targets).
    pub async fn agents_seen_since(&self, since: UnixMillis) -> Result<Vec<(String, LabelSet)>> {
        let rows = sqlx::query("SELECT hostname, labels FROM agents WHERE retired = 0 AND last_connected >= ? ORDER BY hostname")
            .bind(since)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<String, _>(0),
                    serde_json::from_str(r.get::<&str, _>(1))?,
                ))
            })
            .collect()
    }
}

/// [`Store::claim`] inside the batch's transaction.
pub(crate) async fn claim_in(
    tx: &mut Transaction<'_, Sqlite>,
    jobs: &JobCache,
    task_id: i64,
    agent: &str,
    now: UnixMillis,
) -> Result<Option<Claimed>> {
    // One read brings the task, its job's state and the task key's history;
    // the job's spec (large: it lists every task) comes from the cache.
    let Some(row) = sqlx::query(
        "SELECT t.job_id, t.name, t.spec, t.attempts, j.state, j.created_at, j.queue, t.task_key,
                s.runs, s.mean_ms, s.p95_ms
         FROM tasks t JOIN jobs j ON j.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key
         WHERE t.id = ? AND t.state = 'queued'",
    )
    .bind(task_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let job_id: i64 = row.get(0);
    let task_name: String = row.get(1);
    let task: TaskSpec = serde_json::from_str(row.get::<&str, _>(2))?;
    let number: i64 = row.get::<i64, _>(3) + 1;
    let job_state: String = row.get(4);
    let created_at: i64 = row.get(5);
    let queue: String = row.get(6);
    let task_key: String = row.get(7);
    let history = row.get::<Option<i64>, _>(8).map(|runs| TaskStats {
        runs,
        mean_ms: row.get(9),
        p95_ms: row.get(10),
    });
    let job = jobs.get_or_load(tx, job_id).await?;
    let attempt_id: i64 = sqlx::query(
        "INSERT INTO attempts (task_id, number, agent, stage, started_at) VALUES (?, ?, ?, 'new', ?) RETURNING id",
    )
    .bind(task_id)
    .bind(number)
    .bind(agent)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?
    .get(0);
    sqlx::query(
        "UPDATE tasks SET state = 'running', stage = 'new', agent = ?, current_attempt = ?, attempts = ?,
         detail_message = NULL, updated_at = ? WHERE id = ?",
    )
    .bind(agent)
    .bind(attempt_id)
    .bind(number)
    .bind(now)
    .bind(task_id)
    .execute(&mut **tx)
    .await?;
    if job_state == "queued" {
        sqlx::query("UPDATE jobs SET state = 'running' WHERE id = ?")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
    }
    let work = work_item(
        &job, job_id, created_at, task_id, &task_name, &task, attempt_id,
    );
    Ok(Some(Claimed {
        max_runtime: task.max_runtime.map(|d| d.0),
        history,
        attempt: RunningAttempt {
            attempt_id,
            task_id,
            job_id,
            agent: agent.to_owned(),
            integration_id: work.integration_id.clone(),
            last_update_ts: None,
            queue,
            task_key,
            started_at: now,
        },
        work,
    }))
}

/// [`Store::finish_attempt`] inside the batch's transaction.
pub(crate) async fn finish_in(
    tx: &mut Transaction<'_, Sqlite>,
    args: &FinishArgs,
) -> Result<FinishEffect> {
    let FinishArgs {
        attempt_id,
        by_agent,
        outcome,
        reason,
        reason_data,
        results,
        stage,
        now,
    } = args;
    let (attempt_id, outcome, stage, now) = (*attempt_id, *outcome, *stage, *now);
    let (by_agent, reason, reason_data, results) = (
        by_agent.as_deref(),
        reason.as_deref(),
        reason_data.as_ref(),
        results.as_deref(),
    );
    let Some(row) = sqlx::query(
        "SELECT a.task_id, t.job_id, t.spec, t.test_failures, t.infra_failures, j.queue, t.priority,
                t.current_attempt, a.agent, t.state, t.task_key, a.started_at, j.state, t.pinned_agent
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         WHERE a.id = ? AND a.outcome IS NULL",
    )
    .bind(attempt_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(FinishEffect::Stale);
    };
    let task_id: i64 = row.get(0);
    let job_id: i64 = row.get(1);
    let spec: TaskSpec = serde_json::from_str(row.get::<&str, _>(2))?;
    let test_failures: i64 = row.get(3);
    let infra_failures: i64 = row.get(4);
    let queue: String = row.get(5);
    let priority: i32 = row.get(6);
    let current: Option<i64> = row.get(7);
    let agent: String = row.get(8);
    let task_state: String = row.get(9);
    let key: String = row.get(10);
    let started_at: i64 = row.get(11);
    let job_state_before: String = row.get(12);
    let pinned_agent: Option<String> = row.get(13);
    if by_agent.is_some_and(|a| a != agent) {
        // Only the agent that runs an attempt may end it.
        return Ok(FinishEffect::Stale);
    }
    // Runs that ended on their own teach the runtime history; stopped,
    // lost or cancelled ones would only teach a lower bound.
    if matches!(
        outcome,
        AttemptOutcome::Passed | AttemptOutcome::Failed | AttemptOutcome::Flaky
    ) {
        record_runtime(tx, &key, (now - started_at).max(0)).await?;
    }

    let results_json = results.map(serde_json::to_string).transpose()?;
    sqlx::query(
        "UPDATE attempts SET outcome = ?, reason = ?, reason_data = ?, results = COALESCE(?, results),
         stage = COALESCE(?, stage), finished_at = ? WHERE id = ?",
    )
    .bind(outcome.as_str())
    .bind(reason)
    .bind(reason_data.map(Value::to_string))
    .bind(results_json)
    .bind(stage.map(Stage::as_str))
    .bind(now)
    .bind(attempt_id)
    .execute(&mut **tx)
    .await?;
    // The exporters' outbox and the ResultsDB view commit with the results.
    if let Some(results) = results {
        crate::outbox::record_finished(tx, attempt_id, results, now).await?;
    }

    if current != Some(attempt_id) || task_state != "running" {
        // The task moved on (cancelled, or re-queued after a lost agent):
        // this attempt's outcome is recorded but decides nothing.
        return Ok(FinishEffect::Stale);
    }

    let decision = after_attempt(
        outcome,
        RetryUse {
            test_budget: spec.retries.tests,
            infra_budget: spec.retries.infra,
            test_failures_so_far: u32::try_from(test_failures).unwrap_or(u32::MAX),
            infra_failures_so_far: u32::try_from(infra_failures).unwrap_or(u32::MAX),
        },
    );
    let (test_inc, infra_inc) = match outcome {
        o if o.is_success() || o == AttemptOutcome::Cancelled => (0, 0),
        o if o.is_infra() => (0, 1),
        _ => (1, 0),
    };
    let effect = match decision {
        AfterAttempt::Retry => {
            let boosted = priority.saturating_add(RETRY_PRIORITY_BOOST);
            sqlx::query(
                "UPDATE tasks SET state = 'queued', outcome = ?, detail_message = ?, current_attempt = NULL,
                 test_failures = test_failures + ?, infra_failures = infra_failures + ?, priority = ?,
                 last_agent = ?, queued_at = ?, updated_at = ? WHERE id = ?",
            )
            .bind(outcome.as_str())
            .bind(reason)
            .bind(test_inc)
            .bind(infra_inc)
            .bind(boosted)
            .bind(&agent)
            .bind(now)
            .bind(now)
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
            FinishEffect::Requeued(QueuedTask {
                id: task_id,
                job_id,
                queue,
                priority: boosted,
                pinned_agent: None,
                requires: spec.requires,
                last_agent: Some(agent),
                queued_at: now,
                expected_ms: sqlx::query("SELECT mean_ms FROM task_stats WHERE task_key = ?")
                    .bind(&key)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.get::<f64, _>(0)),
                task_key: key,
            })
        }
        AfterAttempt::Finish { state, flaky } => {
            let shown = if flaky && outcome == AttemptOutcome::Passed {
                AttemptOutcome::Flaky
            } else {
                outcome
            };
            sqlx::query(
                "UPDATE tasks SET state = ?, outcome = ?, detail_message = ?,
                 test_failures = test_failures + ?, infra_failures = infra_failures + ?, flaky = ?,
                 updated_at = ? WHERE id = ?",
            )
            .bind(state.as_str())
            .bind(shown.as_str())
            .bind(reason)
            .bind(test_inc)
            .bind(infra_inc)
            .bind(flaky)
            .bind(now)
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
            let job_state = refresh_job_state(tx, job_id, Some(&job_state_before), now).await?;
            FinishEffect::TaskFinished {
                task_id,
                job_id,
                state,
                job_state,
            }
        }
    };
    // A pinned (each_agent) task keeps its pin on retry: it is that agent's work.
    let effect = match effect {
        FinishEffect::Requeued(mut q) => {
            q.pinned_agent = pinned_agent;
            FinishEffect::Requeued(q)
        }
        other => other,
    };
    Ok(effect)
}

/// Adds one duration to a task key's history (the newest 50 are kept).
async fn record_runtime(
    tx: &mut Transaction<'_, Sqlite>,
    key: &str,
    duration_ms: i64,
) -> Result<()> {
    let recent: Vec<f64> = match sqlx::query("SELECT recent FROM task_stats WHERE task_key = ?")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?
    {
        Some(r) => serde_json::from_str(r.get::<&str, _>(0))?,
        None => Vec::new(),
    };
    let mut recent = recent;
    recent.push(duration_ms as f64);
    if recent.len() > HISTORY {
        recent.drain(..recent.len() - HISTORY);
    }
    let stats = testfleet_core::stats::Summary::of(&recent);
    sqlx::query(
        "INSERT INTO task_stats (task_key, runs, mean_ms, p95_ms, recent) VALUES (?, 1, ?, ?, ?)
         ON CONFLICT (task_key) DO UPDATE SET runs = runs + 1, mean_ms = excluded.mean_ms,
         p95_ms = excluded.p95_ms, recent = excluded.recent",
    )
    .bind(key)
    .bind(stats.mean)
    .bind(stats.p95)
    .bind(serde_json::to_string(&recent)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Recomputes a job's state from its tasks and stores it.
async fn refresh_job_state(
    tx: &mut Transaction<'_, Sqlite>,
    job_id: i64,
    stored: Option<&str>,
    now: UnixMillis,
) -> Result<JobState> {
    // DISTINCT over the (job_id, state) index: a handful of rows, however
    // many tasks the job has.
    let states = sqlx::query("SELECT DISTINCT state FROM tasks WHERE job_id = ?")
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?;
    let states = states
        .iter()
        .map(|r| {
            r.get::<&str, _>(0)
                .parse::<TaskState>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let job_state = JobState::from_tasks(states);
    if !job_state.is_terminal() && stored == Some(job_state.as_str()) {
        // Most task ends leave a running job running.
        return Ok(job_state);
    }
    sqlx::query(
        "UPDATE jobs SET state = ?, finished_at = CASE WHEN ? THEN ? ELSE NULL END WHERE id = ?",
    )
    .bind(job_state.as_str())
    .bind(job_state.is_terminal())
    .bind(now)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(job_state)
}

/// Builds the Qt work item (plus testfleet's keys) for a stored task.
fn work_item(
    job: &JobSpec,
    job_id: i64,
    created_at: UnixMillis,
    task_id: i64,
    task_name: &str,
    task: &TaskSpec,
    attempt_id: i64,
) -> WorkItem {
    let origin = WorkOrigin {
        job_id: Some(job_id),
        task_id: Some(task_id),
        attempt_id: (attempt_id > 0).then_some(attempt_id),
        integration_id: format!("tf-{job_id}"),
        timestamp: created_at,
    };
    let inputs = job
        .task_inputs(task)
        .map(|i| i.strip_prefix("sha256:").unwrap_or(i).to_owned());
    WorkItem::for_task(job, task, task_name, origin, inputs)
}
