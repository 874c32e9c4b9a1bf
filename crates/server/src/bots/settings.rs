//! A bot's resolved configuration (`[server.bots.gitlab]`,
//! `[server.bots.github]`): where the host is, the token, and how the bot
//! runs.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use testfleet_core::trigger::{Overrides, Template};

use super::http::{Host, RetryPolicy, Token};

/// How a bot runs, whatever its host.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// The project as configured (GitLab: numeric id or path; GitHub:
    /// `owner/repo`), as the store and the notes' markers name it.
    pub project: String,
    /// The label that asks for a run (default `benchmark`).
    pub label: String,
    /// How often a pass runs.
    pub poll_interval: Duration,
    /// The job template, one job per side; placeholders: `sha`, `branch`,
    /// `target_branch`, `mr`, `side` (`head` or `base`), `project`,
    /// `pipeline_id`, `pipeline_started_at`, `note_id`.
    pub template: Template,
    /// Overrides of the rendered job (a queue for the benchmark hosts).
    pub overrides: Overrides,
    /// The dashboard's URL as the notes' readers reach it.
    pub dashboard_url: String,
    /// The benchmark hosts: every task runs once on each (those connected
    /// to the coordinator), and a host's stored results of a sha are
    /// reused. Empty: the template decides where tasks run, and a side's
    /// earlier job is reused whole.
    pub hosts: Vec<String>,
    /// Confirmation rounds at most: while verdicts are UNKNOWN, the tasks
    /// behind them run again (both sides) before the bot answers; 0 answers
    /// at once.
    pub confirm_rounds: u32,
}

/// The placeholders a bot's template may use.
pub const TEMPLATE_VARS: &[&str] = &[
    "sha",
    "branch",
    "target_branch",
    "mr",
    "side",
    "project",
    "pipeline_id",
    "pipeline_started_at",
    "note_id",
];

impl BotSettings {
    /// The digest of what makes two runs of a sha the same benchmark: the
    /// template's text and the overrides. Results are reused only between
    /// requests with the same digest.
    pub fn template_digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.template.text().as_bytes());
        h.update([0]);
        h.update(self.overrides.queue.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(
            self.overrides
                .priority
                .map(|p| p.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        let digest = h.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One configured bot.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// GitLab or GitHub.
    pub host: Host,
    /// The API's root URL: GitLab's root (`https://gitlab.example.com`,
    /// `/api/v4` added), GitHub's API (`https://api.github.com`, or
    /// `https://github.example.com/api/v3`).
    pub api_url: String,
    /// The token (from a file or an environment variable); never shown.
    pub token: Token,
    /// How calls are retried on rate limits and 5xx.
    pub retry: RetryPolicy,
    /// How long one HTTP call may take.
    pub request_timeout: Duration,
    pub settings: BotSettings,
}
