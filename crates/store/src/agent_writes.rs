//! Group commit for the agents' connections and retirements.
//!
//! When a fleet of thousands of agents connects or leaves at once, each
//! connection is an upsert into `agents` and each shutdown an update of it.
//! One transaction each made them queue for the writer: callers waited
//! seconds for a connection and some failed (issue #12). So
//! [`crate::Store::agent_connected`] and [`crate::Store::retire_agent`]
//! hand their write to one background writer, which takes whatever is
//! waiting (up to [`MAX_BATCH`]), applies the writes in the order they
//! were sent inside one transaction and commits once, then answers every
//! caller. A caller is answered only after the commit, so what it was told
//! is durable.
//!
//! There is one writer on both backends, not several as for claims
//! (`batch`): the writes of one host must take effect in the order they
//! were sent (connect, retire, connect leaves it serving), and two writers
//! could commit a later write's batch before an earlier one's.
//!
//! A batch that fails is rolled back and each of its writes is applied
//! again alone, in order, in a transaction of its own, so one bad write
//! fails alone. A transaction that fails for a transient reason (the pool
//! had no connection in time, a PostgreSQL deadlock or serialization
//! failure against another coordinator, SQLite busy) runs again a few
//! times after a short, growing pause.

use std::time::Duration;

use testfleet_core::time_fmt::UnixMillis;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Pool, Tx, on_tx};
use crate::{Result, StoreError};

/// Most writes committed together.
const MAX_BATCH: usize = 256;

/// How many times a transaction runs before its transient error is answered.
const ATTEMPTS: u32 = 5;

/// The pause before a transaction's second run; it doubles for each next one.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// One write to the `agents` table.
#[derive(Debug, Clone)]
pub(crate) enum AgentWrite {
    /// The agent connected: its labels and machine (as stored JSON) are
    /// recorded and it is no longer retired.
    Connected {
        hostname: String,
        labels: String,
        machine: Option<String>,
        now: UnixMillis,
    },
    /// The agent shut down on purpose: no more fan-out work for it.
    Retired { hostname: String },
}

/// What the writer is sent.
enum Command {
    /// A write, with where its answer goes.
    Write(AgentWrite, oneshot::Sender<Result<()>>),
    /// Answered once every write sent before it is committed (or failed).
    Flush(oneshot::Sender<()>),
}

/// Hands agent writes to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AgentWriter {
    tx: mpsc::UnboundedSender<Command>,
}

impl AgentWriter {
    /// Starts the writer on the current tokio runtime. It stops when every
    /// handle is dropped, after applying what was sent.
    pub(crate) fn spawn(pool: Pool) -> AgentWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        AgentWriter { tx }
    }

    /// Applies `write` in the next batch, after every write sent before it;
    /// answers after its commit. The write is sent before this future
    /// first waits, so writes started in order are applied in order.
    pub(crate) async fn write(&self, write: AgentWrite) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        // The writer stops only when every handle is gone, or when it
        // panicked; either way the store can no longer write.
        self.tx
            .send(Command::Write(write, reply))
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?
    }

    /// Waits until every write sent so far is committed (or failed).
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(pool: Pool, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut writes: Vec<AgentWrite> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<oneshot::Sender<Result<()>>> = Vec::with_capacity(MAX_BATCH);
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(write, reply) => {
                    writes.push(write);
                    replies.push(reply);
                }
                Command::Flush(done) => flushed.push(done),
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            let answers = apply_batch(&pool, &writes).await;
            for (reply, answer) in replies.drain(..).zip(answers) {
                // A caller that went away needs no answer.
                let _ = reply.send(answer);
            }
            writes.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One answer per write, in order: all of them in one transaction, else
/// each alone.
async fn apply_batch(pool: &Pool, writes: &[AgentWrite]) -> Vec<Result<()>> {
    if writes.len() > 1 {
        match retrying(|| together(pool, writes)).await {
            Ok(()) => return writes.iter().map(|_| Ok(())).collect(),
            Err(e) if is_pool_timeout(&e) => {
                // No connection came in any of the runs: running each write
                // alone would wait for one as long, once per write.
                tracing::error!(
                    writes = writes.len(),
                    "failed to write agents' connections and retirements: {e}"
                );
                return writes.iter().map(|_| Err(pool_timeout())).collect();
            }
            Err(e) => tracing::warn!(
                writes = writes.len(),
                "batched agent writes failed ({e}); applying them one by one"
            ),
        }
    }
    let mut answers = Vec::with_capacity(writes.len());
    let mut pool_gone = false;
    for write in writes {
        if pool_gone {
            answers.push(Err(pool_timeout()));
            continue;
        }
        let answer = retrying(|| alone(pool, write)).await;
        if let Err(e) = &answer {
            pool_gone = is_pool_timeout(e);
        }
        answers.push(answer);
    }
    answers
}

/// Every write, in order, in one transaction.
async fn together(pool: &Pool, writes: &[AgentWrite]) -> Result<()> {
    let mut tx = pool.begin().await?;
    for write in writes {
        apply(&mut tx, write).await?;
    }
    tx.commit().await
}

/// One write in a transaction of its own.
async fn alone(pool: &Pool, write: &AgentWrite) -> Result<()> {
    let mut tx = pool.begin().await?;
    apply(&mut tx, write).await?;
    tx.commit().await
}

async fn apply(tx: &mut Tx, write: &AgentWrite) -> Result<()> {
    match write {
        AgentWrite::Connected {
            hostname,
            labels,
            machine,
            now,
        } => on_tx!(tx, c => sqlx::query(
            "INSERT INTO agents (hostname, labels, machine, first_seen, last_connected, retired)
             VALUES ($1, $2, $3, $4, $4, FALSE)
             ON CONFLICT (hostname) DO UPDATE SET labels = excluded.labels, machine = excluded.machine,
             last_connected = excluded.last_connected, retired = FALSE",
        )
        .bind(hostname)
        .bind(labels)
        .bind(machine)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?,
        AgentWrite::Retired { hostname } => on_tx!(tx, c => sqlx::query(
            "UPDATE agents SET retired = TRUE WHERE hostname = $1",
        )
        .bind(hostname)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?,
    };
    Ok(())
}

/// The pool gave no connection within its acquire timeout.
fn is_pool_timeout(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::PoolTimedOut))
}

fn pool_timeout() -> StoreError {
    StoreError::Db(sqlx::Error::PoolTimedOut)
}

/// A failure that running the same transaction again may cure.
fn is_transient(e: &StoreError) -> bool {
    e.is_conflict() || is_pool_timeout(e)
}

/// Runs `op` up to [`ATTEMPTS`] times while it fails with a transient
/// error, pausing [`FIRST_PAUSE`], then twice as long, … between runs.
async fn retrying<F, Fut>(op: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    crate::retry_while(ATTEMPTS, FIRST_PAUSE, is_transient, op).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::on_pool;

    #[test]
    fn transient_errors_are_pool_timeouts_and_conflicts() {
        assert!(is_transient(&pool_timeout()));
        assert!(!is_transient(&StoreError::Db(sqlx::Error::PoolClosed)));
        assert!(!is_transient(&StoreError::Corrupt("bad".into())));
    }

    #[tokio::test]
    async fn retrying_runs_again_while_transient_and_stops_at_the_limit() {
        let mut runs = 0;
        let answer = retrying(|| {
            runs += 1;
            let fail = runs < 3;
            async move { if fail { Err(pool_timeout()) } else { Ok(()) } }
        })
        .await;
        assert!(answer.is_ok());
        assert_eq!(runs, 3);

        let mut runs = 0;
        let answer = retrying(|| {
            runs += 1;
            async { Err(pool_timeout()) }
        })
        .await;
        assert!(answer.as_ref().is_err_and(is_pool_timeout));
        assert_eq!(runs, ATTEMPTS);

        let mut runs = 0;
        let answer = retrying(|| {
            runs += 1;
            async { Err(StoreError::Corrupt("bad".into())) }
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(runs, 1, "a permanent error is answered at once");
    }

    fn connected(hostname: &str, now: UnixMillis) -> AgentWrite {
        AgentWrite::Connected {
            hostname: hostname.to_owned(),
            labels: "{}".to_owned(),
            machine: None,
            now,
        }
    }

    /// A batch with a write the database refuses: the others are applied
    /// (each alone, in order) and only the bad one fails.
    #[tokio::test]
    async fn a_bad_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pools = crate::db::connect(&crate::DatabaseUrl::in_dir(dir.path()))
            .await
            .unwrap();
        let pool = pools.writer;
        let Pool::Sqlite(sqlite) = &pool else {
            panic!("a store in a directory is SQLite");
        };
        sqlx::query(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON agents WHEN NEW.hostname = 'bad'
             BEGIN SELECT RAISE(ABORT, 'bad host refused'); END",
        )
        .execute(sqlite)
        .await
        .unwrap();
        let writer = AgentWriter::spawn(pool.clone());
        // The writer runs only when this task waits, so the four writes
        // are sent before it takes any: they make one batch.
        let (a, bad, retired, b) = tokio::join!(
            biased;
            writer.write(connected("good-a", 1)),
            writer.write(connected("bad", 2)),
            writer.write(AgentWrite::Retired { hostname: "good-a".into() }),
            writer.write(connected("good-b", 3)),
        );
        a.unwrap();
        retired.unwrap();
        b.unwrap();
        let e = bad.unwrap_err();
        assert!(e.to_string().contains("bad host refused"), "{e}");
        let rows: Vec<(String, bool)> = on_pool!(&pool, p => sqlx::query_as(
            "SELECT hostname, retired FROM agents ORDER BY hostname",
        )
        .fetch_all(p)
        .await)
        .unwrap();
        assert_eq!(
            rows,
            vec![("good-a".to_owned(), true), ("good-b".to_owned(), false)]
        );
        writer.flush().await;
        pool.close().await;
    }
}
