//! The events log: every trigger event received (webhooks, later AMQP),
//! the rules it matched, the jobs it created or why none.
//!
//! [`Store::ingest_event`] records an event and submits its jobs in one
//! transaction, so an event is never recorded without its jobs nor its jobs
//! queued without the event. Its de-duplication key is unique in the table:
//! a delivery seen before (even by another coordinator on the same
//! PostgreSQL, at the same moment) queues nothing and is recorded as a
//! `duplicate` of the first, with no key of its own. Concurrent events are
//! committed together (`events_batch`), each with the same meaning.

use testfleet_core::job::JobSpec;
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_wire::events::{EventDetail, EventOutcome, EventSummary};

use crate::db::{Tx, on_pool, on_tx};
use crate::ops::submit_in;
use crate::{Missing, NewTask, QueuedTask, Result, Store, StoreError};

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `github`, `gitlab`, `gerrit`, …
    pub source: String,
    /// The product's event name (`push`, `merge_request`, `change-merged`).
    pub kind: String,
    /// The topic rules match on.
    pub topic: String,
    /// The sender's delivery id, when it sent one.
    pub delivery_id: Option<String>,
    /// What makes the event unique; `None`: it is never taken for a
    /// duplicate.
    pub dedup_key: Option<String>,
    /// The body as received.
    pub body: String,
    /// The names of the rules that matched.
    pub matched_rules: Vec<String>,
    /// What became of it when it brings no job: [`EventOutcome::Ignored`],
    /// [`EventOutcome::Dropped`] or [`EventOutcome::Error`]. With jobs the
    /// outcome is [`EventOutcome::Queued`].
    pub unqueued: EventOutcome,
    /// Why no job was created (kept with jobs too, when given).
    pub reason: Option<String>,
}

/// A job an event brings, as [`Store::submit_job`] takes it.
#[derive(Debug, Clone)]
pub struct EventJob {
    pub spec: JobSpec,
    pub tasks: Vec<NewTask>,
}

/// A job submitted by an ingested event.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestedJob {
    pub job_id: i64,
    /// Its tasks, for the scheduler's index.
    pub queued: Vec<QueuedTask>,
}

/// What [`Store::ingest_event`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// The event is new: recorded, with its jobs (none when ignored).
    New {
        event_id: i64,
        outcome: EventOutcome,
        jobs: Vec<IngestedJob>,
    },
    /// Its key was seen before: nothing queued; recorded as `event_id`, a
    /// duplicate of `first_event_id`, which created `job_ids`.
    Duplicate {
        event_id: i64,
        first_event_id: i64,
        job_ids: Vec<i64>,
    },
}

/// Which events [`Store::list_events`] returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    pub outcome: Option<EventOutcome>,
    /// Received at or after.
    pub since: Option<UnixMillis>,
    /// Only events with a greater id (those recorded after it).
    pub after: Option<i64>,
    /// At most this many (at least 1).
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    source: String,
    kind: String,
    topic: String,
    delivery_id: Option<String>,
    received_at: i64,
    matched_rules: String,
    job_ids: String,
    outcome: String,
    reason: Option<String>,
}

impl EventRow {
    fn into_summary(self) -> Result<EventSummary> {
        Ok(EventSummary {
            id: self.id,
            source: self.source,
            kind: self.kind,
            topic: self.topic,
            delivery_id: self.delivery_id,
            received_at: format_millis(self.received_at),
            matched_rules: serde_json::from_str(&self.matched_rules)?,
            job_ids: serde_json::from_str(&self.job_ids)?,
            outcome: self
                .outcome
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", self.id)))?,
            reason: self.reason,
        })
    }
}

const SUMMARY_COLUMNS: &str = "id, source, kind, topic, delivery_id, received_at, matched_rules, \
                               job_ids, outcome, reason";

impl Store {
    /// Records `event` and submits `jobs` (none: the event is recorded as
    /// `event.unqueued`) in one transaction. A `dedup_key` seen before
    /// submits nothing: the delivery is recorded as a duplicate of the
    /// first and [`Ingested::Duplicate`] names the first's jobs.
    ///
    /// Concurrent calls are committed together (`events_batch`): the
    /// answer comes after the commit of the batch that holds this event.
    pub async fn ingest_event(
        &self,
        event: &NewEvent,
        jobs: &[EventJob],
        now: UnixMillis,
    ) -> Result<Ingested> {
        check_event(event, jobs)?;
        self.events.ingest(event.clone(), jobs.to_vec(), now).await
    }

    /// Events matching `filter`, newest first.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventSummary>> {
        let limit = i64::from(filter.limit.max(1));
        let rows: Vec<EventRow> = on_pool!(&self.reader, p => {
            let mut q = sqlx::QueryBuilder::new(format!(
                "SELECT {SUMMARY_COLUMNS} FROM trigger_events WHERE 1 = 1"
            ));
            if let Some(source) = &filter.source {
                q.push(" AND source = ").push_bind(source.clone());
            }
            if let Some(outcome) = filter.outcome {
                q.push(" AND outcome = ").push_bind(outcome.as_str());
            }
            if let Some(since) = filter.since {
                q.push(" AND received_at >= ").push_bind(since);
            }
            if let Some(after) = filter.after {
                q.push(" AND id > ").push_bind(after);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            q.build_query_as::<EventRow>().fetch_all(p).await
        })?;
        rows.into_iter().map(EventRow::into_summary).collect()
    }

    /// One event with its key and body.
    pub async fn event(&self, id: i64) -> Result<EventDetail> {
        #[derive(sqlx::FromRow)]
        struct Extra {
            dedup_key: Option<String>,
            body: String,
        }
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM trigger_events WHERE id = $1");
        let row: Option<EventRow> = on_pool!(&self.reader, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?;
        let row = row.ok_or(StoreError::NotFound(Missing::Event(id)))?;
        let extra: Extra = on_pool!(&self.reader, p => sqlx::query_as(
            "SELECT dedup_key, body FROM trigger_events WHERE id = $1",
        )
        .bind(id)
        .fetch_one(p)
        .await)?;
        Ok(EventDetail {
            summary: row.into_summary()?,
            dedup_key: extra.dedup_key,
            body: extra.body,
        })
    }

    /// Deletes the events received before `older_than`; returns how many.
    /// Their jobs stay.
    pub async fn prune_events(&self, older_than: UnixMillis) -> Result<u64> {
        let done = on_pool!(&self.writer, p => sqlx::query(
            "DELETE FROM trigger_events WHERE received_at < $1",
        )
        .bind(older_than)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done)
    }
}

/// Refuses an event that cannot be recorded as given, before any
/// transaction: "queued" without jobs.
pub(crate) fn check_event(event: &NewEvent, jobs: &[EventJob]) -> Result<()> {
    if jobs.is_empty() && event.unqueued == EventOutcome::Queued {
        return Err(StoreError::Conflict(
            "an event without jobs cannot be recorded as queued".into(),
        ));
    }
    Ok(())
}

/// The body of [`Store::ingest_event`], in `tx`: one event, its key
/// claimed first (a key taken, also earlier in the same transaction, makes
/// it a duplicate).
pub(crate) async fn ingest_in(
    tx: &mut Tx,
    event: &NewEvent,
    jobs: &[EventJob],
    now: UnixMillis,
) -> Result<Ingested> {
    let matched = serde_json::to_string(&event.matched_rules)?;
    let outcome = if jobs.is_empty() {
        event.unqueued
    } else {
        EventOutcome::Queued
    };
    // The key is claimed first: on PostgreSQL a concurrent ingest of the
    // same key waits here for this transaction and then finds it taken.
    let inserted: Option<i64> = on_tx!(&mut *tx, c => sqlx::query_scalar(
        "INSERT INTO trigger_events
           (source, kind, topic, delivery_id, dedup_key, received_at, body, matched_rules, job_ids, outcome, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '[]', $9, $10)
         ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
    )
    .bind(&event.source)
    .bind(&event.kind)
    .bind(&event.topic)
    .bind(&event.delivery_id)
    .bind(&event.dedup_key)
    .bind(now)
    .bind(&event.body)
    .bind(&matched)
    .bind(outcome.as_str())
    .bind(&event.reason)
    .fetch_optional(c)
    .await)?;
    let Some(event_id) = inserted else {
        return record_duplicate(tx, event, &matched, now).await;
    };
    let mut submitted = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (job_id, queued) = submit_in(tx, &job.spec, job.tasks.clone(), now).await?;
        submitted.push(IngestedJob { job_id, queued });
    }
    if !submitted.is_empty() {
        let ids: Vec<i64> = submitted.iter().map(|j| j.job_id).collect();
        let ids = serde_json::to_string(&ids)?;
        on_tx!(&mut *tx, c => sqlx::query("UPDATE trigger_events SET job_ids = $1 WHERE id = $2")
            .bind(&ids)
            .bind(event_id)
            .execute(c)
            .await
            .map(|_| ()))?;
    }
    Ok(Ingested::New {
        event_id,
        outcome,
        jobs: submitted,
    })
}

/// Records a delivery whose key an earlier event holds: no key of its own,
/// outcome `duplicate`, the first event's jobs.
async fn record_duplicate(
    tx: &mut Tx,
    event: &NewEvent,
    matched: &str,
    now: UnixMillis,
) -> Result<Ingested> {
    let first: Option<(i64, String)> = on_tx!(&mut *tx, c => sqlx::query_as(
        "SELECT id, job_ids FROM trigger_events WHERE dedup_key = $1",
    )
    .bind(&event.dedup_key)
    .fetch_optional(c)
    .await)?;
    let (first_event_id, job_ids) = first
        .ok_or_else(|| StoreError::Corrupt("an event key is taken but no event holds it".into()))?;
    let reason = format!("duplicate of event {first_event_id}");
    let event_id: i64 = on_tx!(&mut *tx, c => sqlx::query_scalar(
        "INSERT INTO trigger_events
           (source, kind, topic, delivery_id, dedup_key, received_at, body, matched_rules, job_ids, outcome, reason)
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, 'duplicate', $9) RETURNING id",
    )
    .bind(&event.source)
    .bind(&event.kind)
    .bind(&event.topic)
    .bind(&event.delivery_id)
    .bind(now)
    .bind(&event.body)
    .bind(matched)
    .bind(&job_ids)
    .bind(&reason)
    .fetch_one(c)
    .await)?;
    Ok(Ingested::Duplicate {
        event_id,
        first_event_id,
        job_ids: serde_json::from_str(&job_ids)?,
    })
}
