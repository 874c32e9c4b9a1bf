//! The `testfleet` binary: a coordinator killed with SIGKILL restarts from
//! its store; the CLI refuses a bad job file.

use std::process::{Command, Stdio};
use std::time::Duration;

use testfleet_client::ApiClient;
use testfleet_core::JobState;
use testfleet_testkit::wait::{wait_agents, wait_job};

use crate::{SECRET, server_process};

#[test]
fn coordinator_killed_with_sigkill_restarts_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = server_process(&data, "127.0.0.1:0", false, None);
    let port = server.port();
    let url = server.url().to_owned();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args([
            "agent",
            "--server",
            &url,
            "--hostname",
            "survivor",
            "--secret",
            SECRET,
        ])
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&url);
    rt.block_on(wait_agents(&api, 1));
    let job = "name = \"survive\"\n[[task]]\nname = \"slow\"\nsteps = [{ stage = \"test\", run = \"echo start; sleep 3; echo end\" }]\n[[task]]\nname = \"after\"\nsteps = [{ stage = \"test\", run = \"echo second\" }]\n";
    let view = rt.block_on(api.submit(job)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(server); // SIGKILL while the first task runs and the second is queued

    let server = server_process(&data, &format!("127.0.0.1:{port}"), false, None);
    let done = rt.block_on(wait_job(&api, view.id, Duration::from_secs(60)));
    assert_eq!(done.state, JobState::Passed, "{done:#?}");
    let slow = done.tasks.iter().find(|t| t.name == "slow").unwrap();
    assert_eq!(
        slow.attempts, 1,
        "the running attempt survived the restart: {slow:?}"
    );
    let log = rt.block_on(api.task_log(slow.id, 0)).unwrap();
    assert!(
        log.data.contains("start") && log.data.contains("end"),
        "{}",
        log.data
    );
    let _ = agent.kill();
    let _ = agent.wait();
    drop(server);
}

#[test]
fn cli_refuses_a_bad_job_file_with_its_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_process(&dir.path().join("server"), "127.0.0.1:0", false, None);
    let job = dir.path().join("bad.toml");
    std::fs::write(
        &job,
        "name = \"x\"\n[[task]]\nname = \"t\"\nsteps = [{ stage = \"deploy\", run = \"true\" }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args(["--server", server.url(), "submit"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml: invalid job file: line 4"),
        "{stderr}"
    );
    assert!(stderr.contains("task[0].steps[0].stage"), "{stderr}");
    assert!(stderr.contains("unknown variant `deploy`"), "{stderr}");
}
