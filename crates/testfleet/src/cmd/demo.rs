//! `testfleet demo`: a coordinator and two agents in one process on embedded
//! SQLite, running the bundled example project (unit tests once, benchmarks
//! on every agent), then a summary and the dashboard URL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testfleet_agent::AgentConfig;
use testfleet_client::ApiClient;
use testfleet_server::{Server, ServerConfig};
use tokio::process::Command;
use tokio::sync::watch;

use crate::exit;

/// The example project, compiled into the binary so the demo needs no files.
const EXAMPLE_FILES: &[(&str, &str, bool)] = &[
    ("README.md", include_str!("../../example/README.md"), false),
    ("configure", include_str!("../../example/configure"), true),
    ("build.sh", include_str!("../../example/build.sh"), true),
    (
        "src/wordcount.in",
        include_str!("../../example/src/wordcount.in"),
        false,
    ),
    (
        "tests/run-tests.sh",
        include_str!("../../example/tests/run-tests.sh"),
        true,
    ),
    (
        "bench/run-bench.sh",
        include_str!("../../example/bench/run-bench.sh"),
        true,
    ),
];
const EXAMPLE_JOB: &str = include_str!("../../example-job.toml");
const AGENTS: [&str; 2] = ["demo-agent-1", "demo-agent-2"];

pub async fn run(data_dir: Option<PathBuf>, keep_serving: bool) -> Result<u8> {
    let started = Instant::now();
    let (_temp, data_dir) = match data_dir {
        Some(d) => (None, d),
        None => {
            let t = tempfile::Builder::new()
                .prefix("testfleet-demo-")
                .tempdir()
                .context("failed to create a temporary directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    outln!("testfleet demo — data in {}", data_dir.display())?;

    let repo = data_dir.join("example-src");
    write_example_repo(&repo).await?;
    outln!("  example project: {} (a git repository)", repo.display())?;

    let listener = testfleet_server::listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("failed to bind a local port")?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let mut config = ServerConfig::new(addr, data_dir.join("coordinator"));
    let secret = format!("demo-{}", std::process::id());
    config.agent_secret = Some(secret.clone());
    let server = Server::build(config).await?;
    // Agents stop first, so the coordinator sees them leave before it closes.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_server_tx, stop_server_rx) = watch::channel(false);
    let server_task = tokio::spawn(server.serve(listener, wait_true(stop_server_rx)));
    outln!("  coordinator: {url}")?;

    let mut agent_tasks = Vec::new();
    for name in AGENTS {
        let mut agent = AgentConfig::new(url.clone(), name, data_dir.join("agents").join(name));
        agent.secret = Some(secret.clone());
        agent.labels.insert("pool".into(), "demo".into());
        agent_tasks.push(tokio::spawn(testfleet_agent::run(
            agent,
            wait_true(stop_rx.clone()),
        )));
    }
    let api = ApiClient::new(&url);
    wait_for_agents(&api).await?;
    outln!("  agents: {} connected\n", AGENTS.join(", "))?;

    let job_file = EXAMPLE_JOB
        .replace("@REPO@", &repo.display().to_string())
        .replace(
            "@INTEGRATION@",
            &format!("{}", 1000 + started.elapsed().as_nanos() % 9000),
        );
    let job = api.submit(&job_file).await?;
    outln!(
        "submitted job {} `{}` with {} task(s):",
        job.id,
        job.name,
        job.tasks.len()
    )?;
    let code = super::client::watch(&api, job.id, false).await?;

    outln!(
        "\ndashboard: {url}/jobs/{}   (API: {url}/api/v1/jobs/{})",
        job.id,
        job.id
    )?;
    outln!("finished in {:.1}s", started.elapsed().as_secs_f64())?;
    if keep_serving {
        outln!("serving until Ctrl-C…")?;
        super::shutdown_signal().await;
    }
    let _ = stop_tx.send(true);
    for t in agent_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = stop_server_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server_task).await;
    if code != exit::OK {
        bail!("the demo job did not pass; see the logs with the commands above");
    }
    Ok(code)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn wait_for_agents(api: &ApiClient) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let online = api
            .agents()
            .await
            .map(|a| a.iter().filter(|a| a.online).count())
            .unwrap_or(0);
        if online >= AGENTS.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the demo agents did not connect within 15s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the example project and commits it on branch `main`.
async fn write_example_repo(repo: &Path) -> Result<()> {
    if repo.join(".git").exists() {
        return Ok(());
    }
    for (path, text, executable) in EXAMPLE_FILES {
        let dest = repo.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, text)
            .with_context(|| format!("failed to write {}", dest.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let git = |args: &'static [&'static str]| {
        let repo = repo.to_owned();
        async move {
            let out = Command::new("git")
                .args(args)
                .current_dir(&repo)
                .env("GIT_AUTHOR_NAME", "testfleet demo")
                .env("GIT_AUTHOR_EMAIL", "demo@testfleet.invalid")
                .env("GIT_COMMITTER_NAME", "testfleet demo")
                .env("GIT_COMMITTER_EMAIL", "demo@testfleet.invalid")
                .output()
                .await
                .context("failed to run git (the demo needs the git CLI)")?;
            if !out.status.success() {
                bail!(
                    "git {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
    };
    git(&["init", "--quiet", "--initial-branch=main"]).await?;
    git(&["add", "."]).await?;
    git(&["commit", "--quiet", "-m", "wordcount example"]).await?;
    Ok(())
}
