//! Trigger events committed in batches.
//!
//! Each event is one transaction in meaning (its record and its jobs,
//! de-duplicated by its key), but an AMQP backlog or a burst of webhooks
//! brings hundreds a second; one commit each made them queue on the
//! store's writer (p99 82 ms on SQLite, 129 ms on PostgreSQL while a
//! backlog drained). So [`Store::ingest_event`] hands its event to a
//! background writer that takes whatever is waiting (up to
//! [`MAX_BATCH`]), records each event in turn inside one transaction
//! (`events::ingest_in`, unchanged) and commits once, then answers every
//! caller. A caller is answered only after the commit: an AMQP message is
//! acknowledged after its own event's batch committed.
//!
//! A duplicate inside a batch is found like one against the table: the
//! first event's row is already in the transaction. When the batch fails
//! it is rolled back and each event runs again in a transaction of its own
//! (retried while a concurrent writer aborts it), so one bad event fails
//! alone and never blocks the others. On PostgreSQL two writers' batches
//! that claim the same keys in opposite orders deadlock; the database
//! aborts one, and its events then run one by one.

use std::sync::Arc;

use testfleet_core::time_fmt::UnixMillis;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Backend, Pool};
use crate::events::{EventJob, Ingested, NewEvent, check_event, ingest_in};
use crate::{Result, Store, StoreError};

/// Most events committed together.
const MAX_BATCH: usize = 64;

/// Batch writers on PostgreSQL (SQLite has one writer connection). Two
/// drained an AMQP backlog as fast as four did on the 2-core machine of
/// docs/triggers.md, and with the claims' four batch writers and the
/// progress writer they keep at most seven of the writer pool's eight
/// connections busy at once.
const POSTGRES_WRITERS: usize = 2;

/// One event of a batch.
#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    event: &'a NewEvent,
    jobs: &'a [EventJob],
    now: UnixMillis,
}

/// An event waiting for the writer, with where its answer goes.
#[derive(Debug)]
struct Pending {
    event: NewEvent,
    jobs: Vec<EventJob>,
    now: UnixMillis,
    reply: oneshot::Sender<Result<Ingested>>,
}

impl Pending {
    fn item(&self) -> Item<'_> {
        Item {
            event: &self.event,
            jobs: &self.jobs,
            now: self.now,
        }
    }
}

type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>>;

/// Hands events to the background writers; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct EventBatcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl EventBatcher {
    /// Starts the writers: one on SQLite, [`POSTGRES_WRITERS`] on
    /// PostgreSQL, where a batch is a round trip per statement and another
    /// batch can run meanwhile.
    pub(crate) fn spawn(pool: Pool) -> EventBatcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let workers = match pool.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        let rx: Queue = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers {
            tokio::spawn(run(pool.clone(), rx.clone()));
        }
        EventBatcher { tx }
    }

    /// Records `event` with `jobs` in the next batch; answers after its
    /// commit.
    pub(crate) async fn ingest(
        &self,
        event: NewEvent,
        jobs: Vec<EventJob>,
        now: UnixMillis,
    ) -> Result<Ingested> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                event,
                jobs,
                now,
                reply,
            })
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?
    }
}

async fn run(pool: Pool, rx: Queue) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // One writer at a time takes what is waiting; the others run
            // their batches meanwhile.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let items: Vec<Item<'_>> = batch.iter().map(Pending::item).collect();
        let answers = ingest_batch(&pool, &items).await;
        drop(items);
        for (pending, answer) in batch.drain(..).zip(answers) {
            // A caller that went away (a webhook's client hung up) is
            // answered by the log alone.
            let _ = pending.reply.send(answer);
        }
    }
}

impl Store {
    /// Records each event with its jobs, as [`Store::ingest_event`] does
    /// for one, all in one transaction; one answer per event, in order.
    /// Events are recorded in order, so a key repeated inside `events` is a
    /// duplicate of its first occurrence. When the transaction fails, each
    /// event is recorded again in a transaction of its own: a bad event
    /// answers its own error and the others are recorded.
    pub async fn ingest_events(
        &self,
        events: &[(NewEvent, Vec<EventJob>)],
        now: UnixMillis,
    ) -> Vec<Result<Ingested>> {
        let items: Vec<Item<'_>> = events
            .iter()
            .map(|(event, jobs)| Item { event, jobs, now })
            .collect();
        ingest_batch(&self.writer, &items).await
    }
}

/// One answer per item: together in one transaction, else one by one.
async fn ingest_batch(pool: &Pool, items: &[Item<'_>]) -> Vec<Result<Ingested>> {
    // Events refused before the database answer at once and stay out.
    let mut answers: Vec<Option<Result<Ingested>>> = items
        .iter()
        .map(|i| check_event(i.event, i.jobs).err().map(Err))
        .collect();
    let valid: Vec<usize> = (0..items.len()).filter(|&i| answers[i].is_none()).collect();
    let mut alone: &[usize] = &valid;
    if valid.len() > 1 {
        match together(pool, items, &valid).await {
            Ok(done) => {
                for (&i, done) in valid.iter().zip(done) {
                    answers[i] = Some(Ok(done));
                }
                alone = &[];
            }
            Err(e) if e.is_conflict() => {
                // Another writer's batch claimed the same keys in another order.
                tracing::debug!(
                    events = valid.len(),
                    "batched events aborted ({e}); recording them one by one"
                );
            }
            Err(e) => {
                tracing::warn!(
                    events = valid.len(),
                    "batched events failed ({e}); recording them one by one"
                );
            }
        }
    }
    for &i in alone {
        answers[i] = Some(by_itself(pool, items[i]).await);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(StoreError::Corrupt("an event was not answered".into()))))
        .collect()
}

/// The items at `indexes`, in order, in one transaction.
async fn together(pool: &Pool, items: &[Item<'_>], indexes: &[usize]) -> Result<Vec<Ingested>> {
    let mut tx = pool.begin().await?;
    let mut done = Vec::with_capacity(indexes.len());
    for &i in indexes {
        let item = items[i];
        done.push(ingest_in(&mut tx, item.event, item.jobs, item.now).await?);
    }
    tx.commit().await?;
    Ok(done)
}

/// One item in a transaction of its own, run again while a concurrent
/// writer aborts it.
async fn by_itself(pool: &Pool, item: Item<'_>) -> Result<Ingested> {
    crate::retry_conflicts(|| async {
        let mut tx = pool.begin().await?;
        let ingested = ingest_in(&mut tx, item.event, item.jobs, item.now).await?;
        tx.commit().await?;
        Ok(ingested)
    })
    .await
}
