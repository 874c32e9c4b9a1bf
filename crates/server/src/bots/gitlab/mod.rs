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
