//! Change-point detection over a series' history, incremental.
//!
//! The method (docs/analytics.md, "Change points"): a rank-sum
//! (Mann–Whitney) scan over a sliding window that starts at the last change
//! point and holds at most [`ChangeOptions::window`] points. After each new
//! point, every split of the window leaving at least
//! [`ChangeOptions::min_segment`] points on each side is scored by its
//! standardized rank sum; when the best split's two-sided p-value is at or
//! below [`ChangeOptions::max_p_value`], the split becomes a change point, the
//! part of the window before it is searched once more for an earlier change
//! (binary segmentation), and the window restarts at the change.
//!
//! Ranks make the false-alert rate the same for every kind of independent
//! noise (normal, log-normal, bimodal, rare wild outliers) and make the
//! result invariant to the scale of the values. A new point costs two passes
//! over the window (`O(window)`), whatever the length of the history.

mod locate;
mod ranks;

use serde::{Deserialize, Serialize};

use ranks::{RankWindow, Split, two_sided_p};

/// How far (points) from the rank scan's split the place of a change is
/// looked for again (see `locate`).
const LOCATE_REACH: usize = 10;

/// Knobs of the detector; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangeOptions {
    /// Two-sided p-value of the rank-sum test of one split at or below which
    /// the split is a change point. The test is repeated at every split and
    /// every new point, so this is far smaller than a single test's level:
    /// the default, 1e-6, gives fewer than 0.5 false alerts per 1,000 points
    /// of any independent noise (measured by `cargo xtask accuracy`).
    pub max_p_value: f64,
    /// Smallest relative change reported (fraction, e.g. 0.02 for 2 %). A
    /// significant but smaller change still splits the history (the means
    /// of the changes on either side are those of its segments); it is only
    /// left out of the report.
    pub min_change: f64,
    /// Most points the scan looks at: the points since the last change point,
    /// at most this many of the newest. Larger finds smaller steps, later,
    /// at a cost per point proportional to it.
    pub window: usize,
    /// Fewest points on each side of a change point (at least 2): a change is
    /// reported once this many points after it are known.
    pub min_segment: usize,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions {
            max_p_value: 1e-6,
            min_change: 0.0,
            window: 300,
            min_segment: 6,
        }
    }
}

/// Why a [`ChangeOptions`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeOptionsError {
    /// `max_p_value` is not in (0, 1].
    #[error("max_p_value must be in (0, 1], not {0}")]
    MaxPValue(f64),
    /// `min_change` is negative or not finite.
    #[error("min_change must be a finite fraction ≥ 0, not {0}")]
    MinChange(f64),
    /// `min_segment` is below 2.
    #[error("min_segment must be at least 2, not {0}")]
    MinSegment(usize),
    /// `window` cannot hold two segments.
    #[error("window must be at least 2 × min_segment ({min}), not {window}")]
    Window {
        /// The refused window.
        window: usize,
        /// The smallest window accepted with this `min_segment`.
        min: usize,
    },
}

impl ChangeOptions {
    /// Checks the options: a clear error for each out-of-range knob.
    pub fn validate(&self) -> Result<(), ChangeOptionsError> {
        if !(self.max_p_value > 0.0 && self.max_p_value <= 1.0) {
            return Err(ChangeOptionsError::MaxPValue(self.max_p_value));
        }
        if !(self.min_change.is_finite() && self.min_change >= 0.0) {
            return Err(ChangeOptionsError::MinChange(self.min_change));
        }
        if self.min_segment < 2 {
            return Err(ChangeOptionsError::MinSegment(self.min_segment));
        }
        if self.window < 2 * self.min_segment {
            return Err(ChangeOptionsError::Window {
                window: self.window,
                min: 2 * self.min_segment,
            });
        }
        Ok(())
    }

    /// The options with every out-of-range knob brought to its nearest
    /// valid value (a non-number p-value or change to the default).
    fn sanitized(&self) -> ChangeOptions {
        let defaults = ChangeOptions::default();
        let max_p_value = if self.max_p_value.is_nan() {
            defaults.max_p_value
        } else {
            self.max_p_value.clamp(f64::MIN_POSITIVE, 1.0)
        };
        let min_change = if self.min_change.is_finite() {
            self.min_change.max(0.0)
        } else {
            defaults.min_change
        };
        let min_segment = self.min_segment.max(2);
        ChangeOptions {
            max_p_value,
            min_change,
            window: self.window.max(2 * min_segment),
            min_segment,
        }
    }
}

/// Whether the values went up or down at a change point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The values after the change rank higher.
    Up,
    /// The values after the change rank lower.
    Down,
}

/// One change point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePoint {
    /// Index of the first point after the change, counting every point
    /// pushed (skipped non-finite ones too).
    pub index: usize,
    /// Mean of the segment before the change (from the previous change
    /// point, or the first point).
    pub mean_before: f64,
    /// Mean of the segment after the change (up to the next change point, or
    /// the newest point: it moves as points arrive until the next change).
    pub mean_after: f64,
    /// `(mean_after − mean_before) / |mean_before|` (that is
    /// `mean_after / mean_before − 1` for positive values); 0 when
    /// `mean_before` is 0.
    pub change: f64,
    /// Two-sided p-value of the rank-sum test that found the change (one
    /// split, not corrected for the scan).
    pub p_value: f64,
    /// The direction of the rank-sum test (it agrees with `change` unless
    /// a few wild values pull the means the other way).
    pub step: Step,
}

impl ChangePoint {
    /// Whether this change makes a metric that is better `better` worse.
    pub fn is_regression(&self, better: super::Better) -> bool {
        match better {
            super::Better::Lower => self.step == Step::Up,
            super::Better::Higher => self.step == Step::Down,
        }
    }
}

/// An incremental detector: push points as they arrive; a new point does
/// not recompute the whole series.
///
/// Non-finite values (NaN, ±∞) are skipped: they count in [`Detector::len`]
/// and keep their index, but take no part in the analysis. Pushing the
/// points one by one and [`detect`] over the same points give the same
/// change points (`detect` is the pushes).
#[derive(Debug, Clone)]
pub struct Detector {
    options: ChangeOptions,
    /// Points pushed, skipped ones included.
    pushed: usize,
    /// The finite values, oldest first.
    values: Vec<f64>,
    /// The push index of each finite value.
    index_of: Vec<usize>,
    /// Where each segment after the first starts (indexes into `values`).
    boundaries: Vec<usize>,
    /// The scan window: `values[window_start..]`, at most `options.window`.
    window: RankWindow,
    window_start: usize,
    /// Sum of the values since the last boundary.
    open_sum: f64,
    /// Whether the last boundary is the last reported change (its
    /// `mean_after` follows new points).
    open_reported: bool,
    changes: Vec<ChangePoint>,
}

impl Detector {
    /// A detector with `options`; an out-of-range knob is brought to its
    /// nearest valid value (see [`Detector::try_new`] to refuse it instead).
    pub fn new(options: ChangeOptions) -> Detector {
        Detector {
            options: options.sanitized(),
            pushed: 0,
            values: Vec::new(),
            index_of: Vec::new(),
            boundaries: Vec::new(),
            window: RankWindow::default(),
            window_start: 0,
            open_sum: 0.0,
            open_reported: false,
            changes: Vec::new(),
        }
    }

    /// A detector with `options`, refused when a knob is out of range.
    pub fn try_new(options: ChangeOptions) -> Result<Detector, ChangeOptionsError> {
        options.validate()?;
        Ok(Detector::new(options))
    }

    /// The options in use.
    pub fn options(&self) -> &ChangeOptions {
        &self.options
    }

    /// Appends one point (oldest first). Costs `O(window)`, plus
    /// `O(window log window)` when it completes a change point.
    pub fn push(&mut self, value: f64) {
        let index = self.pushed;
        self.pushed += 1;
        if !value.is_finite() {
            return;
        }
        self.values.push(value);
        self.index_of.push(index);
        self.open_sum += value;
        self.window.push(value);
        if self.window.len() > self.options.window {
            self.window.pop_front();
            self.window_start += 1;
        }
        while let Some(split) = self.significant(&self.window) {
            self.confirm(split);
        }
        if self.open_reported {
            let n = self.values.len() - self.last_boundary();
            let mean = self.open_sum / n as f64;
            if let Some(last) = self.changes.last_mut() {
                last.mean_after = mean;
                last.change = relative_change(last.mean_before, mean);
            }
        }
    }

    /// Appends points in order, as [`Detector::push`] each.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for v in values {
            self.push(v);
        }
    }

    /// Points pushed so far, skipped non-finite ones included.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// Whether no point was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The change points found so far, oldest first.
    pub fn changes(&self) -> &[ChangePoint] {
        &self.changes
    }

    fn last_boundary(&self) -> usize {
        self.boundaries.last().copied().unwrap_or(0)
    }

    /// The best split of `window` when it is significant.
    fn significant(&self, window: &RankWindow) -> Option<Split> {
        window
            .best_split(self.options.min_segment)
            .filter(|s| two_sided_p(s.z) <= self.options.max_p_value)
    }

    /// Makes the split `split` of the window a change point, with any
    /// earlier change the part of the window before it still holds, and
    /// restarts the window there.
    fn confirm(&mut self, split: Split) {
        let at = self.window_start + self.place(&self.values[self.window_start..], split.at);
        let mut found = Vec::new();
        self.bisect(self.window_start, at, &mut found);
        found.push((at, split.z));
        for (boundary, z) in found {
            self.add_boundary(boundary, z);
        }
        self.window = RankWindow::from_slice(&self.values[at..]);
        self.window_start = at;
    }

    /// The place of a change the scan put at `around` in `values`.
    fn place(&self, values: &[f64], around: usize) -> usize {
        locate::refine(values, around, LOCATE_REACH, self.options.min_segment)
    }

    /// Binary segmentation of `values[from..to]`: its significant splits,
    /// oldest first, appended to `found`.
    fn bisect(&self, from: usize, to: usize, found: &mut Vec<(usize, f64)>) {
        if to - from < 2 * self.options.min_segment {
            return;
        }
        let part = RankWindow::from_slice(&self.values[from..to]);
        if let Some(split) = self.significant(&part) {
            let at = from + self.place(&self.values[from..to], split.at);
            self.bisect(from, at, found);
            found.push((at, split.z));
            self.bisect(at, to, found);
        }
    }

    /// Closes the open segment at `at` (an index into `values`) and reports
    /// the change there when it is large enough.
    fn add_boundary(&mut self, at: usize, z: f64) {
        let before = &self.values[self.last_boundary()..at];
        let mean_before = mean(before);
        if self.open_reported
            && let Some(last) = self.changes.last_mut()
        {
            last.mean_after = mean_before;
            last.change = relative_change(last.mean_before, mean_before);
        }
        let after = &self.values[at..];
        self.open_sum = after.iter().sum();
        let mean_after = self.open_sum / after.len() as f64;
        let change = relative_change(mean_before, mean_after);
        self.boundaries.push(at);
        self.open_reported = change.abs() >= self.options.min_change;
        if self.open_reported {
            self.changes.push(ChangePoint {
                index: self.index_of[at],
                mean_before,
                mean_after,
                change,
                p_value: two_sided_p(z),
                step: if z > 0.0 { Step::Down } else { Step::Up },
            });
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn relative_change(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        (after - before) / before.abs()
    }
}

/// The change points of a whole series at once (the same as pushing its
/// points one by one into a [`Detector`]).
pub fn detect(values: &[f64], options: &ChangeOptions) -> Vec<ChangePoint> {
    let mut d = Detector::new(options.clone());
    d.extend(values.iter().copied());
    d.changes().to_vec()
}

#[cfg(test)]
mod tests;
