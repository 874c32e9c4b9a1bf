//! `testfleet scale --dry-run [--json]` against a real `testfleet server`
//! whose `[server.autoscale]` comes from its config file: the decisions for
//! a scripted queue, and a clear refusal without `--dry-run`.

use std::process::{Command, Output};

use testfleet_client::ApiClient;
use testfleet_testkit::process::ServerProcess;
use testfleet_wire::scale::ScalePlan;

const SECRET: &str = "s3cret-for-tests";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
}

fn scale(url: &str, args: &[&str]) -> Output {
    bin()
        .args(["--server", url, "scale"])
        .args(args)
        .output()
        .expect("run testfleet scale")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_dry_run_shows_the_wanted_agents_per_label_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server.autoscale]\nmin_idle = 1\nmax_agents = 4\ncooldown = \"2m\"\n",
    )
    .expect("config");
    let server = ServerProcess::start(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--agent-secret", SECRET]),
    );
    let url = server.url().to_owned();
    let api = ApiClient::new(&url);
    let mut job = String::from("name = \"bench\"\n");
    for i in 0..5 {
        job.push_str(&format!(
            "[[task]]\nname = \"t{i}\"\nrequires = {{ pool = \"bench\", os = \"linux\" }}\nsteps = [{{ stage = \"test\", run = \"true\" }}]\n"
        ));
    }
    api.submit(&job).await.expect("submit");

    let out = scale(&url, &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("policy: min_idle 1, max_agents 4, cool-down 120 s; no hook configured"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("os=linux,pool=bench"))
        .unwrap_or_else(|| panic!("a row for the waiting tasks' label set: {text}"));
    assert!(
        row.contains("would want 0 → 4"),
        "5 waiting + 1, capped at 4: {row}"
    );

    let out = scale(&url, &["--dry-run", "--json"]);
    let plan: ScalePlan = serde_json::from_slice(&out.stdout).expect("the plan as JSON");
    assert!(!plan.hook_configured);
    let d = &plan.decisions[0];
    assert_eq!(
        (
            d.labels.as_str(),
            d.current,
            d.waiting,
            d.wanted,
            d.call_hook
        ),
        ("os=linux,pool=bench", 0, 5, 4, false)
    );

    let out = scale(&url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --dry-run"), "{err}");
    drop(server);
}
