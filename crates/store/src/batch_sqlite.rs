//! The batch writer's grouped statements on SQLite (`batch_pg` has
//! PostgreSQL's, and the planning both share).
//!
//! SQLite runs on a worker thread of its own, and every statement is a
//! hand-off to it and back; a batch of claims and finishes written one at a
//! time was two or three statements each. Here a batch's claims are three
//! statements whatever their number (the conditional update, the attempts,
//! the jobs that start), its finishes one to end the attempts and one per
//! kind of move. The rows travel as one JSON array (`json_each`), since
//! SQLite has no arrays to bind. The fencing is the same as one at a time:
//! `UPDATE tasks … FROM … WHERE state = 'queued' RETURNING`, `UPDATE
//! attempts … WHERE outcome IS NULL … RETURNING`, and each task moves on
//! `WHERE current_attempt = <its attempt> AND state = 'running'`; a write
//! refused is missing from `RETURNING`.
//!
//! Each statement drives its join from the JSON rows (the `+` before a
//! fenced column keeps SQLite from scanning that column's index instead:
//! all 20,000 queued tasks of a bench, for a batch of ten).
//!
//! A new attempt's id is the one SQLite would give it, as in the single
//! claim (`attempts::claim_sqlite`): the largest id so far, plus the claim's
//! place in the batch, plus one. The writer's transaction is the only
//! writer, and attempts are never deleted.

use serde::Serialize;

use crate::attempts::{ChangeKind, TaskChange};
use crate::batch::FinishArgs;
use crate::batch_pg::{ClaimManyRow, ClaimReq, EndedManyRow};
use crate::db::Tx;
use crate::{Result, StoreError};
use testfleet_wire::reason::ReasonData;

/// The transaction's SQLite connection; the grouped writes call this module
/// on SQLite only.
fn lite(tx: &mut Tx) -> Result<&mut sqlx::sqlite::SqliteConnection> {
    tx.sqlite()
        .ok_or_else(|| StoreError::Corrupt("a grouped SQLite statement ran on PostgreSQL".into()))
}

#[derive(Serialize)]
struct ClaimIn<'a> {
    task_id: i64,
    agent: &'a str,
    now: i64,
}

#[derive(Serialize)]
struct AttemptIn<'a> {
    id: i64,
    task_id: i64,
    number: i64,
    agent: &'a str,
    now: i64,
    lease_until: i64,
}

/// Claims the tasks of `order` (distinct task ids, sorted): the
/// conditional update, then the won claims' attempts and the jobs that
/// start, three statements in all.
pub(crate) async fn claim_rows(tx: &mut Tx, order: &[&ClaimReq<'_>]) -> Result<Vec<ClaimManyRow>> {
    let input: Vec<ClaimIn> = order
        .iter()
        .map(|c| ClaimIn {
            task_id: c.task_id,
            agent: c.agent,
            now: c.now,
        })
        .collect();
    let rows = sqlx::query_as::<_, ClaimManyRow>(concat!(
        "UPDATE tasks SET state = 'running', stage = 'new', agent = c.agent,
                attempts = tasks.attempts + 1, detail_message = NULL, updated_at = c.now,
                current_attempt = (SELECT COALESCE(MAX(a.id), 0) FROM attempts a) + c.idx + 1
         FROM (SELECT key AS idx, value ->> 'task_id' AS task_id, value ->> 'agent' AS agent,
                      value ->> 'now' AS now
               FROM json_each($1)) AS c
         WHERE tasks.id = c.task_id AND +tasks.state = 'queued'
         RETURNING id AS task_id, agent, job_id, name, spec, attempts, task_key,",
        crate::attempts::sqlite_claim_returning!()
    ))
    .bind(serde_json::to_string(&input)?)
    .fetch_all(lite(tx)?)
    .await?;
    if rows.is_empty() {
        return Ok(rows);
    }
    let mut attempts = Vec::with_capacity(rows.len());
    let mut starting = Vec::new();
    for r in &rows {
        // `order` is sorted by task id.
        let Ok(at) = order.binary_search_by_key(&r.task_id, |c| c.task_id) else {
            return Err(StoreError::Corrupt(format!(
                "a grouped claim returned task {} it did not ask for",
                r.task_id
            )));
        };
        let req = order[at];
        attempts.push(AttemptIn {
            id: r.row.attempt_id,
            task_id: r.task_id,
            number: r.row.attempts,
            agent: &r.agent,
            now: req.now,
            lease_until: req.now.saturating_add(req.lease_ms),
        });
        if r.row.job_state == "queued" {
            starting.push(r.row.job_id);
        }
    }
    sqlx::query(
        "INSERT INTO attempts (id, task_id, number, agent, stage, started_at, lease_expires_at)
         SELECT value ->> 'id', value ->> 'task_id', value ->> 'number', value ->> 'agent', 'new',
                value ->> 'now', value ->> 'lease_until'
         FROM json_each($1)",
    )
    .bind(serde_json::to_string(&attempts)?)
    .execute(lite(tx)?)
    .await?;
    if !starting.is_empty() {
        starting.sort_unstable();
        starting.dedup();
        sqlx::query(
            "UPDATE jobs SET state = 'running'
             WHERE state = 'queued' AND id IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(&starting)?)
        .execute(lite(tx)?)
        .await?;
    }
    Ok(rows)
}

#[derive(Serialize)]
struct EndIn<'a> {
    attempt_id: i64,
    outcome: &'a str,
    reason: Option<&'a str>,
    reason_data: Option<String>,
    results: Option<&'a str>,
    stage: Option<&'a str>,
    now: i64,
    by_agent: Option<&'a str>,
}

/// Ends the attempts of `order` (distinct attempt ids, sorted) in one
/// statement, returning each ended attempt with its task and job;
/// `results` are the finishes' results as JSON text, in `order`'s order.
pub(crate) async fn end_rows(
    tx: &mut Tx,
    order: &[&FinishArgs],
    results: &[Option<String>],
) -> Result<Vec<EndedManyRow>> {
    let input: Vec<EndIn> = order
        .iter()
        .zip(results)
        .map(|(f, results)| EndIn {
            attempt_id: f.attempt_id,
            outcome: f.outcome.as_str(),
            reason: f.reason.as_deref(),
            reason_data: f.reason_data.as_ref().map(ReasonData::to_json_text),
            results: results.as_deref(),
            stage: f.stage.map(|s| s.as_str()),
            now: f.now,
            by_agent: f.by_agent.as_deref(),
        })
        .collect();
    Ok(sqlx::query_as::<_, EndedManyRow>(concat!(
        "UPDATE attempts SET outcome = f.outcome, reason = f.reason, reason_data = f.reason_data,
                results = COALESCE(f.results, attempts.results),
                stage = COALESCE(f.stage, attempts.stage), finished_at = f.now
         FROM (SELECT value ->> 'attempt_id' AS attempt_id, value ->> 'outcome' AS outcome,
                      value ->> 'reason' AS reason, value ->> 'reason_data' AS reason_data,
                      value ->> 'results' AS results, value ->> 'stage' AS stage,
                      value ->> 'now' AS now, value ->> 'by_agent' AS by_agent
               FROM json_each($1)) AS f
         WHERE attempts.id = f.attempt_id AND attempts.outcome IS NULL
           AND (f.by_agent IS NULL OR attempts.agent = f.by_agent)
         RETURNING id AS attempt_id, task_id, agent, started_at,",
        crate::attempts::sqlite_ended_returning!()
    ))
    .bind(serde_json::to_string(&input)?)
    .fetch_all(lite(tx)?)
    .await?)
}

#[derive(Serialize)]
struct FinishIn<'a> {
    task_id: i64,
    attempt_id: i64,
    state: &'a str,
    outcome: &'a str,
    reason: Option<&'a str>,
    test_inc: i64,
    infra_inc: i64,
    flaky: bool,
    now: i64,
}

#[derive(Serialize)]
struct RequeueIn<'a> {
    task_id: i64,
    attempt_id: i64,
    outcome: &'a str,
    reason: Option<&'a str>,
    test_inc: i64,
    infra_inc: i64,
    priority: i64,
    last_agent: &'a str,
    now: i64,
}

/// Moves on the tasks `finished` ends (sorted by task id) in one
/// statement; returns the (task, attempt) pairs that moved.
pub(crate) async fn finish_tasks(tx: &mut Tx, finished: &[&TaskChange]) -> Result<Vec<(i64, i64)>> {
    let input: Vec<FinishIn> = finished
        .iter()
        .filter_map(|c| match c.kind {
            ChangeKind::Finish { state, flaky } => Some(FinishIn {
                task_id: c.task_id,
                attempt_id: c.attempt_id,
                state,
                outcome: c.outcome,
                reason: c.reason.as_deref(),
                test_inc: c.test_inc,
                infra_inc: c.infra_inc,
                flaky,
                now: c.now,
            }),
            ChangeKind::Requeue { .. } => None,
        })
        .collect();
    Ok(sqlx::query_as::<_, (i64, i64)>(
        "UPDATE tasks SET state = m.state, outcome = m.outcome, detail_message = m.reason,
                test_failures = tasks.test_failures + m.test_inc,
                infra_failures = tasks.infra_failures + m.infra_inc, flaky = m.flaky,
                updated_at = m.now
         FROM (SELECT value ->> 'task_id' AS task_id, value ->> 'attempt_id' AS attempt_id,
                      value ->> 'state' AS state, value ->> 'outcome' AS outcome,
                      value ->> 'reason' AS reason, value ->> 'test_inc' AS test_inc,
                      value ->> 'infra_inc' AS infra_inc, value ->> 'flaky' AS flaky,
                      value ->> 'now' AS now
               FROM json_each($1)) AS m
         WHERE tasks.id = m.task_id AND +tasks.current_attempt = m.attempt_id
           AND +tasks.state = 'running'
         RETURNING id, current_attempt",
    )
    .bind(serde_json::to_string(&input)?)
    .fetch_all(lite(tx)?)
    .await?)
}

/// Puts back in the queue the tasks `requeued` re-queues (sorted by task
/// id, each task once) in one statement; returns the (task, attempt) pairs
/// that moved.
pub(crate) async fn requeue_tasks(
    tx: &mut Tx,
    requeued: &[&TaskChange],
) -> Result<Vec<(i64, i64)>> {
    let input: Vec<RequeueIn> = requeued
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Requeue {
                priority,
                last_agent,
            } => Some(RequeueIn {
                task_id: c.task_id,
                attempt_id: c.attempt_id,
                outcome: c.outcome,
                reason: c.reason.as_deref(),
                test_inc: c.test_inc,
                infra_inc: c.infra_inc,
                priority: *priority,
                last_agent,
                now: c.now,
            }),
            ChangeKind::Finish { .. } => None,
        })
        .collect();
    // The update clears `current_attempt`, so RETURNING names the task
    // only; each task is re-queued by one attempt at most.
    let moved: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET state = 'queued', outcome = m.outcome, detail_message = m.reason,
                current_attempt = NULL, test_failures = tasks.test_failures + m.test_inc,
                infra_failures = tasks.infra_failures + m.infra_inc, priority = m.priority,
                last_agent = m.last_agent, queued_at = m.now, updated_at = m.now
         FROM (SELECT value ->> 'task_id' AS task_id, value ->> 'attempt_id' AS attempt_id,
                      value ->> 'outcome' AS outcome, value ->> 'reason' AS reason,
                      value ->> 'test_inc' AS test_inc, value ->> 'infra_inc' AS infra_inc,
                      value ->> 'priority' AS priority, value ->> 'last_agent' AS last_agent,
                      value ->> 'now' AS now
               FROM json_each($1)) AS m
         WHERE tasks.id = m.task_id AND +tasks.current_attempt = m.attempt_id
           AND +tasks.state = 'running'
         RETURNING id",
    )
    .bind(serde_json::to_string(&input)?)
    .fetch_all(lite(tx)?)
    .await?;
    Ok(requeued
        .iter()
        .filter(|c| moved.contains(&c.task_id))
        .map(|c| (c.task_id, c.attempt_id))
        .collect())
}

/// The stored histories (`recent`) of `keys`, in one statement.
pub(crate) async fn read_runtimes(tx: &mut Tx, keys: &[&str]) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as::<_, (String, String)>(
        "SELECT task_key, recent FROM task_stats
         WHERE task_key IN (SELECT value FROM json_each($1))",
    )
    .bind(serde_json::to_string(keys)?)
    .fetch_all(lite(tx)?)
    .await?)
}

#[derive(Serialize)]
struct RuntimeIn<'a> {
    key: &'a str,
    mean: f64,
    p95: f64,
    recent: &'a str,
}

/// Stores each key's new summary `(key, mean, p95, recent)` in one upsert.
pub(crate) async fn write_runtimes(tx: &mut Tx, rows: &[(&str, f64, f64, &str)]) -> Result<()> {
    let input: Vec<RuntimeIn> = rows
        .iter()
        .map(|&(key, mean, p95, recent)| RuntimeIn {
            key,
            mean,
            p95,
            recent,
        })
        .collect();
    // `WHERE true`: an upsert's SELECT needs a WHERE for SQLite to parse
    // its ON CONFLICT.
    sqlx::query(
        "INSERT INTO task_stats (task_key, runs, mean_ms, p95_ms, recent)
         SELECT value ->> 'key', 1, value ->> 'mean', value ->> 'p95', value ->> 'recent'
         FROM json_each($1) WHERE true
         ON CONFLICT (task_key) DO UPDATE SET runs = task_stats.runs + 1,
         mean_ms = excluded.mean_ms, p95_ms = excluded.p95_ms, recent = excluded.recent",
    )
    .bind(serde_json::to_string(&input)?)
    .execute(lite(tx)?)
    .await?;
    Ok(())
}
