//! The batch writer's grouped writes: one statement per kind of write and
//! batch rather than one per write. The planning is shared; the statements
//! here are PostgreSQL's, SQLite's are in `batch_sqlite`.
//!
//! On PostgreSQL each statement is a round trip, and a batch of 128 claims
//! and finishes was ~300 of them. Here the batch's finishes end their
//! attempts in one statement and move their tasks in one or two more, its
//! claims are one statement, and settling the runtime history is two. The
//! fencing is unchanged, only applied to many rows at once (ARCHITECTURE.md,
//! "Correct with more than one writer"): a claim is `UPDATE tasks … FROM
//! unnest(…) WHERE state = 'queued' RETURNING`, a finish `UPDATE attempts …
//! FROM unnest(…) WHERE outcome IS NULL … RETURNING`, and each task moves on
//! `WHERE current_attempt = <its attempt> AND state = 'running'`. A write the
//! database refused to apply (the task was no longer queued, the attempt had
//! already ended) is simply missing from `RETURNING`, and is answered as it
//! would be alone: `None` or `Stale`.
//!
//! Rows are passed sorted by id, so two writers' statements tend to lock
//! them in one order; a deadlock still aborts one batch, which then runs
//! one write at a time (`batch`).

use std::collections::{HashMap, HashSet};

use testfleet_wire::reason::ReasonData;

use crate::attempts::{
    ChangeKind, ClaimRow, EndedRow, RuntimeSample, TaskChange, TaskRow, claimed, plan_finish,
    runtime_stats,
};
use crate::batch::{FinishArgs, JobCache};
use crate::db::{Backend, Tx};
use crate::ops::{Claimed, FinishEffect};
use crate::{Result, StoreError};

/// The transaction's PostgreSQL connection; the batch writer calls this
/// module on PostgreSQL only.
fn pg(tx: &mut Tx) -> Result<&mut sqlx::postgres::PgConnection> {
    tx.postgres()
        .ok_or_else(|| StoreError::Corrupt("a grouped batch statement ran on SQLite".into()))
}

/// One claim of a batch.
pub(crate) struct ClaimReq<'a> {
    pub task_id: i64,
    pub agent: &'a str,
    pub now: i64,
    pub lease_ms: i64,
}

/// A row of [`claim_many`]'s statement: which task, for which agent.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimManyRow {
    pub(crate) task_id: i64,
    pub(crate) agent: String,
    #[sqlx(flatten)]
    pub(crate) row: ClaimRow,
}

/// Claims every task of `claims` (distinct task ids) in one statement;
/// answers in `claims`' order, `None` for a task that was no longer queued.
pub(crate) async fn claim_many(
    tx: &mut Tx,
    jobs: &JobCache,
    claims: &[ClaimReq<'_>],
) -> Result<Vec<Option<Claimed>>> {
    let mut order: Vec<&ClaimReq> = claims.iter().collect();
    order.sort_by_key(|c| c.task_id);
    let rows = match tx.backend() {
        Backend::Postgres => claim_rows(tx, &order).await?,
        Backend::Sqlite => crate::batch_sqlite::claim_rows(tx, &order).await?,
    };
    let mut won: HashMap<i64, ClaimManyRow> = rows.into_iter().map(|r| (r.task_id, r)).collect();
    let mut answers = Vec::with_capacity(claims.len());
    for claim in claims {
        let answer = match won.remove(&claim.task_id) {
            Some(r) if r.agent == claim.agent => {
                let attempt_id = r.row.attempt_id;
                Some(
                    claimed(
                        tx,
                        jobs,
                        r.row,
                        attempt_id,
                        claim.task_id,
                        claim.agent,
                        claim.now,
                    )
                    .await?,
                )
            }
            _ => None,
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// [`claim_rows`]' statement: `$1..$4` are the tasks, agents, times and
/// lease ends, in task order.
pub(crate) const CLAIM_MANY: &str = "WITH c AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
                 AS c(task_id, agent, now, lease_until)
         ), t AS (
             UPDATE tasks SET state = 'running', stage = 'new', agent = c.agent,
                    attempts = tasks.attempts + 1, detail_message = NULL, updated_at = c.now,
                    current_attempt = nextval('attempts_id_seq')
             FROM c
             WHERE tasks.id = c.task_id AND (tasks.state = 'queued') IS TRUE
             RETURNING tasks.id, tasks.job_id, tasks.name, tasks.spec, tasks.attempts,
                       tasks.task_key, tasks.current_attempt, tasks.agent, c.now, c.lease_until
         ), a AS (
             INSERT INTO attempts (id, task_id, number, agent, stage, started_at, lease_expires_at)
             SELECT current_attempt, id, attempts, agent, 'new', now, lease_until FROM t
         ), j AS (
             UPDATE jobs SET state = 'running'
             WHERE id = ANY(ARRAY(SELECT DISTINCT job_id FROM t)) AND state = 'queued'
         )
         SELECT t.id AS task_id, t.agent, t.job_id, t.name, t.spec, t.attempts, t.task_key,
                jb.state AS job_state, jb.created_at, jb.queue, s.runs, s.mean_ms, s.p95_ms,
                t.current_attempt AS attempt_id
         FROM t JOIN jobs jb ON jb.id = t.job_id LEFT JOIN task_stats s ON s.task_key = t.task_key";

/// The claims of `order` (sorted by task) in one statement: the
/// conditional update, the attempts and the jobs that start.
///
/// The claim knows its tasks, so it reads them by primary key. Its state
/// test is written `(state = 'queued') IS TRUE`, which the planner cannot
/// match to the partial index `tasks_queued`: with `state = 'queued'` and
/// statistics that lag behind the queue (a queue that grew since the last
/// ANALYZE), it read every queued task for each batch and hashed them
/// (1,200–2,300 rows and 2–3 ms for a batch of 50–70).
///
/// The jobs that start are found by key too (`id = ANY(ARRAY(…))`, the
/// batch's job ids computed once): as a semi-join, a young database's
/// planner compared every queued job with every claimed task (5,558
/// comparisons, 3.4 ms).
async fn claim_rows(tx: &mut Tx, order: &[&ClaimReq<'_>]) -> Result<Vec<ClaimManyRow>> {
    let ids: Vec<i64> = order.iter().map(|c| c.task_id).collect();
    let agents: Vec<&str> = order.iter().map(|c| c.agent).collect();
    let nows: Vec<i64> = order.iter().map(|c| c.now).collect();
    let leases: Vec<i64> = order
        .iter()
        .map(|c| c.now.saturating_add(c.lease_ms))
        .collect();
    let rows = sqlx::query_as::<_, ClaimManyRow>(CLAIM_MANY)
        .bind(&ids)
        .bind(&agents)
        .bind(&nows)
        .bind(&leases)
        .fetch_all(pg(tx)?)
        .await?;
    Ok(rows)
}

/// A row of [`finish_many`]'s first statement: the attempt it ended.
#[derive(sqlx::FromRow)]
pub(crate) struct EndedManyRow {
    attempt_id: i64,
    #[sqlx(flatten)]
    ended: EndedRow,
    #[sqlx(flatten)]
    task: TaskRow,
}

/// Finishes every attempt of `finishes` (distinct attempt ids): one
/// statement ends the attempts, then the results go to the outbox, then one
/// statement per kind of move (finished, re-queued) moves the tasks on.
/// Answers in `finishes`' order.
pub(crate) async fn finish_many(
    tx: &mut Tx,
    finishes: &[&FinishArgs],
) -> Result<Vec<(FinishEffect, Option<RuntimeSample>)>> {
    let mut order: Vec<&FinishArgs> = finishes.to_vec();
    order.sort_by_key(|f| f.attempt_id);
    let mut results_json = Vec::with_capacity(order.len());
    for f in &order {
        results_json.push(
            f.results
                .as_deref()
                .map(serde_json::to_string)
                .transpose()?,
        );
    }
    let rows = match tx.backend() {
        Backend::Postgres => end_rows(tx, &order, &results_json).await?,
        Backend::Sqlite => crate::batch_sqlite::end_rows(tx, &order, &results_json).await?,
    };
    let mut ended: HashMap<i64, EndedManyRow> =
        rows.into_iter().map(|r| (r.attempt_id, r)).collect();

    // Plan every move first (the outbox commits with the results), then
    // move the tasks in one statement per kind.
    let mut planned = Vec::with_capacity(finishes.len());
    for args in finishes {
        let Some(row) = ended.remove(&args.attempt_id) else {
            planned.push(None);
            continue;
        };
        if let Some(results) = args.results.as_deref() {
            crate::outbox::record_finished(tx, args.attempt_id, results, args.now).await?;
        }
        planned.push(Some(plan_finish(args, row.ended, row.task)?));
    }
    let changes: Vec<&TaskChange> = planned
        .iter()
        .filter_map(|p| p.as_ref().and_then(|(_, m)| m.as_ref()).map(|m| &m.change))
        .collect();
    let moved = move_tasks(tx, &changes).await?;

    let mut answers = Vec::with_capacity(finishes.len());
    for p in planned {
        answers.push(match p {
            None => (FinishEffect::Stale, None),
            Some((sample, None)) => (FinishEffect::Stale, sample),
            Some((sample, Some(m))) => {
                if moved.contains(&(m.change.task_id, m.change.attempt_id)) {
                    (m.effect(tx, sample.is_some()).await?, sample)
                } else {
                    (FinishEffect::Stale, sample)
                }
            }
        });
    }
    Ok(answers)
}

/// Ends the attempts of `order` (sorted) in one statement, returning each
/// ended attempt with its task and job.
async fn end_rows(
    tx: &mut Tx,
    order: &[&FinishArgs],
    results_json: &[Option<String>],
) -> Result<Vec<EndedManyRow>> {
    let ids: Vec<i64> = order.iter().map(|f| f.attempt_id).collect();
    let outcomes: Vec<&str> = order.iter().map(|f| f.outcome.as_str()).collect();
    let reasons: Vec<Option<&str>> = order.iter().map(|f| f.reason.as_deref()).collect();
    let reason_data: Vec<Option<String>> = order
        .iter()
        .map(|f| f.reason_data.as_ref().map(ReasonData::to_json_text))
        .collect();
    let stages: Vec<Option<&str>> = order.iter().map(|f| f.stage.map(|s| s.as_str())).collect();
    let nows: Vec<i64> = order.iter().map(|f| f.now).collect();
    let by_agents: Vec<Option<&str>> = order.iter().map(|f| f.by_agent.as_deref()).collect();
    let rows = sqlx::query_as::<_, EndedManyRow>(
        "WITH f AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bigint[], $8::text[])
                 AS f(attempt_id, outcome, reason, reason_data, results, stage, now, by_agent)
         ), a AS (
             UPDATE attempts SET outcome = f.outcome, reason = f.reason, reason_data = f.reason_data,
                    results = COALESCE(f.results, attempts.results),
                    stage = COALESCE(f.stage, attempts.stage), finished_at = f.now
             FROM f
             WHERE attempts.id = f.attempt_id AND attempts.outcome IS NULL
               AND (f.by_agent IS NULL OR attempts.agent = f.by_agent)
             RETURNING attempts.id, attempts.task_id, attempts.agent, attempts.started_at
         )
         SELECT a.id AS attempt_id, a.task_id, a.agent, a.started_at,
                t.job_id, t.spec, t.test_failures, t.infra_failures, j.queue, t.priority,
                t.current_attempt, t.state, t.task_key, j.state AS job_state, t.pinned_agent
         FROM a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id",
    )
    .bind(&ids)
    .bind(&outcomes)
    .bind(&reasons)
    .bind(&reason_data)
    .bind(results_json)
    .bind(&stages)
    .bind(&nows)
    .bind(&by_agents)
    .fetch_all(pg(tx)?)
    .await?;
    Ok(rows)
}

/// Runs the fenced task updates of `changes`: one statement for the tasks
/// that finish, one for those re-queued (each only when there are some);
/// returns the (task, attempt) pairs that moved.
async fn move_tasks(tx: &mut Tx, changes: &[&TaskChange]) -> Result<HashSet<(i64, i64)>> {
    let mut finished: Vec<&TaskChange> = Vec::new();
    let mut requeued: Vec<&TaskChange> = Vec::new();
    for c in changes {
        match c.kind {
            ChangeKind::Finish { .. } => finished.push(c),
            ChangeKind::Requeue { .. } => requeued.push(c),
        }
    }
    finished.sort_by_key(|c| c.task_id);
    requeued.sort_by_key(|c| c.task_id);
    let mut moved = HashSet::new();
    if tx.backend() == Backend::Sqlite {
        if !finished.is_empty() {
            moved.extend(crate::batch_sqlite::finish_tasks(tx, &finished).await?);
        }
        if !requeued.is_empty() {
            moved.extend(crate::batch_sqlite::requeue_tasks(tx, &requeued).await?);
        }
        return Ok(moved);
    }
    if !finished.is_empty() {
        let states: Vec<&str> = finished
            .iter()
            .map(|c| match c.kind {
                ChangeKind::Finish { state, .. } => state,
                ChangeKind::Requeue { .. } => "queued",
            })
            .collect();
        let flaky: Vec<bool> = finished
            .iter()
            .map(|c| matches!(c.kind, ChangeKind::Finish { flaky: true, .. }))
            .collect();
        let rows = sqlx::query_as::<_, (i64, i64)>(
            "UPDATE tasks SET state = m.state, outcome = m.outcome, detail_message = m.reason,
                    test_failures = tasks.test_failures + m.test_inc,
                    infra_failures = tasks.infra_failures + m.infra_inc, flaky = m.flaky,
                    updated_at = m.now
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[], $7::bigint[], $8::boolean[], $9::bigint[])
                 AS m(task_id, attempt_id, state, outcome, reason, test_inc, infra_inc, flaky, now)
             WHERE tasks.id = m.task_id AND tasks.current_attempt = m.attempt_id
               AND tasks.state = 'running'
             RETURNING tasks.id, m.attempt_id",
        )
        .bind(finished.iter().map(|c| c.task_id).collect::<Vec<_>>())
        .bind(finished.iter().map(|c| c.attempt_id).collect::<Vec<_>>())
        .bind(&states)
        .bind(finished.iter().map(|c| c.outcome).collect::<Vec<_>>())
        .bind(
            finished
                .iter()
                .map(|c| c.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(finished.iter().map(|c| c.test_inc).collect::<Vec<_>>())
        .bind(finished.iter().map(|c| c.infra_inc).collect::<Vec<_>>())
        .bind(&flaky)
        .bind(finished.iter().map(|c| c.now).collect::<Vec<_>>())
        .fetch_all(pg(tx)?)
        .await?;
        moved.extend(rows);
    }
    if !requeued.is_empty() {
        let (priorities, last_agents): (Vec<i64>, Vec<&str>) = requeued
            .iter()
            .map(|c| match &c.kind {
                ChangeKind::Requeue {
                    priority,
                    last_agent,
                } => (*priority, last_agent.as_str()),
                ChangeKind::Finish { .. } => (0, ""),
            })
            .unzip();
        let rows = sqlx::query_as::<_, (i64, i64)>(
            "UPDATE tasks SET state = 'queued', outcome = m.outcome, detail_message = m.reason,
                    current_attempt = NULL, test_failures = tasks.test_failures + m.test_inc,
                    infra_failures = tasks.infra_failures + m.infra_inc, priority = m.priority,
                    last_agent = m.last_agent, queued_at = m.now, updated_at = m.now
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::text[], $9::bigint[])
                 AS m(task_id, attempt_id, outcome, reason, test_inc, infra_inc, priority,
                      last_agent, now)
             WHERE tasks.id = m.task_id AND tasks.current_attempt = m.attempt_id
               AND tasks.state = 'running'
             RETURNING tasks.id, m.attempt_id",
        )
        .bind(requeued.iter().map(|c| c.task_id).collect::<Vec<_>>())
        .bind(requeued.iter().map(|c| c.attempt_id).collect::<Vec<_>>())
        .bind(requeued.iter().map(|c| c.outcome).collect::<Vec<_>>())
        .bind(
            requeued
                .iter()
                .map(|c| c.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(requeued.iter().map(|c| c.test_inc).collect::<Vec<_>>())
        .bind(requeued.iter().map(|c| c.infra_inc).collect::<Vec<_>>())
        .bind(&priorities)
        .bind(&last_agents)
        .bind(requeued.iter().map(|c| c.now).collect::<Vec<_>>())
        .fetch_all(pg(tx)?)
        .await?;
        moved.extend(rows);
    }
    Ok(moved)
}

/// The stored histories of the keys `$1` (sorted: their rows are locked in
/// that order, the same in every coordinator). Each key is read through the
/// primary key: `task_key = ANY($1)` let the planner scan the whole table
/// while it was small at its last ANALYZE, as when every run brings new keys
/// (docs/performance.md, "A task's runtimes read by key").
pub(crate) const RUNTIMES_FOR_UPDATE: &str = "SELECT s.task_key, s.recent
     FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
     CROSS JOIN LATERAL (SELECT task_key, recent FROM task_stats WHERE task_key = k.key
                         FOR UPDATE) s
     ORDER BY k.n";

/// Adds the runs' durations to their keys' histories (the newest 50 are
/// kept) in two statements: the rows are read (on PostgreSQL locked, in key
/// order), the new summaries written in one upsert. Returns each key's new
/// mean.
pub(crate) async fn record_runtimes(
    tx: &mut Tx,
    runs: &[(String, Vec<i64>)],
) -> Result<HashMap<String, f64>> {
    let keys: Vec<&str> = runs.iter().map(|(k, _)| k.as_str()).collect();
    // Locked until the commit, so two coordinators finishing runs of one
    // key do not lose a duration.
    let stored = match tx.backend() {
        Backend::Postgres => {
            let mut locked = keys.clone();
            locked.sort_unstable();
            locked.dedup();
            sqlx::query_as::<_, (String, String)>(RUNTIMES_FOR_UPDATE)
                .bind(&locked)
                .fetch_all(pg(tx)?)
                .await?
        }
        Backend::Sqlite => crate::batch_sqlite::read_runtimes(tx, &keys).await?,
    };
    let stored: HashMap<String, String> = stored.into_iter().collect();
    let mut means = HashMap::with_capacity(runs.len());
    let (mut mean_col, mut p95_col, mut recent_col) = (Vec::new(), Vec::new(), Vec::new());
    for (key, durations) in runs {
        let (mean, p95, recent) = runtime_stats(stored.get(key).map(String::as_str), durations)?;
        means.insert(key.clone(), mean);
        mean_col.push(mean);
        p95_col.push(p95);
        recent_col.push(recent);
    }
    if tx.backend() == Backend::Sqlite {
        let rows: Vec<_> = keys
            .iter()
            .zip(&mean_col)
            .zip(&p95_col)
            .zip(&recent_col)
            .map(|(((k, m), p), r)| (*k, *m, *p, r.as_str()))
            .collect();
        crate::batch_sqlite::write_runtimes(tx, &rows).await?;
        return Ok(means);
    }
    sqlx::query(
        "INSERT INTO task_stats (task_key, runs, mean_ms, p95_ms, recent)
         SELECT k, 1, m, p, r FROM unnest($1::text[], $2::float8[], $3::float8[], $4::text[]) AS u(k, m, p, r)
         ON CONFLICT (task_key) DO UPDATE SET runs = task_stats.runs + 1, mean_ms = excluded.mean_ms,
         p95_ms = excluded.p95_ms, recent = excluded.recent",
    )
    .bind(&keys)
    .bind(&mean_col)
    .bind(&p95_col)
    .bind(&recent_col)
    .execute(pg(tx)?)
    .await?;
    Ok(means)
}
