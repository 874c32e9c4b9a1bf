//! A GitHub REST API client for the merge-request bot.
//!
//! Only the calls the bot needs: open pull requests carrying a label (the
//! issues list, oldest first, pull requests only), one pull request, its
//! head's check runs and combined status, the merge base (the compare
//! endpoint), a pull request's issue comments, posting and editing a
//! comment, and removing a label. The token goes in `Authorization:
//! Bearer`; retries, rate limits (GitHub's 403 with
//! `X-RateLimit-Remaining: 0` included) and pagination are the shared
//! [`ApiClient`]'s.

use reqwest::Method;
use serde::Deserialize;

use crate::bots::host::{CiState, Comment, RequestSummary, ReviewHost, ReviewRequest};
use crate::bots::http::{ApiClient, ApiError, Host, RetryPolicy, Token, encode_segment};

/// Check-run conclusions that let a head count as green.
const GREEN_CONCLUSIONS: &[&str] = &["success", "neutral", "skipped"];

/// An item of the issues list (an issue, or a pull request when
/// `pull_request` is there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssueItem {
    pub number: u64,
    pub title: String,
    pub created_at: String,
    /// Present on pull requests only.
    pub pull_request: Option<PullRequestLink>,
}

/// The `pull_request` object of an issues-list item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequestLink {
    pub url: String,
}

/// A branch end of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Branch {
    /// The branch name.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
}

/// One pull request, as `GET /repos/{owner}/{repo}/pulls/{number}` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub state: String,
    pub title: String,
    pub created_at: String,
    pub html_url: String,
    pub head: Branch,
    pub base: Branch,
}

/// A check run of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    /// `queued`, `in_progress`, `completed`, …
    pub status: String,
    /// Set once completed: `success`, `failure`, `neutral`, …
    pub conclusion: Option<String>,
    pub started_at: Option<String>,
}

#[derive(Deserialize)]
struct CheckRuns {
    total_count: u64,
    check_runs: Vec<CheckRun>,
}

/// A commit's combined status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CombinedStatus {
    /// `success`, `pending` or `failure`.
    pub state: String,
    pub total_count: u64,
}

#[derive(Deserialize)]
struct CompareCommit {
    sha: String,
}

#[derive(Deserialize)]
struct Compare {
    merge_base_commit: CompareCommit,
}

/// An issue comment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssueComment {
    pub id: u64,
    /// Absent when the comment is empty.
    #[serde(default)]
    pub body: String,
}

/// A client of one GitHub repository.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    api: ApiClient,
    /// `/repos/<owner>/<repo>`.
    repo_path: String,
}

/// A ref (branch or sha) in a path: percent-encoded, its `/` kept.
fn encode_ref(r: &str) -> String {
    r.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

impl GitHubClient {
    /// A client of `repo` (`owner/repo`) on the GitHub API at `api_url`
    /// (`https://api.github.com`, or a GitHub Enterprise
    /// `https://host/api/v3`).
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        repo: &str,
        token: Token,
        retry: RetryPolicy,
    ) -> Result<GitHubClient, ApiError> {
        let api = ApiClient::new(http, Host::GitHub, api_url, token, retry)?;
        let repo = repo.trim();
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(ApiError::BadProject {
                host: Host::GitHub,
                project: repo.to_owned(),
                expected: "`owner/repo`",
            });
        }
        Ok(GitHubClient {
            api,
            repo_path: format!(
                "/repos/{}/{}",
                encode_segment(parts[0]),
                encode_segment(parts[1])
            ),
        })
    }

    /// Open pull requests carrying `label`, oldest first, every page.
    pub async fn labelled_pulls(&self, label: &str) -> Result<Vec<IssueItem>, ApiError> {
        let path = format!("{}/issues", self.repo_path);
        let items: Vec<IssueItem> = self
            .api
            .get_all(
                &path,
                &[
                    ("state", "open"),
                    ("labels", label),
                    ("sort", "created"),
                    ("direction", "asc"),
                ],
            )
            .await?;
        Ok(items
            .into_iter()
            .filter(|i| i.pull_request.is_some())
            .collect())
    }

    /// One pull request.
    pub async fn pull(&self, number: u64) -> Result<PullRequest, ApiError> {
        let path = format!("{}/pulls/{number}", self.repo_path);
        self.api.get(&path, &[]).await
    }

    /// Every check run of a commit (the list is an object with
    /// `total_count`; pages are followed until it is reached).
    pub async fn check_runs(&self, sha: &str) -> Result<Vec<CheckRun>, ApiError> {
        let path = format!("{}/commits/{}/check-runs", self.repo_path, encode_ref(sha));
        let mut runs = Vec::new();
        for page in 1..=100u32 {
            let page = page.to_string();
            let answer: CheckRuns = self
                .api
                .get(&path, &[("per_page", "100"), ("page", &page)])
                .await?;
            let empty = answer.check_runs.is_empty();
            runs.extend(answer.check_runs);
            if empty || runs.len() as u64 >= answer.total_count {
                break;
            }
        }
        Ok(runs)
    }

    /// A commit's combined status.
    pub async fn combined_status(&self, sha: &str) -> Result<CombinedStatus, ApiError> {
        let path = format!("{}/commits/{}/status", self.repo_path, encode_ref(sha));
        self.api.get(&path, &[]).await
    }

    /// Every issue comment of a pull request, oldest first.
    pub async fn issue_comments(&self, number: u64) -> Result<Vec<IssueComment>, ApiError> {
        let path = format!("{}/issues/{number}/comments", self.repo_path);
        self.api.get_all(&path, &[]).await
    }
}

/// Whether a head is green: every check run completed with a green
/// conclusion and the combined status a success, where each exists, and
/// at least one exists.
fn ci_state(runs: &[CheckRun], status: &CombinedStatus) -> CiState {
    if runs.is_empty() && status.total_count == 0 {
        return CiState::Other("its head has no check runs or commit statuses".to_owned());
    }
    let pending = runs.iter().filter(|r| r.status != "completed").count();
    if pending > 0 {
        return CiState::Other(format!(
            "{pending} of {} check runs on its head are not completed",
            runs.len()
        ));
    }
    if let Some(red) = runs.iter().find(|r| {
        !r.conclusion
            .as_deref()
            .is_some_and(|c| GREEN_CONCLUSIONS.contains(&c))
    }) {
        return CiState::Other(format!(
            "check run `{}` on its head concluded {}",
            red.name,
            red.conclusion.as_deref().unwrap_or("nothing")
        ));
    }
    if status.total_count > 0 && status.state != "success" {
        return CiState::Other(format!(
            "the combined status of its head is {}",
            status.state
        ));
    }
    CiState::Success
}

impl ReviewHost for GitHubClient {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn request_noun(&self) -> &'static str {
        "pull request"
    }

    async fn labelled(&self, label: &str) -> Result<Vec<RequestSummary>, ApiError> {
        Ok(self
            .labelled_pulls(label)
            .await?
            .into_iter()
            .map(|i| RequestSummary {
                number: i.number,
                // The issues list does not carry it: the bot reads the pull.
                head_sha: None,
                created_at: i.created_at,
            })
            .collect())
    }

    async fn request(&self, number: u64) -> Result<ReviewRequest, ApiError> {
        let pr = self.pull(number).await?;
        let runs = self.check_runs(&pr.head.sha).await?;
        let status = self.combined_status(&pr.head.sha).await?;
        let first = runs
            .iter()
            .filter(|r| r.started_at.is_some())
            .min_by(|a, b| a.started_at.cmp(&b.started_at));
        Ok(ReviewRequest {
            number: pr.number,
            ci: ci_state(&runs, &status),
            pipeline_id: first.map(|r| r.id.to_string()),
            pipeline_started_at: first.and_then(|r| r.started_at.clone()),
            head_sha: pr.head.sha,
            source_branch: pr.head.git_ref,
            target_branch: pr.base.git_ref,
            web_url: pr.html_url,
        })
    }

    async fn merge_base(&self, target_branch: &str, head_sha: &str) -> Result<String, ApiError> {
        let path = format!(
            "{}/compare/{}...{}",
            self.repo_path,
            encode_ref(target_branch),
            encode_ref(head_sha)
        );
        let compare: Compare = self.api.get(&path, &[]).await?;
        Ok(compare.merge_base_commit.sha)
    }

    async fn comments(&self, number: u64) -> Result<Vec<Comment>, ApiError> {
        Ok(self
            .issue_comments(number)
            .await?
            .into_iter()
            .map(|c| Comment {
                id: c.id,
                body: c.body,
                system: false,
            })
            .collect())
    }

    async fn create_comment(&self, number: u64, body: &str) -> Result<u64, ApiError> {
        let path = format!("{}/issues/{number}/comments", self.repo_path);
        let json = serde_json::json!({ "body": body });
        let c: IssueComment = self.api.send(Method::POST, &path, &json, false).await?;
        Ok(c.id)
    }

    async fn update_comment(&self, _number: u64, id: u64, body: &str) -> Result<(), ApiError> {
        let path = format!("{}/issues/comments/{id}", self.repo_path);
        let json = serde_json::json!({ "body": body });
        let _: IssueComment = self.api.send(Method::PATCH, &path, &json, true).await?;
        Ok(())
    }

    async fn remove_label(&self, number: u64, label: &str) -> Result<(), ApiError> {
        let path = format!(
            "{}/issues/{number}/labels/{}",
            self.repo_path,
            encode_segment(label)
        );
        match self.api.delete(&path).await {
            // Already gone (removed by hand, or by an earlier pass).
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, conclusion: Option<&str>) -> CheckRun {
        CheckRun {
            id: 1,
            name: "build".into(),
            status: status.into(),
            conclusion: conclusion.map(str::to_owned),
            started_at: None,
        }
    }

    fn combined(state: &str, total_count: u64) -> CombinedStatus {
        CombinedStatus {
            state: state.into(),
            total_count,
        }
    }

    #[test]
    fn a_head_is_green_only_when_every_check_is() {
        let none = combined("pending", 0);
        assert!(matches!(ci_state(&[], &none), CiState::Other(_)));
        assert_eq!(
            ci_state(&[run("completed", Some("success"))], &none),
            CiState::Success
        );
        assert_eq!(
            ci_state(
                &[
                    run("completed", Some("success")),
                    run("completed", Some("skipped"))
                ],
                &none
            ),
            CiState::Success
        );
        let CiState::Other(why) = ci_state(&[run("in_progress", None)], &none) else {
            panic!("pending")
        };
        assert!(why.contains("1 of 1 check runs"), "{why}");
        let CiState::Other(why) = ci_state(&[run("completed", Some("failure"))], &none) else {
            panic!("red")
        };
        assert!(why.contains("concluded failure"), "{why}");
        assert_eq!(ci_state(&[], &combined("success", 2)), CiState::Success);
        let CiState::Other(why) = ci_state(
            &[run("completed", Some("success"))],
            &combined("failure", 1),
        ) else {
            panic!("status red")
        };
        assert!(why.contains("combined status"), "{why}");
    }

    #[test]
    fn refs_keep_their_slashes() {
        assert_eq!(encode_ref("release/6.8"), "release/6.8");
        assert_eq!(encode_ref("a b"), "a%20b");
    }

    #[test]
    fn the_repository_must_be_owner_slash_repo() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for bad in ["octo", "a/b/c", "/r", "o/"] {
            let err = GitHubClient::new(
                reqwest::Client::new(),
                "https://api.github.com",
                bad,
                Token::new("t"),
                RetryPolicy::default(),
            )
            .err();
            assert!(err.is_some(), "{bad}");
        }
    }
}
