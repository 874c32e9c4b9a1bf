//! The simulated fleet: connecting every agent (spread round-robin over
//! the coordinators), and stopping them all at once.
//!
//! A connection that fails for a reason a real agent would retry (the
//! websocket could not open, the handshake timed out or was cut) is tried
//! again after a short backoff until the run's deadline, as the real agent
//! does; a refusal (a wrong secret) ends the run. An agent whose
//! connection is lost while it serves connects again the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use testfleet_sio::ConnectError;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;
use crate::agent::{BigReports, SimAgent};
use crate::recorder::Recorder;

/// The first backoff after a failed connection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The hostname of simulated agent `i` (the same in every connection round,
/// so a reconnecting agent is the same agent to the coordinator).
pub(crate) fn hostname(i: usize) -> String {
    format!("bench-sim-{i:04}")
}

/// What every agent of a run connects with.
#[derive(Clone)]
pub(crate) struct FleetSpec {
    /// The coordinators; agent `i` connects to `urls[i % urls.len()]`.
    pub urls: Arc<Vec<String>>,
    pub secret: String,
    pub agents: usize,
    pub recorder: Arc<Recorder>,
    pub big_reports: Option<BigReports>,
    /// Connection attempts that failed and were retried, over all agents.
    pub retries: Arc<AtomicU64>,
    /// Lost connections that an agent made again, over all agents.
    pub reconnections: Arc<AtomicU64>,
    /// The run's time limit (for the message when it is reached).
    pub timeout: Duration,
}

/// The running agents. Dropping it stops them; [`Fleet::shutdown`] also
/// waits until each one has said goodbye.
pub(crate) struct Fleet {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Connects every agent at once and starts serving; fails on a refusal,
    /// or when they are not all connected by `deadline`.
    pub async fn connect(spec: &FleetSpec, deadline: Instant) -> Result<Fleet, BenchError> {
        let mut connecting = JoinSet::new();
        for i in 0..spec.agents {
            let spec = spec.clone();
            connecting.spawn(async move { connect_one(&spec, i, deadline).await.map(|a| (i, a)) });
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut fleet = Fleet {
            stop,
            tasks: JoinSet::new(),
        };
        let connected = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = connecting.join_next().await {
                match joined {
                    Ok(Ok((i, agent))) => {
                        fleet
                            .tasks
                            .spawn(serve(spec.clone(), i, agent, stop_rx.clone(), deadline));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(BenchError::Server(format!("agent task failed: {e}"))),
                }
            }
            Ok(())
        })
        .await;
        match connected {
            Ok(Ok(())) => Ok(fleet),
            Ok(Err(e)) => {
                fleet.shutdown().await;
                Err(e)
            }
            Err(_) => {
                fleet.shutdown().await;
                Err(BenchError::Timeout(spec.timeout, "connecting agents"))
            }
        }
    }

    /// Stops every agent at once (each leaves its namespace, as an agent
    /// shutting down does) and waits, at most 10 s, until all have.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves with agent `i` and, as a real agent does, connects again after
/// a connection it did not end itself, until it is told to stop or the
/// run's `deadline` passes.
async fn serve(
    spec: FleetSpec,
    i: usize,
    mut agent: SimAgent,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) {
    loop {
        if !agent.run(stop.clone()).await || *stop.borrow() {
            return;
        }
        spec.reconnections.fetch_add(1, Ordering::Relaxed);
        agent = match connect_one(&spec, i, deadline).await {
            Ok(agent) => agent,
            Err(e) => {
                tracing::warn!(agent = %hostname(i), "simulated agent could not reconnect: {e}");
                return;
            }
        };
    }
}

/// Whether a real agent would try again after this failure.
fn retryable(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::WebSocket { .. } | ConnectError::Timeout { .. } | ConnectError::Closed
    )
}

/// Connects agent `i`, retrying what a real agent retries until `deadline`.
async fn connect_one(
    spec: &FleetSpec,
    i: usize,
    deadline: Instant,
) -> Result<SimAgent, BenchError> {
    let host = hostname(i);
    let url = &spec.urls[i % spec.urls.len()];
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = SimAgent::connect(
            url,
            host.clone(),
            Some(&spec.secret),
            spec.recorder.clone(),
            spec.big_reports.clone(),
        )
        .await;
        match attempt {
            Ok(agent) => return Ok(agent),
            Err(e) if retryable(&e) && Instant::now() + backoff < deadline => {
                spec.retries.fetch_add(1, Ordering::Relaxed);
                // Spread the retries of agents that failed together.
                let jitter = Duration::from_millis((i as u64 * 37) % 100);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(source) => {
                return Err(BenchError::Connect {
                    agent: host,
                    source,
                });
            }
        }
    }
}
