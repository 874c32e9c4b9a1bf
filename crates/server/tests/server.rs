//! The coordinator with a manual clock: leases, fencing and runtime limits
//! tested without sleeping through them. Agents are plain socket.io clients.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testfleet_core::{AttemptOutcome, TaskState};
use testfleet_server::ServerConfig;
use testfleet_sio::{Client, EventStream};
use testfleet_testkit::server::{ManualClock, TestServer};
use testfleet_testkit::sio::{agent_auth, idle_agent, next_event};
use testfleet_testkit::wait::wait_until;

const SECRET: &str = "clock-secret";

/// A coordinator on a manual clock.
struct Harness {
    server: TestServer,
    clock: Arc<ManualClock>,
}

impl std::ops::Deref for Harness {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

async fn start() -> Harness {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let clock = ManualClock::at(1_700_000_000_000);
    let server = TestServer::in_tempdir_with_clock(clock.clone(), |config| {
        config.agent_secret = Some(SECRET.into());
        config.lease_timeout = Duration::from_secs(10);
        tweak(config);
    })
    .await;
    Harness { server, clock }
}

async fn agent(url: &str, name: &str) -> (Client, EventStream) {
    idle_agent(url, agent_auth(name, SECRET)).await
}

const ONE_TASK: &str =
    "name = \"lease\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agents_attempt_is_requeued_at_lease_expiry_and_its_late_report_is_fenced() {
    let h = start().await;
    let (a, mut a_events) = agent(&h.url, "agent-a").await;
    let job = h.api.submit(ONE_TASK).await.unwrap();
    let task = job.tasks[0].id;
    let work = next_event(&mut a_events, "sendWork").await;
    let first_attempt = work["attemptId"].as_i64().unwrap();

    // The connection is lost (the agent process died).
    drop(a_events);
    a.disconnect().await;
    wait_until("the coordinator sees agent-a offline", || async {
        h.api
            .agents()
            .await
            .unwrap()
            .iter()
            .any(|x| x.hostname == "agent-a" && !x.online)
    })
    .await;

    // Within the lease nothing happens…
    h.clock.advance(9_000);
    h.coordinator.tick().await;
    assert_eq!(
        h.api.task(task).await.unwrap().task.state,
        TaskState::Running
    );
    // …past it, the attempt ends as infra_error and the task is queued again.
    h.clock.advance(1_500);
    h.coordinator.tick().await;
    let detail = h.api.task(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Queued, "{detail:#?}");
    assert_eq!(
        detail.attempts_list[0].outcome,
        Some(AttemptOutcome::InfraError)
    );
    assert!(
        detail.attempts_list[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("lost"),
        "{detail:#?}"
    );

    // Another agent takes the retry.
    let (b, mut b_events) = agent(&h.url, "agent-b").await;
    let retry = next_event(&mut b_events, "sendWork").await;
    let second_attempt = retry["attemptId"].as_i64().unwrap();
    assert_ne!(first_attempt, second_attempt);

    // agent-a comes back and reports its superseded attempt as passed: fenced.
    let (a2, _a2_events) = agent(&h.url, "agent-a").await;
    let report = json!({"attemptId": first_attempt, "outcome": "passed", "results": []});
    a2.emit_with_ack("tf:report", report, Duration::from_secs(5))
        .await
        .unwrap();
    let detail = h.api.task(task).await.unwrap();
    assert_eq!(
        detail.task.state,
        TaskState::Running,
        "the late report changed nothing"
    );
    assert_eq!(
        detail.attempts_list[0].outcome,
        Some(AttemptOutcome::InfraError)
    );

    // agent-b finishes: one result, recorded once.
    let report = json!({"attemptId": second_attempt, "outcome": "passed", "results": []});
    b.emit_with_ack("tf:report", report, Duration::from_secs(5))
        .await
        .unwrap();
    let detail = h.api.task(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Passed);
    assert_eq!(detail.attempts_list.len(), 2);
    assert_eq!(detail.attempts_list[1].agent, "agent-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_runtime_limit_is_stopped_as_stalled_with_a_reason() {
    let h = start().await;
    let (_a, mut events) = agent(&h.url, "slow-host").await;
    let job = h
        .api
        .submit("name = \"stall\"\n[[task]]\nname = \"t\"\nmax_runtime = \"1m\"\nsteps = [{ stage = \"test\", run = \"sleep 1000\" }]\n")
        .await
        .unwrap();
    let task = job.tasks[0].id;
    let work = next_event(&mut events, "sendWork").await;
    h.clock.advance(59_000);
    h.coordinator.tick().await;
    assert_eq!(
        h.api.task(task).await.unwrap().task.state,
        TaskState::Running
    );
    h.clock.advance(2_000);
    h.coordinator.tick().await;
    let cancel = next_event(&mut events, "tf:cancel").await;
    assert_eq!(cancel["attemptId"], work["attemptId"]);
    let detail = h.api.task(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Failed);
    assert_eq!(detail.task.outcome, Some(AttemptOutcome::Stalled));
    let attempt = &detail.attempts_list[0];
    assert!(
        attempt
            .reason
            .as_deref()
            .unwrap()
            .starts_with("stalled: running for 61s, beyond its limit of 60s"),
        "{attempt:?}"
    );
    let data = attempt.reason_data.as_ref().unwrap();
    assert!(
        matches!(
            data,
            testfleet_wire::reason::ReasonData::RuntimeThreshold {
                basis: testfleet_wire::reason::RuntimeBasis::MaxRuntime { .. },
                ..
            }
        ),
        "{data:?}"
    );
    let stats = h.api.stats().await.unwrap();
    let row = stats
        .thresholds
        .iter()
        .find(|r| r.threshold == "runtime_threshold");
    assert_eq!(row.map(|r| r.stopped_attempts), Some(1), "{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_have_separate_budgets_and_a_pass_after_a_failure_is_flaky() {
    let h = start().await;
    let (a, mut a_events) = agent(&h.url, "r-a").await;
    let job = h
        .api
        .submit("name = \"flaky\"\n[[task]]\nname = \"t\"\nretries = { tests = 1, infra = 0 }\nsteps = [{ stage = \"test\", run = \"true\" }]\n")
        .await
        .unwrap();
    let task = job.tasks[0].id;
    let w1 = next_event(&mut a_events, "sendWork").await;
    let fail = json!({"attemptId": w1["attemptId"], "outcome": "failed", "reason": "1 test case(s) failed", "results": []});
    a.emit_with_ack("tf:report", fail, Duration::from_secs(5))
        .await
        .unwrap();
    // The retry goes out with boosted priority; with no other agent it may come back here.
    a.emit_no_args("fetchWork").await.unwrap();
    let w2 = next_event(&mut a_events, "sendWork").await;
    assert_ne!(w1["attemptId"], w2["attemptId"]);
    let pass = json!({"attemptId": w2["attemptId"], "outcome": "passed", "results": []});
    a.emit_with_ack("tf:report", pass, Duration::from_secs(5))
        .await
        .unwrap();
    let detail = h.api.task(task).await.unwrap();
    assert_eq!(detail.task.state, TaskState::Passed);
    assert!(detail.task.flaky);
    assert_eq!(detail.task.outcome, Some(AttemptOutcome::Flaky));
    let stats = h.api.stats().await.unwrap();
    assert_eq!(
        stats.flaky.first().map(|r| r.task_key.as_str()),
        Some("flaky/t"),
        "{stats:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_failure_is_retriggered_up_to_its_limit() {
    let h = start_with(|c| {
        c.known_failures.push(testfleet_server::KnownFailure {
            pattern: regex::Regex::new("Connection reset by peer").unwrap(),
            retrigger: 1,
        })
    })
    .await;
    let (a, mut events) = agent(&h.url, "kf").await;
    let job = h.api.submit(ONE_TASK).await.unwrap();
    let task = job.tasks[0].id;
    for round in 0..2 {
        let work = next_event(&mut events, "sendWork").await;
        let fail = json!({"attemptId": work["attemptId"], "outcome": "failed",
                          "reason": "fetch failed: Connection reset by peer", "results": []});
        a.emit_with_ack("tf:report", fail, Duration::from_secs(5))
            .await
            .unwrap();
        let detail = h.api.task(task).await.unwrap();
        if round == 0 {
            assert_eq!(
                detail.task.state,
                TaskState::Queued,
                "re-triggered: {detail:#?}"
            );
            assert!(
                detail
                    .task
                    .detail_message
                    .as_deref()
                    .unwrap()
                    .contains("known failure")
            );
            a.emit_no_args("fetchWork").await.unwrap();
        } else {
            assert_eq!(
                detail.task.state,
                TaskState::Failed,
                "the limit is 1: {detail:#?}"
            );
            assert_eq!(detail.attempts_list.len(), 2);
        }
    }
}

/// Each agent connection has an event queue and a task applying it. They
/// used to outlive the connection (the socket's handlers hold the queue's
/// senders and the task holds the socket), about 59 KB per connection that
/// ever ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_event_queue_ends_with_its_connection() {
    let h = start().await;
    let queues = || h.coordinator.metrics.event_queues();
    let mut agents = Vec::new();
    for i in 0..20 {
        agents.push(agent(&h.url, &format!("agent-{i}")).await);
    }
    wait_until("20 event queues", || async { queues() == 20 }).await;
    // Half leave with `disconnect`, half are dropped.
    for (i, (client, events)) in agents.into_iter().enumerate() {
        drop(events);
        if i % 2 == 0 {
            client.disconnect().await;
        } else {
            drop(client);
        }
    }
    wait_until("every event queue ended", || async { queues() == 0 }).await;
    // A new connection still works.
    let (_a, mut a_events) = agent(&h.url, "agent-0").await;
    h.api.submit(ONE_TASK).await.unwrap();
    next_event(&mut a_events, "sendWork").await;
    assert_eq!(queues(), 1);
}
