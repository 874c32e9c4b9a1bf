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
//! instead of 0.2 ms. The locking pass carries each row's new values, so
//! the update joins it by primary key: joining the batch's rows again (a
//! `WITH` read twice is materialized, without an index) compared every
//! task with every row of the batch, 8 ms for a batch of 50.

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

/// The stage update of the tasks whose current attempt moved: the locking
/// pass (`lt`) carries each row's new values, so the update joins it by
/// key.
pub(crate) const STAGE_TASKS: &str = concat!(
    "WITH ",
    stage_rows!(),
    ", lt AS (SELECT t.id, v.column1 AS attempt_id, v.column2 AS stage,
                      v.column3 AS detail, v.column4 AS at
               FROM v JOIN attempts ta ON ta.id = v.column1
               JOIN tasks t ON t.id = ta.task_id
               WHERE t.current_attempt = v.column1 AND t.state = 'running'
                 AND ta.outcome IS NULL
               ORDER BY t.id FOR UPDATE OF t SKIP LOCKED)
     UPDATE tasks SET stage = lt.stage, detail_message = COALESCE(lt.detail, tasks.detail_message),
            updated_at = lt.at
     FROM lt
     WHERE tasks.id = lt.id AND tasks.current_attempt = lt.attempt_id
       AND tasks.state = 'running'"
);

/// The stage update of the attempts that are still running.
pub(crate) const STAGE_ATTEMPTS: &str = concat!(
    "WITH ",
    stage_rows!(),
    ", la AS (SELECT a.id, v.column2 AS stage, v.column5 AS update_ts
               FROM attempts a JOIN v ON a.id = v.column1
               WHERE a.outcome IS NULL ORDER BY a.id FOR UPDATE OF a SKIP LOCKED)
     UPDATE attempts SET stage = la.stage, last_update_ts = COALESCE(la.update_ts, attempts.last_update_ts)
     FROM la WHERE attempts.id = la.id AND attempts.outcome IS NULL"
);

/// Moves each running attempt of `stages` (one update per attempt), and its
/// task while the attempt is the task's current one, to its new stage.
/// Returns how many attempts moved.
pub(crate) async fn write_stages(tx: &mut Tx, stages: &[StageRow<'_>]) -> Result<u64> {
    let cols = StageColumns::of(stages);
    bind_stages(sqlx::query(STAGE_TASKS), &cols)
        .execute(pg(tx)?)
        .await?;
    let done = bind_stages(sqlx::query(STAGE_ATTEMPTS), &cols)
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
