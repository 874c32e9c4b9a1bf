//! Read models for the REST API and the CLI: jobs, tasks, attempts, logs, agents.

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_core::{AttemptOutcome, JobState, LabelSet, TaskState};
use testfleet_wire::api::{
    AttemptView, CaseCounts, JobView, LogSlice, MetricView, TaskDetail, TaskView,
};
use testfleet_wire::protocol::MachineInfo;
use testfleet_wire::results::{CaseOutcome, Results};

use crate::{Result, Store, StoreError};

/// Largest log slice returned at once.
const MAX_LOG_SLICE: usize = 1 << 20;

const TASK_COLUMNS: &str = "t.id, t.job_id, t.name, t.state, t.stage, t.outcome, t.agent, t.pinned_agent,
     t.detail_message, t.attempts, t.flaky, (SELECT results FROM attempts a WHERE a.id = t.current_attempt)";

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn task_view(r: &SqliteRow) -> Result<TaskView> {
    let results: Option<String> = r.get(11);
    let results: Vec<Results> = match results {
        Some(text) => serde_json::from_str(&text)?,
        None => Vec::new(),
    };
    let (counts, metrics) = summarize(&results);
    Ok(TaskView {
        id: r.get(0),
        job_id: r.get(1),
        name: r.get(2),
        state: parse::<TaskState>(r.get(3))?,
        stage: r.get(4),
        outcome: r
            .get::<Option<&str>, _>(5)
            .map(parse::<AttemptOutcome>)
            .transpose()?,
        agent: r.get(6),
        pinned_agent: r.get(7),
        detail_message: r.get(8),
        attempts: r.get(9),
        flaky: r.get(10),
        counts,
        metrics,
    })
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
        let row = sqlx::query(
            "SELECT id, name, queue, priority, state, created_at, finished_at, integration_id FROM jobs WHERE id = ?",
        )
        .bind(job_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
        let tasks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.job_id = ? ORDER BY t.id"
        )))
        .bind(job_id)
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(task_view)
        .collect::<Result<Vec<_>>>()?;
        let mut counts = CaseCounts::default();
        for t in &tasks {
            counts.add(&t.counts);
        }
        Ok(JobView {
            id: row.get(0),
            name: row.get(1),
            queue: row.get(2),
            priority: row.get(3),
            state: parse::<JobState>(row.get(4))?,
            created_at: format_millis(row.get(5)),
            finished_at: time_text(row.get(6)),
            integration_id: row.get(7),
            tasks,
            counts,
        })
    }

    /// The newest jobs first, without their tasks' results.
    pub async fn jobs(&self, limit: i64, state: Option<JobState>) -> Result<Vec<JobView>> {
        let ids = sqlx::query(
            "SELECT id FROM jobs WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(state.map(JobState::as_str))
        .bind(state.map(JobState::as_str))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for r in ids {
            out.push(self.job(r.get(0)).await?);
        }
        Ok(out)
    }

    /// One task with its attempts.
    pub async fn task(&self, task_id: i64) -> Result<TaskDetail> {
        // Show the stages agents have reported, not the ones still queued.
        self.progress.flush().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = ?"
        )))
        .bind(task_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
        let task = task_view(&row)?;
        let attempts = self.attempts(task_id).await?;
        Ok(TaskDetail {
            task,
            attempts_list: attempts,
        })
    }

    async fn attempts(&self, task_id: i64) -> Result<Vec<AttemptView>> {
        let rows = sqlx::query(
            "SELECT id, task_id, number, agent, stage, outcome, reason, reason_data, started_at, finished_at
             FROM attempts WHERE task_id = ? ORDER BY number",
        )
        .bind(task_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptView {
                    id: r.get(0),
                    task_id: r.get(1),
                    number: r.get(2),
                    agent: r.get(3),
                    stage: r.get(4),
                    outcome: r
                        .get::<Option<&str>, _>(5)
                        .map(parse::<AttemptOutcome>)
                        .transpose()?,
                    reason: r.get(6),
                    reason_data: r
                        .get::<Option<&str>, _>(7)
                        .map(serde_json::from_str::<Value>)
                        .transpose()?,
                    started_at: format_millis(r.get(8)),
                    finished_at: time_text(r.get(9)),
                })
            })
            .collect()
    }

    /// The parsed results an attempt uploaded.
    pub async fn attempt_results(&self, attempt_id: i64) -> Result<Vec<Results>> {
        let row = sqlx::query("SELECT results FROM attempts WHERE id = ?")
            .bind(attempt_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {attempt_id}")))?;
        match row.get::<Option<&str>, _>(0) {
            Some(text) => Ok(serde_json::from_str(text)?),
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
            Some(id) => sqlx::query(
                "SELECT id, outcome IS NOT NULL FROM attempts WHERE id = ? AND task_id = ?",
            )
            .bind(id)
            .bind(task_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("attempt {id} of task {task_id}")))
            .map(Some)?,
            None => {
                let task = sqlx::query("SELECT state FROM tasks WHERE id = ?")
                    .bind(task_id)
                    .fetch_optional(&self.reader)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("task {task_id}")))?;
                let _ = task;
                sqlx::query("SELECT id, outcome IS NOT NULL FROM attempts WHERE task_id = ? ORDER BY number DESC LIMIT 1")
                    .bind(task_id)
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        let task_done = sqlx::query("SELECT state FROM tasks WHERE id = ?")
            .bind(task_id)
            .fetch_one(&self.reader)
            .await?
            .get::<&str, _>(0)
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
        let attempt_id: i64 = attempt.get(0);
        let attempt_done: bool = attempt.get(1);
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT offset, data FROM log_chunks WHERE attempt_id = ? AND offset + length(CAST(data AS BLOB)) > ?
             ORDER BY offset",
        )
        .bind(attempt_id)
        .bind(start)
        .fetch_all(&self.reader)
        .await?;
        let mut data = Vec::new();
        let mut next = offset;
        for r in rows {
            let chunk_start = u64::try_from(r.get::<i64, _>(0)).unwrap_or(0);
            let bytes = r.get::<&str, _>(1).as_bytes();
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
            attempt_id: Some(attempt_id),
            offset,
            next_offset: next,
            data,
            complete: attempt_done && task_done,
        })
    }

    /// Every agent ever seen.
    pub async fn agents(&self) -> Result<Vec<StoredAgent>> {
        let rows = sqlx::query(
            "SELECT hostname, labels, last_connected, retired, machine FROM agents ORDER BY hostname",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAgent {
                    hostname: r.get(0),
                    labels: serde_json::from_str(r.get::<&str, _>(1))?,
                    last_connected: r.get(2),
                    retired: r.get(3),
                    machine: r
                        .get::<Option<&str>, _>(4)
                        .map(serde_json::from_str)
                        .transpose()?,
                })
            })
            .collect()
    }

    /// The newest `limit` entries of the work log, oldest first.
    pub async fn work_log(&self, limit: i64) -> Result<Vec<Value>> {
        self.progress.flush().await;
        let rows = sqlx::query(
            "SELECT hostname, attempt_id, integration_id, status, detail, at FROM
             (SELECT * FROM work_log ORDER BY id DESC LIMIT ?) ORDER BY at",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "hostname": r.get::<String, _>(0),
                    "attemptId": r.get::<Option<i64>, _>(1),
                    "integrationId": r.get::<Option<String>, _>(2),
                    "status": r.get::<String, _>(3),
                    "detailMessage": r.get::<Option<String>, _>(4),
                    "timestamp": format_millis(r.get(5)),
                })
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

impl Store {
    /// The context of one attempt.
    pub async fn attempt_context(&self, attempt_id: i64) -> Result<AttemptContext> {
        let row = sqlx::query(
            "SELECT a.agent, t.job_id, t.name, j.spec, j.created_at, a.results, g.machine
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             LEFT JOIN agents g ON g.hostname = a.agent WHERE a.id = ?",
        )
        .bind(attempt_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("attempt {attempt_id}")))?;
        let job_id: i64 = row.get(1);
        let spec: testfleet_core::JobSpec = serde_json::from_str(row.get::<&str, _>(3))?;
        let created_at: UnixMillis = row.get(4);
        let integration = spec.integration.as_ref();
        Ok(AttemptContext {
            attempt_id,
            agent: row.get(0),
            job_id,
            task_name: row.get(2),
            integration_id: integration
                .map(|i| i.id.clone())
                .unwrap_or_else(|| format!("tf-{job_id}")),
            integration_timestamp: integration
                .and_then(|i| i.timestamp)
                .map_or(created_at, |t| t.0),
            branch: integration
                .and_then(|i| i.branch.clone())
                .unwrap_or_default(),
            sha: integration
                .and_then(|i| i.sha.clone())
                .or_else(|| spec.source.as_ref().map(|s| s.rev.clone()))
                .unwrap_or_default(),
            machine: row
                .get::<Option<&str>, _>(6)
                .map(serde_json::from_str)
                .transpose()?,
            results: row
                .get::<Option<&str>, _>(5)
                .map(serde_json::from_str)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The results of every task's current (or last) attempt of a job, with
    /// the task's name and agent.
    pub async fn job_results(&self, job_id: i64) -> Result<Vec<(String, String, Results)>> {
        self.job(job_id).await?; // not found → error
        let rows = sqlx::query(
            "SELECT t.name, a.agent, a.results FROM tasks t
             JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE task_id = t.id)
             WHERE t.job_id = ? AND a.results IS NOT NULL ORDER BY t.id",
        )
        .bind(job_id)
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.get(0);
            let agent: String = r.get(1);
            let results: Vec<Results> = serde_json::from_str(r.get::<&str, _>(2))?;
            out.extend(
                results
                    .into_iter()
                    .map(|res| (name.clone(), agent.clone(), res)),
            );
        }
        Ok(out)
    }
}

impl Store {
    /// Statistics of attempts stopped by a threshold, per kind of stop
    /// (`step_timeout`, `silence`, `runtime_threshold`, `lease_expired`):
    /// how many, how long they had run, and the agent's load when stopped.
    pub async fn threshold_stats(&self) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT json_extract(reason_data, '$.kind') AS kind, COUNT(*),
                    AVG(finished_at - started_at), MAX(finished_at - started_at),
                    AVG(json_extract(reason_data, '$.agent_load')), MAX(json_extract(reason_data, '$.agent_load'))
             FROM attempts
             WHERE outcome IN ('timed_out', 'stalled', 'infra_error') AND reason_data IS NOT NULL
               AND json_extract(reason_data, '$.kind') IN ('step_timeout', 'silence', 'runtime_threshold', 'lease_expired')
             GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "threshold": r.get::<String, _>(0),
                    "stopped_attempts": r.get::<i64, _>(1),
                    "mean_runtime_ms": r.get::<Option<f64>, _>(2),
                    "max_runtime_ms": r.get::<Option<i64>, _>(3),
                    "mean_agent_load": r.get::<Option<f64>, _>(4),
                    "max_agent_load": r.get::<Option<f64>, _>(5),
                })
            })
            .collect())
    }

    /// Runtime history per task key, longest first: what the thresholds
    /// are derived from.
    pub async fn runtime_stats(&self, limit: i64) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT task_key, runs, mean_ms, p95_ms FROM task_stats ORDER BY p95_ms DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "task_key": r.get::<String, _>(0),
                    "runs": r.get::<i64, _>(1),
                    "mean_ms": r.get::<f64, _>(2),
                    "p95_ms": r.get::<f64, _>(3),
                })
            })
            .collect())
    }

    /// Flaky counts per task key: tasks that failed, then passed on retry.
    pub async fn flaky_stats(&self, limit: i64) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT task_key, SUM(flaky), COUNT(*) FROM tasks WHERE state IN ('passed', 'failed')
             GROUP BY task_key HAVING SUM(flaky) > 0 ORDER BY SUM(flaky) DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|r| serde_json::json!({"task_key": r.get::<String, _>(0), "flaky": r.get::<i64, _>(1), "runs": r.get::<i64, _>(2)}))
            .collect())
    }
}
