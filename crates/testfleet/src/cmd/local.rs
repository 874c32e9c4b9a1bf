//! `testfleet run JOB.toml` (a job run here, with no coordinator, as an
//! agent would) and `testfleet repro TASK` (a submitted task fetched with
//! its inputs and run here exactly as its agent did).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::future::BoxFuture;
use testfleet_agent::artifacts::{DirSink, InputSource};
use testfleet_agent::runner::{RunnerConfig, RunnerEvent, run_work};
use testfleet_cas::{BlobCache, CasError, Digest, Fetcher, hash_tree};
use testfleet_client::ApiClient;
use testfleet_core::JobSpec;
use testfleet_core::trigger::{Overrides, Template};
use testfleet_wire::protocol::{AttemptReport, WorkItem, WorkOrigin};
use tokio::sync::{mpsc, watch};

use crate::blob_settings::user_cache_dir;
use crate::exit;

/// Blobs of a local tree, read from where they are (for `testfleet run`).
struct TreeFetcher {
    files: HashMap<Digest, PathBuf>,
    manifests: HashMap<Digest, Vec<u8>>,
}

impl Fetcher for TreeFetcher {
    fn fetch<'a>(
        &'a self,
        digest: &'a Digest,
        _size: u64,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), CasError>> {
        Box::pin(async move {
            if let Some(bytes) = self.manifests.get(digest) {
                return std::fs::write(dest, bytes).map_err(|e| CasError::io(dest, e));
            }
            let src = self.files.get(digest).ok_or(CasError::NotFound(*digest))?;
            std::fs::copy(src, dest)
                .map(|_| ())
                .map_err(|e| CasError::io(src, e))
        })
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// The work item an agent would receive for `task` of `job`, with no ids.
fn work_item(job: &JobSpec, task: &testfleet_core::TaskSpec, inputs: Option<String>) -> WorkItem {
    let origin = WorkOrigin {
        job_id: None,
        task_id: None,
        attempt_id: None,
        integration_id: "local".to_owned(),
        timestamp: now_millis(),
    };
    WorkItem::for_task(job, task, &task.name, origin, inputs)
}

/// Runs `item`, printing its output as it comes; returns the report.
async fn run_printing(item: WorkItem, config: RunnerConfig) -> AttemptReport {
    let (tx, mut rx) = mpsc::channel::<RunnerEvent>(1024);
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let run = tokio::spawn(run_work(item, config, tx, cancel_rx));
    let mut stdout = std::io::stdout();
    while let Some(event) = rx.recv().await {
        match event {
            RunnerEvent::Stage { stage, detail } => eprintln!("[{stage}] {detail}"),
            RunnerEvent::Output { data, .. } => {
                use std::io::Write;
                let _ = stdout.write_all(data.as_bytes());
                let _ = stdout.flush();
            }
            RunnerEvent::Finished(_) => {}
        }
    }
    match run.await {
        Ok(report) => report,
        Err(e) => AttemptReport {
            attempt_id: 0,
            outcome: testfleet_core::AttemptOutcome::InfraError,
            reason: Some(format!("the runner stopped: {e}")),
            reason_data: None,
            results: Vec::new(),
            duration_ms: None,
            machine: None,
        },
    }
}

fn status_line(report: &AttemptReport) -> String {
    if report.outcome.is_success() {
        "OK".to_owned()
    } else {
        format!(
            "NOT_OK: {} ({})",
            report.reason.as_deref().unwrap_or("no reason given"),
            report.outcome
        )
    }
}

/// A job file: plain, or a template (TOML with `{{NAME}}` placeholders)
/// filled with `--var NAME=VALUE` through the trigger rules' engine.
fn read_job(job_file: &Path, vars: &[String]) -> Result<JobSpec> {
    let text = std::fs::read_to_string(job_file)
        .with_context(|| format!("failed to read {}", job_file.display()))?;
    let json = text.trim_start().starts_with('{');
    if json || (vars.is_empty() && !text.contains("{{")) {
        if json && !vars.is_empty() {
            bail!(
                "{}: --var fills TOML job files only; this one is JSON",
                job_file.display()
            );
        }
        let spec = if json {
            JobSpec::from_json(&text)
        } else {
            JobSpec::from_toml(&text)
        };
        return spec.map_err(|e| anyhow::anyhow!("{}: {e}", job_file.display()));
    }
    let vars = super::trigger::parse_vars(vars)?;
    let template = Template::parse(&text, &job_file.display().to_string())?;
    let used = template.placeholders();
    for name in vars.names() {
        if !used.contains(name) {
            eprintln!(
                "warning: --var {name}: {} has no `{{{{{name}}}}}`",
                job_file.display()
            );
        }
    }
    Ok(template.render(&vars, &Overrides::default())?.job)
}

/// `testfleet run JOB.toml [--var NAME=VALUE …]`.
pub async fn run_job(
    job_file: &Path,
    only: Option<&str>,
    keep_temp: bool,
    work_dir: Option<PathBuf>,
    vars: &[String],
) -> Result<u8> {
    let spec = read_job(job_file, vars)?;
    let tasks: Vec<_> = spec
        .tasks
        .iter()
        .filter(|t| only.is_none_or(|n| t.name == n))
        .collect();
    if tasks.is_empty() {
        bail!(
            "{}: no task named `{}`",
            job_file.display(),
            only.unwrap_or_default()
        );
    }
    let (work, temp) = match work_dir {
        Some(d) => (d, false),
        None => (
            tempfile::Builder::new()
                .prefix("testfleet-run-")
                .tempdir()
                .context("failed to create a temporary directory")?
                .keep(),
            true,
        ),
    };
    let base = job_file.parent().unwrap_or(Path::new("."));
    let cache = Arc::new(BlobCache::open(&work.join("blob-cache"), 10 << 30)?);
    let mut all_ok = true;
    for task in tasks {
        let mut inputs = None;
        let mut source = None;
        if let Some(dir) = spec.task_inputs(task) {
            let root = base.join(dir);
            let root = root
                .canonicalize()
                .with_context(|| format!("inputs `{dir}`: cannot read {}", root.display()))?;
            let (manifest, files, stats) =
                hash_tree(&root, None).with_context(|| format!("inputs {}", root.display()))?;
            eprintln!(
                "inputs {}: {} files, {} bytes",
                root.display(),
                stats.files,
                stats.bytes
            );
            let md = manifest.digest();
            let fetcher = TreeFetcher {
                files: files.into_iter().map(|f| (f.digest, f.path)).collect(),
                manifests: HashMap::from([(md, manifest.to_bytes())]),
            };
            inputs = Some(md.to_hex());
            source = Some(InputSource {
                cache: cache.clone(),
                fetcher: Arc::new(fetcher),
            });
        }
        let item = work_item(&spec, task, inputs);
        let mut config = RunnerConfig::new(work.join(&task.name), Duration::from_secs(2));
        config.keep_run_dir = keep_temp;
        config.inputs = source;
        let artifacts_dir = work.join(&task.name).join("artifacts");
        config.artifacts = Some(Arc::new(DirSink {
            dir: artifacts_dir.clone(),
        }));
        let run_dir = config.run_dir(&item);
        eprintln!("== task {}", task.name);
        let report = run_printing(item, config).await;
        let ok = report.outcome.is_success();
        all_ok &= ok;
        outln!("{}: {}", task.name, status_line(&report))?;
        if !ok || keep_temp {
            eprintln!("run directory kept: {}", run_dir.display());
        }
        if artifacts_dir.exists() {
            eprintln!("artifacts: {}", artifacts_dir.display());
        }
    }
    if temp && all_ok && !keep_temp {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(if all_ok { exit::OK } else { exit::JOB_FAILED })
}

/// `testfleet repro TASK [--keep-temp]`.
pub async fn repro(api: &ApiClient, task: i64, keep_temp: bool) -> Result<u8> {
    let item = api.task_work(task).await?;
    let work = tempfile::Builder::new()
        .prefix("testfleet-repro-")
        .tempdir()
        .context("failed to create a temporary directory")?
        .keep();
    let mut config = RunnerConfig::new(work.clone(), Duration::from_secs(2));
    config.keep_run_dir = keep_temp;
    if item.inputs.is_some() {
        let cache_dir = user_cache_dir().join("blobs");
        let cache = BlobCache::open(&cache_dir, 10 << 30)
            .with_context(|| format!("blob cache {}", cache_dir.display()))?;
        config.inputs = Some(InputSource {
            cache: Arc::new(cache),
            fetcher: Arc::new(api.clone()),
        });
    }
    let run_dir = config.run_dir(&item);
    eprintln!(
        "reproducing task {task} ({}){}",
        item.task_name.as_deref().unwrap_or("?"),
        item.attempt_id
            .map(|a| format!(" as attempt {a} ran"))
            .unwrap_or_default()
    );
    let report = run_printing(item, config).await;
    outln!("{}", status_line(&report))?;
    if keep_temp {
        outln!("kept {}", run_dir.display())?;
        outln!("checkout: {}", run_dir.join("src").display())?;
        outln!("log: {}", run_dir.with_extension("log").display())?;
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(if report.outcome.is_success() {
        exit::OK
    } else {
        exit::JOB_FAILED
    })
}
