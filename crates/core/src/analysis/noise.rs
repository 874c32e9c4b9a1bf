//! A robust noise model of a series' history.
//!
//! The model is built from the finite values of the history, all divided by
//! their largest magnitude first (so no intermediate overflows; the model's
//! values are scaled back at the end):
//!
//! - **median** and **spread**: for one mode, the spread is the larger of
//!   the MAD scaled by 1.4826 and the interquartile range divided by 1.349
//!   (both the standard deviation for normal data; the MAD ignores half the
//!   values and can see only one of two alternating modes that were not told
//!   apart, the quartiles ignore a quarter and see both); when more than
//!   half the values are equal (MAD 0) the MAD falls back to 1.2533 × the
//!   mean absolute deviation from the median. The spread is 0 only for a
//!   constant series;
//! - **two modes** (histories of at least [`BIMODAL_MIN_N`] values): the
//!   sorted values are split at their largest gap, with at least 15 % (and
//!   four) of the values on each side; the history is bimodal when that gap
//!   is at least [`BIMODAL_GAP`] times the modes' spread (the two sides'
//!   pooled robust spread, or the smaller side's interquartile spread when
//!   larger, so that a few scattered outliers are not a mode). Tuned on
//!   simulated histories: normal, log-normal and 5 % outlier histories of 20
//!   to 200 values are flagged in under 0.3 % of cases, two equally likely
//!   modes 10 % apart with 1 % noise each in 92–96 %. A bimodal history's
//!   spread is the
//!   standard deviation of the two-mode mixture, `√(within² + w₁w₂(c₂ − c₁)²)`
//!   with the modes' weights `w`, medians `c` and pooled robust spread
//!   `within` (never less than the plain robust spread): when the two modes
//!   alternate, a comparison sees that much noise, however tight each mode is;
//! - **outliers**: values more than [`OUTLIER_Z`] robust standard deviations
//!   from the median (of their own mode, when bimodal) — the modified z-score
//!   rule of Iglewicz and Hoaglin; they are counted, and the median and MAD
//!   ignore them by construction;
//! - **cv**: `spread / |median|`; when the median is 0 the spread is taken
//!   relative to the mean magnitude of the values instead, and a series of
//!   zeros has cv 0 — never NaN or infinity;
//! - **min_detectable_effect**: the smallest relative change a rank
//!   comparison of [`REFERENCE_REPETITIONS`] repetitions per side detects at
//!   the default α = 0.01 with 80 % power:
//!   `(z₀.₉₉₅ + z₀.₈) · cv · √(2/r) · √(π/3)` (the last factor is the
//!   Mann–Whitney test's efficiency against the t-test), about 2.2 × cv.

use serde::{Deserialize, Serialize};

use super::dist;
use super::rank::sorted_median;

/// Repetitions per side [`NoiseModel::min_detectable_effect`] assumes.
pub const REFERENCE_REPETITIONS: u32 = 5;

/// A value this many robust standard deviations from its median is an outlier.
pub const OUTLIER_Z: f64 = 3.5;

/// A gap this many times the modes' robust spread makes a history bimodal.
pub const BIMODAL_GAP: f64 = 3.5;

/// Histories shorter than this are never called bimodal.
pub const BIMODAL_MIN_N: usize = 20;

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
    /// The model of `history` (oldest first); values that are not finite
    /// numbers are left out (and not counted in `n`). `None` below 3 finite
    /// values.
    pub fn of(history: &[f64]) -> Option<NoiseModel> {
        let mut values: Vec<f64> = history.iter().copied().filter(|v| v.is_finite()).collect();
        if values.len() < 3 {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let scale = values.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        if scale > 0.0 {
            values.iter_mut().for_each(|v| *v /= scale);
        }
        let median = sorted_median(&values);
        let mad = robust_scale(&values, median);
        let (spread, outliers, bimodal) = match two_modes(&values) {
            Some(modes) => (modes.spread.max(mad), modes.outliers, true),
            None => {
                // The MAD ignores up to half the values: when two modes
                // alternate (and were not told apart) it can see only one of
                // them. The interquartile spread (a quarter ignored) then sees
                // both; the larger of the two is kept.
                let quartiles = (quantile(&values, 0.75) - quantile(&values, 0.25)) / 1.349;
                let plain = mad.max(quartiles);
                (plain, count_outliers(&values, median, plain), false)
            }
        };
        let mean_abs = values.iter().map(|v| v.abs()).sum::<f64>() / values.len() as f64;
        let cv = relative(spread, median, mean_abs);
        let unscale = if scale > 0.0 { scale } else { 1.0 };
        Some(NoiseModel {
            n: values.len(),
            median: finite(median * unscale),
            spread: finite(spread * unscale),
            cv,
            outliers,
            bimodal,
            min_detectable_effect: finite(mde_factor(REFERENCE_REPETITIONS) * cv),
            reference_repetitions: REFERENCE_REPETITIONS,
        })
    }
}

/// `(z₀.₉₉₅ + z₀.₈) · √(2/r) · √(π/3)`: the detectable effect of `r`
/// repetitions per side, in units of the noise's cv.
fn mde_factor(repetitions: u32) -> f64 {
    let z = dist::normal_quantile(0.995) + dist::normal_quantile(0.8);
    let efficiency = (std::f64::consts::PI / 3.0).sqrt();
    z * (2.0 / f64::from(repetitions.max(1))).sqrt() * efficiency
}

/// `x`, with infinities clamped to the largest finite values (NaN, which
/// finite inputs never produce, reads as 0).
pub(super) fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

/// A spread relative to its median, or to `mean_abs` when the median is 0;
/// 0 when both are 0. Always finite.
pub(super) fn relative(spread: f64, median: f64, mean_abs: f64) -> f64 {
    let reference = if median != 0.0 {
        median.abs()
    } else {
        mean_abs
    };
    if reference > 0.0 && spread > 0.0 {
        finite(spread / reference)
    } else {
        0.0
    }
}

/// A robust standard deviation of `values` around `center`: 1.4826 × MAD,
/// or 1.2533 × the mean absolute deviation when the MAD is 0 (both are the
/// standard deviation for normal data). 0 only when every value is `center`.
pub(super) fn robust_scale(values: &[f64], center: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let mad = sorted_median(&deviations);
    if mad > 0.0 {
        1.4826 * mad
    } else {
        1.2533 * deviations.iter().sum::<f64>() / deviations.len() as f64
    }
}

/// Values more than [`OUTLIER_Z`] robust standard deviations from `center`.
fn count_outliers(values: &[f64], center: f64, scale: f64) -> usize {
    if scale <= 0.0 {
        return 0;
    }
    values
        .iter()
        .filter(|v| (*v - center).abs() > OUTLIER_Z * scale)
        .count()
}

/// A history's two modes, when it has two.
struct Modes {
    /// Standard deviation of the two-mode mixture.
    spread: f64,
    /// Outliers, each counted against its own mode.
    outliers: usize,
}

/// Splits ascending `sorted` at its largest gap that leaves at least 15 %
/// (and four) values on each side; two modes when that gap is at least
/// [`BIMODAL_GAP`] times the modes' spread: the pooled robust spread of the
/// two sides, or the smaller side's interquartile spread when larger (a few
/// scattered outliers can have a small MAD by chance; a mode is tight).
/// Histories shorter than [`BIMODAL_MIN_N`] are never bimodal: small
/// normal samples show such gaps too often.
fn two_modes(sorted: &[f64]) -> Option<Modes> {
    let n = sorted.len();
    let least = (n * 3).div_ceil(20).max(4);
    if n < BIMODAL_MIN_N || n < 2 * least {
        return None;
    }
    let (split, gap) = (least..=n - least)
        .map(|i| (i, sorted[i] - sorted[i - 1]))
        .fold(
            (0, 0.0),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        );
    if gap <= 0.0 {
        return None;
    }
    let (low, high) = sorted.split_at(split);
    let (c1, c2) = (sorted_median(low), sorted_median(high));
    let (s1, s2) = (robust_scale(low, c1), robust_scale(high, c2));
    let (w1, w2) = (low.len() as f64 / n as f64, high.len() as f64 / n as f64);
    let within = w1 * s1 * s1 + w2 * s2 * s2;
    let minority = if low.len() <= high.len() { low } else { high };
    // The interquartile range of a normal sample is 1.349 σ.
    let minority_spread = (quantile(minority, 0.75) - quantile(minority, 0.25)) / 1.349;
    if gap < BIMODAL_GAP * within.sqrt().max(minority_spread) {
        return None;
    }
    let between = w1 * w2 * (c2 - c1) * (c2 - c1);
    Some(Modes {
        spread: (within + between).sqrt(),
        outliers: count_outliers(low, c1, s1) + count_outliers(high, c2, s2),
    })
}

/// The `q` quantile of an ascending, non-empty slice (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + fraction * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests;
