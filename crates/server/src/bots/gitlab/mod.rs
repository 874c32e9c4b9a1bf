//! The GitLab half of the merge-request bot: a REST API v4 client of one
//! project (merge requests, their head pipelines, notes, the merge base,
//! labels) implementing [`ReviewHost`](super::host::ReviewHost).

pub mod client;

pub use client::{
    Commit, DiffRefs, GitLabClient, MergeRequest, MergeRequestSummary, Note, Pipeline,
};
