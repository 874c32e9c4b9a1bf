//! Benchmark analytics: what a benchmark number means (SPEC §11).
//!
//! - [`noise`]: a robust noise model of a series' history (median, MAD,
//!   outliers, two modes) and its minimum detectable effect;
//! - [`compare`]: two samples of one benchmark on one host become a verdict
//!   (faster / slower / same / unknown) with a change %, a confidence
//!   interval, a p-value and, when unknown, the repetitions that would decide;
//! - [`changes`]: incremental change-point detection over a series' history;
//! - [`group`]: change points in the metrics of one test grouped together.
//!
//! Everything here is pure: samples in, numbers out, no IO.

pub mod changes;
pub mod compare;
pub mod csv;
mod dist;
pub mod group;
pub mod noise;
mod rank;

use serde::{Deserialize, Serialize};

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Time, cycles, instructions, bytes: less is better.
    Lower,
    /// Throughput (`…/s`, `ops`, `fps`): more is better.
    Higher,
}

impl Better {
    /// The direction of a metric from its name and unit: a rate (a unit or
    /// name per second, `fps`, `throughput`, `score`) is better higher;
    /// everything else (QtTest's walltime, CPU ticks, instructions, cycles,
    /// bytes, …) is better lower.
    pub fn of_metric(metric: &str, unit: &str) -> Better {
        let text = format!("{} {}", metric, unit).to_ascii_lowercase();
        let rate = [
            "/s",
            "/sec",
            "per second",
            "per_second",
            "persecond",
            "fps",
            "throughput",
            "score",
            "ops/",
        ]
        .iter()
        .any(|needle| text.contains(needle));
        if rate { Better::Higher } else { Better::Lower }
    }
}

/// The answer of a comparison, in the metric's direction: `Faster` is better
/// (less time, more throughput), `Slower` worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Faster,
    Slower,
    /// Any difference is smaller than what matters for this benchmark.
    Same,
    /// The samples cannot tell yet; more repetitions would.
    Unknown,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Faster,
        Verdict::Slower,
        Verdict::Same,
        Verdict::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::Same => "same",
            Verdict::Unknown => "unknown",
        }
    }

    /// Whether the verdict says the two sides differ.
    pub fn is_different(self) -> bool {
        matches!(self, Verdict::Faster | Verdict::Slower)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_of_common_metrics() {
        assert_eq!(
            Better::of_metric("WalltimeMilliseconds", "msecs"),
            Better::Lower
        );
        assert_eq!(
            Better::of_metric("InstructionReads", "instr."),
            Better::Lower
        );
        assert_eq!(Better::of_metric("CPUTicks", "ticks"), Better::Lower);
        assert_eq!(Better::of_metric("bytes_per_second", "B/s"), Better::Higher);
        assert_eq!(Better::of_metric("items", "items/s"), Better::Higher);
        assert_eq!(Better::of_metric("frames", "fps"), Better::Higher);
    }
}
