//! The hot writes, claim and finish, as the batch writer runs them inside
//! its transaction.
//!
//! Both are fenced by the database itself, so they stay correct with any
//! number of writers and coordinators on one database: a claim is one
//! conditional `UPDATE … WHERE state = 'queued' … RETURNING` (of two
//! claimers of a task, the second updates nothing), and a finish is one
//! conditional `UPDATE attempts … WHERE outcome IS NULL … RETURNING` (of two
//! finishes of an attempt, the second updates nothing); the task then moves
//! on only `WHERE current_attempt = <this attempt> AND state = 'running'`.

use testfleet_core::job::TaskSpec;
use testfleet_core::state::{AfterAttempt, RetryUse, after_attempt};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_core::{AttemptOutcome, JobState, Stage, TaskState};
use testfleet_wire::reason::ReasonData;

use crate::batch::{FinishArgs, JobCache};
use crate::db::{Backend, Tx, on_tx};
use crate::ops::{
    Claimed, FinishEffect, QueuedTask, RETRY_PRIORITY_BOOST, RunningAttempt, TaskStats, narrow,
    work_item,
};
use crate::views::jobs;
use crate::{Result, StoreError};

/// What a SQLite claim's conditional update returns besides the task's own
/// columns: its job and the key's history, through subqueries (RETURNING
/// may name only the updated table). Shared by the claim alone and the
/// grouped claims (`batch_sqlite`).
macro_rules! sqlite_claim_returning {
    () => {
        "
                   (SELECT j.state FROM jobs j WHERE j.id = tasks.job_id) AS job_state,
                   (SELECT j.created_at FROM jobs j WHERE j.id = tasks.job_id) AS created_at,
                   (SELECT j.queue FROM jobs j WHERE j.id = tasks.job_id) AS queue,
                   (SELECT s.runs FROM task_stats s WHERE s.task_key = tasks.task_key) AS runs,
                   (SELECT s.mean_ms FROM task_stats s WHERE s.task_key = tasks.task_key) AS mean_ms,
                   (SELECT s.p95_ms FROM task_stats s WHERE s.task_key = tasks.task_key) AS p95_ms,
                   current_attempt AS attempt_id"
    };
}
pub(crate) use sqlite_claim_returning;

/// What a SQLite finish's conditional update returns besides the attempt's
/// own columns: its task and job, through subqueries. Shared by the finish
/// alone and the grouped finishes (`batch_sqlite`).
macro_rules! sqlite_ended_returning {
    () => {
        "
                   (SELECT t.job_id FROM tasks t WHERE t.id = attempts.task_id) AS job_id,
                   (SELECT t.spec FROM tasks t WHERE t.id = attempts.task_id) AS spec,
                   (SELECT t.test_failures FROM tasks t WHERE t.id = attempts.task_id) AS test_failures,
                   (SELECT t.infra_failures FROM tasks t WHERE t.id = attempts.task_id) AS infra_failures,
                   (SELECT j.queue FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = attempts.task_id) AS queue,
                   (SELECT t.priority FROM tasks t WHERE t.id = attempts.task_id) AS priority,
                   (SELECT t.current_attempt FROM tasks t WHERE t.id = attempts.task_id) AS current_attempt,
                   (SELECT t.state FROM tasks t WHERE t.id = attempts.task_id) AS state,
                   (SELECT t.task_key FROM tasks t WHERE t.id = attempts.task_id) AS task_key,
                   (SELECT j.state FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = attempts.task_id) AS job_state,
                   (SELECT t.pinned_agent FROM tasks t WHERE t.id = attempts.task_id) AS pinned_agent"
    };
}
pub(crate) use sqlite_ended_returning;

/// How many recent durations a task key keeps.
const HISTORY: usize = 50;

/// What a claim's conditional update returns: the task, its job and the
/// task key's history, in one statement.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub(crate) job_id: i64,
    name: String,
    spec: String,
    pub(crate) attempts: i64,
    task_key: String,
    pub(crate) job_state: String,
    created_at: i64,
    queue: String,
    runs: Option<i64>,
    mean_ms: Option<f64>,
    p95_ms: Option<f64>,
    /// The new attempt (PostgreSQL draws it in the claim statement).
    pub attempt_id: i64,
}

/// The claim on SQLite: the conditional update, which also points the task
/// at its new attempt, then the attempt. The attempt's id is the one SQLite
/// would give it (`attempts.id` is a rowid without AUTOINCREMENT: the
/// largest plus one, and attempts are never deleted), drawn inside the
/// writer's transaction, where no other write can come between.
async fn claim_sqlite(
    tx: &mut Tx,
    task_id: i64,
    agent: &str,
    now: UnixMillis,
    lease_ms: i64,
) -> Result<Option<(ClaimRow, i64)>> {
    // The conditional update is the claim: only one writer can move the task
    // out of `queued`. Its RETURNING brings the job's state and the key's
    // history.
    let Some(row) = on_tx!(tx, c => sqlx::query_as::<_, ClaimRow>(concat!(
        "UPDATE tasks SET state = 'running', stage = 'new', agent = $2, attempts = attempts + 1,
                detail_message = NULL, updated_at = $3,
                current_attempt = (SELECT COALESCE(MAX(a.id), 0) + 1 FROM attempts a)
         WHERE id = $1 AND state = 'queued'
         RETURNING job_id, name, spec, attempts, task_key,", sqlite_claim_returning!()),
    )
    .bind(task_id)
    .bind(agent)
    .bind(now)
    .fetch_optional(c)
    .await)?
    else {
        return Ok(None);
    };
    let attempt_id = row.attempt_id;
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO attempts (id, task_id, number, agent, stage, started_at, lease_expires_at)
         VALUES ($1, $2, $3, $4, 'new', $5, $6)",
    )
    .bind(attempt_id)
    .bind(task_id)
    .bind(row.attempts)
    .bind(agent)
    .bind(now)
    .bind(now.saturating_add(lease_ms))
    .execute(c)
    .await
    .map(|_| ()))?;
    if row.job_state == "queued" {
        on_tx!(tx, c => sqlx::query("UPDATE jobs SET state = 'running' WHERE id = $1 AND state = 'queued'")
            .bind(row.job_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(Some((row, attempt_id)))
}

/// The claim on PostgreSQL: the same three changes in one statement (one
/// round trip): the attempt's id is drawn from its sequence by the
/// conditional update, and the attempt and the job's state are written by
/// data-modifying CTEs of that statement. The task is read by its key:
/// `(state = 'queued') IS TRUE` keeps the planner off the queue's partial
/// index (`batch_pg::claim_rows` says why).
async fn claim_postgres(
    tx: &mut Tx,
    task_id: i64,
    agent: &str,
    now: UnixMillis,
    lease_ms: i64,
) -> Result<Option<(ClaimRow, i64)>> {
    let row = on_tx!(tx, c => sqlx::query_as::<_, ClaimRow>(
        "WITH t AS (
             UPDATE tasks SET state = 'running', stage = 'new', agent = $2, attempts = attempts + 1,
                    detail_message = NULL, updated_at = $3,
                    current_attempt = nextval('attempts_id_seq')
             WHERE id = $1 AND (state = 'queued') IS TRUE
             RETURNING id, job_id, name, spec, attempts, task_key, current_attempt
         ), a AS (
             INSERT INTO attempts (id, task_id, number, agent, stage, started_at, lease_expires_at)
             SELECT current_attempt, id, attempts, $2, 'new', $3, $4 FROM t
         ), j AS (
             UPDATE jobs SET state = 'running' WHERE id = (SELECT job_id FROM t) AND state = 'queued'
         )
         SELECT t.job_id, t.name, t.spec, t.attempts, t.task_key, jb.state AS job_state,
                jb.created_at, jb.queue, s.runs, s.mean_ms, s.p95_ms, t.current_attempt AS attempt_id
         FROM t JOIN jobs jb ON jb.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key",
    )
    .bind(task_id)
    .bind(agent)
    .bind(now)
    .bind(now.saturating_add(lease_ms))
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|r| {
        let id = r.attempt_id;
        (r, id)
    }))
}

/// [`crate::Store::claim`] inside the batch's transaction.
pub(crate) async fn claim_in(
    tx: &mut Tx,
    jobs: &JobCache,
    task_id: i64,
    agent: &str,
    now: UnixMillis,
    lease_ms: i64,
) -> Result<Option<Claimed>> {
    let Some((row, attempt_id)) = (match tx.backend() {
        Backend::Sqlite => claim_sqlite(tx, task_id, agent, now, lease_ms).await?,
        Backend::Postgres => claim_postgres(tx, task_id, agent, now, lease_ms).await?,
    }) else {
        return Ok(None);
    };
    claimed(tx, jobs, row, attempt_id, task_id, agent, now)
        .await
        .map(Some)
}

/// What a claim answers, from its conditional update's row.
pub(crate) async fn claimed(
    tx: &mut Tx,
    jobs: &JobCache,
    row: ClaimRow,
    attempt_id: i64,
    task_id: i64,
    agent: &str,
    now: UnixMillis,
) -> Result<Claimed> {
    let task: TaskSpec = serde_json::from_str(&row.spec)?;
    let history = match (row.runs, row.mean_ms, row.p95_ms) {
        (Some(runs), Some(mean_ms), Some(p95_ms)) => Some(TaskStats {
            runs,
            mean_ms,
            p95_ms,
        }),
        _ => None,
    };
    // The job's spec (large: it lists every task) comes from the cache.
    let job = jobs.get_or_load(tx, row.job_id).await?;
    let work = work_item(
        &job,
        row.job_id,
        row.created_at,
        task_id,
        &row.name,
        &task,
        attempt_id,
    );
    Ok(Claimed {
        max_runtime: task.max_runtime.map(|d| d.0),
        history,
        attempt: RunningAttempt {
            attempt_id,
            task_id,
            job_id: row.job_id,
            agent: agent.to_owned(),
            integration_id: work.integration_id.clone(),
            last_update_ts: None,
            queue: row.queue,
            task_key: row.task_key,
            started_at: now,
        },
        work,
    })
}

/// The attempt a finish ended, as its conditional update returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct EndedRow {
    task_id: i64,
    agent: String,
    started_at: i64,
}

/// The task and job of an ended attempt.
#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    job_id: i64,
    spec: String,
    test_failures: i64,
    infra_failures: i64,
    queue: String,
    priority: i64,
    current_attempt: Option<i64>,
    state: String,
    task_key: String,
    job_state: String,
    pinned_agent: Option<String>,
}

/// A run's duration for its task key's history, recorded when the batch
/// settles (`batch`), each key once per batch.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeSample {
    pub key: String,
    pub duration_ms: i64,
}

/// [`crate::Store::finish_attempt`] inside the batch's transaction; also
/// returns the run's duration when it teaches the runtime history.
pub(crate) async fn finish_in(
    tx: &mut Tx,
    args: &FinishArgs,
) -> Result<(FinishEffect, Option<RuntimeSample>)> {
    let results_json = args
        .results
        .as_deref()
        .map(serde_json::to_string)
        .transpose()?;
    // The conditional update is the fence: an attempt ends once, and only
    // the agent that runs it may end it.
    let Some((ended, row)) = (match tx.backend() {
        Backend::Sqlite => end_attempt_sqlite(tx, args, results_json).await?,
        Backend::Postgres => end_attempt_postgres(tx, args, results_json).await?,
    }) else {
        return Ok((FinishEffect::Stale, None));
    };
    // The exporters' outbox and the ResultsDB view commit with the results.
    if let Some(results) = args.results.as_deref() {
        crate::outbox::record_finished(tx, args.attempt_id, results, args.now).await?;
    }
    let (sample, planned) = plan_finish(args, ended, row)?;
    let Some(planned) = planned else {
        return Ok((FinishEffect::Stale, sample));
    };
    if !move_task(tx, &planned.change).await? {
        return Ok((FinishEffect::Stale, sample));
    }
    Ok((planned.effect(tx, sample.is_some()).await?, sample))
}

/// A run's duration for its key's history: only runs that ended on their
/// own teach it; stopped, lost or cancelled ones would only teach a lower
/// bound.
fn sample_of(args: &FinishArgs, ended: &EndedRow, row: &TaskRow) -> Option<RuntimeSample> {
    matches!(
        args.outcome,
        AttemptOutcome::Passed | AttemptOutcome::Failed | AttemptOutcome::Flaky
    )
    .then(|| RuntimeSample {
        key: row.task_key.clone(),
        duration_ms: (args.now - ended.started_at).max(0),
    })
}

/// How an ended attempt moves its task on: the fenced update to run and
/// what the finish answers once it moved the task.
pub(crate) struct PlannedMove {
    pub change: TaskChange,
    effect: FinishEffect,
}

impl PlannedMove {
    /// The finish's answer after `change` moved the task. A re-queued
    /// task's mean runtime is read here only when the run taught none (with
    /// a sample, the batch answers the mean once it recorded it).
    pub(crate) async fn effect(self, tx: &mut Tx, has_sample: bool) -> Result<FinishEffect> {
        let mut effect = self.effect;
        if let FinishEffect::Requeued(task) = &mut effect
            && !has_sample
        {
            task.expected_ms = on_tx!(tx, c => sqlx::query_scalar::<_, f64>(
                "SELECT mean_ms FROM task_stats WHERE task_key = $1",
            )
            .bind(&task.task_key)
            .fetch_optional(c)
            .await)?;
        }
        Ok(effect)
    }
}

/// The fenced update of a task after its attempt ended: it applies only
/// `WHERE id = task_id AND current_attempt = attempt_id AND state = 'running'`.
#[derive(Debug, Clone)]
pub(crate) struct TaskChange {
    pub task_id: i64,
    pub attempt_id: i64,
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub test_inc: i64,
    pub infra_inc: i64,
    pub now: UnixMillis,
    pub kind: ChangeKind,
}

/// Where a [`TaskChange`] moves the task.
#[derive(Debug, Clone)]
pub(crate) enum ChangeKind {
    /// Back to the queue, boosted, remembering the agent that ran it.
    Requeue { priority: i64, last_agent: String },
    /// To a final state.
    Finish { state: &'static str, flaky: bool },
}

/// Decides, from the ended attempt and its task as the end read them, how
/// the task moves on (`None`: the task moved on already, so this outcome
/// is recorded but decides nothing), and the run's sample.
pub(crate) fn plan_finish(
    args: &FinishArgs,
    ended: EndedRow,
    row: TaskRow,
) -> Result<(Option<RuntimeSample>, Option<PlannedMove>)> {
    let sample = sample_of(args, &ended, &row);
    let (attempt_id, outcome, now) = (args.attempt_id, args.outcome, args.now);
    if row.current_attempt != Some(attempt_id) || row.state != "running" {
        // The task moved on (cancelled, or re-queued after a lost agent).
        return Ok((sample, None));
    }
    let task_id = ended.task_id;
    let spec: TaskSpec = serde_json::from_str(&row.spec)?;
    let decision = after_attempt(
        outcome,
        RetryUse {
            test_budget: spec.retries.tests,
            infra_budget: spec.retries.infra,
            test_failures_so_far: u32::try_from(row.test_failures).unwrap_or(u32::MAX),
            infra_failures_so_far: u32::try_from(row.infra_failures).unwrap_or(u32::MAX),
        },
    );
    let (test_inc, infra_inc): (i64, i64) = match outcome {
        o if o.is_success() || o == AttemptOutcome::Cancelled => (0, 0),
        o if o.is_infra() => (0, 1),
        _ => (1, 0),
    };
    let planned = match decision {
        AfterAttempt::Retry => {
            let boosted = narrow(row.priority)?.saturating_add(RETRY_PRIORITY_BOOST);
            PlannedMove {
                change: TaskChange {
                    task_id,
                    attempt_id,
                    outcome: outcome.as_str(),
                    reason: args.reason.clone(),
                    test_inc,
                    infra_inc,
                    now,
                    kind: ChangeKind::Requeue {
                        priority: i64::from(boosted),
                        last_agent: ended.agent.clone(),
                    },
                },
                // A pinned (each_agent) task keeps its pin on retry: it is that agent's work.
                effect: FinishEffect::Requeued(QueuedTask {
                    id: task_id,
                    job_id: row.job_id,
                    queue: row.queue,
                    priority: boosted,
                    pinned_agent: row.pinned_agent,
                    requires: spec.requires,
                    last_agent: Some(ended.agent),
                    queued_at: now,
                    expected_ms: None,
                    task_key: row.task_key,
                }),
            }
        }
        AfterAttempt::Finish { state, flaky } => {
            let shown = if flaky && outcome == AttemptOutcome::Passed {
                AttemptOutcome::Flaky
            } else {
                outcome
            };
            PlannedMove {
                change: TaskChange {
                    task_id,
                    attempt_id,
                    outcome: shown.as_str(),
                    reason: args.reason.clone(),
                    test_inc,
                    infra_inc,
                    now,
                    kind: ChangeKind::Finish {
                        state: state.as_str(),
                        flaky,
                    },
                },
                // The job's state is settled after the commit (see `batch`).
                effect: FinishEffect::TaskFinished {
                    task_id,
                    job_id: row.job_id,
                    state,
                    job_state: row.job_state.parse().unwrap_or(JobState::Running),
                },
            }
        }
    };
    Ok((sample, Some(planned)))
}

/// Runs one fenced task update; false when the task moved on meanwhile.
async fn move_task(tx: &mut Tx, change: &TaskChange) -> Result<bool> {
    let moved = match &change.kind {
        ChangeKind::Requeue {
            priority,
            last_agent,
        } => on_tx!(tx, c => sqlx::query(
            "UPDATE tasks SET state = 'queued', outcome = $1, detail_message = $2, current_attempt = NULL,
             test_failures = test_failures + $3, infra_failures = infra_failures + $4, priority = $5,
             last_agent = $6, queued_at = $7, updated_at = $7
             WHERE id = $8 AND current_attempt = $9 AND state = 'running'",
        )
        .bind(change.outcome)
        .bind(change.reason.as_deref())
        .bind(change.test_inc)
        .bind(change.infra_inc)
        .bind(*priority)
        .bind(last_agent)
        .bind(change.now)
        .bind(change.task_id)
        .bind(change.attempt_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?,
        ChangeKind::Finish { state, flaky } => on_tx!(tx, c => sqlx::query(
            "UPDATE tasks SET state = $1, outcome = $2, detail_message = $3,
             test_failures = test_failures + $4, infra_failures = infra_failures + $5, flaky = $6,
             updated_at = $7 WHERE id = $8 AND current_attempt = $9 AND state = 'running'",
        )
        .bind(*state)
        .bind(change.outcome)
        .bind(change.reason.as_deref())
        .bind(change.test_inc)
        .bind(change.infra_inc)
        .bind(*flaky)
        .bind(change.now)
        .bind(change.task_id)
        .bind(change.attempt_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?,
    };
    Ok(moved > 0)
}

/// The conditional update that ends an attempt, then its task and job, on
/// SQLite (two statements; one writer).
async fn end_attempt_sqlite(
    tx: &mut Tx,
    args: &FinishArgs,
    results_json: Option<String>,
) -> Result<Option<(EndedRow, TaskRow)>> {
    // The conditional update is the fence: an attempt ends once, and only
    // the agent that runs it may end it. Its RETURNING brings the task and
    // the job (one statement: each one is a hand-off to SQLite's thread).
    let row = on_tx!(tx, c => sqlx::query_as::<_, EndedTaskRow>(concat!(
        "UPDATE attempts SET outcome = $1, reason = $2, reason_data = $3, results = COALESCE($4, results),
                stage = COALESCE($5, stage), finished_at = $6
         WHERE id = $7 AND outcome IS NULL AND ($8 IS NULL OR agent = $8)
         RETURNING task_id, agent, started_at,", sqlite_ended_returning!()),
    )
    .bind(args.outcome.as_str())
    .bind(args.reason.as_deref())
    .bind(args.reason_data.as_ref().map(ReasonData::to_json_text))
    .bind(results_json)
    .bind(args.stage.map(Stage::as_str))
    .bind(args.now)
    .bind(args.attempt_id)
    .bind(args.by_agent.as_deref())
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|r| (r.ended, r.task)))
}

/// The same on PostgreSQL in one statement (one round trip): the
/// conditional update in a CTE, joined to its task and job.
async fn end_attempt_postgres(
    tx: &mut Tx,
    args: &FinishArgs,
    results_json: Option<String>,
) -> Result<Option<(EndedRow, TaskRow)>> {
    let row = on_tx!(tx, c => sqlx::query_as::<_, EndedTaskRow>(
        "WITH a AS (
             UPDATE attempts SET outcome = $1, reason = $2, reason_data = $3, results = COALESCE($4, results),
                    stage = COALESCE($5, stage), finished_at = $6
             WHERE id = $7 AND outcome IS NULL AND ($8 IS NULL OR agent = $8)
             RETURNING task_id, agent, started_at
         )
         SELECT a.task_id, a.agent, a.started_at,
                t.job_id, t.spec, t.test_failures, t.infra_failures, j.queue, t.priority,
                t.current_attempt, t.state, t.task_key, j.state AS job_state, t.pinned_agent
         FROM a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id",
    )
    .bind(args.outcome.as_str())
    .bind(args.reason.as_deref())
    .bind(args.reason_data.as_ref().map(ReasonData::to_json_text))
    .bind(results_json)
    .bind(args.stage.map(Stage::as_str))
    .bind(args.now)
    .bind(args.attempt_id)
    .bind(args.by_agent.as_deref())
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|r| (r.ended, r.task)))
}

/// [`end_attempt_sqlite`]'s and [`end_attempt_postgres`]'s row.
#[derive(sqlx::FromRow)]
struct EndedTaskRow {
    #[sqlx(flatten)]
    ended: EndedRow,
    #[sqlx(flatten)]
    task: TaskRow,
}

/// A key's stored history (`recent`, JSON) with `durations_ms` added,
/// trimmed to the newest 50: its mean, its p95 and the new `recent`.
pub(crate) fn runtime_stats(
    recent: Option<&str>,
    durations_ms: &[i64],
) -> Result<(f64, f64, String)> {
    let mut recent: Vec<f64> = match recent {
        Some(text) => serde_json::from_str(text)?,
        None => Vec::new(),
    };
    recent.extend(durations_ms.iter().map(|&d| d as f64));
    if recent.len() > HISTORY {
        recent.drain(..recent.len() - HISTORY);
    }
    let stats = testfleet_core::stats::Summary::of(&recent);
    Ok((stats.mean, stats.p95, serde_json::to_string(&recent)?))
}

/// Which task states a job has: one probe of the (job_id, state, …) index
/// per state, so the cost does not grow with the job. `SELECT DISTINCT
/// state … WHERE job_id = $1` read every task of the job on PostgreSQL,
/// which has no skip scan: 3.9 ms for a job of 20,000 tasks against 0.07
/// ms, for every batch of finishes that touched the job. Lists every
/// [`TaskState`] (a test checks).
pub(crate) const JOB_TASK_STATES: &str = "SELECT v.column1
     FROM (VALUES ('queued'), ('running'), ('passed'), ('failed'), ('cancelled')) AS v
     WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = $1 AND t.state = v.column1)";

/// The state a job's tasks give it, as `tx` sees them now.
async fn job_state_of_tasks(tx: &mut Tx, job_id: i64) -> Result<JobState> {
    let states = on_tx!(tx, c => sqlx::query_scalar::<_, String>(JOB_TASK_STATES)
    .bind(job_id)
    .fetch_all(c)
    .await)?;
    let states = states
        .iter()
        .map(|s| {
            s.parse::<TaskState>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(JobState::from_tasks(states))
}

/// Recomputes a job's state from its tasks and stores it. After a task
/// ended, this runs in a transaction of its own once the end committed
/// (`batch::settle_jobs`, which passes the `stored` state it expects):
/// each read then sees every end committed before it, so of two batches
/// ending a job's last two tasks, the one that committed later reads both;
/// and the hot transactions never wait on a job's row lock. Such a settle
/// first reads without the lock: most task ends leave a running job
/// running, and taking the job's row lock for them made every batch of
/// every coordinator wait on the others' commits (the lock is a write,
/// held through the commit's WAL flush). Only a state that changes is
/// read again and stored under the lock, so one writer at a time stores it.
///
/// A finished job's counts (`views::jobs`) are counted here, under that
/// lock and in the caller's transaction, and stored with its state; a job
/// that is queued or running again has them cleared. Every change of a
/// job's state other than a claim's `queued` → `running` comes through
/// here, or clears them itself (`Store::retrigger`).
pub(crate) async fn refresh_job_state(
    tx: &mut Tx,
    job_id: i64,
    stored: Option<&str>,
    now: UnixMillis,
) -> Result<JobState> {
    if tx.backend() == Backend::Postgres {
        if let Some(expected) = stored {
            let state = job_state_of_tasks(tx, job_id).await?;
            if !state.is_terminal() && expected == state.as_str() {
                return Ok(state);
            }
        }
        // Two writers ending the last two tasks of a job in one transaction
        // each (a cancel, a retry) must not both read the other's task as
        // still running: the job's row lock orders them, and the second
        // reads what the first committed.
        on_tx!(tx, c => sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    let mut job_state = job_state_of_tasks(tx, job_id).await?;
    if !job_state.is_terminal() && stored == Some(job_state.as_str()) {
        // Most task ends leave a running job running.
        return Ok(job_state);
    }
    let counts = if job_state.is_terminal() {
        // The counts are one snapshot of the tasks; the state is taken from
        // it too, so the two stored never disagree.
        let counts = jobs::count_job_in(tx, job_id).await?;
        job_state = counts.job_state();
        job_state.is_terminal().then_some(counts)
    } else {
        None
    };
    let finished_at = job_state.is_terminal().then_some(now);
    jobs::store_job_state(tx, job_id, job_state, finished_at, counts.as_ref()).await?;
    Ok(job_state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_task_states_are_probed_for_every_state() {
        for state in TaskState::ALL {
            assert!(
                JOB_TASK_STATES.contains(&format!("('{}')", state.as_str())),
                "{state:?} is missing from JOB_TASK_STATES"
            );
        }
    }

    /// On SQLite too each state is an index probe, never a scan of `tasks`.
    #[tokio::test]
    async fn sqlite_probes_a_jobs_task_states_in_the_index() {
        let plan = crate::db::sqlite_plan(JOB_TASK_STATES, 1).await;
        let steps: Vec<&str> = plan.iter().map(String::as_str).collect();
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING COVERING INDEX") && s.contains("job_id=? AND state=?")),
            "{steps:?}"
        );
        assert!(!steps.contains(&"SCAN t"), "{steps:?}");
    }
}
