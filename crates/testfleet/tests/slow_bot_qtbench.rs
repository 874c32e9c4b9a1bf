//! The slow group: the merge-request bot (issue 15, seed 003) end to end on
//! real agents running a real QtTest benchmark.
//!
//! A real `testfleet server` process runs the GitLab bot (`[server.bots.gitlab]`)
//! against the test kit's fake GitLab; a real `testfleet agent` process is
//! the benchmark host. The repository is the project's own QtTest
//! benchmark (crates/formats/tests/qtbench) in a local git repository:
//! `main` at commit A; merge request !1 only edits the README (B), merge
//! request !2 adds a `slowdown` file (C) that the job's step turns into
//! `TF_BENCH_SLOWDOWN=1.3` (every benchmarked body does 30 % more work).
//! Each side is checked out, configured, built and run five times
//! (`repeat = 5`).
//!
//! !1 must come back as "no significant change", !2 as slower, both in one
//! note updated in place, labels removed; !2 reuses !1's baseline results
//! (same merge base, same hosts, same template) instead of running them
//! again, and the jobs' steps see the seed's variables (`TESTFLEET_BOT_*`,
//! the note id among them).
//!
//! Without Qt 6, CMake and valgrind (Debian: `qt6-base-dev cmake g++
//! valgrind`) the test kit's peer rule applies. Ignored by a plain `cargo test`; `cargo xtask test`
//! runs it, as does `cargo test -p testfleet --test slow_bot_qtbench -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfleet_client::ApiClient;
use testfleet_testkit::gitlab::{FakeGitLab, FakeMr, FakeNote, PROJECT_PATH};
use testfleet_testkit::peers;
use testfleet_testkit::process::{KillOnDrop, ServerProcess, configure_qtbench, output_of};
use testfleet_testkit::wait::wait_agents;

const SECRET: &str = "s3cret-for-tests";
const TOKEN: &str = "glpat-e2e-token";
/// One benchmark host: two would measure at once on this 2-core machine
/// and drown a 30 % change in each other's noise.
const HOSTS: [&str; 1] = ["bench-1"];
/// The rows run, measured in instructions (QtTest's `-callgrind`: valgrind
/// counts them, so another process's load on this 2-core machine cannot
/// blur a verdict as it blurs CPU ticks; spread ~0.3 %). Ten iterations
/// let `TF_BENCH_SLOWDOWN=1.3` pay its three extra passes.
const BENCH_ARGS: &str = "-callgrind -iterations 10 join sortNumbers:small";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testfleet"))
}

fn git(repo: &Path, args: &[&str]) -> String {
    output_of(
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "Jane Developer")
            .env("GIT_AUTHOR_EMAIL", "jane@example.org")
            .env("GIT_COMMITTER_NAME", "Jane Developer")
            .env("GIT_COMMITTER_EMAIL", "jane@example.org"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn commit(repo: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The benchmark's repository: `main` at A, `readme` at B and `slower` at
/// C, both on A. Returns (A, B, C).
fn bench_repo(repo: &Path) -> (String, String, String) {
    std::fs::create_dir_all(repo).unwrap();
    git(repo, &["init", "-q", "--initial-branch=main"]);
    let src = peers::workspace_root().join("crates/formats/tests/qtbench");
    for file in ["CMakeLists.txt", "tst_bench.cpp"] {
        std::fs::copy(src.join(file), repo.join(file)).unwrap();
    }
    let a = commit(repo, "README", "A benchmark.\n", "Import the benchmark");
    git(repo, &["checkout", "-q", "-b", "readme"]);
    let b = commit(
        repo,
        "README",
        "A benchmark, better described.\n",
        "README: say more",
    );
    git(repo, &["checkout", "-q", "-b", "slower", &a]);
    let c = commit(repo, "slowdown", "1.3\n", "Do 30 % more work");
    git(repo, &["checkout", "-q", "main"]);
    (a, b, c)
}

/// The bot's job template: the side's commit built and run five times on
/// every benchmark host; the first step shows the seed's variables.
fn template(repo: &Path) -> String {
    format!(
        r#"name = "qtbench {{{{sha}}}}"
[source]
repo = "{repo}"
rev = "{{{{sha}}}}"

[integration]
id = "mr{{{{mr}}}}-{{{{side}}}}"
branch = "{{{{branch}}}}"
sha = "{{{{sha}}}}"

[[task]]
name = "qtbench"
repeat = 5
env = {{ QT_QPA_PLATFORM = "offscreen" }}
steps = [
  {{ stage = "configure", run = "echo \"bot=$TESTFLEET_BOT mr=$TESTFLEET_BOT_MR side=$TESTFLEET_BOT_SIDE note=$TESTFLEET_BOT_NOTE_ID\" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release", timeout = "5m" }},
  {{ stage = "build", run = "cmake --build build -j2", timeout = "10m" }},
  {{ stage = "test", run = "if [ -f slowdown ]; then export TF_BENCH_SLOWDOWN=$(cat slowdown); fi; build/tst_bench {BENCH_ARGS} -o results.xml,xml", timeout = "5m" }},
]
results = [{{ path = "results.xml", format = "qtest-xml" }}]
"#,
        repo = repo.display()
    )
}

fn write_config(dir: &Path, fake_url: &str, repo: &Path) -> PathBuf {
    let token = dir.join("gitlab-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let template_path = dir.join("bench-mr.toml");
    std::fs::write(&template_path, template(repo)).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server.bots.gitlab]\napi_url = \"{fake_url}\"\nproject = \"{PROJECT_PATH}\"\n\
             token_file = \"{}\"\npoll_interval = \"500ms\"\ntemplate = \"{}\"\n\
             hosts = [\"bench-1\"]\ndashboard_url = \"http://dash.example\"\n",
            token.display(),
            template_path.display()
        ),
    )
    .unwrap();
    config
}

/// Waits until the label is gone from `iid` (the bot has answered).
async fn wait_reported(fake: &FakeGitLab, iid: u64, timeout: Duration) -> FakeNote {
    let end = Instant::now() + timeout;
    while fake
        .mr(iid)
        .is_some_and(|m| m.labels.iter().any(|l| l == "benchmark"))
    {
        assert!(
            Instant::now() < end,
            "!{iid} not reported within {timeout:?}: {:#?}",
            fake.notes(iid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notes = fake.notes(iid);
    assert_eq!(notes.len(), 1, "one note for !{iid}: {notes:#?}");
    notes.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: cargo xtask test runs it (cargo test --test slow_bot_qtbench -- --ignored)"]
async fn the_bot_benchmarks_both_shas_on_real_agents_and_reports_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = configure_qtbench(&dir.path().join("probe")) {
        return peers::skip(&peers::QT6, &why);
    }
    if peers::valgrind().is_none() {
        return;
    }
    let repo = dir.path().join("qtbench.git");
    let (a, b, c) = bench_repo(&repo);
    let fake = FakeGitLab::start(TOKEN).await;
    let config = write_config(dir.path(), &fake.url, &repo);
    let server = ServerProcess::start(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--agent-secret", SECRET]),
    );
    let url = server.url().to_owned();
    let agents: Vec<KillOnDrop> = HOSTS
        .iter()
        .map(|host| {
            let log = std::fs::File::create(dir.path().join(format!("{host}.log"))).unwrap();
            KillOnDrop::spawn(
                bin()
                    .args(["agent", "--server", &url, "--hostname", host])
                    .args(["--secret", SECRET, "--work-dir"])
                    .arg(dir.path().join("agents").join(host))
                    .stdout(Stdio::null())
                    .stderr(log),
            )
        })
        .collect();
    let api = ApiClient::new(&url);
    wait_agents(&api, HOSTS.len()).await;

    // !1: a README edit. Nothing benchmarked changes.
    let mut mr1 = FakeMr::new(1, "2026-11-30T01:00:00.000Z", &b, &a, &["benchmark"]);
    mr1.source_branch = "readme".into();
    fake.put_mr(mr1);
    let started = Instant::now();
    let note = wait_reported(&fake, 1, Duration::from_secs(900)).await;
    eprintln!("!1 reported after {:.1} s", started.elapsed().as_secs_f64());
    let body = &note.body;
    // Unchanged: never slower or faster (a noisy row may stay unknown).
    assert!(
        body.contains("### Benchmarks: no significant change"),
        "{body}"
    );
    assert!(body.contains(&format!("- head: `{b}`")), "{body}");
    assert!(
        body.contains(&format!("- baseline: `{a}` (the merge base")),
        "{body}"
    );
    for host in HOSTS {
        assert!(
            body.contains(&format!("` | {host} |")),
            "a row per benchmark on {host}: {body}"
        );
    }
    assert!(note.edits >= 1, "the start note was updated in place");
    let jobs = api.jobs(100, None).await.unwrap();
    assert_eq!(jobs.len(), 2, "one job per side: {jobs:#?}");
    // The steps saw the seed's variables, the note id among them.
    let head_job = jobs
        .iter()
        .find(|j| j.name == format!("qtbench {b}"))
        .expect("the head's job");
    let job = api.job(head_job.id).await.unwrap();
    assert_eq!(job.tasks.len(), HOSTS.len(), "one task per host: {job:#?}");
    let log = api.task_log(job.tasks[0].id, 0).await.unwrap().data;
    let expected = format!("bot=gitlab mr=1 side=head note={}", note.id);
    assert!(log.contains(&expected), "{expected} in {log}");

    // !2: 30 % more work in every benchmark, on the same merge base.
    let mut mr2 = FakeMr::new(2, "2026-11-30T02:00:00.000Z", &c, &a, &["benchmark"]);
    mr2.source_branch = "slower".into();
    fake.put_mr(mr2);
    let note = wait_reported(&fake, 2, Duration::from_secs(900)).await;
    let body = &note.body;
    assert!(body.contains("### Benchmarks: "), "{body}");
    let headline = body
        .lines()
        .find(|l| l.starts_with("### Benchmarks: "))
        .unwrap();
    assert!(
        headline.contains("slower") && !headline.contains("faster"),
        "{body}"
    );
    assert!(
        body.contains("(stored results of this sha, reused)"),
        "the baseline's results are reused: {body}"
    );
    let jobs = api.jobs(100, None).await.unwrap();
    assert_eq!(
        jobs.len(),
        3,
        "!2 ran only its head; its baseline is !1's: {jobs:#?}"
    );
    drop(agents);
    drop(server);
}
