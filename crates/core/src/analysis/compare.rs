//! Two samples of one benchmark on one host become a verdict.
//!
//! The method (docs/analytics.md, "Comparing runs"):
//!
//! - **change**: the Hodges–Lehmann shift (the median of all pairwise
//!   differences contender − baseline) relative to the baseline's median;
//!   its 95 % confidence interval is Moses' distribution-free interval
//!   (order statistics of the same differences). Both are robust to
//!   outliers and need no normality.
//! - **p-value**: Pinpoint's — the smaller of the Mann–Whitney U and the
//!   two-sample Kolmogorov–Smirnov p-values — adjusted for taking the smaller
//!   of two (an exact permutation p-value of that minimum for small samples,
//!   doubled beyond), so an A/A comparison is significant at most `alpha`
//!   of the time.
//! - **effect floor**: the smallest change that matters,
//!   `max(min_effect, z₁₋α/₂ · noise.cv)` (see [`effect_floor`]).
//! - **verdict**: faster / slower when `p ≤ alpha`, `|change| ≥ floor` and the
//!   interval excludes 0; same when the whole interval lies within `±floor`
//!   (and is a true 95 % interval: samples as small as 3 + 4 have none);
//!   unknown otherwise, with the repetitions per side that would most likely
//!   decide. A side with a single value never decides.
//!
//! All values are divided by the largest magnitude of both samples first, so
//! no difference overflows; every output is finite for finite input.

use serde::{Deserialize, Serialize};

use super::noise::{NoiseModel, finite, relative, robust_scale};
use super::rank::{combined_p_value, hodges_lehmann, sorted_median};
use super::{Better, Verdict, dist};

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
    /// A DIFFERENT verdict also needs Welch's t-test on the values to give
    /// `p ≤ strict_alpha` (default 0.001). With 5 runs a side the rank tests
    /// can only say "completely separated" (p = 0.008), which two A/A samples
    /// are about 1 % of the time; the t-test also weighs how far apart they
    /// are against their spread, so A/A runs stay SAME or UNKNOWN.
    #[serde(default = "default_strict_alpha")]
    pub strict_alpha: f64,
}

fn default_strict_alpha() -> f64 {
    0.001
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            alpha: 0.01,
            min_effect: 0.02,
            max_repetitions: 50,
            strict_alpha: default_strict_alpha(),
        }
    }
}

impl CompareOptions {
    /// Refuses options no comparison can use.
    pub fn validate(&self) -> Result<(), CompareError> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(CompareError::BadOption {
                option: "alpha",
                value: self.alpha,
                expected: "a probability strictly between 0 and 1",
            });
        }
        if !(self.min_effect.is_finite() && self.min_effect >= 0.0) {
            return Err(CompareError::BadOption {
                option: "min_effect",
                value: self.min_effect,
                expected: "a finite fraction of at least 0",
            });
        }
        if !(self.strict_alpha > 0.0 && self.strict_alpha < 1.0) {
            return Err(CompareError::BadOption {
                option: "strict_alpha",
                value: self.strict_alpha,
                expected: "a probability strictly between 0 and 1",
            });
        }
        if self.max_repetitions == 0 {
            return Err(CompareError::BadOption {
                option: "max_repetitions",
                value: 0.0,
                expected: "at least 1",
            });
        }
        Ok(())
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
    /// With UNKNOWN: how many more repetitions per side would most likely
    /// decide (at least 1, capped at `max_repetitions`); `None` otherwise.
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
    /// An option (or the noise model's cv) no comparison can use.
    #[error("{option} is {value}, expected {expected}")]
    BadOption {
        option: &'static str,
        value: f64,
        expected: &'static str,
    },
}

/// The smallest relative change that matters: `options.min_effect`, raised
/// to `z₁₋α/₂ · noise.cv` when the series' noise model says so (2.58 × cv at
/// the default α = 0.01). The model's cv is the series' run-to-run
/// variation; a shift within that band at the comparison's own confidence
/// is what the series does by itself (Bencher's z-score threshold on a
/// series' history works the same way), however many repetitions a run has.
pub fn effect_floor(
    noise: Option<&NoiseModel>,
    options: &CompareOptions,
) -> Result<f64, CompareError> {
    options.validate()?;
    let from_noise = match noise {
        None => 0.0,
        Some(model) if model.cv.is_finite() && model.cv >= 0.0 => {
            finite(dist::normal_quantile(1.0 - options.alpha / 2.0) * model.cv)
        }
        Some(model) => {
            return Err(CompareError::BadOption {
                option: "noise.cv",
                value: model.cv,
                expected: "a finite fraction of at least 0",
            });
        }
    };
    Ok(options.min_effect.max(from_noise))
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
    check(baseline, "baseline")?;
    check(contender, "contender")?;
    let floor = effect_floor(noise, options)?;

    let largest = baseline
        .iter()
        .chain(contender)
        .fold(0.0f64, |acc, v| acc.max(v.abs()));
    let unscale = if largest > 0.0 { largest } else { 1.0 };
    let b = scaled_sorted(baseline, unscale);
    let c = scaled_sorted(contender, unscale);
    let (mb, mc) = (sorted_median(&b), sorted_median(&c));
    let mean_abs = b.iter().chain(&c).map(|v| v.abs()).sum::<f64>() / (b.len() + c.len()) as f64;
    // The change is relative to the baseline's median, or to the mean
    // magnitude of all values when that median is 0 (0 when all are 0).
    let reference = if mb != 0.0 { mb.abs() } else { mean_abs };
    let rel = |x: f64| {
        if reference > 0.0 {
            finite(x / reference)
        } else {
            0.0
        }
    };

    let shift = hodges_lehmann(&b, &c);
    let (change, ci_low, ci_high) = (rel(shift.estimate), rel(shift.low), rel(shift.high));
    let p_value = combined_p_value(&b, &c);
    let (sb, sc) = (robust_scale(&b, mb), robust_scale(&c, mc));
    let (nb, nc) = (b.len() as f64, c.len() as f64);
    let pooled_cv = rel(((nb * sb * sb + nc * sc * sc) / (nb + nc)).sqrt());

    let fewest = b.len().min(c.len());
    let excludes_zero = ci_low > 0.0 || ci_high < 0.0;
    let welch = welch_p_value(&b, &c);
    let verdict = if fewest >= 2
        && p_value <= options.alpha
        && welch <= options.strict_alpha
        && change.abs() >= floor
        && excludes_zero
    {
        let worse = match better {
            Better::Lower => change > 0.0,
            Better::Higher => change < 0.0,
        };
        if worse {
            Verdict::Slower
        } else {
            Verdict::Faster
        }
    } else if fewest >= 2 && shift.proper && ci_low >= -floor && ci_high <= floor {
        Verdict::Same
    } else {
        Verdict::Unknown
    };
    let more_repetitions = (verdict == Verdict::Unknown)
        .then(|| repetitions_to_decide(pooled_cv, floor, fewest, options));

    let figures = Figures {
        change,
        ci_low,
        ci_high,
        p_value,
        welch,
        strict_alpha: options.strict_alpha,
        floor,
        fewest,
    };
    Ok(Comparison {
        baseline: summarize(&b, unscale),
        contender: summarize(&c, unscale),
        change,
        ci_low,
        ci_high,
        p_value,
        verdict,
        more_repetitions,
        reason: figures.reason(verdict, more_repetitions),
    })
}

/// Welch's two-sided t-test p-value of the two (scaled) samples; 1 when a
/// side has fewer than 2 values. Two constant samples are 0 apart when
/// their values differ, 1 apart when equal.
fn welch_p_value(b: &[f64], c: &[f64]) -> f64 {
    if b.len() < 2 || c.len() < 2 {
        return 1.0;
    }
    let moments = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let (nb, mb, vb) = moments(b);
    let (nc, mc, vc) = moments(c);
    let (sb, sc) = (vb / nb, vc / nc);
    let se2 = sb + sc;
    if se2 <= 0.0 {
        return if mb == mc { 1.0 } else { 0.0 };
    }
    let t = (mc - mb) / se2.sqrt();
    let df = se2 * se2 / (sb * sb / (nb - 1.0) + sc * sc / (nc - 1.0));
    finite(dist::student_t_two_sided(t, df))
}

fn check(sample: &[f64], side: &'static str) -> Result<(), CompareError> {
    if sample.is_empty() {
        return Err(CompareError::Empty(side));
    }
    if sample.iter().any(|v| !v.is_finite()) {
        return Err(CompareError::NotFinite(side));
    }
    Ok(())
}

fn scaled_sorted(values: &[f64], unscale: f64) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().map(|x| x / unscale).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Summary of an ascending, scaled, non-empty sample, in the metric's unit.
fn summarize(sorted: &[f64], unscale: f64) -> SampleSummary {
    let median = sorted_median(sorted);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    let mean_abs = sorted.iter().map(|v| v.abs()).sum::<f64>() / sorted.len() as f64;
    SampleSummary {
        n: sorted.len(),
        median: finite(median * unscale),
        mean: finite(mean * unscale),
        min: finite(sorted[0] * unscale),
        max: finite(sorted[sorted.len() - 1] * unscale),
        cv: relative(robust_scale(sorted, median), median, mean_abs),
    }
}

/// More repetitions per side that would most likely decide: the size per
/// side at which an effect of `floor` gives `p ≤ alpha` with 80 % power
/// under the observed noise, `2 (z₁₋α/₂ + z₀.₈)² (π/3) (cv / floor)²` (the
/// normal approximation, with the rank test's efficiency), and never fewer
/// than the smallest size whose exact test can reach `alpha` at all (5 at
/// α = 0.01). When that says the current size should do, doubling is
/// suggested. At least 1, at most `max_repetitions`.
fn repetitions_to_decide(cv: f64, floor: f64, current: usize, options: &CompareOptions) -> u32 {
    let cap = options.max_repetitions;
    let z = dist::normal_quantile(1.0 - options.strict_alpha.min(options.alpha) / 2.0)
        + dist::normal_quantile(0.8);
    let by_power = if cv <= 0.0 {
        0.0
    } else if floor <= 0.0 {
        f64::INFINITY
    } else {
        (2.0 * z * z * std::f64::consts::PI / 3.0 * (cv / floor).powi(2)).ceil()
    };
    let mut needed = by_power.min(1e6) as usize;
    needed = needed.max(smallest_deciding_size(options.alpha));
    if needed <= current {
        needed = current.saturating_mul(2);
    }
    let more = u32::try_from(needed - current).unwrap_or(u32::MAX);
    more.clamp(1, cap)
}

/// The smallest size per side at which complete separation is significant
/// at `alpha` and a 95 % interval exists.
fn smallest_deciding_size(alpha: f64) -> usize {
    (2..=64)
        .find(|&r| {
            let splits = dist::binomial_count(2 * r, r) as f64;
            // Exact up to the enumeration limit, doubled (Bonferroni) beyond.
            let least_p = if splits <= 5_000.0 {
                2.0 / splits
            } else {
                4.0 / splits
            };
            splits >= 40.0 && least_p <= alpha
        })
        .unwrap_or(64)
}

/// The numbers a reason sentence quotes.
struct Figures {
    change: f64,
    ci_low: f64,
    ci_high: f64,
    p_value: f64,
    /// Welch's t-test p-value and the level it must reach.
    welch: f64,
    strict_alpha: f64,
    floor: f64,
    fewest: usize,
}

impl Figures {
    fn reason(&self, verdict: Verdict, more: Option<u32>) -> String {
        let interval = format!(
            "change {} (95 % CI {} to {}, p = {})",
            pct(self.change),
            pct(self.ci_low),
            pct(self.ci_high),
            p(self.p_value)
        );
        let floor = format!("{:.2} %", self.floor * 100.0);
        match verdict {
            Verdict::Faster | Verdict::Slower => {
                format!("{verdict}: {interval} is significant and beyond the ±{floor} that matters")
            }
            Verdict::Same => format!("same: {interval} lies within the ±{floor} that matters"),
            Verdict::Unknown => {
                let more = more.unwrap_or(1);
                if self.fewest < 2 {
                    format!(
                        "unknown: a side with one repetition cannot tell a change from noise; \
                         {more} more per side would most likely decide"
                    )
                } else if self.p_value <= 0.01_f64.max(self.strict_alpha)
                    && self.welch > self.strict_alpha
                    && self.change.abs() >= self.floor
                {
                    format!(
                        "unknown: {interval} is beyond ±{floor}, but the runs are too few or too \
                         spread for it to be sure (t-test p = {}, needs ≤ {}); {more} more \
                         repetitions per side would most likely decide",
                        p(self.welch),
                        p(self.strict_alpha)
                    )
                } else {
                    format!(
                        "unknown: {interval} is neither clearly beyond nor clearly within ±{floor}; \
                         {more} more repetitions per side would most likely decide"
                    )
                }
            }
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:+.2} %", x * 100.0)
}

fn p(x: f64) -> String {
    if x >= 0.001 {
        format!("{x:.4}")
    } else {
        format!("{x:.1e}")
    }
}

#[cfg(test)]
mod tests;
