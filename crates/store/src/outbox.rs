//! The exporters' durable outbox.
//!
//! When an attempt finishes with results, [`record_finished`] runs inside
//! `finish_attempt`'s transaction: it appends one `export_events` row and maps
//! the results into the ResultsDB tables. So the results, the export event and
//! the ResultsDB view are committed together or not at all.
//!
//! Each sink (InfluxDB, an external ResultsDB) keeps a cursor into
//! `export_events`. A sink reads the events after its cursor, delivers them, and
//! moves its cursor only after the receiver acknowledged them, so nothing is lost
//! while a receiver is down and delivery resumes where it stopped.

use crate::db::{Tx, on_pool, on_tx};
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

/// Appends the export event of a finished attempt and maps its results into
/// the ResultsDB tables. Called from `finish_attempt`, inside its transaction.
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
    crate::resultsdb::materialize(tx, attempt_id, results, now).await
}

impl Store {
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
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, ExportEvent>(
            "SELECT e.id, e.attempt_id FROM export_events e
             WHERE e.id > COALESCE((SELECT cursor FROM export_sinks WHERE name = $1), 0)
             ORDER BY e.id LIMIT $2",
        )
        .bind(sink)
        .bind(max)
        .fetch_all(p)
        .await)?)
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
             FROM export_sinks s ORDER BY s.name",
        )
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
