//! Leases kept in the database. The coordinator an agent is connected to
//! renews the leases of that agent's running attempt; any coordinator that
//! shares the database reaps an attempt whose lease ran out, so an attempt
//! whose coordinator died is not left running forever. Attempts this
//! coordinator holds in memory keep the in-memory rule (disconnected for
//! longer than `lease_timeout`); ending an attempt is fenced in the store,
//! so two coordinators reaping one attempt end it once.

use std::sync::atomic::Ordering;

use testfleet_core::AttemptOutcome;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::RunningAttempt;
use testfleet_wire::reason::ReasonData;

use super::{Coordinator, humanize};

impl Coordinator {
    /// Renews this coordinator's leases every quarter lease, and returns the
    /// attempts of other coordinators' agents whose lease ran out, with the
    /// outcome, reason and data to end them with.
    pub(super) async fn reap_leases(
        &self,
        now: UnixMillis,
    ) -> Vec<(RunningAttempt, AttemptOutcome, String, ReasonData)> {
        let lease = i64::try_from(self.config.lease_timeout.as_millis()).unwrap_or(i64::MAX);
        let last = self.leases_renewed_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < lease / 4 {
            return Vec::new();
        }
        self.leases_renewed_at.store(now, Ordering::Relaxed);
        let cluster = self.cluster.as_ref();
        let (connected, mine): (Vec<String>, Vec<i64>) = {
            let sched = self.sched.lock().await;
            // Only attempts held here: an agent that came from another
            // coordinator with its work says so at once and is taken over
            // (`adopt_attempt`); an attempt it never received (the claim
            // committed, the coordinator died before sending it) is renewed
            // by nobody and ends when its lease does.
            let connected = sched
                .agents
                .iter()
                .filter(|(_, s)| s.online() && s.running.is_some())
                .map(|(name, _)| name.clone())
                .collect();
            // Alone, the attempts this coordinator holds follow the
            // in-memory rule (the reaper); with others, the database's.
            let mine = sched
                .agents
                .values()
                .filter(|_| cluster.is_none())
                .filter_map(|s| s.running.as_ref().map(|r| r.attempt_id))
                .collect();
            (connected, mine)
        };
        if !connected.is_empty()
            && let Err(e) = self
                .store
                .renew_leases(&connected, now.saturating_add(lease))
                .await
        {
            tracing::warn!("failed to renew leases: {e}");
        }
        // Agents need a lease's time after a start to come back (to this
        // coordinator or another) before their attempts count as lost.
        if cluster.is_some_and(|c| now.saturating_sub(c.started_at()) < lease) {
            return Vec::new();
        }
        let expired = match self.store.expired_leases(now).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!("failed to read expired leases: {e}");
                return Vec::new();
            }
        };
        expired
            .into_iter()
            .filter(|run| !mine.contains(&run.attempt_id))
            .map(|run| {
                let reason = format!(
                    "agent `{}` lost: no coordinator heard from it for more than {}",
                    run.agent,
                    humanize(self.config.lease_timeout)
                );
                (
                    run,
                    AttemptOutcome::InfraError,
                    reason,
                    ReasonData::LeaseExpired,
                )
            })
            .collect()
    }
}
