//! The checks at the end of a run: what the coordinator itself says about
//! the bench's tasks (asked of any one coordinator of a cluster: they
//! share the store).

use std::collections::BTreeMap;
use std::time::Duration;

use testfleet_client::ApiClient;
use testfleet_core::{AttemptOutcome, TaskState};

/// What the coordinator says about the bench's tasks after the run.
#[derive(Debug, Default)]
pub(crate) struct ServerView {
    pub not_passed: Option<usize>,
    pub extra_attempts: Option<i64>,
    pub retry_reasons: BTreeMap<String, usize>,
    pub retry_examples: Vec<String>,
}

/// How many retried tasks are looked up, and how many examples kept.
const LOOKED_UP_RETRIES: usize = 500;
const KEPT_RETRY_EXAMPLES: usize = 5;

/// Asks the coordinator how the bench's tasks ended, and why the first few
/// tasks that needed more than one attempt did.
pub(crate) async fn check_server(api: &ApiClient, job_ids: &[i64]) -> ServerView {
    let mut not_passed = 0;
    let mut extra = 0;
    let mut retried = Vec::new();
    let mut retry_examples = Vec::new();
    for &id in job_ids {
        let job = match tokio::time::timeout(Duration::from_secs(10), api.job(id)).await {
            Ok(Ok(job)) => job,
            _ => return ServerView::default(),
        };
        for task in &job.tasks {
            if task.state != TaskState::Passed {
                not_passed += 1;
                if retry_examples.len() < KEPT_RETRY_EXAMPLES {
                    retry_examples.push(format!(
                        "task {} `{}` is {:?} after {} attempt(s)",
                        task.id, task.name, task.state, task.attempts
                    ));
                }
            }
            extra += (task.attempts - 1).max(0);
            if task.attempts > 1 && retried.len() < LOOKED_UP_RETRIES {
                retried.push(task.id);
            }
        }
    }
    let mut retry_reasons = BTreeMap::new();
    for id in retried {
        let Ok(Ok(detail)) = tokio::time::timeout(Duration::from_secs(10), api.task(id)).await
        else {
            continue;
        };
        let failed = detail
            .attempts_list
            .iter()
            .filter(|a| a.outcome != Some(AttemptOutcome::Passed));
        for a in failed {
            let reason = a.reason.clone().unwrap_or_else(|| "no reason".into());
            if retry_examples.len() < KEPT_RETRY_EXAMPLES {
                retry_examples.push(format!(
                    "task {id} attempt {} on {}: {:?}: {reason}",
                    a.id, a.agent, a.outcome
                ));
            }
            *retry_reasons.entry(reason).or_default() += 1;
        }
    }
    ServerView {
        not_passed: Some(not_passed),
        extra_attempts: Some(extra),
        retry_reasons,
        retry_examples,
    }
}
