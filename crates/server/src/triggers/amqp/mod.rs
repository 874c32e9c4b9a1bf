//! AMQP (fedora-messaging's wire format): trigger events consumed from a
//! bus, and finished jobs published back to it.
//!
//! - `consumer`: a durable queue bound to the configured routing keys on a
//!   topic exchange (`amq.topic`); each message becomes an [`Event`] (topic:
//!   the routing key, body: its JSON, headers: fedora-messaging's) matched
//!   against the trigger rules (`triggers::decide`, shared with the
//!   webhooks) and recorded with its jobs in one store transaction (shared
//!   with the other events committed at the same moment), acknowledged only
//!   after that commit; a store failure
//!   requeues the message, a message that can never become a job is recorded
//!   as `dropped` with the reason and acknowledged (fedora-messaging's
//!   `Drop`). The connection is re-made, and the queue and its bindings
//!   re-declared, with backoff.
//! - `publish`: one persistent message per finished job on a configured
//!   topic, with fedora-messaging's headers and publisher confirms, driven
//!   by a cursor kept in the store so a restart neither loses nor (short of
//!   a kill between a confirm and the cursor's write) repeats one.
//!
//! [`Event`]: testfleet_core::trigger::Event

mod consumer;
pub mod publish;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::ShortString;
use lapin::{Connection, ConnectionProperties};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use testfleet_store::Store;
use tokio::task::JoinHandle;

pub use consumer::{Incoming, prepare};
pub use publish::{FinishedJobMessage, PublishConfig};
pub use stats::{ConsumerStats, StatsSnapshot};

use crate::Coordinator;

/// `[server.amqp]`: the broker, the queue and what it is bound to.
#[derive(Clone)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` or `amqps://…` (TLS).
    pub url: String,
    /// A CA certificate (PEM) to trust for `amqps://`, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A topic exchange (`amq.topic`, fedora-messaging's default).
    pub exchange: String,
    /// The durable queue this coordinator consumes from (coordinators
    /// sharing a store share the queue).
    pub queue: String,
    /// The routing keys the queue is bound to (AMQP topic patterns).
    pub routing_keys: Vec<String>,
    /// Unacknowledged messages the broker sends ahead; also how many are
    /// handled at once.
    pub prefetch: u16,
    /// First wait after a lost connection (doubled per failure) or a store
    /// failure (then as long as the store has been failing), up to
    /// `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long connecting, declaring and starting to consume may take
    /// before the attempt counts as failed (a broker that accepts the
    /// connection but never answers).
    pub open_timeout: Duration,
    /// Publish finished jobs back (off unless configured).
    pub publish: Option<PublishConfig>,
}

impl AmqpConfig {
    /// The defaults of the issue: `amq.topic`, queue `testfleet`, bound to
    /// `org.fedoraproject.#`, prefetch 100.
    pub fn new(url: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            ca_file: None,
            exchange: "amq.topic".into(),
            queue: "testfleet".into(),
            routing_keys: vec!["org.fedoraproject.#".into()],
            prefetch: 100,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            open_timeout: Duration::from_secs(30),
            publish: None,
        }
    }

    /// Refuses what the broker could never accept, naming the field.
    pub fn validate(&self) -> Result<(), AmqpConfigError> {
        let uri: lapin::uri::AMQPUri = self
            .url
            .parse()
            .map_err(|e: String| AmqpConfigError::Url(e))?;
        let _ = uri;
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(AmqpConfigError::Url(
                "the URL must start with amqp:// or amqps://".into(),
            ));
        }
        check_len("exchange", &self.exchange)?;
        check_len("queue", &self.queue)?;
        if self.queue.is_empty() {
            return Err(AmqpConfigError::Empty("queue"));
        }
        if self.routing_keys.is_empty() {
            return Err(AmqpConfigError::Empty("routing_keys"));
        }
        for key in &self.routing_keys {
            check_len("routing_keys", key)?;
        }
        if self.prefetch == 0 {
            return Err(AmqpConfigError::Empty("prefetch"));
        }
        if let Some(p) = &self.publish {
            if p.topic.is_empty() {
                return Err(AmqpConfigError::Empty("publish.topic"));
            }
            check_len("publish.topic", &p.topic)?;
        }
        Ok(())
    }

    /// The URL with its password hidden, for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// The URL's credentials stay out of `Debug`.
impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("ca_file", &self.ca_file)
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .field("routing_keys", &self.routing_keys)
            .field("prefetch", &self.prefetch)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("open_timeout", &self.open_timeout)
            .field("publish", &self.publish)
            .finish()
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn check_len(field: &'static str, value: &str) -> Result<(), AmqpConfigError> {
    ShortString::try_new(value)
        .map(|_| ())
        .map_err(|_| AmqpConfigError::TooLong(field))
}

/// A `[server.amqp]` setting the broker could never accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmqpConfigError {
    #[error("`url`: {0}")]
    Url(String),
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`{0}`: AMQP names are at most 255 bytes")]
    TooLong(&'static str),
}

/// Why a session with the broker ended.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("failed to read the CA file {}", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate in the CA file {}", path.display())]
    NoCa { path: PathBuf },
    #[error("the broker ended the consumer")]
    ConsumerEnded,
    #[error("the connection to the broker is no longer open")]
    ConnectionLost,
    #[error("the broker did not open a consuming session within {0:?}")]
    OpenTimeout(Duration),
    #[error("the broker did not confirm a publication")]
    NotConfirmed,
    #[error("failed to read the store")]
    Store(#[from] testfleet_store::StoreError),
    #[error("failed to encode a message")]
    Json(#[from] serde_json::Error),
}

/// Opens a connection (TLS for `amqps://`, trusting `ca_file` too).
pub(crate) async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, AmqpError> {
    let cert_chain = match &config.ca_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|source| AmqpError::Ca {
                path: path.clone(),
                source,
            })?;
            // lapin skips what is not a certificate: a key or an empty file
            // would otherwise fail later as an untrusted broker.
            if !CertificateDer::pem_slice_iter(pem.as_bytes()).any(|c| c.is_ok()) {
                return Err(AmqpError::NoCa { path: path.clone() });
            }
            Some(pem)
        }
        None => None,
    };
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain,
    };
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_with_config(&config.url, props, tls, runtime).await?)
}

/// Makes sure the topic exchange `exchange` exists (nothing for the default
/// exchange `""`): `amq.*` exchanges exist on every broker and may only be
/// declared passively; any other is declared durable.
pub(crate) async fn declare_exchange(
    channel: &lapin::Channel,
    exchange: &str,
) -> Result<(), lapin::Error> {
    if exchange.is_empty() {
        return Ok(());
    }
    channel
        .exchange_declare(
            short(exchange),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                passive: exchange.starts_with("amq."),
                durable: true,
                ..lapin::options::ExchangeDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
}

/// An AMQP name as lapin takes it. Names were checked by
/// [`AmqpConfig::validate`]; an overlong one is cut rather than panicking
/// (the broker then refuses it by name).
pub(crate) fn short(s: &str) -> ShortString {
    ShortString::try_new(s).unwrap_or_else(|_| {
        let mut end = 255;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        ShortString::from(&s[..end])
    })
}

/// The next wait of a doubling backoff.
pub(crate) fn doubled(d: Duration, max: Duration) -> Duration {
    (d * 2).min(max)
}

/// The running consumer and publisher.
#[derive(Debug)]
pub struct AmqpHandle {
    stats: Arc<ConsumerStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl AmqpHandle {
    /// What the consumer did so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the consumer and the publisher (unacknowledged messages go
    /// back to the queue with the connection).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the consumer, and the publisher when configured. Both stop once
/// `store` is closed (the coordinator's shutdown).
pub fn start(coordinator: &Arc<Coordinator>, store: Store, config: &AmqpConfig) -> AmqpHandle {
    let stats = Arc::new(ConsumerStats::default());
    let config = Arc::new(config.clone());
    tracing::info!(
        url = %config.redacted_url(),
        exchange = %config.exchange,
        queue = %config.queue,
        routing_keys = ?config.routing_keys,
        "AMQP consumer starting"
    );
    let mut tasks = vec![tokio::spawn(consumer::run(
        Arc::downgrade(coordinator),
        store.clone(),
        config.clone(),
        stats.clone(),
    ))];
    if let Some(p) = &config.publish {
        let base_url = match &p.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if coordinator.config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", coordinator.config.listen)
            }
        };
        let clock = Arc::downgrade(coordinator);
        tasks.push(tokio::spawn(publish::run(
            store,
            config.clone(),
            base_url,
            move || clock.upgrade().map(|c| c.now()),
        )));
    }
    AmqpHandle { stats, tasks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_and_its_password_never_shown() {
        let c = AmqpConfig::new("amqp://guest:s3cret@127.0.0.1:5672/%2f");
        assert_eq!(c.validate(), Ok(()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("guest:***@127.0.0.1"), "{shown}");

        let bad = AmqpConfig::new("http://127.0.0.1/");
        assert!(matches!(bad.validate(), Err(AmqpConfigError::Url(_))));
        let mut c = AmqpConfig::new("amqps://127.0.0.1/vh");
        assert_eq!(c.validate(), Ok(()));
        c.routing_keys.clear();
        assert_eq!(
            c.validate().map_err(|e| e.to_string()),
            Err("`routing_keys` must not be empty".into())
        );
        c.routing_keys = vec!["a".repeat(300)];
        assert_eq!(c.validate(), Err(AmqpConfigError::TooLong("routing_keys")));
    }

    #[tokio::test]
    async fn a_ca_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let mut c = AmqpConfig::new("amqps://guest:guest@127.0.0.1:1/vh");
        c.ca_file = Some(key.clone());
        let err = connect(&c, "test").await.unwrap_err();
        assert!(
            matches!(&err, AmqpError::NoCa { path } if *path == key),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("no PEM certificate in the CA file {}", key.display())
        );
        c.ca_file = Some(dir.path().join("missing.pem"));
        let err = connect(&c, "test").await.unwrap_err();
        assert!(matches!(err, AmqpError::Ca { .. }), "{err}");
    }
}
