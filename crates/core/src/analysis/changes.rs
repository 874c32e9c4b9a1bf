//! Change-point detection over a series' history, incremental.

use serde::{Deserialize, Serialize};

/// Knobs of the detector; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeOptions {
    /// p-value at or below which a change point is reported.
    pub max_p_value: f64,
    /// Smallest relative change reported (fraction).
    pub min_change: f64,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions {
            max_p_value: 0.001,
            min_change: 0.0,
        }
    }
}

/// Whether the values went up or down at a change point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Up,
    Down,
}

/// One change point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePoint {
    /// Index of the first point after the change.
    pub index: usize,
    pub mean_before: f64,
    pub mean_after: f64,
    /// `mean_after / mean_before - 1`.
    pub change: f64,
    pub p_value: f64,
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
#[derive(Debug, Clone)]
pub struct Detector {
    options: ChangeOptions,
    values: Vec<f64>,
    changes: Vec<ChangePoint>,
}

impl Detector {
    pub fn new(options: ChangeOptions) -> Detector {
        Detector {
            options,
            values: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Appends one point (oldest first).
    pub fn push(&mut self, value: f64) {
        let _ = (&self.options, value);
        todo!("helper: incremental detection")
    }

    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for v in values {
            self.push(v);
        }
    }

    /// Points pushed so far.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The change points found so far, oldest first.
    pub fn changes(&self) -> &[ChangePoint] {
        &self.changes
    }
}

/// The change points of a whole series at once.
pub fn detect(values: &[f64], options: &ChangeOptions) -> Vec<ChangePoint> {
    let mut d = Detector::new(options.clone());
    d.extend(values.iter().copied());
    d.changes().to_vec()
}
