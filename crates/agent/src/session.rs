//! The agent's connection to its coordinator: connect (and reconnect with
//! backoff), fetch work, run it, and report. Messages that cannot be sent
//! while disconnected wait in an outbox and go out after the reconnect, so a
//! coordinator restart loses nothing. An agent that knows several
//! coordinators (sharing one store) fails over to the next one in its list
//! when its coordinator cannot be reached or drops it; the outbox then goes
//! to that one.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use testfleet_core::Stage;
use testfleet_core::time_fmt::format_millis;
use testfleet_sio::{Client, ConnectError, ConnectOptions, Incoming};
use testfleet_wire::protocol::{
    AttemptReport, CancelWork, HandshakeAuth, LogChunk, PROTOCOL_VERSION, StatusUpdate, WorkItem,
    events,
};
use tokio::sync::{mpsc, watch};

use crate::AgentConfig;
use crate::runner::{RunnerConfig, RunnerEvent, run_work};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    #[error("invalid coordinator URL: {0}")]
    BadUrl(String),
}

/// The work in hand.
struct Current {
    item: WorkItem,
    status: Stage,
    detail: String,
    cancel: watch::Sender<bool>,
}

/// A message waiting to be sent.
enum Outgoing {
    Log(LogChunk),
    Report(AttemptReport),
}

struct State {
    config: AgentConfig,
    /// Inputs (blob cache + the coordinator) and artifacts (the coordinator).
    inputs: Option<crate::artifacts::InputSource>,
    sink: Option<std::sync::Arc<dyn crate::artifacts::ArtifactSink>>,
    /// The HTTP side behind `inputs` and `sink`, told which coordinator the
    /// socket is connected to.
    http: Option<std::sync::Arc<testfleet_client::AgentHttp>>,
    current: Option<Current>,
    outbox: VecDeque<Outgoing>,
    last_ts: i64,
    /// The fingerprint reported at connection (a prepared attempt reports
    /// it with its preparation).
    machine: Option<testfleet_wire::protocol::MachineInfo>,
}

impl State {
    /// `updateTimestamp`s strictly increase, so the coordinator never drops
    /// one of ours as out of order.
    fn next_timestamp(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_ts = now.max(self.last_ts + 1);
        format_millis(self.last_ts)
    }

    fn status_payload(&mut self) -> StatusUpdate {
        let ts = self.next_timestamp();
        // testfleet: the machine's load, kept with stopped attempts' reasons.
        let load = crate::process::load_average();
        match &self.current {
            None => StatusUpdate::idle(ts, load),
            Some(c) => StatusUpdate::working(&c.item, c.status.as_str(), &c.detail, ts, load),
        }
    }
}

/// Why the connection to the coordinator is given up (the agent reconnects).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("failed to send `{event}`: {source}")]
    Emit {
        event: &'static str,
        #[source]
        source: testfleet_sio::EmitError,
    },
    #[error("report not acknowledged: {0}")]
    Ack(#[source] testfleet_sio::AckError),
}

/// Sends `event` with `data`, naming the event when it fails.
async fn emit(
    client: &Client,
    event: &'static str,
    data: impl serde::Serialize,
) -> Result<(), LinkError> {
    client
        .emit(event, data)
        .await
        .map_err(|source| LinkError::Emit { event, source })
}

async fn fetch_work(client: &Client) -> Result<(), LinkError> {
    client
        .emit_no_args(events::FETCH_WORK)
        .await
        .map_err(|source| LinkError::Emit {
            event: events::FETCH_WORK,
            source,
        })
}

/// Runs the agent until `shutdown` completes. Returns an error only when the
/// coordinator refuses this agent (a wrong secret does not fix itself).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let (runner_tx, mut runner_rx) = mpsc::channel::<RunnerEvent>(1024);
    let BlobSide { inputs, sink, http } = blob_side(&config);
    let servers: Vec<String> = config.servers().map(str::to_owned).collect();
    let mut rotation = Rotation::new(servers.len(), config.max_backoff);
    let mut state = State {
        config,
        inputs,
        sink,
        http,
        current: None,
        outbox: VecDeque::new(),
        last_ts: 0,
        machine: None,
    };
    let mut ever_connected = false;
    // A host left prepared by an agent that died mid-attempt is put back
    // before this one takes any work.
    crate::prep::recover(&state.config.prep).await;
    let machine = crate::machine::fingerprint().await;
    state.machine = Some(machine.clone());
    let tls = if servers
        .iter()
        .any(|s| s.starts_with("https://") || s.starts_with("wss://"))
    {
        let tls = testfleet_sio::tls::client_config(state.config.ca_cert.as_deref())
            .map_err(|e| AgentError::BadUrl(format!("TLS: {e}")))?;
        Some(tls)
    } else {
        None
    };
    loop {
        let index = rotation.current();
        let server = servers
            .get(index)
            .cloned()
            .unwrap_or_else(|| state.config.server.clone());
        let auth = HandshakeAuth {
            client_type: Some("agent".into()),
            hostname: Some(state.config.hostname.clone()),
            secret: state.config.secret.clone(),
            token: None,
            labels: Some(state.config.labels.clone()),
            protocol: Some(PROTOCOL_VERSION),
            machine: Some(machine.clone()),
        };
        let mut options =
            ConnectOptions::default().with_auth(serde_json::to_value(&auth).unwrap_or(Value::Null));
        if let Some(tls) = &tls {
            options = options.with_tls(tls.clone());
        }
        let connected = tokio::select! {
            r = Client::connect(&server, options) => r,
            () = &mut shutdown => return Ok(()),
        };
        let (client, mut incoming) = match connected {
            Ok(c) => c,
            Err(ConnectError::Rejected { message, .. }) => {
                return Err(AgentError::Refused(message));
            }
            Err(e @ ConnectError::InvalidUrl { .. }) => {
                return Err(AgentError::BadUrl(e.to_string()));
            }
            Err(e) => {
                // A coordinator that is not up yet (the agent started
                // first) is not worth a warning until the waits grow.
                let loud = ever_connected || rotation.backoff() >= Duration::from_secs(1);
                match rotation.failed() {
                    Wait::No => {
                        let next = servers.get(rotation.current()).unwrap_or(&server);
                        if loud || servers.len() > 1 {
                            tracing::warn!("failed to connect to {server}: {e}; trying {next}");
                        }
                    }
                    Wait::For(wait) => {
                        if loud {
                            tracing::warn!(
                                "failed to connect to {server}: {e}; retrying in {wait:?}"
                            );
                        }
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = &mut shutdown => return Ok(()),
                        }
                    }
                }
                continue;
            }
        };
        ever_connected = true;
        rotation.connected();
        // Inputs and artifacts go to the coordinator the reports go to.
        if let Some(http) = &state.http {
            http.use_coordinator(index);
        }
        tracing::info!(server = %server, hostname = %state.config.hostname, "connected");

        match connected_loop(
            &mut state,
            &client,
            &mut incoming,
            &runner_tx,
            &mut runner_rx,
            &mut shutdown,
        )
        .await
        {
            LoopEnd::Shutdown => {
                if let Some(c) = &state.current {
                    let _ = c.cancel.send(true);
                    // The process ends now: the run's own restore may never
                    // come, so the host is put back here (a second restore
                    // finds nothing left to do).
                    if let Err(e) = crate::prep::restore(&state.config.prep).await {
                        tracing::error!("failed to restore the host: {e}");
                    }
                }
                client.disconnect().await;
                return Ok(());
            }
            LoopEnd::Lost(reason) => {
                rotation.lost();
                let next = servers.get(rotation.current()).unwrap_or(&server);
                tracing::warn!("connection to {server} lost ({reason}); connecting to {next}");
            }
        }
    }
}

/// Whether to wait before the next connection attempt.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// A coordinator of this round is still untried: try it at once.
    No,
    /// The whole round failed: wait this long first.
    For(Duration),
}

/// Which coordinator to connect to next, and when. Each round tries every
/// coordinator once, in the configured order from where the last one left
/// off, without waiting; only a round in which all failed is followed by a
/// wait, which doubles up to the longest one. A single coordinator is a
/// round of one: the plain reconnect with backoff.
#[derive(Debug)]
struct Rotation {
    len: usize,
    at: usize,
    /// Failed attempts in this round.
    failed: usize,
    backoff: Duration,
    max_backoff: Duration,
}

impl Rotation {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);

    fn new(len: usize, max_backoff: Duration) -> Rotation {
        Rotation {
            len: len.max(1),
            at: 0,
            failed: 0,
            backoff: Rotation::FIRST_BACKOFF,
            max_backoff,
        }
    }

    /// The index of the coordinator to try now.
    fn current(&self) -> usize {
        self.at
    }

    /// The next wait, after a whole round failed.
    fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Connecting to the current coordinator failed; moves on to the next.
    fn failed(&mut self) -> Wait {
        self.at = (self.at + 1) % self.len;
        self.failed += 1;
        if self.failed < self.len {
            return Wait::No;
        }
        self.failed = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Wait::For(wait)
    }

    /// Connected: the next trouble starts a fresh round with short waits.
    fn connected(&mut self) {
        self.failed = 0;
        self.backoff = Rotation::FIRST_BACKOFF;
    }

    /// The established connection was lost: the next coordinator is tried
    /// first, and the one that dropped us last in this round (with a single
    /// coordinator, that is a plain reconnect).
    fn lost(&mut self) {
        self.at = (self.at + 1) % self.len;
        self.failed = 0;
    }
}

enum LoopEnd {
    Shutdown,
    Lost(String),
}

async fn connected_loop(
    state: &mut State,
    client: &Client,
    incoming: &mut testfleet_sio::EventStream,
    runner_tx: &mpsc::Sender<RunnerEvent>,
    runner_rx: &mut mpsc::Receiver<RunnerEvent>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> LoopEnd {
    // Say where we are, send what waited, and ask for work when idle.
    let status = state.status_payload();
    if let Err(e) = emit(client, events::STATUS_UPDATE, status).await {
        return LoopEnd::Lost(e.to_string());
    }
    if let Err(e) = flush_outbox(state, client).await {
        return LoopEnd::Lost(e.to_string());
    }
    if state.current.is_none()
        && let Err(e) = fetch_work(client).await
    {
        return LoopEnd::Lost(e.to_string());
    }
    let mut poll = tokio::time::interval(state.config.poll_interval);
    poll.tick().await;
    loop {
        tokio::select! {
            () = &mut *shutdown => return LoopEnd::Shutdown,
            event = incoming.recv() => {
                let Some(event) = event else { return LoopEnd::Lost("event stream ended".into()) };
                match event {
                    Incoming::Disconnected { reason } => return LoopEnd::Lost(reason.to_string()),
                    Incoming::Event { name, args, ack } => {
                        if let Err(e) = on_event(state, client, &name, args, runner_tx).await {
                            return LoopEnd::Lost(e.to_string());
                        }
                        if let Some(ack) = ack {
                            let _ = ack.send(Vec::new()).await;
                        }
                    }
                }
            }
            event = runner_rx.recv() => {
                let Some(event) = event else { continue };
                if let Err(e) = on_runner_event(state, client, event, runner_rx).await {
                    return LoopEnd::Lost(e.to_string());
                }
            }
            _ = poll.tick() => {
                if state.current.is_none()
                    && let Err(e) = fetch_work(client).await
                {
                    return LoopEnd::Lost(e.to_string());
                }
            }
        }
    }
}

async fn on_event(
    state: &mut State,
    client: &Client,
    name: &str,
    args: Vec<Value>,
    runner_tx: &mpsc::Sender<RunnerEvent>,
) -> Result<(), LinkError> {
    let first = args.into_iter().next().unwrap_or(Value::Null);
    match name {
        events::SEND_WORK => {
            if first.is_null() || first.as_object().is_some_and(|o| o.is_empty()) {
                tracing::debug!("sendWork without a work item ignored");
                return Ok(());
            }
            if state.current.is_some() {
                tracing::warn!("sendWork while busy ignored");
                return Ok(());
            }
            let item: WorkItem = match serde_json::from_value(first) {
                Ok(item) => item,
                Err(e) => {
                    tracing::error!("malformed work item: {e}");
                    return Ok(());
                }
            };
            tracing::info!(integration = %item.integration_id, task = ?item.task_name, "work received");
            let (cancel_tx, cancel_rx) = watch::channel(false);
            state.current = Some(Current {
                item: item.clone(),
                status: Stage::New,
                detail: "work received".into(),
                cancel: cancel_tx,
            });
            // The run starts before the status is sent: if sending fails (the
            // coordinator went away), the work must still run and report
            // through the outbox after the reconnect. Were the run started
            // only after a successful send, a lost connection here would
            // leave the agent "busy" with work that never runs, and the
            // attempt running for ever (its lease renewed by the agent's
            // coordinator).
            let mut runner_config =
                RunnerConfig::new(state.config.work_dir.clone(), state.config.kill_grace);
            runner_config.inputs = state.inputs.clone();
            runner_config.artifacts = state.sink.clone();
            runner_config.prep = Some(state.config.prep.clone());
            runner_config.machine = state.machine.clone();
            tokio::spawn(run_work(item, runner_config, runner_tx.clone(), cancel_rx));
            let status = state.status_payload();
            emit(client, events::STATUS_UPDATE, status).await?;
        }
        events::REQUEST_STATUS => {
            let status = state.status_payload();
            emit(client, events::STATUS_UPDATE, status).await?;
        }
        events::CANCEL_WORK => match serde_json::from_value::<CancelWork>(first) {
            Ok(cancel) => {
                if let Some(c) = &state.current
                    && c.item.attempt_id == Some(cancel.attempt_id)
                {
                    tracing::info!(attempt = cancel.attempt_id, "cancelling: {}", cancel.reason);
                    let _ = c.cancel.send(true);
                }
            }
            Err(e) => tracing::warn!("malformed cancel: {e}"),
        },
        events::ERROR => tracing::warn!("coordinator says: {first}"),
        other => tracing::debug!("ignoring event `{other}`"),
    }
    Ok(())
}

async fn on_runner_event(
    state: &mut State,
    client: &Client,
    event: RunnerEvent,
    runner_rx: &mut mpsc::Receiver<RunnerEvent>,
) -> Result<(), LinkError> {
    match event {
        RunnerEvent::Stage { stage, detail } => {
            if let Some(c) = &mut state.current {
                c.status = stage;
                c.detail = detail;
            }
            let status = state.status_payload();
            emit(client, events::STATUS_UPDATE, status).await?;
        }
        RunnerEvent::Output { offset, mut data } => {
            // Coalesce output that is already waiting into one message.
            let mut next = None;
            while data.len() < 64 * 1024 {
                match runner_rx.try_recv() {
                    Ok(RunnerEvent::Output { data: more, .. }) => data.push_str(&more),
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if let Some(attempt_id) = state.current.as_ref().and_then(|c| c.item.attempt_id) {
                state.outbox.push_back(Outgoing::Log(LogChunk {
                    attempt_id,
                    offset,
                    data,
                }));
            }
            flush_outbox(state, client).await?;
            if let Some(next) = next {
                Box::pin(on_runner_event(state, client, next, runner_rx)).await?;
            }
        }
        RunnerEvent::Finished(report) => {
            if report.attempt_id > 0 {
                state.outbox.push_back(Outgoing::Report(report));
            } else {
                finish_current(
                    state,
                    client,
                    report.outcome.is_success(),
                    report.reason.clone(),
                )
                .await?;
            }
            flush_outbox(state, client).await?;
        }
    }
    Ok(())
}

/// Sends what waits in the outbox, in order. A report is sent with an ack and
/// stays until the coordinator confirms it.
async fn flush_outbox(state: &mut State, client: &Client) -> Result<(), LinkError> {
    while let Some(next) = state.outbox.front() {
        match next {
            Outgoing::Log(chunk) => {
                emit(client, events::LOG_CHUNK, chunk).await?;
                state.outbox.pop_front();
            }
            Outgoing::Report(report) => {
                let answer = client
                    .emit_with_ack(events::ATTEMPT_REPORT, report, Duration::from_secs(15))
                    .await
                    .map_err(LinkError::Ack)?;
                let ok = answer
                    .first()
                    .and_then(|v| v.get("ok"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !ok {
                    tracing::warn!("coordinator refused the report: {answer:?}");
                }
                let success = report.outcome.is_success();
                let reason = report.reason.clone();
                state.outbox.pop_front();
                finish_current(state, client, success, reason).await?;
            }
        }
    }
    Ok(())
}

/// The final `done`/`error` status, then back to idle and ask for more.
async fn finish_current(
    state: &mut State,
    client: &Client,
    success: bool,
    reason: Option<String>,
) -> Result<(), LinkError> {
    if let Some(c) = &mut state.current {
        c.status = if success { Stage::Done } else { Stage::Error };
        c.detail = reason.unwrap_or_else(|| {
            if success {
                "finished".into()
            } else {
                "failed".into()
            }
        });
    }
    let status = state.status_payload();
    state.current = None;
    emit(client, events::STATUS_UPDATE, status).await?;
    fetch_work(client).await
}

/// What [`blob_side`] sets up: inputs, artifacts, and the HTTP client
/// behind both.
#[derive(Default)]
struct BlobSide {
    inputs: Option<crate::artifacts::InputSource>,
    sink: Option<std::sync::Arc<dyn crate::artifacts::ArtifactSink>>,
    http: Option<std::sync::Arc<testfleet_client::AgentHttp>>,
}

/// The agent's HTTP side: its blob cache and the coordinator's agent routes
/// (inputs in, artifacts out). Without them, work items with inputs fail as
/// infrastructure errors and no artifact is kept; the agent still runs.
fn blob_side(config: &AgentConfig) -> BlobSide {
    // One client per coordinator, in the agent's order (the session picks
    // one by its index).
    let mut apis = Vec::new();
    for server in config.servers() {
        let base = server
            .replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1);
        match testfleet_client::ApiClient::with_ca(&base, config.ca_cert.as_deref()) {
            Ok(api) => apis.push(api),
            Err(e) => {
                tracing::warn!("no HTTP client for inputs and artifacts at {server}: {e}");
                return BlobSide::default();
            }
        }
    }
    let mut apis = apis.into_iter();
    let Some(primary) = apis.next() else {
        return BlobSide::default();
    };
    let http = std::sync::Arc::new(
        testfleet_client::AgentHttp::new(primary, &config.hostname, config.secret.as_deref())
            .with_fallbacks(apis.collect()),
    );
    let cache_dir = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.work_dir.join("blob-cache"));
    let inputs = match testfleet_cas::BlobCache::open(&cache_dir, config.cache_limit) {
        Ok(cache) => Some(crate::artifacts::InputSource {
            cache: std::sync::Arc::new(cache),
            fetcher: http.clone(),
        }),
        Err(e) => {
            tracing::warn!("no blob cache at {}: {e}", cache_dir.display());
            None
        }
    };
    BlobSide {
        inputs,
        sink: Some(http.clone()),
        http: Some(http),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn one_coordinator_waits_after_every_failure_and_doubles_the_wait() {
        let mut r = Rotation::new(1, Duration::from_millis(350));
        let waits: Vec<Wait> = (0..4).map(|_| r.failed()).collect();
        assert_eq!(
            waits,
            [100, 200, 350, 350].map(|ms| Wait::For(Duration::from_millis(ms)))
        );
        assert_eq!(r.current(), 0);
        r.connected();
        r.lost();
        assert_eq!(r.current(), 0, "a lost connection is retried at once");
        assert_eq!(r.failed(), Wait::For(Duration::from_millis(100)));
    }

    #[test]
    fn several_coordinators_are_tried_in_order_without_waiting_until_a_round_failed() {
        let mut r = Rotation::new(3, MAX);
        assert_eq!(r.current(), 0);
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.current(), 1);
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.current(), 2);
        assert_eq!(r.failed(), Wait::For(Duration::from_millis(100)));
        assert_eq!(r.current(), 0, "the next round starts over");
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.failed(), Wait::For(Duration::from_millis(200)));
    }

    #[test]
    fn a_lost_connection_moves_to_the_next_coordinator_at_once() {
        let mut r = Rotation::new(3, MAX);
        assert_eq!(r.failed(), Wait::No);
        r.connected();
        assert_eq!(r.current(), 1);
        r.lost();
        assert_eq!(r.current(), 2);
        // The one that dropped us comes last in this round.
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.current(), 0);
        assert_eq!(r.failed(), Wait::No);
        assert_eq!(r.current(), 1);
        assert_eq!(
            r.failed(),
            Wait::For(Duration::from_millis(100)),
            "the wait starts short again after a connection"
        );
    }
}
