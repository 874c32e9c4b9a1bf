//! Waiting, with a deadline, for what a test expects to happen.

use std::future::Future;
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_wire::api::JobView;

/// The job `id` once it has ended (passed, failed or cancelled); fails the
/// test, showing the job, when it has not after `timeout`.
pub async fn wait_job(api: &ApiClient, id: i64, timeout: Duration) -> JobView {
    let deadline = Instant::now() + timeout;
    loop {
        let job = api
            .job(id)
            .await
            .unwrap_or_else(|e| panic!("failed to read job {id}: {e}"));
        if job.state.is_terminal() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish in {timeout:?}: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until at least `n` agents are online (10 s at most).
pub async fn wait_agents(api: &ApiClient, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .agents()
        .await
        .map(|a| a.iter().filter(|a| a.online).count())
        .unwrap_or(0)
        < n
    {
        assert!(
            Instant::now() < deadline,
            "{n} agent(s) did not connect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until `f` answers true (checked every 10 ms, 5 s at most); `what` names
/// the condition in the failure.
pub async fn wait_until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
