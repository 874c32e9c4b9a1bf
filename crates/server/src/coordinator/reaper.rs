//! Periodic work: revoked agent secrets, runtime limits, leases of lost
//! agents, status requests.

use super::*;
use testfleet_wire::reason::{ReasonData, RuntimeBasis};

impl Coordinator {
    /// Agents whose secret was revoked or rotated since the last check are
    /// disconnected; their reconnect is checked against the new secret.
    pub(super) async fn disconnect_revoked_agents(&self) {
        let since = self.auth.secrets_checked_at();
        // Wall-clock time: the admin command stamps changes with it.
        let now = SystemClock.now_millis();
        let changed = match self.store.agent_secrets_changed_since(since).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("failed to check agent secrets: {e}");
                return;
            }
        };
        self.auth.secrets_checked(now, !changed.is_empty());
        for host in changed {
            if let Some(socket) = self.sockets.get(&host) {
                tracing::warn!(agent = %host, "agent secret revoked or rotated: disconnecting");
                let _ = socket.emit(
                    events::ERROR,
                    "your secret was revoked or rotated; reconnect with the new one",
                );
                let _ = socket.disconnect();
            }
        }
    }

    /// Runs the periodic work once now (tests with a manual clock call this).
    pub async fn tick(&self) {
        self.reap().await;
    }

    /// Periodic work: expire leases of lost agents, stop attempts past their
    /// runtime limit, ask running agents for status.
    pub(super) async fn reap(&self) {
        self.disconnect_revoked_agents().await;
        let now = self.now();
        let lease = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut sched = self.sched.lock().await;
        let mut ended = Vec::new();
        let overdue: Vec<(RunningAttempt, RuntimeLimit, Option<f64>)> = sched
            .agents
            .values()
            .filter_map(|s| {
                let limit = s.runtime_limit.as_ref().filter(|l| now >= l.stop_at)?;
                Some((s.running.clone()?, limit.clone(), s.load))
            })
            .collect();
        for (run, limit, load) in overdue {
            let elapsed = now - run.started_at;
            let reason = format!(
                "stalled: running for {}s, beyond its limit of {}s ({})",
                elapsed / 1000,
                limit.limit_ms / 1000,
                match limit.basis {
                    RuntimeBasis::MaxRuntime { .. } => "max_runtime",
                    RuntimeBasis::History { .. } => "derived from this task's history",
                }
            );
            let data = ReasonData::RuntimeThreshold {
                elapsed_ms: elapsed,
                limit_ms: limit.limit_ms,
                basis: limit.basis.clone(),
                agent_load: load,
            };
            if let Some(socket) = self.sockets.get(&run.agent) {
                let _ = socket.emit(
                    events::CANCEL_WORK,
                    &CancelWork {
                        attempt_id: run.attempt_id,
                        reason: reason.clone(),
                    },
                );
            }
            Self::release_slot(&mut sched, &run);
            ended.push((run, AttemptOutcome::Stalled, reason, data));
        }
        // With other coordinators, an agent gone from here may be running
        // on one of them, which renews its lease: the database decides.
        let alone = self.cluster.is_none();
        let expired: Vec<RunningAttempt> = sched
            .agents
            .values()
            .filter(|_| alone)
            .filter(|s| s.offline_since().is_some_and(|t| now - t >= lease))
            .filter_map(|s| s.running.clone())
            .collect();
        for run in expired {
            let reason = format!(
                "agent `{}` lost: disconnected for more than {}",
                run.agent,
                humanize(self.config.lease_timeout)
            );
            Self::release_slot(&mut sched, &run);
            ended.push((
                run,
                AttemptOutcome::InfraError,
                reason,
                ReasonData::LeaseExpired,
            ));
        }
        let normal =
            i64::try_from(self.config.request_status_interval.as_millis()).unwrap_or(i64::MAX);
        let in_test = i64::try_from(self.config.request_status_interval_in_test.as_millis())
            .unwrap_or(i64::MAX);
        for (host, slot) in sched.agents.iter_mut() {
            if slot.running.is_none() {
                continue;
            }
            let Some(socket) = self.sockets.get(host) else {
                continue;
            };
            let interval = if slot.status.as_deref() == Some("test") {
                in_test
            } else {
                normal
            };
            if now - slot.last_status_request >= interval {
                slot.last_status_request = now;
                let _ = socket.emit(events::REQUEST_STATUS, &());
            }
        }
        drop(sched);
        let reaped = self.reap_leases(now).await;
        if !reaped.is_empty() {
            let mut sched = self.sched.lock().await;
            for (run, ..) in &reaped {
                Self::release_slot(&mut sched, run);
            }
        }
        ended.extend(reaped);
        // Committed together: the store batches concurrent finishes.
        futures_util::future::join_all(ended.iter().map(|(run, outcome, reason, data)| {
            self.record_finish(run, *outcome, Some(reason), Some(data), None)
        }))
        .await;
    }
}
