//! The exporters' durable outbox.
//!
//! When an attempt finishes with results, [`record_finished`] runs inside
//! `finish_attempt`'s transaction: it appends one `export_events` row, so the
//! results and the export event are committed together or not at all. Work
//! whose cost grows with the size of a report stays out of that transaction
//! (and so out of the claims' group commit): the ResultsDB view is built by a
//! consumer of the outbox, [`Store::materialize_pending`], which maps each
//! event's results and moves its own cursor. On PostgreSQL that is one
//! transaction per batch of events, under the cursor's row lock, so every
//! event is mapped exactly once, whichever coordinator runs it. On SQLite,
//! whose one writer connection also serves the claims' group commit, an
//! event is mapped [`SQLITE_CHUNK`] rows per transaction so a 10,000-case
//! report never holds the writer for long; an interrupted event is mapped
//! again from the start (its partial rows deleted first), and the cursor
//! moves with its last chunk.
//!
//! Each sink (InfluxDB, an external ResultsDB) keeps a cursor into
//! `export_events`. A sink reads the events after its cursor, delivers them, and
//! moves its cursor only after the receiver acknowledged them, so nothing is lost
//! while a receiver is down and delivery resumes where it stopped.

use crate::db::{Backend, Tx, on_pool, on_tx};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::results::Results;

use crate::{Result, Store};

/// One finished attempt waiting for a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportEvent {
    pub id: i64,
    pub attempt_id: i64,
}

/// A sink's delivery state, as shown by `GET /api/v1/exporters`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct SinkStatus {
    pub name: String,
    /// Finished attempts not yet delivered.
    pub pending: i64,
    /// Points (InfluxDB) or results (ResultsDB) acknowledged by the receiver.
    pub delivered: i64,
    /// Items the receiver refused as malformed; skipped, never retried.
    pub dropped: i64,
    /// Failed deliveries since the last success.
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixMillis>,
    pub last_success_at: Option<UnixMillis>,
}

/// The cursor of the outbox consumer that builds the ResultsDB view. Sinks
/// see only events it has mapped (an external ResultsDB is sent the mapped
/// rows); `GET /api/v1/exporters` does not list it.
pub const RESULTSDB_VIEW: &str = "tf:resultsdb-view";

/// An event waiting for the ResultsDB view, with its attempt's results.
#[derive(sqlx::FromRow)]
struct UnmappedEvent {
    id: i64,
    attempt_id: i64,
    created_at: i64,
    results: Option<String>,
}

/// View rows per transaction when SQLite maps a large report (see the
/// module's documentation): about 15 ms of the one writer connection.
pub(crate) const SQLITE_CHUNK: usize = 50;

/// After each chunk the mapping sleeps this many times as long as the chunk
/// took, so claims and finishes get the writer at least three quarters of
/// the time while a large report is mapped.
const SQLITE_IDLE_FACTOR: u32 = 3;

/// The ResultsDB view's cursor, creating its row when missing. On
/// PostgreSQL the row stays locked until the transaction ends, so
/// coordinators sharing the database take turns.
async fn view_cursor(tx: &mut Tx) -> Result<i64> {
    on_tx!(tx, c => sqlx::query("INSERT INTO export_sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(RESULTSDB_VIEW)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    let read = match tx.backend() {
        Backend::Sqlite => "SELECT cursor FROM export_sinks WHERE name = $1",
        Backend::Postgres => "SELECT cursor FROM export_sinks WHERE name = $1 FOR UPDATE",
    };
    Ok(on_tx!(tx, c => sqlx::query_scalar(read)
        .bind(RESULTSDB_VIEW)
        .fetch_one(c)
        .await)?)
}

/// Moves the ResultsDB view's cursor past event `id` (created at `at`).
async fn move_view_cursor(tx: &mut Tx, id: i64, at: UnixMillis) -> Result<()> {
    on_tx!(tx, c => sqlx::query("UPDATE export_sinks SET cursor = $1, last_success_at = $2 WHERE name = $3")
        .bind(id)
        .bind(at)
        .bind(RESULTSDB_VIEW)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Appends the export event of a finished attempt. Called from
/// `finish_attempt`, inside its transaction.
pub(crate) async fn record_finished(
    tx: &mut Tx,
    attempt_id: i64,
    results: &[Results],
    now: UnixMillis,
) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    on_tx!(tx, c => sqlx::query("INSERT INTO export_events (attempt_id, created_at) VALUES ($1, $2)")
        .bind(attempt_id)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

impl Store {
    /// Maps the results of up to `max` events after the ResultsDB view's
    /// cursor into the ResultsDB tables and moves the cursor, in one
    /// transaction. Returns how many events were mapped (0: caught up).
    pub async fn materialize_pending(&self, max: i64) -> Result<usize> {
        let _one_at_a_time = self.materializing.lock().await;
        match self.writer.backend() {
            Backend::Sqlite => self.materialize_chunked(max).await,
            Backend::Postgres => self.materialize_batch(max).await,
        }
    }

    /// SQLite: up to `max` events, each in transactions of [`SQLITE_CHUNK`]
    /// rows, the first deleting what an interrupted run left, the last moving
    /// the cursor. The caller holds `materializing`.
    async fn materialize_chunked(&self, max: i64) -> Result<usize> {
        let mut mapped = 0;
        while mapped < max {
            let mut tx = self.writer.begin().await?;
            let cursor = view_cursor(&mut tx).await?;
            let event = on_tx!(&mut tx, c => sqlx::query_as::<_, UnmappedEvent>(
                "SELECT e.id, e.attempt_id, e.created_at, a.results
                 FROM export_events e JOIN attempts a ON a.id = e.attempt_id
                 WHERE e.id > $1 ORDER BY e.id LIMIT 1",
            )
            .bind(cursor)
            .fetch_optional(c)
            .await)?;
            let Some(event) = event else {
                break;
            };
            let results: Vec<Results> = match &event.results {
                Some(text) => serde_json::from_str(text)?,
                None => Vec::new(),
            };
            let rows = crate::rdb_view::attempt_rows(&mut tx, event.attempt_id, &results).await?;
            crate::rdb_view::delete_attempt_rows(&mut tx, event.attempt_id).await?;
            let mut chunks = rows.chunks(SQLITE_CHUNK).peekable();
            let mut started = std::time::Instant::now();
            loop {
                let chunk = chunks.next().unwrap_or(&[]);
                crate::rdb_view::insert_rows(&mut tx, chunk, event.created_at, event.attempt_id)
                    .await?;
                if chunks.peek().is_none() {
                    move_view_cursor(&mut tx, event.id, event.created_at).await?;
                    tx.commit().await?;
                    break;
                }
                tx.commit().await?;
                // Leave the writer to the claims' group commit for a while:
                // the view takes at most a quarter of the writer's time.
                tokio::time::sleep(started.elapsed() * SQLITE_IDLE_FACTOR).await;
                started = std::time::Instant::now();
                tx = self.writer.begin().await?;
            }
            mapped += 1;
        }
        Ok(usize::try_from(mapped).unwrap_or(usize::MAX))
    }

    /// PostgreSQL: up to `max` events in one transaction under the cursor's
    /// row lock (coordinators sharing the database take turns).
    async fn materialize_batch(&self, max: i64) -> Result<usize> {
        let mut tx = self.writer.begin().await?;
        let cursor = view_cursor(&mut tx).await?;
        let events = on_tx!(&mut tx, c => sqlx::query_as::<_, UnmappedEvent>(
            "SELECT e.id, e.attempt_id, e.created_at, a.results
             FROM export_events e JOIN attempts a ON a.id = e.attempt_id
             WHERE e.id > $1 ORDER BY e.id LIMIT $2",
        )
        .bind(cursor)
        .bind(max)
        .fetch_all(c)
        .await)?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let (last_id, last_at) = (last.id, last.created_at);
        for event in &events {
            let results: Vec<Results> = match &event.results {
                Some(text) => serde_json::from_str(text)?,
                None => Vec::new(),
            };
            crate::rdb_view::materialize(&mut tx, event.attempt_id, &results, event.created_at)
                .await?;
        }
        move_view_cursor(&mut tx, last_id, last_at).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// True when every event committed so far is in the ResultsDB view.
    pub async fn resultsdb_view_caught_up(&self) -> Result<bool> {
        Ok(on_pool!(&self.reader, p => sqlx::query_scalar::<_, bool>(
            "SELECT COALESCE((SELECT MAX(id) FROM export_events), 0)
                    <= COALESCE((SELECT cursor FROM export_sinks WHERE name = $1), 0)",
        )
        .bind(RESULTSDB_VIEW)
        .fetch_one(p)
        .await)?)
    }

    /// Makes sure `sink` has a cursor. A new sink starts at the beginning of
    /// the outbox, so it back-fills every stored result.
    pub async fn outbox_register(&self, sink: &str) -> Result<()> {
        on_pool!(&self.writer, p => sqlx::query("INSERT INTO export_sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(sink)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Up to `max` events after `sink`'s cursor, oldest first.
    pub async fn outbox_pending(&self, sink: &str, max: i64) -> Result<Vec<ExportEvent>> {
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, ExportEvent>(
            "SELECT e.id, e.attempt_id FROM export_events e
             WHERE e.id > COALESCE((SELECT cursor FROM export_sinks WHERE name = $1), 0)
               AND e.id <= COALESCE((SELECT cursor FROM export_sinks WHERE name = $3), 0)
             ORDER BY e.id LIMIT $2",
        )
        .bind(sink)
        .bind(max)
        .bind(RESULTSDB_VIEW)
        .fetch_all(p)
        .await)?,
        )
    }

    /// Records that the receiver acknowledged every event up to `through`:
    /// `delivered` items were accepted and `dropped` refused as malformed.
    pub async fn outbox_ack(
        &self,
        sink: &str,
        through: i64,
        delivered: i64,
        dropped: i64,
        now: UnixMillis,
    ) -> Result<()> {
        on_pool!(&self.writer, p => sqlx::query(
            "UPDATE export_sinks SET cursor = CASE WHEN cursor > $1 THEN cursor ELSE $1 END,
             delivered = delivered + $2, dropped = dropped + $3, failures = 0, last_success_at = $4
             WHERE name = $5",
        )
        .bind(through)
        .bind(delivered)
        .bind(dropped)
        .bind(now)
        .bind(sink)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Records a failed delivery; the cursor stays, so the events are retried.
    pub async fn outbox_failed(&self, sink: &str, error: &str, now: UnixMillis) -> Result<()> {
        on_pool!(&self.writer, p => sqlx::query(
            "UPDATE export_sinks SET failures = failures + 1, last_error = $1, last_error_at = $2
             WHERE name = $3",
        )
        .bind(error)
        .bind(now)
        .bind(sink)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The delivery state of every registered sink (not the outbox's own
    /// consumers: the ResultsDB view, the benchmark series, and any other
    /// internal `tf:` cursor such as the AMQP publisher's).
    pub async fn outbox_status(&self) -> Result<Vec<SinkStatus>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, SinkStatus>(
            "SELECT s.name, (SELECT COUNT(*) FROM export_events e WHERE e.id > s.cursor) AS pending,
                    s.delivered, s.dropped, s.failures, s.last_error, s.last_error_at, s.last_success_at
             FROM export_sinks s WHERE s.name <> $1 AND s.name <> $2 AND s.name NOT LIKE 'tf:%' ORDER BY s.name",
        )
        .bind(RESULTSDB_VIEW)
        .bind(crate::SERIES_VIEW)
        .fetch_all(p)
        .await)?)
    }
}

impl Store {
    /// True once [`Store::close`] ran: background tasks stop then.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }
}
