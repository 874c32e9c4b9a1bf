//! The store's operations, one function per state change (graphile-worker's
//! shape): submit, claim, stage, finish, cancel, logs, agents.

use testfleet_core::job::{JobSpec, TaskSpec};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{AttemptOutcome, JobState, LabelSet, Requirements, Stage, TaskState};
use testfleet_wire::protocol::{WorkItem, WorkOrigin};
use testfleet_wire::reason::ReasonData;
use testfleet_wire::results::Results;

use crate::agent_writes::AgentWrite;
use crate::attempts::refresh_job_state;
use crate::batch::{FinishArgs, WriteOp};
use crate::db::{on_pool, on_tx};
use crate::{Missing, Result, Store, StoreError};

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

impl NewTask {
    /// A job's tasks as stored without fan-out: one per task of `spec`,
    /// pinned to no agent, at the task's priority.
    pub fn plain(spec: &JobSpec) -> Vec<NewTask> {
        spec.tasks
            .iter()
            .map(|t| NewTask {
                name: t.name.clone(),
                spec: t.clone(),
                priority: spec.task_priority(t),
                pinned_agent: None,
            })
            .collect()
    }
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskStats {
    pub runs: i64,
    pub mean_ms: f64,
    pub p95_ms: f64,
}

/// The task key of a task: pinned fan-out copies (`name@host`) share one.
pub fn task_key(job_name: &str, task_name: &str) -> String {
    format!("{job_name}/{task_name}")
}

/// An attempt that has been handed to an agent and has not finished.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

/// Narrows a stored integer (BIGINT on PostgreSQL) to an `i32` field.
pub(crate) fn narrow(value: i64) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{value} does not fit in 32 bits")))
}

/// A queued task's row, as the scheduler's index reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct QueuedRow {
    id: i64,
    job_id: i64,
    queue: String,
    priority: i64,
    pinned_agent: Option<String>,
    spec: String,
    last_agent: Option<String>,
    queued_at: i64,
    task_key: String,
    mean_ms: Option<f64>,
}

impl QueuedRow {
    pub(crate) fn into_task(self) -> Result<QueuedTask> {
        let spec: TaskSpec = serde_json::from_str(&self.spec)?;
        Ok(QueuedTask {
            id: self.id,
            job_id: self.job_id,
            queue: self.queue,
            priority: narrow(self.priority)?,
            pinned_agent: self.pinned_agent,
            requires: spec.requires,
            last_agent: self.last_agent,
            queued_at: self.queued_at,
            task_key: self.task_key,
            expected_ms: self.mean_ms,
        })
    }
}

pub(crate) const QUEUED_COLUMNS: &str =
    "t.id, t.job_id, j.queue, t.priority, t.pinned_agent, t.spec, t.last_agent,
     t.queued_at, t.task_key, s.mean_ms
     FROM tasks t JOIN jobs j ON j.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key";

pub(crate) const RUNNING_COLUMNS: &str = "a.id AS attempt_id, a.task_id, t.job_id, a.agent,
     COALESCE(j.integration_id, 'tf-' || CAST(j.id AS TEXT)) AS integration_id, a.last_update_ts,
     j.queue, t.task_key, a.started_at
     FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id";

/// The reaper's query ([`Store::expired_leases`]). The running attempts are
/// read through `attempts_running`, which holds only them: no index names
/// the lease, so a renewal touches no index on PostgreSQL. SQLite is told
/// to use it, as without statistics it scans every attempt ever run.
fn expired_leases_sql(backend: crate::Backend) -> String {
    let source = match backend {
        crate::Backend::Sqlite => RUNNING_COLUMNS.replacen(
            "FROM attempts a ",
            "FROM attempts a INDEXED BY attempts_running ",
            1,
        ),
        crate::Backend::Postgres => RUNNING_COLUMNS.to_owned(),
    };
    format!("SELECT {source} WHERE a.outcome IS NULL AND a.lease_expires_at < $1 ORDER BY a.id")
}

/// A task and its job, for re-building a work item.
#[derive(sqlx::FromRow)]
struct WorkRow {
    job_id: i64,
    name: String,
    spec: String,
    job_spec: String,
    created_at: i64,
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
        let submitted = submit_in(&mut tx, spec, tasks, now).await?;
        tx.commit().await?;
        Ok(submitted)
    }

    /// Settles jobs left `queued` or `running` although every task of theirs
    /// ended (a coordinator killed between a task's end and its job's
    /// update). Returns how many were repaired; run at start-up.
    pub async fn repair_job_states(&self, now: UnixMillis) -> Result<usize> {
        let ids: Vec<i64> = on_pool!(&self.reader, p => sqlx::query_scalar(
            "SELECT j.id FROM jobs j WHERE j.state IN ('queued', 'running')
               AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id)
               AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.state IN ('queued', 'running'))
             ORDER BY j.id",
        )
        .fetch_all(p)
        .await)?;
        for &id in &ids {
            crate::retry_conflicts(|| async {
                let mut tx = self.writer.begin().await?;
                refresh_job_state(&mut tx, id, None, now).await?;
                tx.commit().await
            })
            .await?;
        }
        Ok(ids.len())
    }

    /// Every queued task, for the scheduler's index at start-up.
    pub async fn queued_tasks(&self) -> Result<Vec<QueuedTask>> {
        let sql = format!("SELECT {QUEUED_COLUMNS} WHERE t.state = 'queued' ORDER BY t.id");
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(QueuedRow::into_task).collect()
    }

    /// Every attempt handed out and not finished, for re-attaching agents after a restart.
    pub async fn running_attempts(&self) -> Result<Vec<RunningAttempt>> {
        let sql = format!("SELECT {RUNNING_COLUMNS} WHERE a.outcome IS NULL ORDER BY a.id");
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, RunningAttempt>(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await)?,
        )
    }

    /// Renews the leases of the running attempts of `agents` (connected to
    /// this coordinator) until `until`. Returns how many were renewed.
    pub async fn renew_leases(&self, agents: &[String], until: UnixMillis) -> Result<u64> {
        let mut renewed = 0;
        for chunk in agents.chunks(1000) {
            // On PostgreSQL a renewal skips attempts that a finish holds
            // (they are ending) rather than queueing behind it.
            let lock = match self.writer.backend() {
                crate::Backend::Sqlite => "",
                crate::Backend::Postgres => " ORDER BY id FOR UPDATE SKIP LOCKED",
            };
            renewed += on_pool!(&self.writer, p => {
                let mut q = sqlx::QueryBuilder::new("UPDATE attempts SET lease_expires_at = ");
                q.push_bind(until);
                q.push(" WHERE id IN (SELECT id FROM attempts WHERE outcome IS NULL AND agent IN (");
                let mut list = q.separated(", ");
                for agent in chunk {
                    list.push_bind(agent.clone());
                }
                q.push(")");
                q.push(lock);
                q.push(")");
                q.build().execute(p).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(renewed)
    }

    /// Running attempts whose lease ran out before `now`: no coordinator
    /// sharing this database has heard from their agents within the lease.
    pub async fn expired_leases(&self, now: UnixMillis) -> Result<Vec<RunningAttempt>> {
        let sql = expired_leases_sql(self.reader.backend());
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, RunningAttempt>(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .fetch_all(p)
                .await)?,
        )
    }

    /// Starts an attempt of a queued task on `agent`. Returns `None` when the
    /// task is no longer queued (cancelled, or claimed by another writer).
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
                lease_ms: self.lease_ms.load(std::sync::atomic::Ordering::Relaxed),
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
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, WorkRow>(
            "SELECT t.job_id, t.name, t.spec, j.spec AS job_spec, j.created_at
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1",
        )
        .bind(task_id)
        .fetch_optional(p)
        .await)?
        .ok_or_else(|| StoreError::NotFound(Missing::Task(task_id)))?;
        let task: TaskSpec = serde_json::from_str(&row.spec)?;
        let job: JobSpec = serde_json::from_str(&row.job_spec)?;
        let mut item = work_item(
            &job,
            row.job_id,
            row.created_at,
            task_id,
            &row.name,
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
        reason_data: Option<&ReasonData>,
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
        let detail = format!("re-triggered: known failure `{rule}`");
        let done = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE tasks SET state = 'queued', current_attempt = NULL, retriggers = retriggers + 1,
             detail_message = $1, queued_at = $2, updated_at = $2
             WHERE id = $3 AND state = 'failed' AND retriggers < $4",
        )
        .bind(&detail)
        .bind(now)
        .bind(task_id)
        .bind(i64::from(limit))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Ok(None);
        }
        let sql = format!("SELECT {QUEUED_COLUMNS} WHERE t.id = $1");
        let row = on_tx!(&mut tx, c => sqlx::query_as::<_, QueuedRow>(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_one(c)
            .await)?;
        // The job runs again: its stored counts (if it had finished) are
        // cleared with its finish time, so the list counts it live.
        crate::views::jobs::store_job_state(&mut tx, row.job_id, JobState::Running, None, None)
            .await?;
        let mut task = row.into_task()?;
        tx.commit().await?;
        task.priority = task.priority.saturating_add(RETRY_PRIORITY_BOOST);
        Ok(Some(task))
    }

    /// The last `max` bytes of an attempt's log.
    pub async fn attempt_log_tail(&self, attempt_id: i64, max: usize) -> Result<String> {
        let chunks = on_pool!(&self.reader, p => sqlx::query_scalar::<_, String>(
            r#"SELECT data FROM log_chunks WHERE attempt_id = $1 ORDER BY "offset" DESC LIMIT 64"#,
        )
        .bind(attempt_id)
        .fetch_all(p)
        .await)?;
        let mut parts: Vec<String> = Vec::new();
        let mut size = 0;
        for data in chunks {
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
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, TaskStats>(
            "SELECT runs, mean_ms, p95_ms FROM task_stats WHERE task_key = $1",
        )
        .bind(key)
        .fetch_optional(p)
        .await)?)
    }

    /// Cancels a job: queued tasks end at once, running attempts are marked
    /// cancelled and returned so their agents can be told to stop.
    pub async fn cancel_job(&self, job_id: i64, now: UnixMillis) -> Result<Vec<RunningAttempt>> {
        crate::retry_conflicts(|| self.cancel_job_once(job_id, now)).await
    }

    async fn cancel_job_once(&self, job_id: i64, now: UnixMillis) -> Result<Vec<RunningAttempt>> {
        let mut tx = self.writer.begin().await?;
        let exists = on_tx!(&mut tx, c => sqlx::query_scalar::<_, i64>("SELECT id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(c)
            .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(Missing::Job(job_id)));
        }
        // Tasks first: this update waits for claims of them in flight and
        // then no claim can win any more, so the attempts update after it
        // sees every attempt that will ever run for this job.
        on_tx!(&mut tx, c => sqlx::query(
            "UPDATE tasks SET state = 'cancelled', outcome = 'cancelled', detail_message = 'cancelled by user',
             updated_at = $1 WHERE job_id = $2 AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(job_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        // The attempts this cancel ends are the ones its update returns:
        // an attempt that another writer finished meanwhile is not among them.
        let ended: std::collections::HashSet<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "UPDATE attempts SET outcome = 'cancelled', reason = 'cancelled by user', finished_at = $1
             WHERE outcome IS NULL AND task_id IN (SELECT id FROM tasks WHERE job_id = $2)
             RETURNING id",
        )
        .bind(now)
        .bind(job_id)
        .fetch_all(c)
        .await)?
        .into_iter()
        .collect();
        let sql = format!(
            "SELECT {RUNNING_COLUMNS} WHERE t.job_id = $1 AND a.outcome = 'cancelled' AND a.finished_at = $2 ORDER BY a.id"
        );
        let mut running = on_tx!(&mut tx, c => sqlx::query_as::<_, RunningAttempt>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .bind(now)
            .fetch_all(c)
            .await)?;
        running.retain(|r| ended.contains(&r.attempt_id));
        refresh_job_state(&mut tx, job_id, None, now).await?;
        tx.commit().await?;
        Ok(running)
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
        let done = on_pool!(&self.writer, p => sqlx::query(
            r#"INSERT INTO log_chunks (attempt_id, "offset", data)
               SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM attempts WHERE id = $1 AND agent = $4)
               ON CONFLICT (attempt_id, "offset") DO NOTHING"#,
        )
        .bind(attempt_id)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(data)
        .bind(agent)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Records an agent's connection and labels; it is no longer retired.
    /// The write joins the agents' group commit (`agent_writes`): it is
    /// applied after every agent write started before it, and answered
    /// after its commit.
    pub async fn agent_connected(
        &self,
        hostname: &str,
        labels: &LabelSet,
        machine: Option<&testfleet_wire::protocol::MachineInfo>,
        now: UnixMillis,
    ) -> Result<()> {
        let labels = serde_json::to_string(labels)?;
        let machine = machine.map(serde_json::to_string).transpose()?;
        self.agent_writes
            .write(AgentWrite::Connected {
                hostname: hostname.to_owned(),
                labels,
                machine,
                now,
            })
            .await
    }

    /// Records the machine an open attempt ran on, as its agent reported it
    /// with the attempt (the host preparation included). Fenced: only the
    /// attempt's own agent, only while it is open. Returns whether it was
    /// recorded.
    pub async fn set_attempt_machine(
        &self,
        attempt_id: i64,
        agent: &str,
        machine: &testfleet_wire::protocol::MachineInfo,
    ) -> Result<bool> {
        let machine = serde_json::to_string(machine)?;
        let done = on_pool!(&self.writer, p => sqlx::query(
            "UPDATE attempts SET machine = $1 WHERE id = $2 AND agent = $3 AND outcome IS NULL",
        )
        .bind(&machine)
        .bind(attempt_id)
        .bind(agent)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Retires an agent (it disconnected with reason `shutdown`): no more
    /// fan-out work is queued for it. Like [`Store::agent_connected`], the
    /// write joins the agents' group commit, in the order it was started.
    pub async fn retire_agent(&self, hostname: &str) -> Result<()> {
        self.agent_writes
            .write(AgentWrite::Retired {
                hostname: hostname.to_owned(),
            })
            .await
    }

    /// Agents seen since `since` and not retired, with their labels (fan-out targets).
    pub async fn agents_seen_since(&self, since: UnixMillis) -> Result<Vec<(String, LabelSet)>> {
        let rows: Vec<(String, String)> = on_pool!(&self.reader, p => sqlx::query_as(
            "SELECT hostname, labels FROM agents WHERE retired = FALSE AND last_connected >= $1
             ORDER BY hostname",
        )
        .bind(since)
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|(hostname, labels)| Ok((hostname, serde_json::from_str(&labels)?)))
            .collect()
    }
}

/// Builds the Qt work item (plus testfleet's keys) for a stored task.
pub(crate) fn work_item(
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

/// Inserts a validated job and its tasks in `tx` (the body of
/// [`Store::submit_job`], shared with the events log's ingest, which
/// submits an event's jobs in the event's transaction).
pub(crate) async fn submit_in(
    tx: &mut crate::db::Tx,
    spec: &JobSpec,
    tasks: Vec<NewTask>,
    now: UnixMillis,
) -> Result<(i64, Vec<QueuedTask>)> {
    let spec_json = serde_json::to_string(spec)?;
    let integration = spec.integration.as_ref().map(|i| i.id.clone());
    let job_id: i64 = on_tx!(&mut *tx, c => sqlx::query_scalar(
            "INSERT INTO jobs (name, queue, priority, spec, state, created_at, integration_id)
             VALUES ($1, $2, $3, $4, 'queued', $5, $6) RETURNING id",
        )
        .bind(&spec.name)
        .bind(&spec.queue)
        .bind(i64::from(spec.priority))
        .bind(&spec_json)
        .bind(now)
        .bind(&integration)
        .fetch_one(c)
        .await)?;
    // Runtime history of every task key of the job, a few queries.
    let keys: Vec<String> = tasks
        .iter()
        .map(|t| task_key(&spec.name, &t.spec.name))
        .collect();
    let mut unique: Vec<&String> = keys.iter().collect();
    unique.sort_unstable();
    unique.dedup();
    let mut expected: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    for chunk in unique.chunks(1000) {
        let found: Vec<(String, f64)> = on_tx!(&mut *tx, c => {
            let mut q = sqlx::QueryBuilder::new("SELECT task_key, mean_ms FROM task_stats WHERE task_key IN (");
            let mut list = q.separated(", ");
            for key in chunk {
                list.push_bind((*key).clone());
            }
            q.push(")");
            q.build_query_as::<(String, f64)>().fetch_all(c).await
        })?;
        expected.extend(found);
    }
    let mut queued = Vec::with_capacity(tasks.len());
    // Multi-row inserts: a job of thousands of tasks is a few statements.
    // Both engines number the rows of one INSERT in VALUES order, so
    // sorted ids line up with the tasks.
    let mut tasks = tasks.into_iter().zip(keys).peekable();
    while tasks.peek().is_some() {
        let chunk: Vec<(NewTask, String)> = tasks.by_ref().take(1000).collect();
        let mut specs = Vec::with_capacity(chunk.len());
        for (task, _) in &chunk {
            specs.push(serde_json::to_string(&task.spec)?);
        }
        let mut ids: Vec<i64> = on_tx!(&mut *tx, c => {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO tasks (job_id, name, spec, priority, pinned_agent, state, queued_at, updated_at, task_key) ",
            );
            insert.push_values(
                chunk.iter().zip(&specs),
                |mut row, ((task, key), spec_json)| {
                    row.push_bind(job_id)
                        .push_bind(task.name.clone())
                        .push_bind(spec_json.clone())
                        .push_bind(i64::from(task.priority))
                        .push_bind(task.pinned_agent.clone())
                        .push_bind("queued")
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(key.clone());
                },
            );
            insert.push(" RETURNING id");
            insert.build_query_scalar::<i64>().fetch_all(c).await
        })?;
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
    Ok((job_id, queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reaper reads the running attempts' small index on SQLite too,
    /// not every attempt ever run.
    #[tokio::test]
    async fn sqlite_reaps_leases_through_the_running_attempts_index() {
        let plan = crate::db::sqlite_plan(&expired_leases_sql(crate::Backend::Sqlite), 0).await;
        let steps: Vec<&str> = plan.iter().map(String::as_str).collect();
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING INDEX attempts_running")),
            "{steps:?}"
        );
        assert!(!steps.contains(&"SCAN a"), "{steps:?}");
    }
}
