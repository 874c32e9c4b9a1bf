//! Trigger events becoming jobs: an event and the jobs its rules planned
//! are recorded in one store transaction (de-duplicated by the event's
//! key), then the new tasks are indexed exactly as after a submit. The
//! store commits the events that arrive together (an AMQP backlog, a burst
//! of webhooks) in one batch and answers each after that commit, so the
//! tasks are indexed, and an AMQP message acknowledged, only once durable.

use testfleet_store::{EventJob, Ingested, NewEvent};

use super::*;

impl Coordinator {
    /// Records `event` and submits `jobs` (each fanned out as
    /// [`Coordinator::submit`] does) in one transaction (shared with the
    /// events ingested at the same moment: the store's group commit), then
    /// indexes the queued tasks and wakes the dispatcher. A key seen before queues
    /// nothing ([`Ingested::Duplicate`]).
    pub async fn ingest_event(
        &self,
        event: &NewEvent,
        jobs: Vec<JobSpec>,
    ) -> Result<Ingested, StoreError> {
        let now = self.now();
        let mut planned = Vec::with_capacity(jobs.len());
        for spec in jobs {
            let tasks = self.new_tasks(&spec, now).await?;
            planned.push(EventJob { spec, tasks });
        }
        let ingested = self.store.ingest_event(event, &planned, now).await?;
        match &ingested {
            Ingested::New {
                event_id,
                outcome,
                jobs,
            } => {
                tracing::info!(
                    event_id,
                    source = %event.source,
                    kind = %event.kind,
                    %outcome,
                    jobs = jobs.len(),
                    "event recorded"
                );
                let queued: Vec<_> = jobs.iter().flat_map(|j| j.queued.clone()).collect();
                if !queued.is_empty() {
                    self.enqueue(queued).await;
                }
            }
            Ingested::Duplicate {
                event_id,
                first_event_id,
                ..
            } => {
                tracing::info!(
                    event_id,
                    first_event_id,
                    source = %event.source,
                    "duplicate event: nothing queued"
                );
            }
        }
        Ok(ingested)
    }

    /// Deletes the events received more than `retention` ago; returns how
    /// many (the events log's retention).
    pub async fn prune_events(&self, retention: Duration) -> Result<u64, StoreError> {
        let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.store
            .prune_events(self.now().saturating_sub(age))
            .await
    }
}
