//! Runs one work item in its own directory and emits what happens as
//! [`RunnerEvent`]s; it knows nothing of the connection.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testfleet_core::Stage;
use testfleet_formats::Format;
use testfleet_wire::artifact::ArtifactKind;
use testfleet_wire::protocol::{AttemptReport, WorkItem};
use testfleet_wire::results::Results;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::artifacts::{
    ArtifactSink, InputSource, materialize_inputs, select_artifacts, upload_artifacts,
};
use crate::outcome::{ResultCounts, RunEnd, Setup, Verdict, classify, parses_results};
use crate::process::{StepEnd, StepLimits, load_average, run_step_tee};

/// What a run reports while it goes.
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    Stage {
        stage: Stage,
        detail: String,
    },
    /// Output, in order; `offset` is the byte offset in the run's log.
    Output {
        offset: u64,
        data: String,
    },
    Finished(AttemptReport),
}

/// Where runs happen and how.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub work_dir: PathBuf,
    pub kill_grace: Duration,
    /// Keep the run directory after the run (`testfleet run --keep-temp`).
    pub keep_run_dir: bool,
    /// Where input trees come from (`None`: a work item with inputs fails).
    pub inputs: Option<InputSource>,
    /// Where artifacts go (`None`: none are kept).
    pub artifacts: Option<std::sync::Arc<dyn ArtifactSink>>,
}

impl RunnerConfig {
    /// Runs in `work_dir`, with no inputs source and no artifact sink.
    pub fn new(work_dir: PathBuf, kill_grace: Duration) -> RunnerConfig {
        RunnerConfig {
            work_dir,
            kill_grace,
            keep_run_dir: false,
            inputs: None,
            artifacts: None,
        }
    }

    /// The directory a run of `item` uses (kept after a failure).
    pub fn run_dir(&self, item: &WorkItem) -> PathBuf {
        let run_name = match item.attempt_id {
            Some(id) => format!("attempt-{id}"),
            None => format!("integration-{}", sanitize(&item.integration_id)),
        };
        self.work_dir.join("runs").join(run_name)
    }
}

/// Runs `item` and returns its report (also sent as the last event).
pub async fn run_work(
    item: WorkItem,
    config: RunnerConfig,
    events: mpsc::Sender<RunnerEvent>,
    cancel: watch::Receiver<bool>,
) -> AttemptReport {
    let started = Instant::now();
    let attempt_id = item.attempt_id.unwrap_or(0);
    let run_dir = config.run_dir(&item);
    let mut log = LogWriter::new(events.clone(), &run_dir).await;
    // stdout and stderr, whole and apart, kept when the attempt fails.
    let tee = (
        run_dir.with_extension("stdout"),
        run_dir.with_extension("stderr"),
    );
    let _ = tokio::fs::write(&tee.0, b"").await;
    let _ = tokio::fs::write(&tee.1, b"").await;
    let (verdict, results) =
        run_in(&item, &config, &run_dir, &events, &mut log, cancel, &tee).await;
    let Verdict {
        outcome,
        reason,
        reason_data,
        ..
    } = verdict;
    if let Some(sink) = &config.artifacts {
        let failed = !outcome.is_success();
        let src = run_dir.join("src");
        let logs = [
            (ArtifactKind::Stdout, tee.0.clone()),
            (ArtifactKind::Stderr, tee.1.clone()),
        ];
        let (kept, notes) = select_artifacts(&item, &src, failed, &logs);
        for note in notes {
            log.line(&note).await;
        }
        if !kept.is_empty() {
            let _ = events
                .send(RunnerEvent::Stage {
                    stage: Stage::Results,
                    detail: format!("keeping {} artifact(s)", kept.len()),
                })
                .await;
            let max = item.artifacts.max_size.map(|m| m.0);
            for line in upload_artifacts(sink.as_ref(), attempt_id, &kept, max).await {
                log.line(&line).await;
            }
        }
    }
    log.flush().await;
    if outcome.is_success() {
        let _ = tokio::fs::remove_file(&tee.0).await;
        let _ = tokio::fs::remove_file(&tee.1).await;
    }
    if !config.keep_run_dir && outcome.is_success() {
        let _ = tokio::fs::remove_dir_all(&run_dir).await;
    }
    let report = AttemptReport {
        attempt_id,
        outcome,
        reason,
        reason_data,
        results,
        duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
    };
    let _ = events.send(RunnerEvent::Finished(report.clone())).await;
    report
}

/// Runs the steps of `item` in `run_dir` and decides how the run ended.
async fn run_in(
    item: &WorkItem,
    config: &RunnerConfig,
    run_dir: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
    cancel: watch::Receiver<bool>,
    tee: &(PathBuf, PathBuf),
) -> (Verdict, Vec<Results>) {
    if item.steps.is_empty() {
        return (
            classify(RunEnd::NoSteps, ResultCounts::default()),
            Vec::new(),
        );
    }
    let src = run_dir.join("src");
    if let Err(end) = prepare(item, config, run_dir, &src, events, log).await {
        let verdict = classify(end, ResultCounts::default());
        if let Some(line) = &verdict.log {
            log.line(line).await;
        }
        return (verdict, Vec::new());
    }
    let stopped = run_steps(item, config, &src, events, log, cancel, tee).await;
    let end = match &stopped {
        Some((index, end, agent_load)) => RunEnd::Step {
            index: *index,
            step: &item.steps[*index],
            end,
            silence_timeout_s: item.silence_timeout.map_or(0, |d| d.0.as_secs()),
            agent_load: *agent_load,
        },
        None => RunEnd::StepsPassed,
    };
    let parse = parses_results(&end);
    if matches!(end, RunEnd::StepsPassed) {
        let results = parse_results(item, &src, events, log).await;
        return (classify(end, ResultCounts::of(&results)), results);
    }
    // A failed step's verdict does not depend on the results: say it first.
    let verdict = classify(end, ResultCounts::default());
    if let Some(line) = &verdict.log {
        log.line(line).await;
    }
    let results = if parse {
        parse_results(item, &src, events, log).await
    } else {
        Vec::new()
    };
    (verdict, results)
}

/// A fresh run directory with the checkout and the inputs in `src`.
async fn prepare(
    item: &WorkItem,
    config: &RunnerConfig,
    run_dir: &Path,
    src: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
) -> Result<(), RunEnd<'static>> {
    let failed = |stage: Setup, message: String| RunEnd::Setup { stage, message };
    let stage = |stage: Stage, detail: String| RunnerEvent::Stage { stage, detail };
    let _ = tokio::fs::remove_dir_all(run_dir).await;
    tokio::fs::create_dir_all(run_dir).await.map_err(|e| {
        failed(
            Setup::RunDir,
            format!(
                "failed to create the run directory {}: {e}",
                run_dir.display()
            ),
        )
    })?;
    match &item.source {
        Some(source) => {
            let _ = events
                .send(stage(
                    Stage::Git,
                    format!("checking out {} at {}", source.repo, source.rev),
                ))
                .await;
            let commit = crate::git::checkout(
                &config.work_dir.join("git-mirrors"),
                &source.repo,
                &source.rev,
                src,
            )
            .await
            .map_err(|e| failed(Setup::Checkout, format!("checkout failed: {e}")))?;
            log.line(&format!("checked out {} at {commit}", source.repo))
                .await;
        }
        None => tokio::fs::create_dir_all(src).await.map_err(|e| {
            failed(
                Setup::RunDir,
                format!("failed to create {}: {e}", src.display()),
            )
        })?,
    }
    if let Some(digest) = &item.inputs {
        let _ = events
            .send(stage(Stage::Git, format!("materializing inputs {digest}")))
            .await;
        let inputs = config.inputs.as_ref().ok_or_else(|| {
            failed(
                Setup::Inputs,
                "the work item has inputs but this runner has no blob source".to_owned(),
            )
        })?;
        let started = Instant::now();
        let st = materialize_inputs(digest, inputs, src).await.map_err(|e| {
            failed(
                Setup::Inputs,
                format!("failed to materialize inputs {digest}: {e}"),
            )
        })?;
        log.line(&format!(
            "inputs {digest}: {} files, {} bytes ({} fetched, {} bytes; {} corrupted in cache and fetched again) in {} ms",
            st.files,
            st.bytes,
            st.fetched,
            st.fetched_bytes,
            st.refetched,
            started.elapsed().as_millis()
        ))
        .await;
    }
    Ok(())
}

/// Runs the steps in order; returns the step that stopped the run (its index, how it
/// ended and the agent's load then), or `None` when every step exited with status 0.
async fn run_steps(
    item: &WorkItem,
    config: &RunnerConfig,
    src: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
    cancel: watch::Receiver<bool>,
    tee: &(PathBuf, PathBuf),
) -> Option<(usize, StepEnd, Option<f64>)> {
    let mut env = item.env.clone();
    env.insert(
        "TESTFLEET_INTEGRATION_ID".into(),
        item.integration_id.clone(),
    );
    env.insert("TESTFLEET_SHA".into(), item.sha.clone());
    env.insert("TESTFLEET_BRANCH".into(), item.branch.clone());
    if let Some(id) = item.attempt_id {
        env.insert("TESTFLEET_ATTEMPT_ID".into(), id.to_string());
    }
    for (i, step) in item.steps.iter().enumerate() {
        let mut step_env = env.clone();
        step_env.extend(step.env.clone());
        let _ = events
            .send(RunnerEvent::Stage {
                stage: step.stage.into(),
                detail: format!("step {}/{}: {}", i + 1, item.steps.len(), step.run),
            })
            .await;
        log.line(&format!("$ {}", step.run)).await;
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let limits = StepLimits {
            timeout: step.timeout.0,
            silence: item.silence_timeout.map(|d| d.0),
            kill_grace: config.kill_grace,
        };
        let run = run_step_tee(
            &step.run,
            src,
            &step_env,
            limits,
            cancel.clone(),
            out_tx,
            Some(tee),
        );
        tokio::pin!(run);
        let end = loop {
            tokio::select! {
                Some(bytes) = out_rx.recv() => log.bytes(&bytes).await,
                end = &mut run => break end,
            }
        };
        while let Ok(bytes) = out_rx.try_recv() {
            log.bytes(&bytes).await;
        }
        if end != StepEnd::Exited(0) {
            return Some((i, end, load_average()));
        }
    }
    None
}

/// Parses the work item's result files (globs relative to the checkout).
async fn parse_results(
    item: &WorkItem,
    src: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
) -> Vec<Results> {
    if item.results.is_empty() {
        return Vec::new();
    }
    let _ = events
        .send(RunnerEvent::Stage {
            stage: Stage::Results,
            detail: format!("parsing {} result pattern(s)", item.results.len()),
        })
        .await;
    let mut out = Vec::new();
    for spec in &item.results {
        let format = match spec.format.as_deref().map(str::parse::<Format>).transpose() {
            Ok(f) => f,
            Err(e) => {
                log.line(&format!("results `{}`: {e}", spec.path)).await;
                continue;
            }
        };
        if spec.path.starts_with('/') || spec.path.split('/').any(|p| p == "..") {
            log.line(&format!(
                "results `{}`: the path must stay inside the checkout",
                spec.path
            ))
            .await;
            continue;
        }
        let pattern = src.join(&spec.path).display().to_string();
        let paths = match glob::glob(&pattern) {
            Ok(p) => p.flatten().collect::<Vec<_>>(),
            Err(e) => {
                log.line(&format!("results `{}`: bad pattern: {e}", spec.path))
                    .await;
                continue;
            }
        };
        if paths.is_empty() {
            log.line(&format!("results `{}`: no file matched", spec.path))
                .await;
        }
        for path in paths {
            let shown = path
                .strip_prefix(src)
                .unwrap_or(&path)
                .display()
                .to_string();
            let parsed =
                tokio::task::spawn_blocking(move || testfleet_formats::parse_file(&path, format))
                    .await;
            match parsed {
                Ok(Ok(r)) => {
                    log.line(&format!(
                        "parsed {shown} as {}{}",
                        r.format,
                        if r.complete { "" } else { " (incomplete)" }
                    ))
                    .await;
                    out.push(r);
                }
                Ok(Err(e)) => log.line(&format!("failed to parse {shown}: {e}")).await,
                Err(e) => log.line(&format!("failed to parse {shown}: {e}")).await,
            }
        }
    }
    out
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Writes the run's log to `output.log` in its directory and emits it as
/// events, keeping UTF-8 sequences whole across reads.
struct LogWriter {
    events: mpsc::Sender<RunnerEvent>,
    file: Option<tokio::fs::File>,
    offset: u64,
    pending: Vec<u8>,
}

impl LogWriter {
    async fn new(events: mpsc::Sender<RunnerEvent>, run_dir: &Path) -> LogWriter {
        let _ = tokio::fs::create_dir_all(run_dir).await;
        let file = tokio::fs::File::create(run_dir.with_extension("log"))
            .await
            .ok();
        LogWriter {
            events,
            file,
            offset: 0,
            pending: Vec::new(),
        }
    }

    async fn line(&mut self, text: &str) {
        self.bytes(format!("[testfleet] {text}\n").as_bytes()).await;
    }

    async fn bytes(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete sequence at the end waits for the next read.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        if valid == 0 {
            return;
        }
        let chunk: Vec<u8> = self.pending.drain(..valid).collect();
        self.emit(&String::from_utf8_lossy(&chunk)).await;
    }

    async fn emit(&mut self, text: &str) {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(text.as_bytes()).await;
        }
        let offset = self.offset;
        self.offset += text.len() as u64;
        let _ = self
            .events
            .send(RunnerEvent::Output {
                offset,
                data: text.to_owned(),
            })
            .await;
    }

    async fn flush(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&String::from_utf8_lossy(&rest)).await;
        }
        if let Some(f) = &mut self.file {
            let _ = f.flush().await;
        }
    }
}
