//! Read models for the REST API and the CLI: jobs, tasks, attempts, logs, agents.
//!
//! Every query runs on both backends (see `db`). Rows are decoded into the
//! private `*Row` structs below and converted into the wire types here, so a
//! column's type is checked once, by name, on either engine.

use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_core::{AttemptOutcome, JobState, LabelSet, TaskState};
use testfleet_wire::api::{
    AttemptView, CaseCounts, FlakyStats, JobView, LogSlice, MetricView, RuntimeStats, TaskDetail,
    TaskView, ThresholdStats,
};
use testfleet_wire::protocol::{MachineInfo, WorkLogEntry};
use testfleet_wire::reason::{ReasonData, ReasonKind};
use testfleet_wire::results::{CaseOutcome, Results};

pub(crate) mod jobs;

use crate::db::{Backend, on_pool};
use crate::{Missing, Result, Store, StoreError};

/// Largest log slice returned at once.
const MAX_LOG_SLICE: usize = 1 << 20;

/// The columns of [`TaskRow`], for `FROM tasks t`.
const TASK_COLUMNS: &str =
    "t.id, t.job_id, t.name, t.state, t.stage, t.outcome, t.agent, t.pinned_agent,
     t.detail_message, t.attempts, t.flaky,
     (SELECT results FROM attempts a WHERE a.id = t.current_attempt) AS results";

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A task with its current attempt's results, as selected by [`TASK_COLUMNS`].
#[derive(sqlx::FromRow)]
struct TaskRow {
    id: i64,
    job_id: i64,
    name: String,
    state: String,
    stage: Option<String>,
    outcome: Option<String>,
    agent: Option<String>,
    pinned_agent: Option<String>,
    detail_message: Option<String>,
    attempts: i64,
    flaky: bool,
    results: Option<String>,
}

impl TaskRow {
    fn into_view(self) -> Result<TaskView> {
        let results: Vec<Results> = match self.results {
            Some(text) => serde_json::from_str(&text)?,
            None => Vec::new(),
        };
        let (counts, metrics) = summarize(&results);
        Ok(TaskView {
            id: self.id,
            job_id: self.job_id,
            name: self.name,
            state: parse::<TaskState>(&self.state)?,
            stage: self.stage,
            outcome: self
                .outcome
                .as_deref()
                .map(parse::<AttemptOutcome>)
                .transpose()?,
            agent: self.agent,
            pinned_agent: self.pinned_agent,
            detail_message: self.detail_message,
            attempts: self.attempts,
            flaky: self.flaky,
            counts,
            metrics,
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    name: String,
    queue: String,
    priority: i64,
    state: String,
    created_at: UnixMillis,
    finished_at: Option<UnixMillis>,
    integration_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: i64,
    task_id: i64,
    number: i64,
    agent: String,
    stage: Option<String>,
    outcome: Option<String>,
    reason: Option<String>,
    reason_data: Option<String>,
    started_at: UnixMillis,
    finished_at: Option<UnixMillis>,
}

impl AttemptRow {
    fn into_view(self) -> Result<AttemptView> {
        Ok(AttemptView {
            id: self.id,
            task_id: self.task_id,
            number: self.number,
            agent: self.agent,
            stage: self.stage,
            outcome: self
                .outcome
                .as_deref()
                .map(parse::<AttemptOutcome>)
                .transpose()?,
            reason: self.reason,
            reason_data: self
                .reason_data
                .as_deref()
                .map(serde_json::from_str::<ReasonData>)
                .transpose()?,
            started_at: format_millis(self.started_at),
            finished_at: time_text(self.finished_at),
        })
    }
}

/// The attempt whose log is read, and whether it has finished.
#[derive(sqlx::FromRow)]
struct LogAttemptRow {
    id: i64,
    done: bool,
}

#[derive(sqlx::FromRow)]
struct LogChunkRow {
    offset: i64,
    data: String,
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    hostname: String,
    labels: String,
    last_connected: UnixMillis,
    retired: bool,
    machine: Option<String>,
}

#[derive(sqlx::FromRow)]
struct WorkLogRow {
    hostname: String,
    attempt_id: Option<i64>,
    integration_id: Option<String>,
    status: String,
    detail: Option<String>,
    at: UnixMillis,
}

#[derive(sqlx::FromRow)]
struct AttemptContextRow {
    agent: String,
    job_id: i64,
    task_id: i64,
    finished_at: Option<UnixMillis>,
    task_name: String,
    spec: String,
    created_at: UnixMillis,
    results: Option<String>,
    machine: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TaskResultsRow {
    name: String,
    agent: String,
    results: String,
}

/// One kind of threshold stop, as reported by [`Store::threshold_stats`].
#[derive(sqlx::FromRow)]
struct ThresholdStatsRow {
    threshold: String,
    stopped_attempts: i64,
    mean_runtime_ms: Option<f64>,
    max_runtime_ms: Option<i64>,
    mean_agent_load: Option<f64>,
    max_agent_load: Option<f64>,
}

/// One task key's runtime history, as reported by [`Store::runtime_stats`].
#[derive(sqlx::FromRow)]
struct RuntimeStatsRow {
    task_key: String,
    runs: i64,
    mean_ms: f64,
    p95_ms: f64,
}

/// One task key's flaky count, as reported by [`Store::flaky_stats`].
#[derive(sqlx::FromRow)]
struct FlakyStatsRow {
    task_key: String,
    flaky_runs: i64,
    runs: i64,
}

impl From<ThresholdStatsRow> for ThresholdStats {
    fn from(r: ThresholdStatsRow) -> Self {
        ThresholdStats {
            max_agent_load: r.max_agent_load,
            max_runtime_ms: r.max_runtime_ms,
            mean_agent_load: r.mean_agent_load,
            mean_runtime_ms: r.mean_runtime_ms,
            stopped_attempts: r.stopped_attempts,
            threshold: r.threshold,
        }
    }
}

impl From<RuntimeStatsRow> for RuntimeStats {
    fn from(r: RuntimeStatsRow) -> Self {
        RuntimeStats {
            mean_ms: r.mean_ms,
            p95_ms: r.p95_ms,
            runs: r.runs,
            task_key: r.task_key,
        }
    }
}

impl From<FlakyStatsRow> for FlakyStats {
    fn from(r: FlakyStatsRow) -> Self {
        FlakyStats {
            flaky: r.flaky_runs,
            runs: r.runs,
            task_key: r.task_key,
        }
    }
}

/// Counts per outcome and every benchmark value of a set of parsed result files.
pub fn summarize(results: &[Results]) -> (CaseCounts, Vec<MetricView>) {
    let mut counts = CaseCounts::default();
    let mut metrics = Vec::new();
    for r in results {
        for suite in &r.suites {
            for case in &suite.cases {
                let slot = match case.outcome {
                    CaseOutcome::Pass => &mut counts.pass,
                    CaseOutcome::Fail => &mut counts.fail,
                    CaseOutcome::Error => &mut counts.error,
                    CaseOutcome::Skip => &mut counts.skip,
                    CaseOutcome::Xfail => &mut counts.xfail,
                    CaseOutcome::Xpass => &mut counts.xpass,
                    CaseOutcome::Crash => &mut counts.crash,
                };
                *slot += 1;
                for m in &case.metrics {
                    metrics.push(MetricView {
                        suite: suite.name.clone(),
                        case: case.name.clone(),
                        data_tag: case.data_tag.clone(),
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        value: m.value,
                        iterations: m.iterations,
                    });
                }
            }
        }
    }
    (counts, metrics)
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAgent {
    pub hostname: String,
    pub labels: LabelSet,
    pub last_connected: UnixMillis,
    pub retired: bool,
    pub machine: Option<MachineInfo>,
}

fn time_text(ms: Option<UnixMillis>) -> Option<String> {
    ms.map(format_millis)
}

impl Store {
    /// One job with its tasks.
    pub async fn job(&self, job_id: i64) -> Result<JobView> {
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, JobRow>(
            "SELECT id, name, queue, priority, state, created_at, finished_at, integration_id
             FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(p)
        .await)?
        .ok_or_else(|| StoreError::NotFound(Missing::Job(job_id)))?;
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE t.job_id = $1 ORDER BY t.id");
        let tasks =
            on_pool!(&self.reader, p => sqlx::query_as::<_, TaskRow>(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(p)
            .await)?
            .into_iter()
            .map(TaskRow::into_view)
            .collect::<Result<Vec<_>>>()?;
        let mut counts = CaseCounts::default();
        for t in &tasks {
            counts.add(&t.counts);
        }
        Ok(JobView {
            id: row.id,
            name: row.name,
            queue: row.queue,
            priority: i32::try_from(row.priority).map_err(|_| {
                StoreError::Corrupt(format!(
                    "job {job_id} has priority {} out of range",
                    row.priority
                ))
            })?,
            state: parse::<JobState>(&row.state)?,
            created_at: format_millis(row.created_at),
            finished_at: time_text(row.finished_at),
            integration_id: row.integration_id,
            tasks,
            counts,
        })
    }

    /// One task with its attempts.
    pub async fn task(&self, task_id: i64) -> Result<TaskDetail> {
        // Show the stages agents have reported, not the ones still queued.
        self.progress.flush().await;
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1");
        let row =
            on_pool!(&self.reader, p => sqlx::query_as::<_, TaskRow>(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_optional(p)
            .await)?
            .ok_or_else(|| StoreError::NotFound(Missing::Task(task_id)))?;
        let task = row.into_view()?;
        let attempts = self.attempts(task_id).await?;
        Ok(TaskDetail {
            task,
            attempts_list: attempts,
        })
    }

    async fn attempts(&self, task_id: i64) -> Result<Vec<AttemptView>> {
        on_pool!(&self.reader, p => sqlx::query_as::<_, AttemptRow>(
            "SELECT id, task_id, number, agent, stage, outcome, reason, reason_data, started_at, finished_at
             FROM attempts WHERE task_id = $1 ORDER BY number",
        )
        .bind(task_id)
        .fetch_all(p)
        .await)?
        .into_iter()
        .map(AttemptRow::into_view)
        .collect()
    }

    /// The parsed results an attempt uploaded.
    pub async fn attempt_results(&self, attempt_id: i64) -> Result<Vec<Results>> {
        let results = on_pool!(&self.reader, p => sqlx::query_scalar::<_, Option<String>>(
            "SELECT results FROM attempts WHERE id = $1",
        )
        .bind(attempt_id)
        .fetch_optional(p)
        .await)?
        .ok_or_else(|| StoreError::NotFound(Missing::Attempt(attempt_id)))?;
        match results {
            Some(text) => Ok(serde_json::from_str(&text)?),
            None => Ok(Vec::new()),
        }
    }

    /// A slice of a task's log from byte `offset`: the given attempt's, or the
    /// latest attempt's.
    pub async fn task_log(
        &self,
        task_id: i64,
        attempt_id: Option<i64>,
        offset: u64,
    ) -> Result<LogSlice> {
        let attempt = match attempt_id {
            Some(id) => on_pool!(&self.reader, p => sqlx::query_as::<_, LogAttemptRow>(
                "SELECT id, outcome IS NOT NULL AS done FROM attempts WHERE id = $1 AND task_id = $2",
            )
            .bind(id)
            .bind(task_id)
            .fetch_optional(p)
            .await)?
            .ok_or_else(|| StoreError::NotFound(Missing::AttemptOfTask { number: id, task: task_id }))
            .map(Some)?,
            None => {
                on_pool!(&self.reader, p => sqlx::query_scalar::<_, String>(
                    "SELECT state FROM tasks WHERE id = $1",
                )
                .bind(task_id)
                .fetch_optional(p)
                .await)?
                .ok_or_else(|| StoreError::NotFound(Missing::Task(task_id)))?;
                on_pool!(&self.reader, p => sqlx::query_as::<_, LogAttemptRow>(
                    "SELECT id, outcome IS NOT NULL AS done FROM attempts WHERE task_id = $1
                     ORDER BY number DESC LIMIT 1",
                )
                .bind(task_id)
                .fetch_optional(p)
                .await)?
            }
        };
        let task_done = on_pool!(&self.reader, p => sqlx::query_scalar::<_, String>(
            "SELECT state FROM tasks WHERE id = $1",
        )
        .bind(task_id)
        .fetch_one(p)
        .await)?
        .parse::<TaskState>()
        .map(TaskState::is_terminal)
        .unwrap_or(true);
        let Some(attempt) = attempt else {
            return Ok(LogSlice {
                task_id,
                attempt_id: None,
                offset,
                next_offset: offset,
                data: String::new(),
                complete: task_done,
            });
        };
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        // `octet_length` counts bytes on both engines (SQLite 3.43+), as the
        // offsets do.
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, LogChunkRow>(
            r#"SELECT "offset", data FROM log_chunks
               WHERE attempt_id = $1 AND "offset" + octet_length(data) > $2
               ORDER BY "offset""#,
        )
        .bind(attempt.id)
        .bind(start)
        .fetch_all(p)
        .await)?;
        let mut data = Vec::new();
        let mut next = offset;
        for r in rows {
            let chunk_start = u64::try_from(r.offset).unwrap_or(0);
            let bytes = r.data.as_bytes();
            if chunk_start > next {
                break; // a gap: that chunk has not arrived yet
            }
            let skip = usize::try_from(next - chunk_start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            data.extend_from_slice(&bytes[skip..]);
            next = chunk_start + bytes.len() as u64;
            if data.len() >= MAX_LOG_SLICE {
                break;
            }
        }
        // Slicing by byte offset may split a character at the start; show it lossily.
        let data = String::from_utf8_lossy(&data).into_owned();
        Ok(LogSlice {
            task_id,
            attempt_id: Some(attempt.id),
            offset,
            next_offset: next,
            data,
            complete: attempt.done && task_done,
        })
    }

    /// Every agent ever seen.
    pub async fn agents(&self) -> Result<Vec<StoredAgent>> {
        on_pool!(&self.reader, p => sqlx::query_as::<_, AgentRow>(
            "SELECT hostname, labels, last_connected, retired, machine FROM agents ORDER BY hostname",
        )
        .fetch_all(p)
        .await)?
        .into_iter()
        .map(|r| {
            Ok(StoredAgent {
                hostname: r.hostname,
                labels: serde_json::from_str(&r.labels)?,
                last_connected: r.last_connected,
                retired: r.retired,
                machine: r
                    .machine
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()?,
            })
        })
        .collect()
    }

    /// The newest `limit` entries of the work log, oldest first.
    pub async fn work_log(&self, limit: i64) -> Result<Vec<WorkLogEntry>> {
        self.progress.flush().await;
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, WorkLogRow>(
            "SELECT hostname, attempt_id, integration_id, status, detail, at FROM
             (SELECT id, hostname, attempt_id, integration_id, status, detail, at
              FROM work_log ORDER BY id DESC LIMIT $1) newest
             ORDER BY at, id",
        )
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| WorkLogEntry {
                attempt_id: r.attempt_id,
                detail_message: r.detail,
                hostname: r.hostname,
                integration_id: r.integration_id,
                status: r.status,
                timestamp: format_millis(r.at),
            })
            .collect())
    }
}

/// What an attempt ran for: its agent, the integration it belongs to and the
/// results it uploaded. Feeds the seed-000 run summary and the exporters.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptContext {
    pub attempt_id: i64,
    pub agent: String,
    pub job_id: i64,
    pub task_name: String,
    pub integration_id: String,
    pub integration_timestamp: UnixMillis,
    pub branch: String,
    pub sha: String,
    pub machine: Option<MachineInfo>,
    pub results: Vec<Results>,
}

/// What the benchmark series need beyond an [`AttemptContext`]: the task,
/// the finish time, and the integration as the job file gave it (the
/// context fills in `tf-<job>` and the job's creation time when it is absent).
pub(crate) struct AttemptFacts {
    pub task_id: i64,
    pub finished_at: Option<UnixMillis>,
    pub integration: Option<testfleet_core::job::IntegrationSpec>,
}

impl Store {
    /// The context of one attempt.
    pub async fn attempt_context(&self, attempt_id: i64) -> Result<AttemptContext> {
        Ok(self.attempt_context_facts(attempt_id).await?.0)
    }

    /// The context of one attempt, with the facts the series mapping needs.
    pub(crate) async fn attempt_context_facts(
        &self,
        attempt_id: i64,
    ) -> Result<(AttemptContext, AttemptFacts)> {
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, AttemptContextRow>(
            "SELECT a.agent, t.job_id, a.task_id, a.finished_at, t.name AS task_name, j.spec, j.created_at, a.results,
                    COALESCE(a.machine, g.machine) AS machine
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             LEFT JOIN agents g ON g.hostname = a.agent WHERE a.id = $1",
        )
        .bind(attempt_id)
        .fetch_optional(p)
        .await)?
        .ok_or_else(|| StoreError::NotFound(Missing::Attempt(attempt_id)))?;
        let job_id = row.job_id;
        let spec: testfleet_core::JobSpec = serde_json::from_str(&row.spec)?;
        let integration = spec.integration.as_ref();
        let context = AttemptContext {
            attempt_id,
            agent: row.agent,
            job_id,
            task_name: row.task_name,
            integration_id: integration
                .map(|i| i.id.clone())
                .unwrap_or_else(|| format!("tf-{job_id}")),
            integration_timestamp: integration
                .and_then(|i| i.timestamp)
                .map_or(row.created_at, |t| t.0),
            branch: integration
                .and_then(|i| i.branch.clone())
                .unwrap_or_default(),
            sha: integration
                .and_then(|i| i.sha.clone())
                .or_else(|| spec.source.as_ref().map(|s| s.rev.clone()))
                .unwrap_or_default(),
            machine: row
                .machine
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            results: row
                .results
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?
                .unwrap_or_default(),
        };
        let facts = AttemptFacts {
            task_id: row.task_id,
            finished_at: row.finished_at,
            integration: spec.integration,
        };
        Ok((context, facts))
    }

    /// The results of every task's current (or last) attempt of a job, with
    /// the task's name and agent.
    pub async fn job_results(&self, job_id: i64) -> Result<Vec<(String, String, Results)>> {
        self.job(job_id).await?; // not found → error
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, TaskResultsRow>(
            "SELECT t.name, a.agent, a.results FROM tasks t
             JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE task_id = t.id)
             WHERE t.job_id = $1 AND a.results IS NOT NULL ORDER BY t.id",
        )
        .bind(job_id)
        .fetch_all(p)
        .await)?;
        let mut out = Vec::new();
        for r in rows {
            let results: Vec<Results> = serde_json::from_str(&r.results)?;
            out.extend(
                results
                    .into_iter()
                    .map(|res| (r.name.clone(), r.agent.clone(), res)),
            );
        }
        Ok(out)
    }
}

impl Store {
    /// Statistics of attempts stopped by a threshold, per kind of stop
    /// (`step_timeout`, `silence`, `runtime_threshold`, `lease_expired`):
    /// how many, how long they had run, and the agent's load when stopped.
    pub async fn threshold_stats(&self) -> Result<Vec<ThresholdStats>> {
        // `reason_data` is JSON text; its fields are read with each engine's
        // own JSON functions.
        let (kind, load) = match self.reader.backend() {
            Backend::Sqlite => (
                "json_extract(reason_data, '$.kind')",
                "json_extract(reason_data, '$.agent_load')",
            ),
            Backend::Postgres => (
                "(reason_data::json ->> 'kind')",
                "CAST(reason_data::json ->> 'agent_load' AS DOUBLE PRECISION)",
            ),
        };
        let thresholds = ReasonKind::THRESHOLDS
            .map(|k| format!("'{}'", k.as_str()))
            .join(", ");
        // The casts make the aggregates REAL on SQLite and DOUBLE PRECISION
        // (not NUMERIC) on PostgreSQL, even when every load is a whole number.
        let sql = format!(
            "SELECT {kind} AS threshold, COUNT(*) AS stopped_attempts,
                    CAST(AVG(finished_at - started_at) AS DOUBLE PRECISION) AS mean_runtime_ms,
                    MAX(finished_at - started_at) AS max_runtime_ms,
                    CAST(AVG({load}) AS DOUBLE PRECISION) AS mean_agent_load,
                    CAST(MAX({load}) AS DOUBLE PRECISION) AS max_agent_load
             FROM attempts
             WHERE outcome IN ('timed_out', 'stalled', 'infra_error') AND reason_data IS NOT NULL
               AND {kind} IN ({thresholds})
             GROUP BY threshold ORDER BY threshold"
        );
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, ThresholdStatsRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Runtime history per task key, longest first: what the thresholds
    /// are derived from.
    pub async fn runtime_stats(&self, limit: i64) -> Result<Vec<RuntimeStats>> {
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, RuntimeStatsRow>(
            "SELECT task_key, runs, mean_ms, p95_ms FROM task_stats
             ORDER BY p95_ms DESC, task_key LIMIT $1",
        )
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Flaky counts per task key: tasks that failed, then passed on retry.
    pub async fn flaky_stats(&self, limit: i64) -> Result<Vec<FlakyStats>> {
        // `flaky` is INTEGER 0/1 on SQLite and BOOLEAN on PostgreSQL, which
        // has no SUM(boolean): count the flaky rows instead.
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, FlakyStatsRow>(
            "SELECT task_key, COUNT(CASE WHEN flaky = TRUE THEN 1 END) AS flaky_runs, COUNT(*) AS runs
             FROM tasks WHERE state IN ('passed', 'failed')
             GROUP BY task_key HAVING COUNT(CASE WHEN flaky = TRUE THEN 1 END) > 0
             ORDER BY flaky_runs DESC, task_key LIMIT $1",
        )
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
