//! Merge-request bots: clients of code-review hosts that run benchmarks on
//! labelled requests and report verdicts back (seed 003, issue 15).
//!
//! `gitlab` is the GitLab REST v4 client and the types it reads.

pub mod gitlab;
