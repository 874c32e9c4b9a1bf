//! Merge-request bots: clients of code-review hosts that run benchmarks on
//! labelled requests and report verdicts back (seed 003, issue 15).
//!
//! `bot` is the host-independent flow over [`host::ReviewHost`], which
//! `gitlab` (REST v4: merge requests, notes) and `github` (REST: pull
//! requests, issue comments, check runs and statuses) implement on the
//! shared `http` layer (token, retries, rate limits, pagination). `note`
//! renders the notes; `settings` is the resolved configuration.

pub mod bot;
pub mod github;
pub mod gitlab;
pub mod host;
pub mod http;
pub mod note;
pub mod settings;

pub use bot::{Action, Bot, BotError, error_chain};
pub use host::ReviewHost;
pub use http::{ApiError, Host, RetryPolicy, Token};
pub use settings::{BotConfig, BotSettings, TEMPLATE_VARS};

use std::sync::Arc;

use testfleet_store::Store;
use tokio::task::JoinHandle;

use crate::Coordinator;
use github::GitHubClient;
use gitlab::GitLabClient;

/// Why a bot could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BotSetupError {
    #[error("failed to build the {0} bot's HTTP client")]
    Http(Host, #[source] reqwest::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A bot of either host.
#[derive(Debug)]
pub enum AnyBot {
    GitLab(Bot<GitLabClient>),
    GitHub(Bot<GitHubClient>),
}

impl AnyBot {
    /// One pass (see [`Bot::pass`]).
    pub async fn pass(&self, dry_run: bool) -> Result<Vec<Action>, BotError> {
        match self {
            AnyBot::GitLab(b) => b.pass(dry_run).await,
            AnyBot::GitHub(b) => b.pass(dry_run).await,
        }
    }

    /// Runs passes until `shutdown` (see [`Bot::run`]).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        match self {
            AnyBot::GitLab(b) => b.run(shutdown).await,
            AnyBot::GitHub(b) => b.run(shutdown).await,
        }
    }
}

impl BotConfig {
    /// The bot this configuration describes, on `coordinator`, with its
    /// own `store` handle.
    pub fn bot(
        &self,
        coordinator: Arc<Coordinator>,
        store: Store,
    ) -> Result<AnyBot, BotSetupError> {
        // reqwest needs a rustls provider; testfleet uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| BotSetupError::Http(self.host, e))?;
        let project = &self.settings.project;
        let token = self.token.clone();
        let settings = self.settings.clone();
        Ok(match self.host {
            Host::GitLab => {
                let client = GitLabClient::new(http, &self.api_url, project, token, self.retry)?;
                AnyBot::GitLab(Bot::new(client, coordinator, store, settings))
            }
            Host::GitHub => {
                let client = GitHubClient::new(http, &self.api_url, project, token, self.retry)?;
                AnyBot::GitHub(Bot::new(client, coordinator, store, settings))
            }
        })
    }
}

/// Starts a bot's loop inside the coordinator (it runs until the process
/// ends, or pauses when the host refuses the token).
pub fn start(
    coordinator: Arc<Coordinator>,
    store: Store,
    config: &BotConfig,
) -> Result<JoinHandle<()>, BotSetupError> {
    let bot = config.bot(coordinator, store)?;
    tracing::info!(
        host = %config.host,
        project = %config.settings.project,
        label = %config.settings.label,
        "merge-request bot started"
    );
    Ok(tokio::spawn(bot.run(std::future::pending())))
}
