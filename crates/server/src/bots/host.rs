//! What the bot needs of a code-review host, whichever it is: GitLab's
//! merge requests and notes, GitHub's pull requests and issue comments.
//! [`ReviewHost`] is that API; `gitlab` and `github` implement it.

use std::future::Future;

use super::http::ApiError;

/// A labelled open request as the host lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The request's number in the project (`!iid`, `#number`).
    pub number: u64,
    /// The head commit (none for a merge request without commits).
    pub head_sha: Option<String>,
    /// ISO 8601, the host's own text.
    pub created_at: String,
}

/// Whether the request's head passed its CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiState {
    /// Every check passed.
    Success,
    /// Not (yet) green: the host's word for it (`running`, `failed`,
    /// `2 of 3 check runs completed`, `missing`).
    Other(String),
}

/// One request with what the bot reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRequest {
    pub number: u64,
    pub head_sha: String,
    /// The branch the change comes from.
    pub source_branch: String,
    /// The branch it goes into (the baseline is its merge base with it).
    pub target_branch: String,
    pub web_url: String,
    /// The head's CI.
    pub ci: CiState,
    /// The pipeline (GitLab) or check suite/run (GitHub) that passed, as
    /// the host numbers it.
    pub pipeline_id: Option<String>,
    /// When that pipeline started (ISO 8601).
    pub pipeline_started_at: Option<String>,
}

/// A comment (note) on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// Written by the host itself (GitLab's system notes).
    pub system: bool,
}

/// The calls the bot makes to a code-review host. Futures are `Send` so a
/// bot runs on the coordinator's runtime.
pub trait ReviewHost: Send + Sync + std::fmt::Debug + 'static {
    /// The bot's name in the store (`gitlab`, `github`).
    fn kind(&self) -> &'static str;

    /// What the host calls a request (`merge request`, `pull request`).
    fn request_noun(&self) -> &'static str;

    /// Open requests carrying `label`, oldest first, every page.
    fn labelled(
        &self,
        label: &str,
    ) -> impl Future<Output = Result<Vec<RequestSummary>, ApiError>> + Send;

    /// One request, with its head's CI state.
    fn request(&self, number: u64) -> impl Future<Output = Result<ReviewRequest, ApiError>> + Send;

    /// The merge base of `target_branch` and `head_sha`.
    fn merge_base(
        &self,
        target_branch: &str,
        head_sha: &str,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// Every comment of a request.
    fn comments(&self, number: u64) -> impl Future<Output = Result<Vec<Comment>, ApiError>> + Send;

    /// Posts a comment; returns its id. Not retried on a 5xx (it may have
    /// been posted: the caller looks for its marker before posting again).
    fn create_comment(
        &self,
        number: u64,
        body: &str,
    ) -> impl Future<Output = Result<u64, ApiError>> + Send;

    /// Replaces a comment's body.
    fn update_comment(
        &self,
        number: u64,
        id: u64,
        body: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Removes `label` from a request (done when it is already gone).
    fn remove_label(
        &self,
        number: u64,
        label: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}
