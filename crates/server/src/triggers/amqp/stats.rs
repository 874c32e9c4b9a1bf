//! What the consumer did: counts per outcome and the time from a message's
//! arrival to its event's commit (for `testfleet` logs and the benchmarks).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency samples kept at most (the newest are dropped past it).
const MAX_SAMPLES: usize = 1_000_000;

/// Live counters of the consumer, shared with its handle.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    received: AtomicU64,
    queued: AtomicU64,
    duplicates: AtomicU64,
    ignored: AtomicU64,
    dropped: AtomicU64,
    store_errors: AtomicU64,
    sessions: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// A copy of [`ConsumerStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Deliveries received (a redelivered message counts again).
    pub received: u64,
    /// Events recorded with their jobs.
    pub queued: u64,
    /// Deliveries whose key was seen before.
    pub duplicates: u64,
    /// Events no rule wanted.
    pub ignored: u64,
    /// Messages that can never become a job (recorded, acknowledged).
    pub dropped: u64,
    /// Store failures (each message requeued).
    pub store_errors: u64,
    /// Connections made to the broker.
    pub sessions: u64,
    /// Arrival → commit, nearest-rank percentiles over every acknowledged
    /// message.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Queued,
    Duplicate,
    Ignored,
    Dropped,
}

impl ConsumerStats {
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A committed delivery, `took` after it arrived.
    pub(crate) fn done(&self, what: Counted, took: Duration) {
        let counter = match what {
            Counted::Queued => &self.queued,
            Counted::Duplicate => &self.duplicates,
            Counted::Ignored => &self.ignored,
            Counted::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.latencies_us.lock()
            && samples.len() < MAX_SAMPLES
        {
            samples.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// The counters now, with the latency percentiles.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut samples = self
            .latencies_us
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        samples.sort_unstable();
        let rank = |p: f64| -> Option<Duration> {
            if samples.is_empty() {
                return None;
            }
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let n = samples.len();
            let r = ((p * n as f64).ceil() as usize).clamp(1, n);
            Some(Duration::from_micros(samples[r - 1]))
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            queued: get(&self.queued),
            duplicates: get(&self.duplicates),
            ignored: get(&self.ignored),
            dropped: get(&self.dropped),
            store_errors: get(&self.store_errors),
            sessions: get(&self.sessions),
            p50: rank(0.5),
            p99: rank(0.99),
            max: samples.last().map(|us| Duration::from_micros(*us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = ConsumerStats::default();
        assert_eq!(s.snapshot().p99, None);
        for ms in 1..=100 {
            s.done(Counted::Queued, Duration::from_millis(ms));
        }
        s.done(Counted::Dropped, Duration::from_millis(500));
        let snap = s.snapshot();
        assert_eq!((snap.queued, snap.dropped), (100, 1));
        assert_eq!(snap.p50, Some(Duration::from_millis(51)));
        assert_eq!(snap.p99, Some(Duration::from_millis(100)));
        assert_eq!(snap.max, Some(Duration::from_millis(500)));
    }
}
