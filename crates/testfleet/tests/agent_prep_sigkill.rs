//! Benchmark host preparation through the real binary: `testfleet host-prep`
//! on a fake sysfs tree, and a `testfleet agent` SIGKILLed while its host is
//! prepared, which restores the host at its next start (by itself, and
//! through the helper command).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testfleet_testkit::process::{KillOnDrop, ServerProcess};
use testfleet_testkit::sysfs::{Turbo, fake_cpu_tree, read_cpu};

const SECRET: &str = "prep-secret";

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testfleet"));
    cmd.env_remove("TESTFLEET_SERVER")
        .env_remove("TESTFLEET_CONFIG")
        .env_remove("SUDO_UID")
        .env("TESTFLEET_LOG", "warn");
    cmd
}

fn fake_sysfs(root: &Path) {
    fake_cpu_tree(root, Turbo::IntelPstate).unwrap();
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    testfleet_testkit::sysfs::snapshot(root).unwrap()
}

fn read(root: &Path, rel: &str) -> String {
    read_cpu(root, rel)
}

fn show(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}\n(exit {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    )
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn host_prep_applies_restores_and_refuses_what_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    fake_sysfs(&sys);
    let before = snapshot(&sys);
    let journal = dir.path().join("h.journal");
    let out = bin()
        .args(["host-prep", "apply", "--journal"])
        .arg(&journal)
        .arg("--sysfs-root")
        .arg(&sys)
        .args(["--cpus", "1", "--governor", "performance", "--turbo", "off"])
        .arg("--siblings-offline")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = answer["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{answer}");
    assert!(steps.iter().all(|s| s["status"] == "applied"), "{answer}");
    assert_eq!(read(&sys, "intel_pstate/no_turbo"), "1");
    assert_eq!(read(&sys, "cpu1/cpufreq/scaling_governor"), "performance");
    assert_eq!(read(&sys, "cpu3/online"), "0");

    let out = bin()
        .args(["host-prep", "restore", "--journal"])
        .arg(&journal)
        .arg("--sysfs-root")
        .arg(&sys)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(snapshot(&sys), before);
    assert!(!journal.exists());

    // A journal must be named as one, and a file that is not one is left alone.
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
    let out = bin()
        .args(["host-prep", "restore", "--journal"])
        .arg(&passwd)
        .arg("--sysfs-root")
        .arg(&sys)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must end in `.journal`"));
    let fake = dir.path().join("passwd.journal");
    std::fs::copy(&passwd, &fake).unwrap();
    let out = bin()
        .args(["host-prep", "restore", "--journal"])
        .arg(&fake)
        .arg("--sysfs-root")
        .arg(&sys)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(fake.exists());
    // Through sudo, only /sys may be prepared.
    let out = bin()
        .env("SUDO_UID", "1000")
        .args(["host-prep", "restore", "--journal"])
        .arg(&journal)
        .arg("--sysfs-root")
        .arg(&sys)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn a_sigkilled_agent_restores_the_host_at_its_next_start() {
    sigkilled_agent_restores(false);
}

#[test]
fn a_sigkilled_agent_restores_the_host_through_the_helper_command() {
    sigkilled_agent_restores(true);
}

fn sigkilled_agent_restores(via_helper: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    fake_sysfs(&sys);
    let before = snapshot(&sys);
    let server = ServerProcess::start(
        bin()
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--agent-secret", SECRET]),
    );
    let url = server.url().to_owned();
    let config = dir.path().join("agent.toml");
    let helper = if via_helper {
        format!(
            "[agent.host_prep]\ncommand = [{:?}, \"host-prep\"]\n",
            env!("CARGO_BIN_EXE_testfleet")
        )
    } else {
        String::new()
    };
    std::fs::write(&config, helper).unwrap();
    let work = dir.path().join("agent");
    let agent = |log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        KillOnDrop::spawn(
            bin()
                .arg("--config")
                .arg(&config)
                .args(["agent", "--server", &url, "--hostname", "bench-1"])
                .args(["--secret", SECRET, "--poll-interval", "1s"])
                .arg("--work-dir")
                .arg(&work)
                .arg("--sysfs-root")
                .arg(&sys)
                .stdout(Stdio::null())
                .stderr(log),
        )
    };
    let mut first = agent("agent-1.log");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        r#"name = "bench"
[[task]]
name = "sleepy"
steps = [{ stage = "test", run = "sleep 15", timeout = "1m" }]
[task.bench]
cpus = "0"
governor = "performance"
turbo = false
siblings_offline = true
"#,
    )
    .unwrap();
    let out = bin()
        .args(["--server", &url, "submit", "--json"])
        .arg(&job)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = view["id"].as_i64().unwrap();

    let journal = work.join("host-prep.journal");
    wait_for("the host to be prepared", Duration::from_secs(60), || {
        read(&sys, "intel_pstate/no_turbo") == "1"
            && read(&sys, "cpu0/cpufreq/scaling_governor") == "performance"
            && read(&sys, "cpu2/online") == "0"
            && journal.exists()
    });
    // SIGKILL mid-step: nothing gets the chance to undo anything.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(&sys, "intel_pstate/no_turbo"), "1");
    assert!(journal.exists());
    // No new attempt for the restarted agent: only the restore is looked at.
    let out = bin()
        .args(["--server", &url, "cancel", &job_id.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));

    let _second = agent("agent-2.log");
    wait_for("the host to be restored", Duration::from_secs(30), || {
        snapshot(&sys) == before && !journal.exists()
    });
    let log = std::fs::read_to_string(dir.path().join("agent-2.log")).unwrap();
    assert!(log.contains("still prepared"), "{log}");
}
