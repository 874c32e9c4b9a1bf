//! The agent: connects to a coordinator over socket.io, pulls work, runs it
//! (git → configure → build → test → results) and reports every stage.
//!
//! Execution is apart from reporting: [`runner`] runs a work item and emits
//! [`runner::RunnerEvent`]s; [`session`] owns the connection and turns those
//! events into protocol messages, buffering them while disconnected.

pub mod artifacts;
pub mod git;
pub mod machine;
pub mod outcome;
pub mod prep;
pub mod process;
pub mod runner;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use testfleet_core::LabelSet;

pub use session::{AgentError, run};

/// The agent's resolved configuration. Its `Debug` shows whether a secret is
/// set, never the secret.
#[derive(Clone)]
pub struct AgentConfig {
    /// The coordinator, `http://host:port`: the first one tried.
    pub server: String,
    /// More coordinators sharing the same store, tried in this order after
    /// `server` when it cannot be reached or its connection is lost.
    pub fallback_servers: Vec<String>,
    pub hostname: String,
    pub secret: Option<String>,
    pub labels: LabelSet,
    /// Checkouts, the git mirror cache and run directories live here.
    pub work_dir: PathBuf,
    /// How often an idle agent asks for work (the coordinator also answers a
    /// pending fetch as soon as work arrives).
    pub poll_interval: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How long a step may outlive SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// A CA certificate (PEM) to trust for an `https` coordinator, instead
    /// of the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// The blob cache for inputs (default: `<work_dir>/blob-cache`).
    pub cache_dir: Option<PathBuf>,
    /// The most the blob cache keeps; least recently used blobs go first.
    pub cache_limit: u64,
    /// How the host is prepared for `[bench]` tasks (and restored after).
    pub prep: prep::PrepSettings,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("fallback_servers", &self.fallback_servers)
            .field("hostname", &self.hostname)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("labels", &self.labels)
            .field("work_dir", &self.work_dir)
            .field("poll_interval", &self.poll_interval)
            .field("max_backoff", &self.max_backoff)
            .field("kill_grace", &self.kill_grace)
            .field("ca_cert", &self.ca_cert)
            .field("cache_dir", &self.cache_dir)
            .field("cache_limit", &self.cache_limit)
            .field("prep", &self.prep)
            .finish()
    }
}

impl AgentConfig {
    pub fn new(
        server: impl Into<String>,
        hostname: impl Into<String>,
        work_dir: PathBuf,
    ) -> AgentConfig {
        AgentConfig {
            server: server.into(),
            fallback_servers: Vec::new(),
            hostname: hostname.into(),
            secret: None,
            labels: LabelSet::new(),
            poll_interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(5),
            kill_grace: Duration::from_secs(2),
            ca_cert: None,
            cache_dir: None,
            cache_limit: 10 << 30,
            prep: prep::PrepSettings::new(work_dir.join("host-prep.journal")),
            work_dir,
        }
    }

    /// Every coordinator this agent knows, in the order it tries them:
    /// `server` first, then `fallback_servers`.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.server.as_str())
            .chain(self.fallback_servers.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let mut config = AgentConfig::new("http://127.0.0.1:1", "bench1", PathBuf::from("/tmp"));
        config.secret = Some("agent-s3cret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("agent-s3cret"), "{shown}");
        assert!(
            shown.contains("bench1") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn servers_lists_the_primary_then_the_fallbacks_in_order() {
        let mut config = AgentConfig::new("http://a:1", "bench1", PathBuf::from("/tmp"));
        assert_eq!(config.servers().collect::<Vec<_>>(), ["http://a:1"]);
        config.fallback_servers = vec!["http://b:2".into(), "http://c:3".into()];
        assert_eq!(
            config.servers().collect::<Vec<_>>(),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
    }
}
