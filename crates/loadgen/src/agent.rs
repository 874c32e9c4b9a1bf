//! A simulated agent: one real socket.io connection that speaks the agent
//! protocol exactly as `testfleet agent` does (crates/agent/src/session.rs),
//! but "runs" a task by doing nothing or by sleeping for the task's
//! `TESTFLEET_BENCH_MS`.
//!
//! Per work item: `statusUpdate` `new`, then `test` (with the item's
//! `attemptId` and `integrationId` and strictly increasing `updateTimestamp`s),
//! the run, `tf:report` with an ack, `statusUpdate` `done`, and `fetchWork`.
//!
//! A `requestStatus` is answered with the agent's state when it reads it. One
//! that the coordinator sent while an attempt ran, but that the agent reads
//! after it finished and fetched again, is answered `idle` while the next
//! `sendWork` is already on its way; the coordinator then ends that fresh
//! attempt as `infra_error` and runs the task again. The real agent has the
//! same window; the bench counts those re-runs as `duplicated`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use testfleet_core::AttemptOutcome;
use testfleet_core::time_fmt::format_millis;
use testfleet_sio::{
    AckError, Client, ConnectError, ConnectOptions, EmitError, EventStream, Incoming,
};
use testfleet_wire::protocol::{AttemptReport, StatusUpdate, WorkItem, events};
use tokio::sync::watch;

use crate::recorder::Recorder;

/// The environment variable that carries a task's synthetic duration.
pub const BENCH_MS_VAR: &str = "TESTFLEET_BENCH_MS";

/// How long a `tf:report` may wait for its ack.
const REPORT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The real agent fetches again every 30 s while idle.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// A connected simulated agent, ready to [`run`](SimAgent::run).
pub(crate) struct SimAgent {
    hostname: String,
    client: Client,
    events: EventStream,
    recorder: Arc<Recorder>,
    last_ts: i64,
    /// When this agent asked for work while idle (the claim being timed).
    fetching_since: Option<tokio::time::Instant>,
    /// The results some reports carry (see [`BigReports`]).
    big_reports: Option<BigReports>,
}

/// Every `every`-th task (by task id) reports `results`: a large report, to
/// time claims while the coordinator finishes big reports.
#[derive(Clone)]
pub(crate) struct BigReports {
    pub every: i64,
    pub results: Arc<Vec<testfleet_wire::results::Results>>,
}

impl BigReports {
    /// One suite of `cases` passed test cases.
    pub fn new(every: usize, cases: usize) -> BigReports {
        use testfleet_wire::results::{Case, Results, Suite};
        let suite = Suite {
            name: "tst_bench_report".to_owned(),
            cases: (0..cases)
                .map(|i| Case {
                    duration_ms: Some(0.25),
                    ..Case::new(format!("case_{i:05}"), None)
                })
                .collect(),
            ..Suite::default()
        };
        BigReports {
            every: i64::try_from(every.max(1)).unwrap_or(i64::MAX),
            results: Arc::new(vec![Results {
                format: "junit".to_owned(),
                suites: vec![suite],
                ..Results::default()
            }]),
        }
    }
}

/// Why a simulated agent stopped serving.
#[derive(Debug, thiserror::Error)]
enum SimError {
    #[error("failed to send `{event}`: {source}")]
    Emit {
        event: &'static str,
        #[source]
        source: EmitError,
    },
    #[error("report of attempt {attempt_id} not acknowledged: {source}")]
    Ack {
        attempt_id: i64,
        #[source]
        source: AckError,
    },
    #[error("event stream ended")]
    StreamEnded,
    #[error("disconnected: {0}")]
    Disconnected(String),
}

/// The work in hand: its ids and the item, echoed in status updates.
struct Work {
    task_id: i64,
    attempt_id: i64,
    duration: Duration,
    item: WorkItem,
}

impl SimAgent {
    /// Connects with the agent handshake; a refusal is an error.
    pub async fn connect(
        url: &str,
        hostname: String,
        secret: Option<&str>,
        recorder: Arc<Recorder>,
        big_reports: Option<BigReports>,
    ) -> Result<SimAgent, ConnectError> {
        let auth = json!({
            "clientType": "agent",
            "hostname": hostname,
            "secret": secret,
            "labels": {"pool": "bench"},
            "protocol": 1,
        });
        let (client, events) =
            Client::connect(url, ConnectOptions::default().with_auth(auth)).await?;
        Ok(SimAgent {
            hostname,
            client,
            events,
            recorder,
            fetching_since: None,
            big_reports,
            last_ts: 0,
        })
    }

    /// `updateTimestamp`s strictly increase, so none is dropped as out of order.
    fn next_timestamp(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_ts = now.max(self.last_ts + 1);
        format_millis(self.last_ts)
    }

    /// The status the real agent sends (without its load: the bench machine's load
    /// says nothing about a simulated task).
    fn status(&mut self, work: Option<&Work>, status: &str, detail: &str) -> StatusUpdate {
        let ts = self.next_timestamp();
        match work {
            None => StatusUpdate {
                status: Some(status.to_owned()),
                update_timestamp: Some(Value::String(ts)),
                ..StatusUpdate::default()
            },
            Some(w) => StatusUpdate::working(&w.item, status, detail, ts, None),
        }
    }

    async fn emit_status(
        &mut self,
        work: Option<&Work>,
        status: &str,
        detail: &str,
    ) -> Result<(), SimError> {
        let payload = self.status(work, status, detail);
        self.client
            .emit(events::STATUS_UPDATE, payload)
            .await
            .map_err(|source| SimError::Emit {
                event: events::STATUS_UPDATE,
                source,
            })
    }

    async fn fetch(&mut self) -> Result<(), SimError> {
        self.fetching_since
            .get_or_insert_with(tokio::time::Instant::now);
        self.client
            .emit_no_args(events::FETCH_WORK)
            .await
            .map_err(|source| SimError::Emit {
                event: events::FETCH_WORK,
                source,
            })
    }

    /// Serves work until `stop` turns true or the connection ends; whether
    /// it ended without being told to stop (a real agent then reconnects).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> bool {
        let result = self.serve(&mut stop).await;
        let stopping = *stop.borrow();
        let lost = result.is_err() && !stopping;
        if let Err(e) = result
            && !stopping
        {
            tracing::warn!(agent = %self.hostname, "simulated agent lost its connection: {e}");
            self.recorder
                .disconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.client.disconnect().await;
        lost
    }

    async fn serve(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), SimError> {
        self.emit_status(None, "idle", "").await?;
        self.fetch().await?;
        let mut poll = tokio::time::interval(IDLE_POLL);
        poll.tick().await;
        loop {
            let event = tokio::select! {
                () = stopped(stop) => return Ok(()),
                _ = poll.tick() => {
                    self.fetch().await?;
                    continue;
                }
                event = self.events.recv() => event,
            };
            let (name, args, ack) = match event {
                None => return Err(SimError::StreamEnded),
                Some(Incoming::Disconnected { reason }) => {
                    return Err(SimError::Disconnected(reason.to_string()));
                }
                Some(Incoming::Event { name, args, ack }) => (name, args, ack),
            };
            if let Some(ack) = ack {
                let _ = ack.send(Vec::new()).await;
            }
            match name.as_str() {
                "sendWork" => {
                    if let Some(work) = self.accept(args) {
                        self.work(work, stop).await?;
                        poll.reset();
                    }
                }
                "requestStatus" => self.emit_status(None, "idle", "").await?,
                "error" => self.recorder.violation(format!(
                    "{}: coordinator sent error {:?}",
                    self.hostname, args
                )),
                _ => {}
            }
        }
    }

    /// Checks a `sendWork` payload and records the delivery.
    fn accept(&mut self, args: Vec<Value>) -> Option<Work> {
        let item = args.into_iter().next().unwrap_or(Value::Null);
        if !item.is_object() {
            self.recorder.violation(format!(
                "{}: sendWork without a work item: {item}",
                self.hostname
            ));
            return None;
        }
        if item.as_object().is_some_and(serde_json::Map::is_empty) {
            self.recorder
                .violation(format!("{}: sendWork with an empty item", self.hostname));
            return None;
        }
        let item: WorkItem = match serde_json::from_value(item) {
            Ok(item) => item,
            Err(e) => {
                self.recorder.violation(format!(
                    "{}: sendWork with a malformed work item: {e}",
                    self.hostname
                ));
                return None;
            }
        };
        let (Some(task_id), Some(attempt_id)) = (item.task_id, item.attempt_id) else {
            self.recorder.violation(format!(
                "{}: work item without taskId/attemptId",
                self.hostname
            ));
            return None;
        };
        let duration_ms = item
            .env
            .get(BENCH_MS_VAR)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        self.recorder.started(task_id, attempt_id);
        if let Some(since) = self.fetching_since.take() {
            self.recorder.claimed(since.elapsed());
        }
        Some(Work {
            task_id,
            attempt_id,
            duration: Duration::from_millis(duration_ms),
            item,
        })
    }

    /// Runs one item: `new`, `test`, the sleep, the report, `done`, fetch.
    async fn work(&mut self, work: Work, stop: &mut watch::Receiver<bool>) -> Result<(), SimError> {
        self.emit_status(Some(&work), "new", "work received")
            .await?;
        self.emit_status(Some(&work), "test", "running").await?;
        let started = tokio::time::Instant::now();
        // Like the real agent, keep reading events while the task runs (a
        // no-op task included): `requestStatus` is answered with `test`.
        {
            let sleep = tokio::time::sleep(work.duration);
            tokio::pin!(sleep);
            loop {
                let event = tokio::select! {
                    biased;
                    event = self.events.recv() => event,
                    () = &mut sleep => break,
                    () = stopped(stop) => return Ok(()),
                };
                let (name, args, ack) = match event {
                    None => return Err(SimError::StreamEnded),
                    Some(Incoming::Disconnected { reason }) => {
                        return Err(SimError::Disconnected(reason.to_string()));
                    }
                    Some(Incoming::Event { name, args, ack }) => (name, args, ack),
                };
                if let Some(ack) = ack {
                    let _ = ack.send(Vec::new()).await;
                }
                match name.as_str() {
                    "requestStatus" => {
                        self.emit_status(Some(&work), "test", "running").await?;
                    }
                    "sendWork" => self.recorder.violation(format!(
                        "{}: sendWork while running attempt {}: {:?}",
                        self.hostname,
                        work.attempt_id,
                        args.first()
                    )),
                    "tf:cancel" => self.recorder.violation(format!(
                        "{}: attempt {} cancelled: {:?}",
                        self.hostname,
                        work.attempt_id,
                        args.first()
                    )),
                    _ => {}
                }
            }
        }
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let report = AttemptReport {
            attempt_id: work.attempt_id,
            outcome: AttemptOutcome::Passed,
            reason: None,
            reason_data: None,
            results: match &self.big_reports {
                Some(big) if work.task_id % big.every == 0 => big.results.as_ref().clone(),
                _ => Vec::new(),
            },
            duration_ms: Some(duration_ms),
            machine: None,
        };
        match self
            .client
            .emit_with_ack(events::ATTEMPT_REPORT, report, REPORT_ACK_TIMEOUT)
            .await
        {
            Ok(answer) => {
                let ok = answer
                    .first()
                    .and_then(|v| v.get("ok"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if ok {
                    self.recorder.finished(work.task_id, work.attempt_id);
                } else {
                    self.recorder
                        .report_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.recorder.violation(format!(
                        "{}: report of attempt {} refused: {answer:?}",
                        self.hostname, work.attempt_id
                    ));
                }
            }
            Err(e) => {
                self.recorder
                    .report_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(SimError::Ack {
                    attempt_id: work.attempt_id,
                    source: e,
                });
            }
        }
        self.emit_status(Some(&work), "done", "finished").await?;
        self.fetch().await
    }
}
