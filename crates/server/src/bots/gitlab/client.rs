//! A GitLab REST API v4 client for the merge-request bot.
//!
//! Only the calls the bot needs: open merge requests with a label (oldest
//! first), one merge request (its head pipeline), the merge base of two
//! refs, a merge request's notes, posting and editing a note, and removing
//! a label. The token goes in `PRIVATE-TOKEN`; retries, rate limits and
//! pagination are the shared [`ApiClient`]'s.

use reqwest::Method;
use serde::Deserialize;

use crate::bots::host::{CiState, Comment, RequestSummary, ReviewHost, ReviewRequest};
use crate::bots::http::{ApiClient, ApiError, Host, RetryPolicy, Token, encode_segment};

/// A merge request as the list endpoint gives it (no pipeline there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MergeRequestSummary {
    /// The project-scoped number (`!iid`).
    pub iid: u64,
    pub title: String,
    /// ISO 8601, as GitLab writes it.
    pub created_at: String,
    /// The head commit (null on a merge request with no commits).
    pub sha: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub web_url: String,
}

/// A pipeline as a merge request's `head_pipeline` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    /// `created`, `pending`, `running`, `success`, `failed`, `canceled`, …
    pub status: String,
    pub sha: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub web_url: Option<String>,
}

/// A merge request's diff refs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DiffRefs {
    pub base_sha: Option<String>,
    pub head_sha: Option<String>,
    pub start_sha: Option<String>,
}

/// One merge request, as `GET …/merge_requests/:iid` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MergeRequest {
    pub iid: u64,
    pub title: String,
    pub state: String,
    pub created_at: String,
    pub sha: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub web_url: String,
    pub head_pipeline: Option<Pipeline>,
    pub diff_refs: Option<DiffRefs>,
}

/// A note (comment) on a merge request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Note {
    pub id: u64,
    pub body: String,
    /// GitLab's own notes ("added 1 commit", label changes).
    #[serde(default)]
    pub system: bool,
    pub created_at: Option<String>,
}

/// A commit, as the merge base endpoint gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Commit {
    /// The full SHA.
    pub id: String,
    pub created_at: Option<String>,
}

/// A client of one GitLab project.
#[derive(Debug, Clone)]
pub struct GitLabClient {
    api: ApiClient,
    /// `/projects/<id or encoded path>`.
    project_path: String,
}

impl GitLabClient {
    /// A client of `project` (a numeric id or a path such as
    /// `group/sub/project`) on the GitLab at `api_url` (its root, such as
    /// `https://gitlab.com`; a trailing `/api/v4` is accepted).
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        project: &str,
        token: Token,
        retry: RetryPolicy,
    ) -> Result<GitLabClient, ApiError> {
        let trimmed = api_url.trim().trim_end_matches('/');
        let root = trimmed.strip_suffix("/api/v4").unwrap_or(trimmed);
        let api = ApiClient::new(http, Host::GitLab, &format!("{root}/api/v4"), token, retry)
            .map_err(|e| match e {
                ApiError::BadUrl { host, .. } => ApiError::BadUrl {
                    host,
                    url: api_url.to_owned(),
                },
                e => e,
            })?;
        Ok(GitLabClient {
            api,
            project_path: format!("/projects/{}", encode_segment(project.trim())),
        })
    }

    /// Open merge requests carrying `label`, oldest first, every page.
    pub async fn open_merge_requests(
        &self,
        label: &str,
    ) -> Result<Vec<MergeRequestSummary>, ApiError> {
        let path = format!("{}/merge_requests", self.project_path);
        self.api
            .get_all(
                &path,
                &[
                    ("state", "opened"),
                    ("labels", label),
                    ("order_by", "created_at"),
                    ("sort", "asc"),
                ],
            )
            .await
    }

    /// One merge request, with its head pipeline and diff refs.
    pub async fn merge_request(&self, iid: u64) -> Result<MergeRequest, ApiError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path);
        self.api.get(&path, &[]).await
    }

    /// The merge base of two refs (branch names or SHAs).
    pub async fn merge_base_commit(&self, a: &str, b: &str) -> Result<Commit, ApiError> {
        let path = format!("{}/repository/merge_base", self.project_path);
        self.api.get(&path, &[("refs[]", a), ("refs[]", b)]).await
    }

    /// Every note of a merge request (GitLab's default order: newest first).
    pub async fn notes(&self, iid: u64) -> Result<Vec<Note>, ApiError> {
        let path = format!("{}/merge_requests/{iid}/notes", self.project_path);
        self.api.get_all(&path, &[]).await
    }

    /// Posts a note on a merge request (not retried on a 5xx).
    pub async fn create_note(&self, iid: u64, body: &str) -> Result<Note, ApiError> {
        let path = format!("{}/merge_requests/{iid}/notes", self.project_path);
        let json = serde_json::json!({ "body": body });
        self.api.send(Method::POST, &path, &json, false).await
    }

    /// Replaces a note's body.
    pub async fn update_note(&self, iid: u64, note_id: u64, body: &str) -> Result<Note, ApiError> {
        let path = format!("{}/merge_requests/{iid}/notes/{note_id}", self.project_path);
        let json = serde_json::json!({ "body": body });
        self.api.send(Method::PUT, &path, &json, true).await
    }

    /// Removes `label` from a merge request.
    pub async fn remove_merge_request_label(
        &self,
        iid: u64,
        label: &str,
    ) -> Result<MergeRequest, ApiError> {
        let path = format!("{}/merge_requests/{iid}", self.project_path);
        let json = serde_json::json!({ "remove_labels": label });
        self.api.send(Method::PUT, &path, &json, true).await
    }
}

impl ReviewHost for GitLabClient {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn request_noun(&self) -> &'static str {
        "merge request"
    }

    async fn labelled(&self, label: &str) -> Result<Vec<RequestSummary>, ApiError> {
        Ok(self
            .open_merge_requests(label)
            .await?
            .into_iter()
            .map(|mr| RequestSummary {
                number: mr.iid,
                head_sha: mr.sha,
                created_at: mr.created_at,
            })
            .collect())
    }

    async fn request(&self, number: u64) -> Result<ReviewRequest, ApiError> {
        let mr = self.merge_request(number).await?;
        let pipeline = mr.head_pipeline.as_ref();
        let ci = match pipeline.map(|p| p.status.as_str()) {
            Some("success") => CiState::Success,
            Some(other) => CiState::Other(format!("its head pipeline is {other}")),
            None => CiState::Other("it has no head pipeline".to_owned()),
        };
        Ok(ReviewRequest {
            number: mr.iid,
            head_sha: mr.sha.clone().unwrap_or_default(),
            source_branch: mr.source_branch.clone(),
            target_branch: mr.target_branch.clone(),
            web_url: mr.web_url.clone(),
            ci,
            pipeline_id: pipeline.map(|p| p.id.to_string()),
            pipeline_started_at: pipeline
                .and_then(|p| p.started_at.clone().or_else(|| p.created_at.clone())),
        })
    }

    async fn merge_base(&self, target_branch: &str, head_sha: &str) -> Result<String, ApiError> {
        Ok(self.merge_base_commit(target_branch, head_sha).await?.id)
    }

    async fn comments(&self, number: u64) -> Result<Vec<Comment>, ApiError> {
        Ok(self
            .notes(number)
            .await?
            .into_iter()
            .map(|n| Comment {
                id: n.id,
                body: n.body,
                system: n.system,
            })
            .collect())
    }

    async fn create_comment(&self, number: u64, body: &str) -> Result<u64, ApiError> {
        Ok(self.create_note(number, body).await?.id)
    }

    async fn update_comment(&self, number: u64, id: u64, body: &str) -> Result<(), ApiError> {
        self.update_note(number, id, body).await.map(|_| ())
    }

    async fn remove_label(&self, number: u64, label: &str) -> Result<(), ApiError> {
        self.remove_merge_request_label(number, label)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_api_url_is_refused_as_given() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = GitLabClient::new(
            reqwest::Client::new(),
            "gitlab.example.com",
            "1",
            Token::new("t"),
            RetryPolicy::default(),
        )
        .err();
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(shown.contains("`gitlab.example.com`"), "{shown}");
    }

    #[test]
    fn a_project_path_is_one_segment() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = GitLabClient::new(
            reqwest::Client::new(),
            "https://gitlab.example.com/api/v4/",
            "group/sub",
            Token::new("t"),
            RetryPolicy::default(),
        )
        .expect("client");
        assert_eq!(client.project_path, "/projects/group%2Fsub");
    }
}
