//! What authentication remembers while the coordinator runs: failures per
//! address (to slow down guessing), the Digest nonce counts seen (to refuse
//! replays), and the agent secrets' epoch (bumped when a secret is revoked
//! or rotated, so cached checks end at once).
//!
//! One [`AuthState`] per coordinator, shared by the REST guard, the agent
//! HTTP routes, the socket.io handshake and the reaper.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testfleet_core::time_fmt::UnixMillis;

use super::DigestCounts;

/// The authentication state of one coordinator.
#[derive(Debug)]
pub struct AuthState {
    failures: FailureLimiter,
    digest_counts: DigestCounts,
    /// Bumped whenever an agent secret is revoked or rotated.
    agent_secrets_epoch: AtomicU64,
    /// When agent secrets were last checked for revocations (wall clock).
    secrets_checked_at: AtomicI64,
}

impl AuthState {
    /// A fresh state; agent secrets count as checked at `now` (wall clock).
    pub fn new(now: UnixMillis) -> AuthState {
        AuthState {
            failures: FailureLimiter::default(),
            digest_counts: DigestCounts::default(),
            agent_secrets_epoch: AtomicU64::new(0),
            secrets_checked_at: AtomicI64::new(now),
        }
    }

    /// Counts a failed authentication from `ip`; the delay to apply before
    /// answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        self.failures.failed(ip)
    }

    /// Forgets the failures of `ip` after a success.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.succeeded(ip);
    }

    /// The Digest nonce counts seen.
    pub fn digest_counts(&self) -> &DigestCounts {
        &self.digest_counts
    }

    /// The agent secrets' epoch: a cached secret check is good only while
    /// the epoch it was made in lasts.
    pub fn agent_secrets_epoch(&self) -> u64 {
        self.agent_secrets_epoch.load(Ordering::Relaxed)
    }

    /// When agent secrets were last checked for revocations.
    pub fn secrets_checked_at(&self) -> UnixMillis {
        self.secrets_checked_at.load(Ordering::Relaxed)
    }

    /// Records a check for revoked secrets made at `now`; `changed`: some
    /// were revoked or rotated since the last one (a new epoch begins).
    pub fn secrets_checked(&self, now: UnixMillis, changed: bool) {
        self.secrets_checked_at.store(now, Ordering::Relaxed);
        if changed {
            self.agent_secrets_epoch.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Slows down repeated failed authentication from one address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// Failures within this window count together.
    const WINDOW: Duration = Duration::from_secs(60);
    /// Failures allowed before answers slow down.
    const FREE: u32 = 5;

    /// The delay to apply before answering this address's next failure.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| now.duration_since(*since) < Self::WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) > Self::WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        match entry.0.saturating_sub(Self::FREE) {
            0 => Duration::ZERO,
            // 200 ms, 400 ms, 800 ms … at most 5 s per answer.
            over => Duration::from_millis((100u64 << over.min(6)).min(5_000)),
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_down_after_a_few() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..5 {
            assert!(l.failed(ip).is_zero());
        }
        assert_eq!(l.failed(ip), Duration::from_millis(200));
        assert_eq!(l.failed(ip), Duration::from_millis(400));
        l.succeeded(ip);
        assert!(l.failed(ip).is_zero());
    }

    #[test]
    fn failures_are_counted_per_address() {
        let state = AuthState::new(0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..5 {
            state.failed(a);
        }
        assert!(!state.failed(a).is_zero());
        assert!(state.failed(b).is_zero(), "another address is not slowed");
        state.succeeded(a);
        assert!(state.failed(a).is_zero());
    }

    #[test]
    fn a_revocation_starts_a_new_epoch() {
        let state = AuthState::new(1_000);
        assert_eq!(state.secrets_checked_at(), 1_000);
        assert_eq!(state.agent_secrets_epoch(), 0);
        state.secrets_checked(2_000, false);
        assert_eq!(state.secrets_checked_at(), 2_000);
        assert_eq!(state.agent_secrets_epoch(), 0, "nothing changed");
        state.secrets_checked(3_000, true);
        assert_eq!(state.secrets_checked_at(), 3_000);
        assert_eq!(state.agent_secrets_epoch(), 1);
    }
}
