//! A robust noise model of a series' history.

use serde::{Deserialize, Serialize};

/// What a series' history says about its noise. Robust: a few wild values
/// (×0.8–×2 outliers) do not move it, and a bimodal history is recognized
/// rather than read as one wide mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseModel {
    /// Values the model was built from.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// Robust standard deviation (scaled MAD or similar), in the metric's unit.
    pub spread: f64,
    /// `spread / median`: the coefficient of variation, as a fraction.
    pub cv: f64,
    /// Values the model treated as outliers.
    pub outliers: usize,
    /// True when the history has two modes (QtTest walltime often does).
    pub bimodal: bool,
    /// The smallest relative change (fraction, e.g. 0.03 for 3 %) that a
    /// comparison of `reference_repetitions` runs per side would detect.
    pub min_detectable_effect: f64,
    /// The repetitions per side `min_detectable_effect` assumes.
    pub reference_repetitions: u32,
}

impl NoiseModel {
    /// The model of `history` (oldest first). `None` below 3 finite values.
    pub fn of(history: &[f64]) -> Option<NoiseModel> {
        let _ = history;
        todo!("helper: noise model")
    }
}
