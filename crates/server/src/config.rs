//! The coordinator's resolved configuration. The binary reads defaults, the
//! config file, `TESTFLEET_*` variables and flags, in that order, and hands
//! the result here; nothing below reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AgentAuthError;

/// Everything the coordinator needs to run. Its `Debug` names the hosts that
/// have secrets, never the secrets.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The store (`None`: SQLite in `data_dir/testfleet.db`). Several
    /// coordinators share one PostgreSQL database.
    pub database: Option<testfleet_store::DatabaseUrl>,
    /// A secret shared by every agent, when set.
    pub agent_secret: Option<String>,
    /// Per-host secrets; a host listed here must use its own secret.
    pub host_secrets: BTreeMap<String, String>,
    /// Start without any agent secret: every host may connect as an agent,
    /// take work and report results. Off unless asked for (a trusted
    /// network); see [`ServerConfig::check_agent_access`].
    pub allow_any_agent: bool,
    /// Dev mode: `queryWork` and `mockItem` are allowed.
    pub dev: bool,
    /// How long an agent may be disconnected before its running attempt is
    /// given up as `infra_error` and re-queued.
    pub lease_timeout: Duration,
    /// Agents seen within this window receive `each_agent` fan-out work even
    /// when offline (Qt keeps agents seen in the last 7 days).
    pub agent_retention: Duration,
    /// How often to ask a running agent for its status.
    pub request_status_interval: Duration,
    /// How often at most to ask an agent that reports status `test`.
    pub request_status_interval_in_test: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest socket.io packet accepted.
    pub max_socket_payload: u64,
    /// Largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// Fair-share weights by queue name (unlisted queues weigh 1).
    pub queue_weights: BTreeMap<String, f64>,
    /// Stop an attempt running longer than this factor × the p95 runtime of
    /// its task key (`None`: never derive a limit from history).
    pub runtime_factor: Option<f64>,
    /// Runs of a task key needed before its history sets a limit.
    pub runtime_min_runs: i64,
    /// A derived limit is never shorter than this.
    pub runtime_floor: Duration,
    /// Failures that are re-triggered automatically (off unless configured).
    pub known_failures: Vec<KnownFailure>,
    /// InfluxDB and external ResultsDB delivery (off unless configured).
    pub exporters: crate::exporters::ExportersConfig,
    /// Who may read and write through the REST API.
    pub auth: crate::auth::AuthConfig,
    /// Serve HTTPS (and socket.io over TLS) with these files.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Blobs: where they live, size limits, artifact retention.
    pub blobs: crate::blobs::BlobsConfig,
    /// Webhooks (`/api/v1/hooks/{github,gitlab,gerrit}`): their secrets
    /// and allowed networks. A hook without any is disabled.
    pub hooks: crate::triggers::hooks::HooksConfig,
    /// How long the events log keeps an event (and its de-duplication key).
    pub events_retention: Duration,
    /// The trigger rules webhooks are matched against (loaded with their
    /// templates by `triggers::load_rules`); `None`: hooks answer 503.
    pub trigger_rules: Option<std::sync::Arc<testfleet_core::trigger::RuleSet>>,
    /// The AMQP consumer of trigger events and publisher of finished jobs
    /// (`[server.amqp]`; off unless configured).
    pub amqp: Option<crate::triggers::amqp::AmqpConfig>,
    /// The merge-request bots (`[server.bots.gitlab]`,
    /// `[server.bots.github]`; none unless configured).
    pub bots: Vec<crate::bots::BotConfig>,
    /// Autoscaling (`[server.autoscale]`): the hook and the policy.
    pub autoscale: crate::autoscale::AutoscaleConfig,
    /// Coordinators sharing a PostgreSQL database (`[server.cluster]`).
    pub cluster: crate::ClusterConfig,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field(
                "agent_secret",
                &self.agent_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "host_secrets",
                &self.host_secrets.keys().collect::<Vec<_>>(),
            )
            .field("allow_any_agent", &self.allow_any_agent)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database_url().to_string())
            .field("dev", &self.dev)
            .field("lease_timeout", &self.lease_timeout)
            .field("agent_retention", &self.agent_retention)
            .field("request_status_interval", &self.request_status_interval)
            .field(
                "request_status_interval_in_test",
                &self.request_status_interval_in_test,
            )
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_socket_payload", &self.max_socket_payload)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("queue_weights", &self.queue_weights)
            .field("runtime_factor", &self.runtime_factor)
            .field("runtime_min_runs", &self.runtime_min_runs)
            .field("runtime_floor", &self.runtime_floor)
            .field("known_failures", &self.known_failures)
            .field("exporters", &self.exporters)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("blobs", &self.blobs)
            .field("hooks", &self.hooks)
            .field("events_retention", &self.events_retention)
            .field(
                "trigger_rules",
                &self.trigger_rules.as_ref().map(|r| r.rules().len()),
            )
            .field("amqp", &self.amqp)
            .field("bots", &self.bots)
            .field("autoscale", &self.autoscale)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A known failure: when a failed task's reason or log matches `pattern`,
/// the task is queued again, at most `retrigger` times.
#[derive(Debug, Clone)]
pub struct KnownFailure {
    pub pattern: regex::Regex,
    pub retrigger: u32,
}

impl ServerConfig {
    /// Where the store lives: `database`, else SQLite under `data_dir`.
    pub fn database_url(&self) -> testfleet_store::DatabaseUrl {
        self.database
            .clone()
            .unwrap_or_else(|| testfleet_store::DatabaseUrl::in_dir(&self.data_dir))
    }

    /// Defaults for a coordinator listening on `listen` and storing in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            database: None,
            agent_secret: None,
            host_secrets: BTreeMap::new(),
            allow_any_agent: false,
            dev: false,
            lease_timeout: Duration::from_secs(10),
            agent_retention: Duration::from_secs(7 * 24 * 3600),
            request_status_interval: Duration::from_secs(60),
            request_status_interval_in_test: Duration::from_secs(15 * 60),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            max_socket_payload: 16 << 20,
            max_body_bytes: 4 << 20,
            queue_weights: BTreeMap::new(),
            runtime_factor: Some(5.0),
            runtime_min_runs: 5,
            runtime_floor: Duration::from_secs(60),
            known_failures: Vec::new(),
            exporters: crate::exporters::ExportersConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
            blobs: crate::blobs::BlobsConfig::default(),
            hooks: crate::triggers::hooks::HooksConfig::default(),
            events_retention: Duration::from_secs(30 * 24 * 3600),
            trigger_rules: None,
            amqp: None,
            bots: Vec::new(),
            autoscale: crate::autoscale::AutoscaleConfig::default(),
            cluster: crate::ClusterConfig::default(),
        }
    }

    /// Whether agents must present a secret at all.
    pub fn agents_authenticated(&self) -> bool {
        self.agent_secret.is_some() || !self.host_secrets.is_empty()
    }

    /// Refuses a coordinator that would let any host connect as an agent
    /// (no shared secret, no per-host secret) unless that was asked for
    /// with `allow_any_agent`.
    pub fn check_agent_access(&self) -> Result<(), ConfigError> {
        if self.agents_authenticated() || self.allow_any_agent {
            Ok(())
        } else {
            Err(ConfigError::NoAgentSecret)
        }
    }

    /// Checks an agent's secret against the configured ones.
    pub fn check_agent_secret(
        &self,
        hostname: &str,
        secret: Option<&str>,
    ) -> Result<(), AgentAuthError> {
        let expected = match self.host_secrets.get(hostname) {
            Some(s) => Some(s.as_str()),
            None => self.agent_secret.as_deref(),
        };
        let Some(expected) = expected else {
            if self.host_secrets.is_empty() {
                return Ok(());
            }
            return Err(AgentAuthError::NotConfigured(hostname.to_owned()));
        };
        match secret {
            None => Err(AgentAuthError::Missing),
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(AgentAuthError::Wrong(hostname.to_owned())),
        }
    }
}

/// A configuration the coordinator refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No agent secret and `allow_any_agent` not set.
    #[error(
        "no agent secret is configured, so any host that reaches this coordinator could connect as an agent, take work and report results. \
         Set a secret shared by the agents (--agent-secret, TESTFLEET_AGENT_SECRET or `agent_secret` in the config file's [server] section) \
         or per-host secrets ([server.host_secrets] in the config file), \
         and give each agent its secret (testfleet agent --secret or TESTFLEET_AGENT_SECRET); \
         `testfleet agents secret set|rotate HOST` can then give a host its own stored secret. \
         On a trusted network, start with --allow-any-agent (TESTFLEET_ALLOW_ANY_AGENT=true or `allow_any_agent = true` in [server]) instead"
    )]
    NoAgentSecret,
}

/// Compares without an early exit, so timing does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_shared_and_per_host() {
        let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp".into());
        assert!(
            c.check_agent_secret("a", None).is_ok(),
            "no secret configured: open"
        );
        c.agent_secret = Some("shared".into());
        c.host_secrets.insert("special".into(), "own".into());
        assert!(c.check_agent_secret("a", Some("shared")).is_ok());
        assert_eq!(
            c.check_agent_secret("a", Some("nope")),
            Err(AgentAuthError::Wrong("a".into()))
        );
        assert_eq!(
            c.check_agent_secret("a", None).unwrap_err().to_string(),
            "missing secret in auth payload"
        );
        assert!(c.check_agent_secret("special", Some("own")).is_ok());
        assert!(c.check_agent_secret("special", Some("shared")).is_err());
        c.agent_secret = None;
        assert_eq!(
            c.check_agent_secret("other", Some("shared")),
            Err(AgentAuthError::NotConfigured("other".into())),
            "per-host secrets only: an unlisted host is refused"
        );
    }

    #[test]
    fn no_open_door_for_agents_unless_asked_for() {
        let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp".into());
        let refused = c.check_agent_access().unwrap_err();
        assert_eq!(refused, ConfigError::NoAgentSecret);
        let message = refused.to_string();
        for hint in [
            "--agent-secret",
            "TESTFLEET_AGENT_SECRET",
            "[server]",
            "host_secrets",
            "testfleet agents secret",
            "--allow-any-agent",
        ] {
            assert!(message.contains(hint), "`{hint}` missing from: {message}");
        }
        c.allow_any_agent = true;
        assert!(c.check_agent_access().is_ok());
        c.allow_any_agent = false;
        c.agent_secret = Some("shared".into());
        assert!(c.check_agent_access().is_ok());
        c.agent_secret = None;
        c.host_secrets.insert("bench1".into(), "own".into());
        assert!(c.check_agent_access().is_ok());
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;
    use crate::exporters::{InfluxApi, InfluxConfig};

    #[test]
    fn debug_output_hides_every_secret() {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), PathBuf::from("/tmp"));
        config.agent_secret = Some("shared-s3cret".into());
        config
            .host_secrets
            .insert("bench1".into(), "host-s3cret".into());
        config.exporters.influxdb = Some(InfluxConfig {
            url: "http://127.0.0.1:8086".into(),
            api: InfluxApi::V1 {
                database: "qt".into(),
                user: Some("writer".into()),
                password: Some("influx-s3cret".into()),
            },
            batch_points: 10,
        });
        let shown = format!("{config:?}");
        for secret in ["shared-s3cret", "host-s3cret", "influx-s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("bench1") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
