//! The AMQP consumer: a session declares the queue and its bindings, then
//! handles up to `prefetch` deliveries at once; each is recorded with its
//! jobs in one store transaction (the store commits the events that arrive
//! together in one batch) and acknowledged after that commit. A lost
//! connection ends the session and the next one starts after a backoff:
//! what was not acknowledged comes back, and the events log's unique key
//! (the message id) makes a redelivered message a `duplicate` that queues
//! nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use sha2::{Digest, Sha256};
use testfleet_core::JobSpec;
use testfleet_core::trigger::{Event, RuleSet, Source};
use testfleet_store::{Ingested, NewEvent, Store};
use testfleet_wire::events::EventOutcome;

use super::stats::{ConsumerStats, Counted};
use super::{AmqpConfig, AmqpError, connect, doubled, short};
use crate::Coordinator;

/// One message as received: what [`prepare`] needs of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub routing_key: String,
    /// The AMQP `message_id` property (fedora-messaging sets a UUID).
    pub message_id: Option<String>,
    /// The message's headers as text (fedora-messaging's
    /// `fedora_messaging_schema`, `sent-at`, `fedora_messaging_severity`, …).
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Incoming {
    fn from_delivery(d: &Delivery) -> Incoming {
        let mut headers = BTreeMap::new();
        if let Some(table) = d.properties.headers() {
            for (k, v) in table {
                if let Some(text) = header_text(v) {
                    headers.insert(k.to_string(), text);
                }
            }
        }
        Incoming {
            routing_key: d.routing_key.to_string(),
            message_id: d
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string)
                .filter(|id| !id.is_empty()),
            headers,
            body: d.data.clone(),
        }
    }
}

/// A header value as text; tables, arrays and bytes are left out.
fn header_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongString(s) => s.to_string(),
        _ => return None,
    })
}

/// The events-log record of a message and the jobs it brings. The key is
/// `amqp:<message id>`, else `amqp:sha256:<hash of routing key and body>`.
/// A body that is not JSON is recorded as `dropped` (it can never become a
/// job); with no rules the message is `ignored`.
pub fn prepare(msg: &Incoming, rules: Option<&RuleSet>) -> (NewEvent, Vec<JobSpec>) {
    let dedup_key = match &msg.message_id {
        Some(id) => format!("amqp:{id}"),
        None => {
            let mut h = Sha256::new();
            h.update(msg.routing_key.as_bytes());
            h.update([0]);
            h.update(&msg.body);
            format!("amqp:sha256:{}", hex::encode(h.finalize()))
        }
    };
    let mut new = NewEvent {
        source: Source::Amqp.as_str().to_owned(),
        kind: msg
            .headers
            .get("fedora_messaging_schema")
            .cloned()
            .unwrap_or_else(|| "message".to_owned()),
        topic: msg.routing_key.clone(),
        delivery_id: msg.message_id.clone(),
        dedup_key: Some(dedup_key),
        body: String::from_utf8_lossy(&msg.body).into_owned(),
        matched_rules: Vec::new(),
        unqueued: EventOutcome::Dropped,
        reason: None,
    };
    let json: serde_json::Value = match std::str::from_utf8(&msg.body) {
        Err(_) => {
            new.reason = Some("the body is not valid UTF-8".into());
            return (new, Vec::new());
        }
        Ok(text) => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                new.reason = Some(format!("the body is not JSON: {e}"));
                return (new, Vec::new());
            }
        },
    };
    let Some(rules) = rules else {
        new.unqueued = EventOutcome::Ignored;
        new.reason = Some("no trigger rules configured".into());
        return (new, Vec::new());
    };
    let mut event = Event::new(Source::Amqp, json).with_topic(msg.routing_key.clone());
    event.headers = msg.headers.clone();
    if let Some(id) = &msg.message_id {
        event.headers.insert("message_id".into(), id.clone());
    }
    let no_match = format!("no rule matches amqp topic `{}`", msg.routing_key);
    let decided = crate::triggers::decide::decide(rules, &event, &no_match);
    new.matched_rules = decided.matched_rules;
    new.unqueued = decided.unqueued;
    new.reason = decided.reason;
    (new, decided.jobs)
}

/// How often a session looks at its connection and the coordinator.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Consumes until the store is closed, reconnecting with backoff.
pub(crate) async fn run(
    coordinator: Weak<Coordinator>,
    store: Store,
    config: Arc<AmqpConfig>,
    stats: Arc<ConsumerStats>,
) {
    let mut backoff = config.retry_initial;
    let failing_since = Arc::new(std::sync::Mutex::new(None));
    loop {
        if store.is_closed() || coordinator.strong_count() == 0 {
            return;
        }
        let session = Session {
            coordinator: &coordinator,
            store: &store,
            config: &config,
            stats: &stats,
            failing_since: &failing_since,
        };
        match session.run(&mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                if store.is_closed() {
                    return;
                }
                tracing::warn!(
                    url = %config.redacted_url(),
                    retry_in = ?backoff,
                    "AMQP consumer disconnected: {e}"
                );
                tokio::time::sleep(backoff).await;
                backoff = doubled(backoff, config.retry_max);
            }
        }
    }
}

/// One connection's worth of consuming.
struct Session<'a> {
    coordinator: &'a Weak<Coordinator>,
    store: &'a Store,
    config: &'a AmqpConfig,
    stats: &'a ConsumerStats,
    /// Since when the store has been failing (the requeue backoff), `None`
    /// while it works.
    failing_since: &'a std::sync::Mutex<Option<Instant>>,
}

impl Session<'_> {
    /// Connects, declares, consumes; `Ok` when the store closed.
    async fn run(&self, backoff: &mut Duration) -> Result<(), AmqpError> {
        // A broker that accepts the connection but never answers (one
        // starting, or wedged) must not hold the consumer forever.
        let opened = async {
            let conn = connect(self.config, "testfleet consumer").await?;
            let channel = conn.create_channel().await?;
            declare(&channel, self.config).await?;
            let consumer = channel
                .basic_consume(
                    short(&self.config.queue),
                    ShortString::from(format!("testfleet-{}", std::process::id())),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, AmqpError>((conn, consumer))
        };
        let (conn, consumer) = tokio::time::timeout(self.config.open_timeout, opened)
            .await
            .map_err(|_| AmqpError::OpenTimeout(self.config.open_timeout))??;
        self.stats.session();
        *backoff = self.config.retry_initial;
        tracing::info!(queue = %self.config.queue, "AMQP consumer connected");
        let concurrency = usize::from(self.config.prefetch);
        let handled = consumer.for_each_concurrent(concurrency, |delivery| async move {
            match delivery {
                Ok(d) => self.handle(d).await,
                Err(e) => tracing::warn!("AMQP delivery error: {e}"),
            }
        });
        // The session also ends when the connection is no longer open,
        // whatever the deliveries in hand are waiting for: they come back
        // to the queue with the connection.
        let watched = async {
            let mut was_blocked = false;
            loop {
                if self.store.is_closed() || self.coordinator.strong_count() == 0 {
                    return Ok(());
                }
                let status = conn.status();
                if !status.connected() {
                    return Err(AmqpError::ConnectionLost);
                }
                if status.blocked() != was_blocked {
                    was_blocked = status.blocked();
                    if was_blocked {
                        tracing::warn!("the AMQP broker blocked the connection (a resource alarm)");
                    } else {
                        tracing::info!("the AMQP broker unblocked the connection");
                    }
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        tokio::select! {
            () = handled => Err(AmqpError::ConsumerEnded),
            ended = watched => {
                if ended.is_ok() {
                    let _ = conn.close(200, "testfleet stopping".into()).await;
                }
                ended
            }
        }
    }

    /// Records one delivery and acknowledges it after the commit; requeues
    /// it (after a backoff) when the store failed.
    async fn handle(&self, d: Delivery) {
        let arrived = Instant::now();
        self.stats.received();
        let Some(c) = self.coordinator.upgrade() else {
            return;
        };
        let msg = Incoming::from_delivery(&d);
        let (new, jobs) = prepare(&msg, c.config.trigger_rules.as_deref());
        match c.ingest_event(&new, jobs).await {
            Ok(ingested) => {
                if let Ok(mut since) = self.failing_since.lock() {
                    *since = None;
                }
                let counted = match &ingested {
                    Ingested::Duplicate { .. } => Counted::Duplicate,
                    Ingested::New { outcome, .. } => match outcome {
                        EventOutcome::Queued => Counted::Queued,
                        EventOutcome::Dropped | EventOutcome::Error => Counted::Dropped,
                        EventOutcome::Ignored | EventOutcome::Duplicate => Counted::Ignored,
                    },
                };
                if counted == Counted::Dropped {
                    tracing::warn!(
                        topic = %new.topic,
                        message_id = ?new.delivery_id,
                        reason = new.reason.as_deref().unwrap_or(""),
                        "AMQP message dropped"
                    );
                }
                // Counted before the ack: the commit is what is measured.
                self.stats.done(counted, arrived.elapsed());
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    // The message comes back and is then a duplicate.
                    tracing::warn!("failed to acknowledge an AMQP message: {e}");
                }
            }
            Err(e) => {
                if self.store.is_closed() {
                    return;
                }
                self.stats.store_error();
                let wait = self.requeue_wait();
                tracing::warn!(
                    topic = %new.topic,
                    retry_in = ?wait,
                    "failed to record an AMQP message, requeueing it: {e}"
                );
                tokio::time::sleep(wait).await;
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(e) = d.acker.nack(requeue).await {
                    tracing::warn!("failed to requeue an AMQP message: {e}");
                }
            }
        }
    }
}

impl Session<'_> {
    /// How long a failed delivery waits before it is requeued: as long as
    /// the store has been failing so far, between `retry_initial` and
    /// `retry_max`. Retries of one message thus come at doubling intervals,
    /// and a hundred messages failing together in a short outage do not
    /// push the wait to the maximum (it grows with the outage's length,
    /// not with the number of messages in flight).
    fn requeue_wait(&self) -> Duration {
        let now = Instant::now();
        let since = match self.failing_since.lock() {
            Ok(mut since) => *since.get_or_insert(now),
            Err(_) => now,
        };
        now.duration_since(since)
            .clamp(self.config.retry_initial, self.config.retry_max)
    }
}

/// Prefetch, the exchange (checked, or declared as a durable topic
/// exchange), the durable queue and its bindings: done on every connection.
async fn declare(channel: &Channel, config: &AmqpConfig) -> Result<(), AmqpError> {
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    super::declare_exchange(channel, &config.exchange).await?;
    channel
        .queue_declare(
            short(&config.queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in &config.routing_keys {
        channel
            .queue_bind(
                short(&config.queue),
                short(&config.exchange),
                short(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "rpmlint"
when = { source = "amqp", topic = "org.fedoraproject.*.buildsys.build.state.change" }
[[rule.do]]
template = "rpmlint.toml"
vars = { item = "{{body.name}}" }
"#;

    const TEMPLATE: &str = r#"name = "rpmlint-{{item}}"
[[task]]
name = "rpmlint"
steps = [{ stage = "test", run = "rpmlint {{item}}" }]
"#;

    fn rules() -> RuleSet {
        let mut set = RuleSet::parse(RULES, "fedora.toml").unwrap();
        let t = testfleet_core::trigger::Template::parse(TEMPLATE, "rpmlint.toml").unwrap();
        for rule in set.rules_mut() {
            for action in &mut rule.actions {
                action.template = Some(t.clone());
            }
        }
        set
    }

    fn msg(topic: &str, body: &str, id: Option<&str>) -> Incoming {
        Incoming {
            routing_key: topic.into(),
            message_id: id.map(str::to_owned),
            headers: BTreeMap::from([(
                "fedora_messaging_schema".to_owned(),
                "base.message".to_owned(),
            )]),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_matching_message_brings_its_jobs_keyed_by_message_id() {
        let topic = "org.fedoraproject.prod.buildsys.build.state.change";
        let (new, jobs) = prepare(
            &msg(topic, r#"{"name": "bash"}"#, Some("u-1")),
            Some(&rules()),
        );
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].name, "rpmlint-bash");
        assert_eq!(new.dedup_key.as_deref(), Some("amqp:u-1"));
        assert_eq!(new.delivery_id.as_deref(), Some("u-1"));
        assert_eq!((new.source.as_str(), new.topic.as_str()), ("amqp", topic));
        assert_eq!(new.kind, "base.message");
        assert_eq!(new.matched_rules, vec!["rpmlint".to_owned()]);
    }

    #[test]
    fn without_an_id_the_key_hashes_topic_and_body() {
        let topic = "org.fedoraproject.prod.buildsys.build.state.change";
        let (a, _) = prepare(&msg(topic, r#"{"name": "bash"}"#, None), Some(&rules()));
        let (b, _) = prepare(&msg(topic, r#"{"name": "bash"}"#, None), Some(&rules()));
        let (c, _) = prepare(&msg(topic, r#"{"name": "zsh"}"#, None), Some(&rules()));
        let key = a.dedup_key.unwrap();
        assert!(key.starts_with("amqp:sha256:"), "{key}");
        assert_eq!(Some(key.clone()), b.dedup_key);
        assert_ne!(Some(key), c.dedup_key);
    }

    #[test]
    fn undecodable_bodies_are_dropped_and_unmatched_topics_ignored() {
        let topic = "org.fedoraproject.prod.buildsys.build.state.change";
        let (new, jobs) = prepare(&msg(topic, "not json", Some("x")), Some(&rules()));
        assert!(jobs.is_empty());
        assert_eq!(new.unqueued, EventOutcome::Dropped);
        assert!(
            new.reason
                .as_deref()
                .unwrap()
                .starts_with("the body is not JSON"),
            "{:?}",
            new.reason
        );
        let mut bad = msg(topic, "", Some("y"));
        bad.body = vec![0xff, 0xfe];
        let (new, _) = prepare(&bad, Some(&rules()));
        assert_eq!(new.reason.as_deref(), Some("the body is not valid UTF-8"));

        let (new, jobs) = prepare(
            &msg("org.fedoraproject.prod.other", "{}", None),
            Some(&rules()),
        );
        assert!(jobs.is_empty());
        assert_eq!(new.unqueued, EventOutcome::Ignored);
        let reason = new.reason.unwrap();
        assert!(
            reason.starts_with("no rule matches amqp topic `org.fedoraproject.prod.other`"),
            "{reason}"
        );

        // A matching rule that cannot render for this body drops it.
        let (new, jobs) = prepare(&msg(topic, "{}", None), Some(&rules()));
        assert!(jobs.is_empty());
        assert_eq!(new.unqueued, EventOutcome::Dropped);
        assert!(new.reason.unwrap().contains("body.name"));

        let (new, _) = prepare(&msg(topic, "{}", None), None);
        assert_eq!(new.unqueued, EventOutcome::Ignored);
    }

    #[test]
    fn header_values_become_text() {
        assert_eq!(header_text(&AMQPValue::LongInt(20)), Some("20".into()));
        assert_eq!(
            header_text(&AMQPValue::LongString("2024-01-01T00:00:00+00:00".into())),
            Some("2024-01-01T00:00:00+00:00".into())
        );
        assert_eq!(header_text(&AMQPValue::Void), None);
    }
}
