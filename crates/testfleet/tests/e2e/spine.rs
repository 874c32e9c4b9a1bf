//! A coordinator and agents in this process: checkout, run, report, logs;
//! failures and timeouts; cancel; bad job files; `each_agent` fan-out; fair
//! share between queues; an agent killed mid-task.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_core::{JobState, TaskState};
use testfleet_testkit::wait::{wait_agents, wait_job};

use crate::{SECRET, git_repo, start_agent, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_checks_out_runs_reports_and_streams_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let agent = start_agent(&server.url, "agent-a", dir.path(), &[("pool", "bench")]);
    wait_agents(&api, 1).await;

    let repo = git_repo(dir.path());
    let job = format!(
        r#"
name = "e2e"
[source]
repo = "{}"
rev = "main"
[integration]
id = "189470895"
timestamp = "2023-02-10T13:11:13Z"
branch = "dev"
[[task]]
name = "check"
requires = {{ pool = "bench" }}
steps = [
  {{ stage = "configure", run = "cat hello.txt", timeout = "30s" }},
  {{ stage = "build", run = "echo building; echo to-stderr >&2", timeout = "30s" }},
  {{ stage = "test", run = "mkdir -p results && cp t/ok.tap t/bench.json results/", timeout = "30s" }},
]
results = [{{ path = "results/*.tap", format = "tap" }}, {{ path = "results/bench.json" }}]
"#,
        repo.display()
    );
    let submitted = Instant::now();
    let view = api.submit(&job).await.unwrap();
    assert_eq!(view.tasks.len(), 1);
    let done = wait_job(&api, view.id, Duration::from_secs(30)).await;
    let elapsed = submitted.elapsed();
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let task = &done.tasks[0];
    assert_eq!(task.agent.as_deref(), Some("agent-a"));
    assert_eq!(
        task.counts.pass, 3,
        "the TAP and benchmark results were parsed and stored: {task:?}"
    );
    let metric = task
        .metrics
        .iter()
        .find(|m| m.name == "real_time")
        .expect("the benchmark value is shown");
    assert_eq!(
        (metric.case.as_str(), metric.value, metric.iterations),
        ("BM_Concat/64", 16.352, Some(200))
    );
    // The idle agent got the work through the long poll, not its 30 s poll.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    let log = api.task_log(task.id, 0).await.unwrap();
    assert!(log.complete);
    for needle in [
        "hello from the repo",
        "building",
        "to-stderr",
        "$ cat hello.txt",
        "checked out",
    ] {
        assert!(
            log.data.contains(needle),
            "log lacks {needle:?}:\n{}",
            log.data
        );
    }
    let detail = api.task(task.id).await.unwrap();
    assert_eq!(detail.attempts_list.len(), 1);
    assert_eq!(detail.attempts_list[0].stage.as_deref(), Some("done"));

    // The seed-000 run summary of the attempt.
    let summary = api
        .attempt_summary(detail.attempts_list[0].id)
        .await
        .unwrap();
    assert_eq!(summary.integration_id, "189470895");
    assert_eq!(summary.integration_timestamp, "2023-02-10T13:11:13.000Z");
    assert_eq!(summary.hostname, "agent-a");
    assert!(
        !summary.platform.is_empty(),
        "the agent's fingerprint gives the platform"
    );
    let bench = summary
        .executed_tests
        .iter()
        .find(|t| t.test_function == "BM_Concat/64" && t.result == serde_json::json!(16.352));
    assert!(bench.is_some(), "{summary:#?}");
    assert!(
        summary
            .executed_tests
            .iter()
            .any(|t| t.test_function == "first" && t.result == "pass"),
        "{summary:#?}"
    );
    // One merged JUnit report and Taskotron-style TAP for the job.
    let junit = api.job_report(view.id, "junit").await.unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("name=\"second\""),
        "{junit}"
    );
    let tap = api.job_report(view.id, "tap").await.unwrap();
    assert!(
        tap.starts_with("TAP version 13") && tap.contains("outcome: PASSED"),
        "{tap}"
    );
    assert!(api.job_report(view.id, "pdf").await.is_err());

    // The seed-000 run summary of the attempt.
    let summary = api
        .attempt_summary(detail.attempts_list[0].id)
        .await
        .unwrap();
    assert_eq!(summary.integration_id, "189470895");
    assert_eq!(summary.integration_timestamp, "2023-02-10T13:11:13.000Z");
    assert_eq!(summary.hostname, "agent-a");
    assert!(
        !summary.platform.is_empty(),
        "the agent's fingerprint gives the platform"
    );
    let bench = summary
        .executed_tests
        .iter()
        .find(|t| t.test_function == "BM_Concat/64" && t.result == serde_json::json!(16.352));
    assert!(bench.is_some(), "{summary:#?}");
    assert!(
        summary
            .executed_tests
            .iter()
            .any(|t| t.test_function == "first" && t.result == "pass"),
        "{summary:#?}"
    );
    // One merged JUnit report and Taskotron-style TAP for the job.
    let junit = api.job_report(view.id, "junit").await.unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("name=\"second\""),
        "{junit}"
    );
    let tap = api.job_report(view.id, "tap").await.unwrap();
    assert!(
        tap.starts_with("TAP version 13") && tap.contains("outcome: PASSED"),
        "{tap}"
    );
    assert!(api.job_report(view.id, "pdf").await.is_err());

    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_timed_out_steps_end_the_task_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let agent = start_agent(&server.url, "agent-b", dir.path(), &[]);
    wait_agents(&api, 1).await;

    let job = r#"
name = "fails"
[[task]]
name = "exit-3"
steps = [{ stage = "build", run = "echo about to fail; exit 3" }]
[[task]]
name = "sleeps"
steps = [{ stage = "test", run = "sleep 60", timeout = "1s" }]
"#;
    let view = api.submit(job).await.unwrap();
    let done = wait_job(&api, view.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Failed);
    let by_name = |n: &str| done.tasks.iter().find(|t| t.name == n).unwrap().clone();
    let failed = by_name("exit-3");
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.outcome, Some(testfleet_core::AttemptOutcome::Failed));
    assert!(
        failed
            .detail_message
            .as_deref()
            .unwrap_or("")
            .contains("exited with status 3"),
        "{failed:?}"
    );
    let slept = by_name("sleeps");
    assert_eq!(
        slept.outcome,
        Some(testfleet_core::AttemptOutcome::TimedOut)
    );
    assert!(
        slept
            .detail_message
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{slept:?}"
    );

    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_and_drops_queued_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let agent = start_agent(&server.url, "agent-c", dir.path(), &[]);
    wait_agents(&api, 1).await;
    let marker = dir.path().join("still-running");
    let job = format!(
        "name = \"long\"\n[[task]]\nname = \"a\"\nsteps = [{{ stage = \"test\", run = \"sleep 30; touch {m}\" }}]\n[[task]]\nname = \"b\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n",
        m = marker.display()
    );
    let view = api.submit(&job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .job(view.id)
        .await
        .unwrap()
        .tasks
        .iter()
        .all(|t| t.state != TaskState::Running)
    {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            api.job(view.id).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = api.cancel(view.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        cancelled
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Cancelled),
        "{cancelled:#?}"
    );
    // The agent is free again: a new job runs.
    let next = api.submit("name = \"after\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\" }]\n").await.unwrap();
    assert_eq!(
        wait_job(&api, next.id, Duration::from_secs(20)).await.state,
        JobState::Passed
    );
    assert!(!marker.exists(), "the cancelled step kept running");

    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_name_line_and_field_and_queue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let cases: &[(&str, &str, Option<usize>, Option<&str>)] = &[
        (
            "missing field",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\" }]\n",
            Some(4),
            Some("task[0].steps[0]"),
        ),
        (
            "unknown stage",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"deploy\", run = \"true\" }]\n",
            Some(4),
            Some("task[0].steps[0].stage"),
        ),
        (
            "bad duration",
            "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"true\", timeout = \"soon\" }]\n",
            Some(4),
            Some("task[0].steps[0].timeout"),
        ),
        ("bad toml", "name = \"x\"\n[[task]\n", Some(2), None),
    ];
    for (what, body, line, field) in cases {
        let err = api.submit(body).await.unwrap_err();
        let testfleet_client::ClientError::Api {
            status,
            body: Some(body),
            message,
        } = err
        else {
            panic!("{what}: unexpected error {err:?}");
        };
        assert_eq!(status, 422, "{what}");
        assert_eq!(body.line, *line, "{what}: {message}");
        assert_eq!(body.field.as_deref(), *field, "{what}: {message}");
        assert!(
            message.starts_with("invalid job file: line"),
            "{what}: {message}"
        );
    }
    assert!(
        api.jobs(10, None).await.unwrap().is_empty(),
        "a refused job was queued"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_fans_out_to_known_agents_and_offline_work_waits_for_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let a1 = start_agent(&server.url, "bench-1", dir.path(), &[("pool", "benchmark")]);
    let a3 = start_agent(
        &server.url,
        "bench-retired",
        dir.path(),
        &[("pool", "benchmark")],
    );
    let a4 = start_agent(&server.url, "other", dir.path(), &[("pool", "other")]);
    let spawn_bench2 = || {
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .args([
                "agent",
                "--server",
                &server.url,
                "--hostname",
                "bench-2",
                "--secret",
                SECRET,
                "--labels",
                "pool=benchmark",
            ])
            .arg("--work-dir")
            .arg(dir.path().join("bench-2"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut bench2 = spawn_bench2();
    wait_agents(&api, 4).await;
    // bench-2 is lost (SIGKILL, not a shutdown): its fan-out work waits for it.
    bench2.kill().unwrap();
    bench2.wait().unwrap();
    // bench-retired shuts down cleanly, so it is retired and gets nothing.
    a3.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let agents = api.agents().await.unwrap();
        let retired = agents
            .iter()
            .any(|a| a.hostname == "bench-retired" && a.retired);
        let lost = agents
            .iter()
            .any(|a| a.hostname == "bench-2" && !a.online && !a.retired);
        if retired && lost {
            break;
        }
        assert!(Instant::now() < deadline, "{agents:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = "name = \"fan\"\n[[task]]\nname = \"bench\"\nrequires = { pool = \"benchmark\" }\neach_agent = true\nsteps = [{ stage = \"test\", run = \"true\" }]\n";
    let view = api.submit(job).await.unwrap();
    let mut names: Vec<_> = view.tasks.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["bench@bench-1", "bench@bench-2"], "{view:#?}");
    // bench-1 finishes its part; bench-2's waits in its queue, durably.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = api.job(view.id).await.unwrap();
        let mine = job
            .tasks
            .iter()
            .find(|t| t.name == "bench@bench-1")
            .unwrap();
        if mine.state == TaskState::Passed {
            let theirs = job
                .tasks
                .iter()
                .find(|t| t.name == "bench@bench-2")
                .unwrap();
            assert_eq!(theirs.state, TaskState::Queued);
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bench2 = spawn_bench2();
    let done = wait_job(&api, view.id, Duration::from_secs(20)).await;
    assert_eq!(done.state, JobState::Passed);
    let theirs = done
        .tasks
        .iter()
        .find(|t| t.name == "bench@bench-2")
        .unwrap();
    assert_eq!(theirs.agent.as_deref(), Some("bench-2"));
    bench2.kill().unwrap();
    bench2.wait().unwrap();
    for agent in [a1, a4] {
        agent.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_queue_does_not_starve_a_small_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let a1 = start_agent(&server.url, "fs-1", dir.path(), &[]);
    let a2 = start_agent(&server.url, "fs-2", dir.path(), &[]);
    wait_agents(&api, 2).await;
    let mut flood = String::from("name = \"flood\"\nqueue = \"flood\"\n");
    for i in 0..300 {
        flood.push_str(&format!(
            "[[task]]\nname = \"f{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    let flood = api.submit(&flood).await.unwrap();
    let mut small = String::from("name = \"small\"\nqueue = \"small\"\n");
    for i in 0..3 {
        small.push_str(&format!(
            "[[task]]\nname = \"s{i}\"\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    let small = api.submit(&small).await.unwrap();
    let small_done = wait_job(&api, small.id, Duration::from_secs(60)).await;
    assert_eq!(small_done.state, JobState::Passed);
    let flood_now = api.job(flood.id).await.unwrap();
    let flood_finished = flood_now
        .tasks
        .iter()
        .filter(|t| t.state.is_terminal())
        .count();
    assert!(
        flood_finished < 100,
        "the small queue waited behind the flood: {flood_finished} flood tasks ran first"
    );
    assert_eq!(
        wait_job(&api, flood.id, Duration::from_secs(120))
            .await
            .state,
        JobState::Passed
    );
    for agent in [a1, a2] {
        agent.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_loses_it_to_another_agent_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"), false).await;
    let api = ApiClient::new(&server.url);
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &server.url,
            "--hostname",
            "doomed",
            "--secret",
            SECRET,
        ])
        .arg("--work-dir")
        .arg(dir.path().join("doomed"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_agents(&api, 1).await;
    let job = api
        .submit("name = \"survive-agent\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"test\", run = \"sleep 1; echo finished\" }]\n")
        .await
        .unwrap();
    let task = job.tasks[0].id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.task(task).await.unwrap().task.stage.as_deref() != Some("test") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().unwrap(); // SIGKILL mid-task
    doomed.wait().unwrap();
    let killed_at = Instant::now();
    let other = start_agent(&server.url, "rescuer", dir.path(), &[]);
    let done = wait_job(&api, job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Passed);
    // The lease (3 s in this test) re-queued it well within 10 s.
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed_at.elapsed()
    );
    let detail = api.task(task).await.unwrap();
    let summary: Vec<_> = detail
        .attempts_list
        .iter()
        .map(|a| (a.agent.as_str(), a.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("doomed", Some(testfleet_core::AttemptOutcome::InfraError)),
            ("rescuer", Some(testfleet_core::AttemptOutcome::Passed))
        ]
    );
    other.stop().await;
    server.stop().await;
}
