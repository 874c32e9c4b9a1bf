//! The GitHub half of the merge-request bot: a REST API client of one
//! repository (pull requests found through the issues list, check runs and
//! combined statuses, issue comments, labels) implementing
//! [`ReviewHost`](super::host::ReviewHost).

pub mod client;

pub use client::{
    Branch, CheckRun, CombinedStatus, GitHubClient, IssueComment, IssueItem, PullRequest,
    PullRequestLink,
};
