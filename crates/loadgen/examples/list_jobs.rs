//! Measures the jobs list and the fleet page on large jobs (docs/performance.md).
//!
//! Fills a store with `--jobs` jobs of `--tasks` tasks each through the
//! store's own `submit_job` (a few tasks of each job run to an outcome, the
//! `--finished` oldest jobs are cancelled, so that they have finished),
//! starts a coordinator on it and times, over
//! `--requests` requests each, `GET /api/v1/jobs?limit=<jobs>`, the
//! dashboard's fleet page `/`, one page of a job's tasks and (as the
//! comparison) one whole job `GET /api/v1/jobs/{id}`. Prints the median and
//! p95 time and the answer's size, on SQLite (a file in a temporary
//! directory) and on a scratch PostgreSQL database.
//!
//! ```text
//! cargo run --release -p testfleet-loadgen --example list_jobs -- \
//!     [--jobs 50] [--tasks 20000] [--requests 50] [--finished 1] \
//!     [--postgres postgres://postgres@127.0.0.1:5432 | --no-postgres]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use testfleet_core::{AttemptOutcome, JobSpec};
use testfleet_server::{Server, ServerConfig, SystemClock};
use testfleet_store::{NewTask, ScratchDatabase, Store};

/// What the harness can fail on, said in words.
#[derive(Debug, thiserror::Error)]
enum HarnessError {
    #[error("{0}")]
    Usage(String),
    #[error("store: {0}")]
    Store(#[from] testfleet_store::StoreError),
    #[error("server: {0}")]
    Server(#[from] testfleet_server::ServerError),
    #[error("job file: {0}")]
    Job(#[from] testfleet_core::JobSpecError),
    #[error("request: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what} answered HTTP {status}")]
    Status { what: String, status: u16 },
}

struct Options {
    jobs: usize,
    tasks: usize,
    requests: usize,
    /// The oldest jobs cancelled after the fill; the others stay running.
    finished: usize,
    postgres: Option<String>,
}

fn options() -> Result<Options, HarnessError> {
    let mut o = Options {
        jobs: 50,
        tasks: 20_000,
        requests: 50,
        finished: 1,
        postgres: Some("postgres://postgres@127.0.0.1:5432".into()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| HarnessError::Usage(format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| {
            v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                HarnessError::Usage(format!("{name} `{v}` is not a positive number"))
            })
        };
        match arg.as_str() {
            "--jobs" => o.jobs = number("--jobs", value("--jobs")?)?,
            "--tasks" => o.tasks = number("--tasks", value("--tasks")?)?,
            "--requests" => o.requests = number("--requests", value("--requests")?)?,
            "--finished" => {
                let v = value("--finished")?;
                o.finished = v.parse::<usize>().map_err(|_| {
                    HarnessError::Usage(format!("--finished `{v}` is not a number"))
                })?;
            }
            "--postgres" => o.postgres = Some(value("--postgres")?),
            "--no-postgres" => o.postgres = None,
            other => {
                return Err(HarnessError::Usage(format!(
                    "unknown argument `{other}`; use --jobs N, --tasks N, --requests N, --finished N, --postgres URL, --no-postgres"
                )));
            }
        }
    }
    Ok(o)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), HarnessError> {
    let o = options()?;
    println!(
        "{} jobs x {} tasks ({} finished), {} requests per figure",
        o.jobs,
        o.tasks,
        o.finished.min(o.jobs),
        o.requests
    );
    let dir = tempfile::Builder::new()
        .prefix("testfleet-list-")
        .tempdir()?;
    let store = Store::open(dir.path()).await?;
    measure("sqlite", store, dir.path(), &o).await?;
    if let Some(server) = &o.postgres {
        let db = ScratchDatabase::create(server, "testfleet_list").await?;
        let outcome = async {
            let store = Store::connect(db.url()).await?;
            measure("postgres", store, dir.path(), &o).await
        }
        .await;
        db.drop().await?;
        outcome?;
    }
    Ok(())
}

/// One job of `n` one-step tasks, as the coordinator would store it.
fn job(i: usize, n: usize) -> Result<(JobSpec, Vec<NewTask>), HarnessError> {
    let spec = JobSpec::from_toml(&format!(
        "name = \"big-{i}\"\n[[task]]\nname = \"t\"\nsteps = [{{ stage = \"test\", run = \"./run\" }}]\n"
    ))?;
    let template = spec
        .tasks
        .first()
        .cloned()
        .ok_or_else(|| HarnessError::Usage("the job file has no task".into()))?;
    let tasks = (0..n)
        .map(|k| {
            let mut t = template.clone();
            t.name = format!("t{k}");
            NewTask {
                name: t.name.clone(),
                priority: spec.task_priority(&t),
                spec: t,
                pinned_agent: None,
            }
        })
        .collect();
    Ok((spec, tasks))
}

async fn fill(store: &Store, o: &Options) -> Result<(), HarnessError> {
    let outcomes = [
        AttemptOutcome::Passed,
        AttemptOutcome::Failed,
        AttemptOutcome::Passed,
        AttemptOutcome::InfraError,
    ];
    let mut now = 1_700_000_000_000_i64;
    let mut ids = Vec::with_capacity(o.jobs);
    for i in 0..o.jobs {
        let (spec, tasks) = job(i, o.tasks)?;
        let (job_id, queued) = store.submit_job(&spec, tasks, now).await?;
        ids.push(job_id);
        // A few tasks of each job run to an outcome, one stays running.
        for (k, task) in queued.iter().take(20).enumerate() {
            now += 1;
            let Some(claimed) = store.claim(task.id, "bench-agent", now).await? else {
                continue;
            };
            if k == 19 {
                break;
            }
            let outcome = outcomes[k % outcomes.len()];
            store
                .finish_attempt(
                    claimed.attempt.attempt_id,
                    Some("bench-agent"),
                    outcome,
                    None,
                    None,
                    None,
                    None,
                    now,
                )
                .await?;
        }
    }
    for &id in ids.iter().take(o.finished) {
        now += 1;
        store.cancel_job(id, now).await?;
    }
    Ok(())
}

async fn measure(
    backend: &str,
    store: Store,
    data_dir: &std::path::Path,
    o: &Options,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    fill(&store, o).await?;
    println!(
        "\n{backend}: filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut config = ServerConfig::new(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| HarnessError::Usage("bad address".into()))?,
        data_dir.join(format!("server-{backend}")),
    );
    config.allow_any_agent = true;
    let server = Server::build_with_store(config, store.clone(), Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let newest = store.jobs(1, None).await?.first().map_or(1, |j| j.id);
    let figures = [
        (
            "GET /api/v1/jobs?limit=N",
            format!("{url}/api/v1/jobs?limit={}", o.jobs),
            o.requests,
        ),
        ("GET / (fleet page)", format!("{url}/"), o.requests),
        (
            "GET /api/v1/jobs/{id}/tasks (1,000)",
            format!("{url}/api/v1/jobs/{newest}/tasks?limit=1000"),
            o.requests,
        ),
        (
            "GET /api/v1/jobs/{id} (whole job)",
            format!("{url}/api/v1/jobs/{newest}"),
            o.requests.min(10),
        ),
    ];
    for (what, target, n) in figures {
        let (times, size) = time(&http, what, &target, n).await?;
        println!(
            "  {what:<38} median {:>8.2} ms  p95 {:>8.2} ms  {:>10} bytes",
            ms(percentile(&times, 50)),
            ms(percentile(&times, 95)),
            size
        );
    }
    let _ = stop.send(());
    let _ = serving.await;
    store.close().await;
    Ok(())
}

/// `n` timed requests after two untimed ones; the times and the last size.
async fn time(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    n: usize,
) -> Result<(Vec<Duration>, usize), HarnessError> {
    let mut times = Vec::with_capacity(n);
    let mut size = 0;
    for i in 0..n + 2 {
        let started = Instant::now();
        let resp = http.get(url).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            return Err(HarnessError::Status {
                what: what.to_owned(),
                status: status.as_u16(),
            });
        }
        size = body.len();
        if i >= 2 {
            times.push(took);
        }
    }
    times.sort_unstable();
    Ok((times, size))
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
