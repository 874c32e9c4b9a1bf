//! The exporters' durable outbox.
//!
//! When an attempt finishes with results, [`record_finished`] runs inside
//! `finish_attempt`'s transaction: it appends one `export_events` row, so the
//! results and the export event are committed together or not at all. Work
//! whose cost grows with the size of a report stays out of that transaction
//! (and so out of the claims' group commit): the ResultsDB view is built by a
//! consumer of the outbox, [`Store::materialize_pending`], which maps each
//! event's results and moves its own cursor in one transaction, so every
//! event is mapped exactly once, whichever coordinator runs it.
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
        let mut tx = self.writer.begin().await?;
        on_tx!(&mut tx, c => sqlx::query("INSERT INTO export_sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(RESULTSDB_VIEW)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        // The cursor's row lock makes coordinators that share a PostgreSQL
        // database take turns; SQLite has one writer anyway.
        let read = match tx.backend() {
            Backend::Sqlite => "SELECT cursor FROM export_sinks WHERE name = $1",
            Backend::Postgres => "SELECT cursor FROM export_sinks WHERE name = $1 FOR UPDATE",
        };
        let cursor: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(read)
            .bind(RESULTSDB_VIEW)
            .fetch_one(c)
            .await)?;
        let events = on_tx!(&mut tx, c => sqlx::query_as::<_, UnmappedEvent>(
            "SELECT e.id, e.attempt_id, e.created_at, a.results
             FROM export_events e JOIN attempts a ON a.id = e.attempt_id
             WHERE e.id > $1 ORDER BY e.id LIMIT $2",
        )
        .bind(cursor)
        .bind(max)
        .fetch_all(c)
        .await)?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(0);
        };
        for event in &events {
            let results: Vec<Results> = match &event.results {
                Some(text) => serde_json::from_str(text)?,
                None => Vec::new(),
            };
            crate::resultsdb::materialize(&mut tx, event.attempt_id, &results, event.created_at)
                .await?;
        }
        on_tx!(&mut tx, c => sqlx::query("UPDATE export_sinks SET cursor = $1, last_success_at = $2 WHERE name = $3")
            .bind(last)
            .bind(events.last().map_or(0, |e| e.created_at))
            .bind(RESULTSDB_VIEW)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
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

    /// The delivery state of every registered sink.
    pub async fn outbox_status(&self) -> Result<Vec<SinkStatus>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, SinkStatus>(
            "SELECT s.name, (SELECT COUNT(*) FROM export_events e WHERE e.id > s.cursor) AS pending,
                    s.delivered, s.dropped, s.failures, s.last_error, s.last_error_at, s.last_success_at
             FROM export_sinks s WHERE s.name <> $1 ORDER BY s.name",
        )
        .bind(RESULTSDB_VIEW)
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
