//! `testfleet artifacts list|download`, and the input-tree upload done by
//! `testfleet submit` before it sends a job with `inputs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use testfleet_client::ApiClient;
use testfleet_core::JobSpec;

use crate::blob_settings::user_cache_dir;
use crate::cli::ArtifactsCommand;
use crate::exit;

/// Files larger than this get a progress bar.
const PROGRESS_FROM: u64 = 8 << 20;

pub async fn run(api: &ApiClient, action: ArtifactsCommand) -> Result<u8> {
    match action {
        ArtifactsCommand::List { job, json } => {
            let list = api.job_artifacts(job).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                outln!("job {job} has no artifacts")?;
            } else {
                outln!(
                    "{:>6}  {:<24} {:>7}  {:<11} {:<10} {:>12}  PATH",
                    "ID",
                    "TASK",
                    "ATTEMPT",
                    "OUTCOME",
                    "KIND",
                    "BYTES"
                )?;
                for a in list {
                    outln!(
                        "{:>6}  {:<24} {:>7}  {:<11} {:<10} {:>12}  {}",
                        a.id,
                        a.task_name,
                        a.attempt,
                        a.outcome.map_or("-".to_owned(), |o| o.to_string()),
                        a.kind,
                        a.size,
                        a.path
                    )?;
                }
            }
            Ok(exit::OK)
        }
        ArtifactsCommand::Download {
            job,
            failed,
            task,
            attempt,
            output,
        } => {
            let list = api.job_artifacts(job).await?;
            let chosen: Vec<_> = list
                .into_iter()
                .filter(|a| !failed || !a.outcome.is_some_and(|o| o.is_success()))
                .filter(|a| {
                    task.as_deref()
                        .is_none_or(|t| a.task_name == t || a.task_id.to_string() == t)
                })
                .filter(|a| attempt.is_none_or(|n| a.attempt == n))
                .collect();
            if chosen.is_empty() {
                bail!("no artifact of job {job} matches (see `testfleet artifacts list {job}`)");
            }
            let out = output.unwrap_or_else(|| PathBuf::from(format!("artifacts-{job}")));
            let started = Instant::now();
            let mut total = 0u64;
            for a in &chosen {
                // The server's paths are checked like any input: relative, no `..`.
                testfleet_cas::manifest::check_relative(&a.path)
                    .with_context(|| format!("artifact {} refused", a.id))?;
                let task_dir: String = a
                    .task_name
                    .chars()
                    .map(|c| if c == '/' || c == '\0' { '_' } else { c })
                    .collect();
                let task_dir = if task_dir == "." || task_dir == ".." {
                    format!("task-{}", a.task_id)
                } else {
                    task_dir
                };
                let dest = out
                    .join(task_dir)
                    .join(format!("attempt-{}", a.attempt))
                    .join(&a.path);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("failed to create {}", parent.display()))?;
                }
                let bar = (a.size >= PROGRESS_FROM).then(|| {
                    let bar = ProgressBar::new(a.size);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_message(a.path.clone());
                    bar
                });
                let mut progress = |done: u64, _: u64| {
                    if let Some(b) = &bar {
                        b.set_position(done);
                    }
                };
                let n = api
                    .download_artifact(a, &dest, &mut progress)
                    .await
                    .with_context(|| format!("failed to download `{}`", a.path))?;
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                total += n;
                outln!("{}", dest.display())?;
            }
            eprintln!(
                "downloaded {} artifact(s), {total} bytes, in {:.2}s",
                chosen.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(exit::OK)
        }
    }
}

/// Uploads the input trees of a job file (its `inputs`, each task's, or
/// `--inputs DIR`) and returns the job as JSON with each replaced by the
/// digest of its manifest; the file unchanged when it has no inputs.
pub async fn prepare_inputs(
    api: &ApiClient,
    job_file: &Path,
    text: String,
    inputs_flag: Option<&Path>,
) -> Result<String> {
    let parsed = if text.trim_start().starts_with('{') {
        JobSpec::from_json(&text)
    } else {
        JobSpec::from_toml(&text)
    };
    let mut spec = match parsed {
        Ok(s) => s,
        // The coordinator names the line and field; let it.
        Err(_) => return Ok(text),
    };
    let base = job_file.parent().unwrap_or(Path::new("."));
    if let Some(dir) = inputs_flag {
        spec.inputs = Some(dir.display().to_string());
    }
    let has_task_inputs = spec.tasks.iter().any(|t| t.inputs.is_some());
    if spec.inputs.is_none() && !has_task_inputs {
        return Ok(text);
    }
    let mut uploaded: std::collections::HashMap<String, String> = Default::default();
    let flag_dir = inputs_flag.map(Path::to_path_buf);
    let mut resolve = async |value: &str, from_flag: bool| -> Result<String> {
        if let Some(d) = uploaded.get(value) {
            return Ok(d.clone());
        }
        // Already uploaded (a job file written by a tool): sent as it is.
        if !from_flag
            && value.starts_with("sha256:")
            && testfleet_cas::Digest::parse_prefixed(value).is_ok()
        {
            return Ok(value.to_owned());
        }
        let dir = if from_flag {
            flag_dir.clone().unwrap_or_default()
        } else {
            base.join(value)
        };
        let root = dir
            .canonicalize()
            .with_context(|| format!("inputs `{value}`: cannot read {}", dir.display()))?;
        let cache = user_cache_dir().join("hash-cache").join(format!(
            "{}.json",
            &testfleet_cas::Digest::of(root.as_os_str().as_encoded_bytes()).to_hex()[..32]
        ));
        let started = Instant::now();
        let r = api.upload_tree(&root, Some(&cache)).await?;
        let digest = r.manifest.map(|d| d.to_hex()).unwrap_or_default();
        eprintln!(
            "inputs {}: {} files, {} bytes ({} unchanged); uploaded {} blob(s), {} bytes in {:.2}s; manifest sha256:{digest}",
            root.display(),
            r.files,
            r.bytes,
            r.cached,
            r.uploaded_blobs,
            r.uploaded_bytes,
            started.elapsed().as_secs_f64()
        );
        let value_out = format!("sha256:{digest}");
        uploaded.insert(value.to_owned(), value_out.clone());
        Ok(value_out)
    };
    if let Some(v) = spec.inputs.clone() {
        spec.inputs = Some(resolve(&v, inputs_flag.is_some()).await?);
    }
    for i in 0..spec.tasks.len() {
        if let Some(v) = spec.tasks[i].inputs.clone() {
            spec.tasks[i].inputs = Some(resolve(&v, false).await?);
        }
    }
    Ok(serde_json::to_string(&spec)?)
}
