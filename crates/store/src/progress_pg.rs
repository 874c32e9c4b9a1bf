//! The progress writer's statements on PostgreSQL (`progress`; SQLite's
//! are there). Each kind of write is one statement text whatever the
//! batch's size: the rows travel as arrays through `unnest`. A `VALUES`
//! list of the batch's length made a new text for every length, and each
//! new text was parsed, and planned at its first executions, again on
//! every connection (docs/performance.md, "One statement text per write").
//!
//! Progress decides nothing, so it never waits for a row that a claim or a
//! finish holds (that attempt is being started or ended, and its stage is
//! written by that change): it skips locked rows, and takes the others in
//! id order. The tasks are found through their attempts' primary keys: by
//! `current_attempt` and `state`, a database whose statistics lag behind
//! its growth (a new one) planned a scan of every running task's index
//! entry for each update (15 ms, most of PostgreSQL's work in a busy bench)
//! instead of 0.2 ms.

use crate::db::Tx;
use crate::progress::{LogLine, StageRow};
use crate::{Result, StoreError};

fn pg(tx: &mut Tx) -> Result<&mut sqlx::postgres::PgConnection> {
    tx.postgres()
        .ok_or_else(|| StoreError::Corrupt("a PostgreSQL progress statement ran on SQLite".into()))
}

/// The stage updates' columns, one array each.
#[derive(Default)]
struct StageColumns<'a> {
    attempt_ids: Vec<i64>,
    stages: Vec<&'static str>,
    details: Vec<Option<&'a str>>,
    nows: Vec<i64>,
    update_ts: Vec<Option<i64>>,
}

impl<'a> StageColumns<'a> {
    fn of(stages: &[StageRow<'a>]) -> StageColumns<'a> {
        let mut cols = StageColumns::default();
        for r in stages {
            cols.attempt_ids.push(r.attempt_id);
            cols.stages.push(r.stage);
            cols.details.push(r.detail);
            cols.nows.push(r.now);
            cols.update_ts.push(r.update_ts);
        }
        cols
    }
}

/// The rows of `$1..$5` as `v(column1, …, column5)`: attempt, stage,
/// detail, time, the agent's update time.
macro_rules! stage_rows {
    () => {
        "v AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
         $5::bigint[]) AS v(column1, column2, column3, column4, column5))"
    };
}

/// Moves each running attempt of `stages` (one update per attempt), and its
/// task while the attempt is the task's current one, to its new stage.
/// Returns how many attempts moved.
pub(crate) async fn write_stages(tx: &mut Tx, stages: &[StageRow<'_>]) -> Result<u64> {
    let cols = StageColumns::of(stages);
    let tasks = concat!(
        "WITH ",
        stage_rows!(),
        ", lt AS (SELECT t.id FROM v JOIN attempts ta ON ta.id = v.column1
                   JOIN tasks t ON t.id = ta.task_id
                   WHERE t.current_attempt = v.column1 AND t.state = 'running'
                   ORDER BY t.id FOR UPDATE OF t SKIP LOCKED)
         UPDATE tasks SET stage = v.column2, detail_message = COALESCE(v.column3, tasks.detail_message),
                updated_at = v.column4
         FROM v JOIN attempts a ON a.id = v.column1
         WHERE tasks.id IN (SELECT id FROM lt) AND tasks.current_attempt = v.column1
           AND tasks.state = 'running' AND a.outcome IS NULL"
    );
    bind_stages(sqlx::query(tasks), &cols)
        .execute(pg(tx)?)
        .await?;
    let attempts = concat!(
        "WITH ",
        stage_rows!(),
        ", la AS (SELECT a.id FROM attempts a JOIN v ON a.id = v.column1
                   WHERE a.outcome IS NULL ORDER BY a.id FOR UPDATE OF a SKIP LOCKED)
         UPDATE attempts SET stage = v.column2, last_update_ts = COALESCE(v.column5, attempts.last_update_ts)
         FROM v WHERE attempts.id IN (SELECT id FROM la) AND attempts.id = v.column1
           AND attempts.outcome IS NULL"
    );
    let done = bind_stages(sqlx::query(attempts), &cols)
        .execute(pg(tx)?)
        .await?;
    Ok(done.rows_affected())
}

fn bind_stages<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    cols: &'q StageColumns<'_>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&cols.attempt_ids)
        .bind(&cols.stages)
        .bind(&cols.details)
        .bind(&cols.nows)
        .bind(&cols.update_ts)
}

/// Appends the work log's lines of `logs`, in order.
pub(crate) async fn insert_work_log(tx: &mut Tx, logs: &[LogLine<'_>]) -> Result<u64> {
    let hostnames: Vec<&str> = logs.iter().map(|l| l.hostname).collect();
    let attempt_ids: Vec<Option<i64>> = logs.iter().map(|l| l.attempt_id).collect();
    let integration_ids: Vec<Option<&str>> = logs.iter().map(|l| l.integration_id).collect();
    let statuses: Vec<&str> = logs.iter().map(|l| l.status).collect();
    let details: Vec<Option<&str>> = logs.iter().map(|l| l.detail).collect();
    let nows: Vec<i64> = logs.iter().map(|l| l.now).collect();
    // `WITH ORDINALITY … ORDER BY` keeps the lines' ids in the order sent.
    let done = sqlx::query(
        "INSERT INTO work_log (hostname, attempt_id, integration_id, status, detail, at)
         SELECT h, a, i, s, d, n
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])
             WITH ORDINALITY AS l(h, a, i, s, d, n, k)
         ORDER BY k",
    )
    .bind(&hostnames)
    .bind(&attempt_ids)
    .bind(&integration_ids)
    .bind(&statuses)
    .bind(&details)
    .bind(&nows)
    .execute(pg(tx)?)
    .await?;
    Ok(done.rows_affected())
}
