//! Finished jobs published back to the bus: one persistent JSON message per
//! finished job on `[server.amqp.publish] topic`, readable by a
//! fedora-messaging consumer (its headers, `application/json`, a message
//! id), so other systems react without polling.
//!
//! Driven by a cursor in the store (`Store::jobs_finished_between`, cursor
//! `tf:amqp-publish` in `export_sinks`): a page of finished jobs is
//! published, the broker confirms every message (publisher confirms), and
//! only then the cursor moves. A restart resumes at the cursor: nothing is
//! lost, and only a page confirmed but not yet recorded when the
//! coordinator died is published again, with the same message ids
//! (`testfleet-job-<id>-<finished at>`) so a consumer can tell.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use serde::{Deserialize, Serialize};
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_store::{FinishedJob, Store};
use testfleet_wire::api::{JobSummary, OutcomeCounts, TaskStateCounts};

use super::{AmqpConfig, AmqpError, connect, doubled, short};

/// The publisher's cursor in `export_sinks` (not listed as an exporter).
pub const CURSOR: &str = "tf:amqp-publish";

/// The `fedora_messaging_schema` header: fedora-messaging's base message,
/// so any consumer reads it without a schema package; testfleet's own
/// schema name is in `testfleet_schema`.
pub const SCHEMA: &str = "base.message";
/// The `testfleet_schema` header of a finished-job message.
pub const TESTFLEET_SCHEMA: &str = "testfleet.job.finished.v1";
/// fedora-messaging's INFO severity.
const SEVERITY_INFO: i32 = 20;

/// `[server.amqp.publish]`.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The routing key of every message (`testfleet.job.finished`).
    pub topic: String,
    /// The coordinator's URL as readers reach it, for the links (`None`:
    /// `http(s)://` and the listen address).
    pub public_url: Option<String>,
    /// How often to look for newly finished jobs.
    pub poll_interval: Duration,
    /// Jobs finished less than this long ago wait for the next look, so a
    /// finish stamped earlier but committed later is not passed by.
    pub settle: Duration,
}

impl PublishConfig {
    /// Topic `testfleet.job.finished`, a look every 500 ms, 2 s to settle.
    pub fn new() -> PublishConfig {
        PublishConfig {
            topic: "testfleet.job.finished".into(),
            public_url: None,
            poll_interval: Duration::from_millis(500),
            settle: Duration::from_secs(2),
        }
    }
}

impl Default for PublishConfig {
    fn default() -> PublishConfig {
        PublishConfig::new()
    }
}

/// Where to read more about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLinks {
    /// The dashboard's page of the job.
    pub dashboard: String,
    /// `GET /api/v1/jobs/{id}`.
    pub api: String,
    /// The merged JUnit report.
    pub junit: String,
    /// The Taskotron-style TAP report.
    pub tap: String,
}

/// The body of a finished-job message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedJobMessage {
    pub id: i64,
    pub name: String,
    pub queue: String,
    /// `passed`, `failed` or `cancelled`.
    pub state: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub integration_id: Option<String>,
    pub tasks: TaskStateCounts,
    pub outcomes: OutcomeCounts,
    pub attempts: u64,
    pub retried: u64,
    pub links: JobLinks,
}

impl FinishedJobMessage {
    /// The message of `job`, linked under `base` (no trailing slash).
    pub fn new(job: JobSummary, base: &str) -> FinishedJobMessage {
        let id = job.id;
        FinishedJobMessage {
            id,
            name: job.name,
            queue: job.queue,
            state: job.state.as_str().to_owned(),
            created_at: job.created_at,
            finished_at: job.finished_at,
            integration_id: job.integration_id,
            tasks: job.tasks,
            outcomes: job.outcomes,
            attempts: job.attempts,
            retried: job.retried,
            links: JobLinks {
                dashboard: format!("{base}/jobs/{id}"),
                api: format!("{base}/api/v1/jobs/{id}"),
                junit: format!("{base}/api/v1/jobs/{id}/report?format=junit"),
                tap: format!("{base}/api/v1/jobs/{id}/report?format=tap"),
            },
        }
    }
}

/// The message id of a job's finish: the same for a republication.
pub fn message_id(job: &FinishedJob) -> String {
    format!("testfleet-job-{}-{}", job.id, job.finished_at)
}

/// Properties a fedora-messaging consumer expects: JSON, persistent, its
/// schema, `sent-at` and severity headers.
fn properties(id: String, sent_at: UnixMillis) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "fedora_messaging_schema".into(),
        AMQPValue::LongString(SCHEMA.into()),
    );
    headers.insert(
        "testfleet_schema".into(),
        AMQPValue::LongString(TESTFLEET_SCHEMA.into()),
    );
    headers.insert(
        "sent-at".into(),
        AMQPValue::LongString(format_millis(sent_at).into()),
    );
    headers.insert(
        "fedora_messaging_severity".into(),
        AMQPValue::LongInt(SEVERITY_INFO),
    );
    headers.insert("priority".into(), AMQPValue::LongInt(0));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(id))
        .with_headers(headers)
}

/// Publishes finished jobs until the store is closed or `now` answers
/// `None` (the coordinator is gone), reconnecting with backoff.
pub(crate) async fn run(
    store: Store,
    config: Arc<AmqpConfig>,
    base_url: String,
    now: impl Fn() -> Option<UnixMillis>,
) {
    let Some(publish) = config.publish.clone() else {
        return;
    };
    let mut backoff = config.retry_initial;
    loop {
        if store.is_closed() {
            return;
        }
        match session(&store, &config, &publish, &base_url, &now, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                if store.is_closed() {
                    return;
                }
                tracing::warn!(retry_in = ?backoff, "AMQP publisher: {e}");
                tokio::time::sleep(backoff).await;
                backoff = doubled(backoff, config.retry_max);
            }
        }
    }
}

async fn session(
    store: &Store,
    config: &AmqpConfig,
    publish: &PublishConfig,
    base_url: &str,
    now: &impl Fn() -> Option<UnixMillis>,
    backoff: &mut Duration,
) -> Result<(), AmqpError> {
    let conn = connect(config, "testfleet publisher").await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    super::declare_exchange(&channel, &config.exchange).await?;
    let Some(start) = now() else { return Ok(()) };
    let mut cursor = store.feed_cursor(CURSOR, start).await?;
    *backoff = config.retry_initial;
    tracing::info!(topic = %publish.topic, "AMQP publisher connected");
    let settle = i64::try_from(publish.settle.as_millis()).unwrap_or(i64::MAX);
    loop {
        if store.is_closed() {
            return Ok(());
        }
        let Some(now) = now() else { return Ok(()) };
        let jobs = store
            .jobs_finished_between(cursor, now.saturating_sub(settle), 100)
            .await?;
        let Some(last) = jobs.last().copied() else {
            tokio::time::sleep(publish.poll_interval).await;
            continue;
        };
        publish_page(store, &channel, config, publish, base_url, &jobs, now).await?;
        let n = i64::try_from(jobs.len()).unwrap_or(i64::MAX);
        store
            .outbox_ack(CURSOR, last.finished_at, n, 0, wall_now())
            .await?;
        cursor = last.finished_at;
        tracing::debug!(jobs = n, cursor, "published finished jobs");
    }
}

/// Publishes one message per job and waits for every confirm.
async fn publish_page(
    store: &Store,
    channel: &Channel,
    config: &AmqpConfig,
    publish: &PublishConfig,
    base_url: &str,
    jobs: &[FinishedJob],
    now: UnixMillis,
) -> Result<(), AmqpError> {
    let mut confirms = Vec::with_capacity(jobs.len());
    for job in jobs {
        let summary = store.job_summary(job.id).await?;
        let body = serde_json::to_vec(&FinishedJobMessage::new(summary, base_url))?;
        let confirm = channel
            .basic_publish(
                short(&config.exchange),
                short(&publish.topic),
                BasicPublishOptions::default(),
                &body,
                properties(message_id(job), now),
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(_) => {}
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                return Err(AmqpError::NotConfirmed);
            }
        }
    }
    Ok(())
}

/// Wall-clock time for the cursor's delivery record (not scheduling).
fn wall_now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_repeat_for_a_republication_and_properties_suit_fedora_messaging() {
        let job = FinishedJob {
            id: 7,
            finished_at: 1_700_000_000_000,
        };
        assert_eq!(message_id(&job), "testfleet-job-7-1700000000000");
        let p = properties(message_id(&job), 1_700_000_000_000);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        let headers = p.headers().clone().unwrap_or_default();
        let get = |k: &str| headers.inner().get(k).cloned();
        assert_eq!(
            get("fedora_messaging_severity"),
            Some(AMQPValue::LongInt(20))
        );
        assert_eq!(
            get("sent-at"),
            Some(AMQPValue::LongString("2023-11-14T22:13:20.000Z".into()))
        );
        assert_eq!(
            get("fedora_messaging_schema"),
            Some(AMQPValue::LongString("base.message".into()))
        );
    }
}
