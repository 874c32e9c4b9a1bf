//! Two samples of one benchmark on one host become a verdict.

use serde::{Deserialize, Serialize};

use super::noise::NoiseModel;
use super::{Better, Verdict};

/// Knobs of a comparison; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    /// p-value at or below which the sides are different (default 0.01).
    pub alpha: f64,
    /// The smallest relative change that matters (fraction, default 0.02):
    /// a difference below it is SAME even when significant. A series' noise
    /// model may raise it (never lower it).
    pub min_effect: f64,
    /// Most repetitions per side an UNKNOWN may ask for (default 50).
    pub max_repetitions: u32,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            alpha: 0.01,
            min_effect: 0.02,
            max_repetitions: 50,
        }
    }
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSummary {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Robust coefficient of variation (fraction).
    pub cv: f64,
}

/// The comparison of a baseline and a contender sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: SampleSummary,
    pub contender: SampleSummary,
    /// Relative change of the contender against the baseline (fraction:
    /// 0.05 is +5 %), in the metric's unit (not its direction).
    pub change: f64,
    /// 95 % confidence interval of `change` (fractions, low ≤ high).
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub verdict: Verdict,
    /// With UNKNOWN: repetitions per side that would most likely decide
    /// (capped at `max_repetitions`); `None` otherwise.
    pub more_repetitions: Option<u32>,
    /// Why the verdict is what it is, in a sentence.
    pub reason: String,
}

/// Why two samples cannot be compared at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("the {0} sample is empty")]
    Empty(&'static str),
    #[error("the {0} sample holds a value that is not a finite number")]
    NotFinite(&'static str),
}

/// Compares `baseline` with `contender` (one value per repetition) for a
/// metric that is better `better`; `noise`, the series' model, when known.
pub fn compare(
    baseline: &[f64],
    contender: &[f64],
    better: Better,
    noise: Option<&NoiseModel>,
    options: &CompareOptions,
) -> Result<Comparison, CompareError> {
    let _ = (baseline, contender, better, noise, options);
    todo!("helper: comparison")
}
