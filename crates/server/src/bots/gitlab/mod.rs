//! The GitLab merge-request bot.
//!
//! `client` speaks GitLab's REST API v4 (merge requests, notes, the merge
//! base), following pagination and surviving rate limits and server errors;
//! a rejected token is a typed error that pauses the bot. `note` renders the
//! notes (pure), `bot` runs passes: requests taken up are kept in the store.

pub mod bot;
pub mod client;
pub mod note;

pub use bot::{Action, BOT, BotError, GitLabBot, GitLabBotSettings, error_chain};
pub use client::{
    Commit, DiffRefs, GitLabClient, GitLabError, MergeRequest, MergeRequestSummary, Note, Pipeline,
    RetryPolicy, Token,
};

use std::sync::Arc;
use std::time::Duration;

use testfleet_store::Store;
use tokio::task::JoinHandle;

use crate::Coordinator;

/// The resolved `[server.bots.gitlab]`: where GitLab is, the token, and
/// how the bot runs.
#[derive(Debug, Clone)]
pub struct GitLabBotConfig {
    /// GitLab's root URL (`https://gitlab.example.com`).
    pub api_url: String,
    /// The token (from `token_file` or `token_env`); never shown.
    pub token: Token,
    /// How calls are retried on 429 and 5xx.
    pub retry: RetryPolicy,
    /// How long one HTTP call may take.
    pub request_timeout: Duration,
    /// The project, label, poll interval, job template and links.
    pub settings: GitLabBotSettings,
}

/// Why the bot could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BotSetupError {
    #[error("failed to build the GitLab bot's HTTP client")]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    GitLab(#[from] GitLabError),
}

impl GitLabBotConfig {
    /// The bot this configuration describes, on `coordinator`, with its
    /// own `store` handle.
    pub fn bot(
        &self,
        coordinator: Arc<Coordinator>,
        store: Store,
    ) -> Result<GitLabBot, BotSetupError> {
        // reqwest needs a rustls provider; testfleet uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .build()
            .map_err(BotSetupError::Http)?;
        let client = GitLabClient::new(
            http,
            &self.api_url,
            &self.settings.project,
            self.token.clone(),
            self.retry,
        )?;
        Ok(GitLabBot::new(
            client,
            coordinator,
            store,
            self.settings.clone(),
        ))
    }
}

/// Starts the bot's loop inside the coordinator (it runs until the process
/// ends, or pauses when GitLab refuses the token).
pub fn start(
    coordinator: Arc<Coordinator>,
    store: Store,
    config: &GitLabBotConfig,
) -> Result<JoinHandle<()>, BotSetupError> {
    let bot = config.bot(coordinator, store)?;
    tracing::info!(
        project = %config.settings.project,
        label = %config.settings.label,
        "GitLab merge-request bot started"
    );
    Ok(tokio::spawn(bot.run(std::future::pending())))
}
