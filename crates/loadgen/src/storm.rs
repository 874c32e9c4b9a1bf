//! `--storm`: every connected agent leaves at once, as an agent shutting
//! down does (it leaves its socket.io namespace, which the coordinator
//! takes as a shutdown and retires the agent), then all reconnect at once.
//!
//! Both phases are timed until the coordinator's `GET /api/v1/agents`
//! shows the whole fleet in its new state: every agent retired and offline,
//! then every agent online and no longer retired (a connection clears the
//! flag). Every one of those rows must be recorded for the storm to count
//! as complete.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use testfleet_client::ApiClient;
use testfleet_wire::api::AgentView;
use tokio::time::Instant;

use crate::BenchError;
use crate::fleet::{Fleet, FleetSpec, hostname};
use crate::recorder::round3;

/// How often the agent list is read while waiting.
const POLL: Duration = Duration::from_millis(250);

/// The figures of one storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub agents: usize,
    /// From the moment every agent was told to leave until the coordinator
    /// showed them all retired and offline (`null`: not within the run).
    pub leave_s: Option<f64>,
    /// Agents shown retired and offline at the end of that wait.
    pub retired: usize,
    /// From the moment every agent started reconnecting until the
    /// coordinator showed them all online and not retired.
    pub rejoin_s: Option<f64>,
    /// Agents shown online and not retired at the end of that wait.
    pub online: usize,
    /// Connection attempts retried during the reconnection.
    pub connect_retries: u64,
    /// Every retirement and every reconnection was recorded.
    pub complete: bool,
}

/// Runs the storm on `fleet` and returns the reconnected fleet with the
/// figures. `api` is the coordinator asked (any one of a cluster).
pub(crate) async fn run(
    fleet: Fleet,
    spec: &FleetSpec,
    api: &ApiClient,
    deadline: Instant,
    progress: bool,
) -> Result<(Fleet, StormReport), BenchError> {
    let hosts: HashSet<String> = (0..spec.agents).map(hostname).collect();

    let started = Instant::now();
    fleet.shutdown().await;
    let (retired, left) = wait_for(api, &hosts, deadline, |a| a.retired && !a.online).await;
    let leave_s = left.then(|| round3(started.elapsed().as_secs_f64()));
    if progress {
        eprintln!(
            "bench storm: {retired}/{} agents retired in {}",
            spec.agents,
            shown(leave_s)
        );
    }

    let retries_before = spec.retries.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let fleet = Fleet::connect(spec, deadline).await?;
    let (online, joined) = wait_for(api, &hosts, deadline, |a| a.online && !a.retired).await;
    let rejoin_s = joined.then(|| round3(started.elapsed().as_secs_f64()));
    if progress {
        eprintln!(
            "bench storm: {online}/{} agents online again in {}",
            spec.agents,
            shown(rejoin_s)
        );
    }
    let connect_retries = spec.retries.load(std::sync::atomic::Ordering::Relaxed) - retries_before;
    Ok((
        fleet,
        StormReport {
            agents: spec.agents,
            leave_s,
            retired,
            rejoin_s,
            online,
            connect_retries,
            complete: left && joined,
        },
    ))
}

fn shown(s: Option<f64>) -> String {
    s.map_or_else(
        || "(not within the run)".to_owned(),
        |s| format!("{s:.2} s"),
    )
}

/// Reads the agent list until every host in `hosts` is in the state `done`
/// or the deadline passes; how many were, and whether all were.
async fn wait_for(
    api: &ApiClient,
    hosts: &HashSet<String>,
    deadline: Instant,
    done: impl Fn(&AgentView) -> bool,
) -> (usize, bool) {
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(agents)) = tokio::time::timeout(left, api.agents()).await {
            seen = count(&agents, hosts, &done);
            if seen == hosts.len() {
                return (seen, true);
            }
        }
        if Instant::now() + POLL >= deadline {
            return (seen, false);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn count(
    agents: &[AgentView],
    hosts: &HashSet<String>,
    done: impl Fn(&AgentView) -> bool,
) -> usize {
    agents
        .iter()
        .filter(|a| hosts.contains(&a.hostname) && done(a))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(host: &str, online: bool, retired: bool) -> AgentView {
        AgentView {
            hostname: host.to_owned(),
            online,
            retired,
            labels: Default::default(),
            last_connected: None,
            current_attempt: None,
            status: None,
            machine: None,
        }
    }

    #[test]
    fn only_the_benchs_own_agents_in_the_state_count() {
        let hosts: HashSet<String> = (0..3).map(hostname).collect();
        let agents = vec![
            view(&hostname(0), false, true),
            view(&hostname(1), true, false),
            view(&hostname(2), false, true),
            view("someone-else", false, true),
        ];
        assert_eq!(count(&agents, &hosts, |a| a.retired && !a.online), 2);
        assert_eq!(count(&agents, &hosts, |a| a.online && !a.retired), 1);
    }
}
