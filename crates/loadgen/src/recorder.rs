//! What the simulated agents saw, keyed by the coordinator's task id: every
//! delivery (`sendWork`) and every acknowledged finish (`tf:report`), with the
//! time since the run began. Submissions are registered by the submitter.
//! Duplicates and lost tasks are found from these records at the end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// One event of one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub attempt_id: i64,
    pub at: Duration,
}

/// A task as submitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Submitted {
    pub at: Duration,
    pub duration_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Records {
    pub submitted: HashMap<i64, Submitted>,
    pub starts: HashMap<i64, Vec<Mark>>,
    pub finishes: HashMap<i64, Vec<Mark>>,
    /// Protocol violations seen by agents (first few kept verbatim).
    pub violations: Vec<String>,
    pub violation_count: u64,
    /// Claim latencies in milliseconds: from an agent's first `fetchWork`
    /// while idle to the `sendWork` that answered it.
    pub claims_ms: Vec<f64>,
    /// Submitted tasks that finished at least once, counted as the second
    /// of the two records arrives (a no-op task may finish before its
    /// submission is answered), so the driver's check that the run is done
    /// does not walk every task under the lock the agents record through.
    pub finished_submitted: usize,
}

/// Shared by the agents and the driver of one run.
#[derive(Debug)]
pub(crate) struct Recorder {
    origin: Instant,
    records: Mutex<Records>,
    pub report_errors: AtomicU64,
    pub disconnects: AtomicU64,
}

const KEPT_VIOLATIONS: usize = 20;

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            records: Mutex::new(Records::default()),
            report_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Records) -> T) -> T {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters for counting, so a poisoned lock is used as is.
        let mut guard = self.records.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn submitted(&self, task_id: i64, task: Submitted) {
        self.with(|r| {
            if r.submitted.insert(task_id, task).is_none() && r.finishes.contains_key(&task_id) {
                r.finished_submitted += 1;
            }
        });
    }

    pub fn started(&self, task_id: i64, attempt_id: i64) {
        let at = self.now();
        self.with(|r| {
            r.starts
                .entry(task_id)
                .or_default()
                .push(Mark { attempt_id, at });
        });
    }

    pub fn claimed(&self, waited: Duration) {
        self.with(|r| r.claims_ms.push(waited.as_secs_f64() * 1000.0));
    }

    pub fn finished(&self, task_id: i64, attempt_id: i64) {
        let at = self.now();
        self.with(|r| {
            let marks = r.finishes.entry(task_id).or_default();
            let first = marks.is_empty();
            marks.push(Mark { attempt_id, at });
            if first && r.submitted.contains_key(&task_id) {
                r.finished_submitted += 1;
            }
        });
    }

    pub fn violation(&self, what: String) {
        tracing::warn!("protocol violation: {what}");
        self.with(|r| {
            r.violation_count += 1;
            if r.violations.len() < KEPT_VIOLATIONS {
                r.violations.push(what);
            }
        });
    }

    /// How many submitted tasks have finished at least once.
    pub fn finished_count(&self) -> usize {
        self.with(|r| r.finished_submitted)
    }

    /// The records, once the agents have stopped.
    pub fn take(&self) -> Records {
        self.with(std::mem::take)
    }
}

/// p50, p99 and max of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; all zero for an empty sample.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            round3(values[idx])
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: round3(values[values.len() - 1]),
        }
    }
}

/// Rounds to three decimals, for readable JSON.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted() -> Submitted {
        Submitted {
            at: Duration::ZERO,
            duration_ms: 0,
        }
    }

    #[test]
    fn a_task_counts_as_finished_once_whichever_record_comes_first() {
        let r = Recorder::new();
        r.submitted(1, submitted());
        r.finished(1, 10);
        // A finish seen before its submission was answered.
        r.finished(2, 20);
        assert_eq!(r.finished_count(), 1);
        r.submitted(2, submitted());
        assert_eq!(r.finished_count(), 2);
        // A duplicate finish, and a finish of a task this run never submitted.
        r.finished(1, 11);
        r.finished(99, 990);
        assert_eq!(r.finished_count(), 2);
    }
}
