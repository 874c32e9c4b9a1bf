//! Runs one work item in its own directory and emits what happens as
//! [`RunnerEvent`]s; it knows nothing of the connection.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testfleet_core::Stage;
use testfleet_core::state::StepStage;
use testfleet_formats::Format;
use testfleet_wire::artifact::ArtifactKind;
use testfleet_wire::protocol::{AttemptReport, MachineInfo, WorkItem};
use testfleet_wire::results::Results;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::artifacts::{
    ArtifactSink, InputSource, materialize_inputs, select_artifacts, upload_artifacts,
};
use crate::outcome::{ResultCounts, RunEnd, Setup, Verdict, classify, parses_results, worst};
use crate::prep::{Prepared, StepWrap};
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
    /// How the host is prepared for `[bench]` tasks (`None`: it is not;
    /// `testfleet run` runs a task's steps as they are).
    pub prep: Option<crate::prep::PrepSettings>,
    /// The machine fingerprint the agent reported; a prepared attempt
    /// reports it with its preparation steps.
    pub machine: Option<MachineInfo>,
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
            prep: None,
            machine: None,
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
    let prepared = prepare_host(&item, &config, &events, &mut log, cancel.clone()).await;
    let (verdict, results) = match &prepared {
        Ok(prepared) => {
            let wrap = &prepared.wrap;
            run_in(
                &item,
                &config,
                &run_dir,
                &events,
                &mut log,
                cancel,
                StepIo { tee: &tee, wrap },
            )
            .await
        }
        Err(verdict) => (verdict.clone(), Vec::new()),
    };
    // Undone before anything else: the host is not left prepared while
    // artifacts upload, nor when this process dies during the upload.
    if let Ok(p) = &prepared
        && p.changed_host
    {
        restore_host(&config, &mut log).await;
    }
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
        machine: crate::prep::attempt_machine(
            config.machine.as_ref(),
            prepared.map(|p| p.steps).unwrap_or_default(),
        ),
    };
    let _ = events.send(RunnerEvent::Finished(report.clone())).await;
    report
}

/// Prepares the host for `item` when this runner prepares hosts, logging
/// every step; a host that stays too busy (or a cancel while waiting for
/// it) ends the attempt before it starts.
async fn prepare_host(
    item: &WorkItem,
    config: &RunnerConfig,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
    cancel: watch::Receiver<bool>,
) -> Result<Prepared, Verdict> {
    let Some(settings) = &config.prep else {
        if item.bench.is_some() {
            log.line("the task's [bench] is applied by agents only; the steps run unprepared")
                .await;
        }
        return Ok(Prepared::default());
    };
    if item.bench.is_none() && settings.defaults.is_empty() {
        return Ok(Prepared::default());
    }
    let _ = events
        .send(RunnerEvent::Stage {
            stage: Stage::Git,
            detail: "preparing the host for a benchmark".into(),
        })
        .await;
    match crate::prep::prepare(settings, item.bench.as_ref(), cancel).await {
        Ok(prepared) => {
            for step in &prepared.steps {
                log.line(&crate::prep::describe(step)).await;
            }
            Ok(prepared)
        }
        Err(refusal) => {
            let verdict = refusal.verdict();
            if let Some(reason) = &verdict.reason {
                log.line(reason).await;
            }
            Err(verdict)
        }
    }
}

/// Undoes the host's preparation, logging every change put back.
async fn restore_host(config: &RunnerConfig, log: &mut LogWriter) {
    let Some(settings) = &config.prep else {
        return;
    };
    match crate::prep::restore(settings).await {
        Ok(steps) => {
            for step in &steps {
                log.line(&crate::prep::describe(step)).await;
            }
        }
        Err(e) => log.line(&format!("failed to restore the host: {e}")).await,
    }
}

/// Runs the steps of `item` in `run_dir` and decides how the run ended.
async fn run_in(
    item: &WorkItem,
    config: &RunnerConfig,
    run_dir: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
    cancel: watch::Receiver<bool>,
    io: StepIo<'_>,
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
    let steps = StepsRun {
        item,
        config,
        src: &src,
        events,
        cancel,
        tee: io.tee,
        wrap: io.wrap,
    };
    // Without `repeat`, one run of every step; with it, the steps before the
    // first test step once, then the rest `repeat` times.
    let first_test = item.steps.iter().position(|s| s.stage == StepStage::Test);
    let (first, count) = match first_test {
        Some(first) if item.repeat > 1 => (first, item.repeat),
        _ => (0, 1),
    };
    if let Some(stopped) = steps.run(0..first, None, log).await {
        return end_of(item, Some(stopped), None, &src, events, log).await;
    }
    let mut verdicts = Vec::new();
    let mut results = Vec::new();
    for index in 0..count {
        let rep = (count > 1).then_some(Rep { index, count });
        if let Some(rep) = rep {
            log.line(&rep.to_string()).await;
        }
        let stopped = steps.run(first..item.steps.len(), rep, log).await;
        // A repetition whose steps were stopped (a limit, a cancel) ends the attempt.
        let go_on = stopped
            .as_ref()
            .is_none_or(|(_, end, _)| matches!(end, StepEnd::Exited(_) | StepEnd::Signalled(_)));
        let (mut verdict, mut parsed) = end_of(item, stopped, rep, &src, events, log).await;
        if let Some(rep) = rep {
            verdict.reason = verdict.reason.map(|r| format!("{rep}: {r}"));
        }
        for r in &mut parsed {
            r.repetition = index;
        }
        results.extend(parsed);
        verdicts.push(verdict);
        if !go_on {
            break;
        }
        if index + 1 < count {
            let aside = run_dir.join("repetitions").join(index.to_string());
            set_aside(item, &src, &aside, log).await;
        }
    }
    let verdict =
        worst(verdicts).unwrap_or_else(|| classify(RunEnd::StepsPassed, ResultCounts::default()));
    (verdict, results)
}

/// One run of a `repeat = N` task's test steps: `index` counts from 0.
#[derive(Debug, Clone, Copy)]
struct Rep {
    index: u32,
    count: u32,
}

impl std::fmt::Display for Rep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "repetition {}/{}", self.index + 1, self.count)
    }
}

/// How one run of steps ended (`stopped`: the step that stopped it, as
/// [`StepsRun::run`] returns it), decided, and its results, parsed when the
/// steps may have finished writing them.
async fn end_of(
    item: &WorkItem,
    stopped: Option<(usize, StepEnd, Option<f64>)>,
    rep: Option<Rep>,
    src: &Path,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
) -> (Verdict, Vec<Results>) {
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
        let results = parse_results(item, src, rep, events, log).await;
        return (classify(end, ResultCounts::of(&results)), results);
    }
    // A failed step's verdict does not depend on the results: say it first.
    let verdict = classify(end, ResultCounts::default());
    if let Some(line) = &verdict.log {
        match rep {
            Some(rep) => log.line(&format!("{rep}: {line}")).await,
            None => log.line(line).await,
        }
    }
    let results = if parse {
        parse_results(item, src, rep, events, log).await
    } else {
        Vec::new()
    };
    (verdict, results)
}

/// Moves the result files a repetition wrote out of the checkout, to `dest`
/// (beside it, under the same relative paths), so that the next repetition
/// never parses them again.
async fn set_aside(item: &WorkItem, src: &Path, dest: &Path, log: &mut LogWriter) {
    for spec in &item.results {
        for path in result_files(&spec.path, src).unwrap_or_default() {
            let Ok(rel) = path.strip_prefix(src) else {
                continue;
            };
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            if let Err(e) = tokio::fs::rename(&path, &to).await {
                // Parsed once is enough: a file that cannot be kept goes.
                if let Err(e2) = tokio::fs::remove_file(&path).await {
                    log.line(&format!(
                        "failed to set {} aside ({e}) or remove it ({e2}); the next repetition may read it again",
                        rel.display()
                    ))
                    .await;
                }
            }
        }
    }
}

/// The files a result glob (relative to the checkout) matches, or why none can.
fn result_files(glob: &str, src: &Path) -> Result<Vec<PathBuf>, ResultGlobError> {
    if glob.starts_with('/') || glob.split('/').any(|p| p == "..") {
        return Err(ResultGlobError::LeavesCheckout);
    }
    let pattern = src.join(glob).display().to_string();
    Ok(glob::glob(&pattern)?.flatten().collect())
}

/// Why a result glob matches nothing by construction.
#[derive(Debug, thiserror::Error)]
enum ResultGlobError {
    #[error("the path must stay inside the checkout")]
    LeavesCheckout,
    #[error("bad pattern: {0}")]
    Pattern(#[from] glob::PatternError),
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

/// Where a step's output is kept (stdout and stderr apart) and how its
/// process starts.
#[derive(Clone, Copy)]
struct StepIo<'a> {
    tee: &'a (PathBuf, PathBuf),
    wrap: &'a StepWrap,
}

/// What running steps needs, for the steps run once and each repetition.
struct StepsRun<'a> {
    item: &'a WorkItem,
    config: &'a RunnerConfig,
    src: &'a Path,
    events: &'a mpsc::Sender<RunnerEvent>,
    cancel: watch::Receiver<bool>,
    tee: &'a (PathBuf, PathBuf),
    /// How each step's process starts (pinned, niced) on a prepared host.
    wrap: &'a StepWrap,
}

impl StepsRun<'_> {
    /// Runs the steps in `range` in order (`rep`: which repetition, named in
    /// the stage detail); returns the step that stopped the run (its index, how
    /// it ended and the agent's load then), or `None` when every step exited
    /// with status 0.
    async fn run(
        &self,
        range: std::ops::Range<usize>,
        rep: Option<Rep>,
        log: &mut LogWriter,
    ) -> Option<(usize, StepEnd, Option<f64>)> {
        let item = self.item;
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
        if let Some(rep) = rep {
            env.insert("TESTFLEET_REPETITION".into(), rep.index.to_string());
        }
        let steps = item.steps.iter().enumerate();
        for (i, step) in steps.skip(range.start).take(range.len()) {
            let mut step_env = env.clone();
            step_env.extend(step.env.clone());
            let mut detail = format!("step {}/{}: {}", i + 1, item.steps.len(), step.run);
            if let Some(rep) = rep {
                detail = format!("{rep}: {detail}");
            }
            let _ = self
                .events
                .send(RunnerEvent::Stage {
                    stage: step.stage.into(),
                    detail,
                })
                .await;
            log.line(&format!("$ {}", step.run)).await;
            let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
            let limits = StepLimits {
                timeout: step.timeout.0,
                silence: item.silence_timeout.map(|d| d.0),
                kill_grace: self.config.kill_grace,
            };
            let command = self.wrap.wrap(&step.run);
            let run = run_step_tee(
                &command,
                self.src,
                &step_env,
                limits,
                self.cancel.clone(),
                out_tx,
                Some(self.tee),
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
}

/// Parses the work item's result files (globs relative to the checkout).
/// A repetition but the last parses under the `test` stage, so the stage
/// moves on to `results` once.
async fn parse_results(
    item: &WorkItem,
    src: &Path,
    rep: Option<Rep>,
    events: &mpsc::Sender<RunnerEvent>,
    log: &mut LogWriter,
) -> Vec<Results> {
    if item.results.is_empty() {
        return Vec::new();
    }
    let detail = format!("parsing {} result pattern(s)", item.results.len());
    let (stage, detail) = match rep {
        None => (Stage::Results, detail),
        Some(rep) if rep.index + 1 == rep.count => (Stage::Results, format!("{rep}: {detail}")),
        Some(rep) => (Stage::Test, format!("{rep}: {detail}")),
    };
    let _ = events.send(RunnerEvent::Stage { stage, detail }).await;
    let mut out = Vec::new();
    for spec in &item.results {
        let format = match spec.format.as_deref().map(str::parse::<Format>).transpose() {
            Ok(f) => f,
            Err(e) => {
                log.line(&format!("results `{}`: {e}", spec.path)).await;
                continue;
            }
        };
        let paths = match result_files(&spec.path, src) {
            Ok(paths) => paths,
            Err(e) => {
                log.line(&format!("results `{}`: {e}", spec.path)).await;
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
