//! JSON bodies of the analytics endpoints: series, points, change points,
//! regressions, comparisons and acknowledgements (SPEC §11).

use serde::{Deserialize, Serialize};
use testfleet_core::analysis::changes::Step;
use testfleet_core::analysis::compare::Comparison;
use testfleet_core::analysis::noise::NoiseModel;
use testfleet_core::analysis::{Better, Verdict};

use crate::protocol::MachineInfo;

/// One metric of one benchmark (test program, function, data tag) on one
/// host. Series never mix hosts; a change of the host's fingerprint is
/// marked in its points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    pub id: i64,
    pub host: String,
    pub program: String,
    pub function: String,
    pub data_tag: Option<String>,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub points: u64,
    /// RFC 3339.
    pub first_at: String,
    pub last_at: String,
    pub last_value: f64,
}

/// `GET /api/v1/series`: a page of series, `next_after` to read on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPage {
    pub series: Vec<SeriesView>,
    pub next_after: Option<i64>,
}

/// One value of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointView {
    pub id: i64,
    /// Position in the series (0 = oldest stored point).
    pub index: u64,
    pub value: f64,
    /// Which run of a `repeat = N` task (0 for the first).
    pub repetition: u32,
    pub sha: Option<String>,
    pub branch: Option<String>,
    pub integration: Option<String>,
    pub job_id: i64,
    pub task_id: i64,
    pub attempt_id: i64,
    /// RFC 3339: the integration's time, else when the attempt finished.
    pub at: String,
    /// The host's machine fingerprint when the value was measured.
    pub fingerprint: String,
    /// True on the first point measured with a new fingerprint.
    pub fingerprint_changed: bool,
}

/// A machine fingerprint seen in a series, from the point where it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintView {
    pub hash: String,
    pub first_index: u64,
    pub machine: MachineInfo,
}

/// `GET /api/v1/series/{id}/points`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    pub series: SeriesView,
    pub noise: Option<NoiseModel>,
    pub fingerprints: Vec<FingerprintView>,
    pub points: Vec<PointView>,
}

/// A change point of a series, placed in time and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeView {
    pub series_id: i64,
    pub metric: String,
    pub unit: String,
    /// Index of the first point after the change.
    pub index: u64,
    /// RFC 3339: when the first point after the change was measured.
    pub at: String,
    pub sha: Option<String>,
    pub mean_before: f64,
    pub mean_after: f64,
    /// `(mean_after / mean_before - 1) × 100`.
    pub change_pct: f64,
    pub p_value: f64,
    pub step: Step,
    /// Worse in the metric's direction.
    pub regression: bool,
    pub ack: Option<AckView>,
}

/// `GET /api/v1/series/{id}/changes` (and `testfleet changes FILE.csv`,
/// where `series` is absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesChanges {
    pub series: Option<SeriesView>,
    pub points: u64,
    pub changes: Vec<ChangeView>,
}

/// The change points of the metrics of one test at one place in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeGroup {
    pub host: String,
    pub program: String,
    pub function: String,
    pub data_tag: Option<String>,
    pub sha: Option<String>,
    /// RFC 3339, the earliest change of the group.
    pub at: String,
    pub changes: Vec<ChangeView>,
    /// True when every change of the group is acknowledged.
    pub acknowledged: bool,
}

/// `GET /api/v1/regressions`: regressions across all series, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionsView {
    /// RFC 3339, the `since` asked for.
    pub since: Option<String>,
    pub series_scanned: u64,
    pub groups: Vec<ChangeGroup>,
}

/// `POST /api/v1/series/{id}/acks`: acknowledge the change that starts at `sha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRequest {
    pub sha: String,
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bug_url: Option<String>,
}

/// An acknowledged regression: carried forward to the same change in every
/// metric of the test, and kept across re-detections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckView {
    pub id: i64,
    pub series_id: i64,
    pub sha: String,
    pub note: String,
    pub bug_url: Option<String>,
    pub by: String,
    /// RFC 3339.
    pub created_at: String,
}

/// How a benchmark fared in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareStatus {
    /// Both sides have values: see `comparison`.
    Compared,
    /// Only the contender has values.
    New,
    /// Only the baseline has values.
    Missing,
}

/// One benchmark metric on one host in a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub host: String,
    pub program: String,
    pub function: String,
    pub data_tag: Option<String>,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub status: CompareStatus,
    pub comparison: Option<Comparison>,
    /// The baseline series (for plots), when known.
    pub series_id: Option<i64>,
}

impl CompareRow {
    pub fn verdict(&self) -> Option<Verdict> {
        self.comparison.as_ref().map(|c| c.verdict)
    }
}

/// Counts of a comparison's rows per verdict and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    pub faster: u64,
    pub slower: u64,
    pub same: u64,
    pub unknown: u64,
    pub new: u64,
    pub missing: u64,
}

/// `GET /api/v1/compare?baseline=…&contender=…` and `POST /api/v1/compare`
/// (with confirmation): every benchmark of two jobs, or two sets of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareView {
    pub baseline_jobs: Vec<i64>,
    pub contender_jobs: Vec<i64>,
    pub counts: VerdictCounts,
    /// Sorted by severity: slower first, then unknown, faster, same, new, missing.
    pub rows: Vec<CompareRow>,
    /// Confirmation rounds run (re-runs of both sides); 0 without `--confirm`.
    pub rounds: u32,
    /// Jobs submitted by confirmation rounds, per side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirm_jobs: Vec<i64>,
}

/// `POST /api/v1/compare`: compare, re-running both sides while a verdict is
/// UNKNOWN, up to `max_rounds` rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRequest {
    pub baseline: Vec<i64>,
    pub contender: Vec<i64>,
    #[serde(default)]
    pub confirm: bool,
    /// Confirmation rounds at most (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}
