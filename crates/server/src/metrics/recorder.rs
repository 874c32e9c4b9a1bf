//! What the coordinator counts as it works, for `GET /metrics`: the wait
//! from queueing to start, the store's claim and finish latency, and
//! attempts by outcome. Lock-free counters; since this process started
//! (Prometheus handles counter resets).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use testfleet_core::AttemptOutcome;

/// Bucket bounds, in seconds, of the submit → start wait.
pub const START_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Bucket bounds, in seconds, of store operations.
pub const STORE_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A cumulative histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative here), then
    /// above the last.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment: cumulative counts per bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, cumulative count)`, the last being `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, total));
        }
        HistogramSnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The outcomes counted, in the order they are shown.
const OUTCOMES: &[AttemptOutcome] = AttemptOutcome::ALL;

/// The coordinator's counters.
#[derive(Debug)]
pub struct Recorder {
    /// From a task's queueing to its attempt's claim.
    pub start_wait: Histogram,
    /// The store's claim transaction.
    pub claim: Histogram,
    /// The store's finish transaction.
    pub finish: Histogram,
    /// Attempts ended, by outcome (`AttemptOutcome::ALL`'s order).
    attempts: Vec<AtomicU64>,
    /// Agent connections whose event queue is still being applied.
    event_queues: AtomicU64,
    /// Claims the store refused: the task was no longer queued (another
    /// coordinator claimed it, or it was cancelled).
    claims_lost: AtomicU64,
}

/// Counts one agent connection's event queue while it is alive.
#[derive(Debug)]
pub struct EventQueueAlive<'a>(&'a AtomicU64);

impl Drop for EventQueueAlive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            start_wait: Histogram::new(START_BOUNDS),
            claim: Histogram::new(STORE_BOUNDS),
            finish: Histogram::new(STORE_BOUNDS),
            attempts: OUTCOMES.iter().map(|_| AtomicU64::new(0)).collect(),
            event_queues: AtomicU64::new(0),
            claims_lost: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    /// Counts an attempt ended with `outcome`.
    pub fn attempt_ended(&self, outcome: AttemptOutcome) {
        if let Some(c) = OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .and_then(|i| self.attempts.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a claim the store refused (the task was no longer queued).
    pub fn claim_lost(&self) {
        self.claims_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Claims the store refused since this process started.
    pub fn claims_lost(&self) -> u64 {
        self.claims_lost.load(Ordering::Relaxed)
    }

    /// An agent connection's event queue started; it counts until the
    /// returned guard is dropped.
    pub fn event_queue_opened(&self) -> EventQueueAlive<'_> {
        self.event_queues.fetch_add(1, Ordering::Relaxed);
        EventQueueAlive(&self.event_queues)
    }

    /// Agent connections whose event queue is alive: after the agents
    /// left, anything above zero is a leak.
    pub fn event_queues(&self) -> u64 {
        self.event_queues.load(Ordering::Relaxed)
    }

    /// Attempts ended so far, by outcome name.
    pub fn attempts(&self) -> Vec<(&'static str, u64)> {
        OUTCOMES
            .iter()
            .zip(&self.attempts)
            .map(|(o, c)| (o.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.01, 0.1, 1.0]);
        for ms in [1, 5, 50, 500, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(0.01, 2), (0.1, 3), (1.0, 4), (f64::INFINITY, 5)]
        );
        assert_eq!(s.count, 5);
        assert!((s.sum_seconds - 5.556).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn attempts_are_counted_by_outcome() {
        let r = Recorder::default();
        r.attempt_ended(AttemptOutcome::Passed);
        r.attempt_ended(AttemptOutcome::Passed);
        r.attempt_ended(AttemptOutcome::InfraError);
        let a = r.attempts();
        assert!(
            a.contains(&("passed", 2)) && a.contains(&("infra_error", 1)),
            "{a:?}"
        );
        assert!(a.contains(&("failed", 0)), "{a:?}");
    }
}
