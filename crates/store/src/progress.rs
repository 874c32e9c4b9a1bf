//! Progress writes (an attempt's stage, the agents' work log) in batches.
//!
//! Every agent sends several status updates per attempt. Written one by one,
//! each costs a transaction of its own on the single writer connection, and
//! under load those transactions were most of the coordinator's database
//! work. Progress decides nothing (scheduling state lives in the attempt's
//! outcome and the task's state), so it goes through one background writer
//! that turns whatever is waiting, and what arrives within [`LINGER`] of
//! it, into one transaction of multi-row statements (a reader that must see
//! them flushes, which ends the wait). Order is kept: updates are applied
//! in the order they were sent.
//!
//! A coordinator killed with updates still waiting loses those updates only:
//! the last stage shown is an earlier one, and the work log misses its last
//! lines. So may a PostgreSQL server crash, for updates committed in the
//! last few hundred milliseconds: on PostgreSQL the progress transactions
//! commit without waiting for the disk (`Pool::begin_unhurried`).
//! Everything that decides a result commits on its own elsewhere, durably.

use sqlx::QueryBuilder;
use testfleet_core::Stage;
use testfleet_core::time_fmt::UnixMillis;
use tokio::sync::{mpsc, oneshot};

use crate::Result;
use crate::db::{Backend, Pool, on_tx};

/// Most rows written in one transaction.
const MAX_BATCH: usize = 512;

/// How long a batch waits for more updates after its first, unless a
/// reader flushes it. Each transaction costs the database a commit and a
/// few statements whatever its size: without the wait, a coordinator's
/// share of a busy fleet's updates (two coordinators: half of them each)
/// went in twice as many, smaller transactions. A stage shows this much
/// later; nothing waits for it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// One progress write.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A running attempt reached `stage`; ignored once the attempt ended.
    Stage {
        attempt_id: i64,
        stage: Stage,
        detail: Option<String>,
        update_ts: Option<UnixMillis>,
        now: UnixMillis,
    },
    /// A line of the work log that `getWorkLog` shows.
    WorkLog {
        hostname: String,
        attempt_id: Option<i64>,
        integration_id: Option<String>,
        status: String,
        detail: Option<String>,
        now: UnixMillis,
    },
}

enum Command {
    Write(Progress),
    Flush(oneshot::Sender<()>),
}

/// Sends progress to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProgressWriter {
    tx: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Write(p) => p.fmt(f),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl ProgressWriter {
    /// Starts the writer on the current tokio runtime. It stops when every
    /// handle is dropped, after writing what was sent.
    pub(crate) fn spawn(pool: Pool) -> ProgressWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        ProgressWriter { tx }
    }

    /// Queues a write; it is applied after every write queued before it.
    pub fn send(&self, progress: Progress) {
        if self.tx.send(Command::Write(progress)).is_err() {
            tracing::debug!("progress writer stopped; update dropped");
        }
    }

    /// Waits until everything queued so far is written (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(pool: Pool, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushed = Vec::new();
    while next_batch(&mut rx, &mut batch, &mut flushed).await {
        if !batch.is_empty() {
            if let Err(e) = write(&pool, &batch).await {
                tracing::error!(rows = batch.len(), "failed to write progress: {e}");
            }
            batch.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Waits for the next batch: the writes and flushes waiting, and those that
/// arrive within [`LINGER`] of the first, unless the batch is full or a
/// reader waits for it (a flush). `false` once every sender is gone and
/// nothing is left.
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Command>,
    batch: &mut Vec<Progress>,
    flushed: &mut Vec<oneshot::Sender<()>>,
) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    let linger_until = tokio::time::Instant::now() + LINGER;
    let mut next = Some(first);
    loop {
        while let Some(command) = next.take() {
            match command {
                Command::Write(p) => batch.push(p),
                Command::Flush(done) => flushed.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.len() >= MAX_BATCH || !flushed.is_empty() {
            return true;
        }
        match tokio::time::timeout_at(linger_until, rx.recv()).await {
            Ok(Some(command)) => next = Some(command),
            Ok(None) | Err(_) => return true,
        }
    }
}

/// A stage update as the statements bind it.
pub(crate) struct StageRow<'a> {
    pub attempt_id: i64,
    pub stage: &'static str,
    pub detail: Option<&'a str>,
    pub now: UnixMillis,
    pub update_ts: Option<UnixMillis>,
}

/// A work-log line as the statements bind it.
pub(crate) struct LogLine<'a> {
    pub hostname: &'a str,
    pub attempt_id: Option<i64>,
    pub integration_id: Option<&'a str>,
    pub status: &'a str,
    pub detail: Option<&'a str>,
    pub now: UnixMillis,
}

/// Splits a batch into its stage updates, only the newest of each attempt
/// (in batch order, so a task shows the stage its attempt shows), and its
/// work-log lines, in order.
fn split(batch: &[Progress]) -> (Vec<StageRow<'_>>, Vec<LogLine<'_>>) {
    let mut newest = std::collections::HashMap::new();
    for (i, p) in batch.iter().enumerate() {
        if let Progress::Stage { attempt_id, .. } = p {
            newest.insert(*attempt_id, i);
        }
    }
    let (mut stages, mut logs) = (Vec::new(), Vec::new());
    for (i, p) in batch.iter().enumerate() {
        match p {
            Progress::Stage {
                attempt_id,
                stage,
                detail,
                update_ts,
                now,
            } => {
                if newest.get(attempt_id) == Some(&i) {
                    stages.push(StageRow {
                        attempt_id: *attempt_id,
                        stage: stage.as_str(),
                        detail: detail.as_deref(),
                        now: *now,
                        update_ts: *update_ts,
                    });
                }
            }
            Progress::WorkLog {
                hostname,
                attempt_id,
                integration_id,
                status,
                detail,
                now,
            } => logs.push(LogLine {
                hostname,
                attempt_id: *attempt_id,
                integration_id: integration_id.as_deref(),
                status,
                detail: detail.as_deref(),
                now: *now,
            }),
        }
    }
    (stages, logs)
}

/// Writes a batch in one transaction: the stages as two multi-row updates
/// (attempts, then their tasks), the work log as one multi-row insert.
async fn write(pool: &Pool, batch: &[Progress]) -> Result<()> {
    let (stages, logs) = split(batch);

    // Progress may be lost to a crash anyway (see above): its commit does
    // not wait for the disk on PostgreSQL.
    let mut tx = pool.begin_unhurried().await?;
    if !stages.is_empty() {
        // The task follows only while this attempt is its running one; the
        // attempt only until it has an outcome (a late update changes nothing).
        match tx.backend() {
            Backend::Sqlite => on_tx!(&mut tx, c => {
                let mut q = QueryBuilder::new(
                    "UPDATE tasks SET stage = v.column2, detail_message = COALESCE(v.column3, tasks.detail_message),
                     updated_at = v.column4
                     FROM (",
                );
                push_stage_values(&mut q, &stages);
                q.push(
                    ") AS v JOIN attempts a ON a.id = v.column1
                     WHERE tasks.id = a.task_id AND tasks.current_attempt = v.column1
                       AND tasks.state = 'running' AND a.outcome IS NULL",
                );
                q.build().execute(&mut *c).await?;

                let mut q = QueryBuilder::new(
                    "UPDATE attempts SET stage = v.column2, last_update_ts = COALESCE(v.column5, attempts.last_update_ts)
                     FROM (",
                );
                push_stage_values(&mut q, &stages);
                q.push(") AS v WHERE attempts.id = v.column1 AND attempts.outcome IS NULL");
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?,
            // Progress decides nothing, so on PostgreSQL it never waits for
            // a row that a claim or a finish holds (see `progress_pg`).
            Backend::Postgres => crate::progress_pg::write_stages(&mut tx, &stages).await?,
        };
    }
    if !logs.is_empty() {
        match tx.backend() {
            Backend::Sqlite => on_tx!(&mut tx, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO work_log (hostname, attempt_id, integration_id, status, detail, at) ",
                );
                q.push_values(&logs, |mut row, l| {
                    row.push_bind(l.hostname.to_owned())
                        .push_bind(l.attempt_id)
                        .push_bind(l.integration_id.map(str::to_owned))
                        .push_bind(l.status.to_owned())
                        .push_bind(l.detail.map(str::to_owned))
                        .push_bind(l.now);
                });
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?,
            Backend::Postgres => crate::progress_pg::insert_work_log(&mut tx, &logs).await?,
        };
    }
    tx.commit().await?;
    Ok(())
}

/// `VALUES (attempt_id, stage, detail, now, update_ts), …`
fn push_stage_values<DB>(q: &mut QueryBuilder<DB>, stages: &[StageRow<'_>])
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("VALUES ");
    for (i, r) in stages.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(")
            .push_bind(r.attempt_id)
            .push(", ")
            .push_bind(r.stage.to_owned())
            .push(", ")
            .push_bind(r.detail.map(str::to_owned))
            .push(", ")
            .push_bind(r.now)
            .push(", ")
            .push_bind(r.update_ts)
            .push(")");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: i64) -> Command {
        Command::Write(Progress::WorkLog {
            hostname: format!("agent-{n}"),
            attempt_id: None,
            integration_id: None,
            status: "idle".into(),
            detail: None,
            now: n,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn updates_arriving_within_the_linger_share_a_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut batch, mut flushed) = (Vec::new(), Vec::new());
        tx.send(line(1)).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            late.send(line(2)).unwrap();
            tokio::time::sleep(LINGER).await;
            late.send(line(3)).unwrap();
        });
        assert!(next_batch(&mut rx, &mut batch, &mut flushed).await);
        assert_eq!(batch.len(), 2, "the second update came within the linger");
        batch.clear();
        assert!(next_batch(&mut rx, &mut batch, &mut flushed).await);
        assert_eq!(batch.len(), 1);
        drop(tx);
        batch.clear();
        assert!(!next_batch(&mut rx, &mut batch, &mut flushed).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_ends_the_batch_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut batch, mut flushed) = (Vec::new(), Vec::new());
        let (done, _wait) = oneshot::channel();
        tx.send(line(1)).unwrap();
        tx.send(Command::Flush(done)).unwrap();
        let started = tokio::time::Instant::now();
        assert!(next_batch(&mut rx, &mut batch, &mut flushed).await);
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
        assert_eq!((batch.len(), flushed.len()), (1, 1));
    }
}
