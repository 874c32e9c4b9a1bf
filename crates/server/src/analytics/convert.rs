//! Store rows into the JSON views of `testfleet_wire::analysis`: times as
//! RFC 3339, an empty data tag as none, a metric's direction from its name
//! and unit.

use testfleet_core::analysis::Better;
use testfleet_core::analysis::changes::ChangePoint;
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_store::{StoredAck, StoredPoint, StoredSeries};
use testfleet_wire::analysis::{AckView, ChangeView, PointView, SeriesView};

/// A data tag as stored (`""` for none) into the view's option.
pub(super) fn data_tag(tag: &str) -> Option<String> {
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// Which way a series' metric improves.
pub(super) fn better(series: &StoredSeries) -> Better {
    Better::of_metric(&series.key.metric, &series.key.unit)
}

pub(super) fn series_view(s: &StoredSeries) -> SeriesView {
    SeriesView {
        id: s.id,
        host: s.key.host.clone(),
        program: s.key.program.clone(),
        function: s.key.function.clone(),
        data_tag: data_tag(&s.key.data_tag),
        metric: s.key.metric.clone(),
        unit: s.key.unit.clone(),
        better: better(s),
        points: u64::try_from(s.points).unwrap_or(0),
        first_at: format_millis(s.first_at),
        last_at: format_millis(s.last_at),
        last_value: s.last_value,
    }
}

/// A point at position `index` of its series; `fingerprint_changed` when
/// the point before it was measured with another fingerprint.
pub(super) fn point_view(p: &StoredPoint, index: u64, fingerprint_changed: bool) -> PointView {
    PointView {
        id: p.id,
        index,
        value: p.value,
        repetition: u32::try_from(p.repetition).unwrap_or(0),
        sha: p.sha.clone(),
        branch: p.branch.clone(),
        integration: p.integration.clone(),
        job_id: p.job_id,
        task_id: p.task_id,
        attempt_id: p.attempt_id,
        at: format_millis(p.at),
        fingerprint: p.fingerprint.clone(),
        fingerprint_changed,
    }
}

pub(super) fn ack_view(a: &StoredAck) -> AckView {
    AckView {
        id: a.id,
        series_id: a.series_id,
        sha: a.sha.clone(),
        note: a.note.clone(),
        bug_url: a.bug_url.clone(),
        by: a.by.clone(),
        created_at: format_millis(a.created_at),
    }
}

/// Where a change point is in a series' history.
pub(super) struct Place<'a> {
    pub series_id: i64,
    pub metric: &'a str,
    pub unit: &'a str,
    pub better: Better,
    /// Index of the first point after the change in the whole series.
    pub index: u64,
    /// When the first point after the change was measured, when known.
    pub at: Option<UnixMillis>,
    pub sha: Option<String>,
}

pub(super) fn change_view(c: &ChangePoint, place: Place<'_>) -> ChangeView {
    ChangeView {
        series_id: place.series_id,
        metric: place.metric.to_owned(),
        unit: place.unit.to_owned(),
        index: place.index,
        at: place.at.map(format_millis).unwrap_or_default(),
        sha: place.sha,
        mean_before: c.mean_before,
        mean_after: c.mean_after,
        change_pct: finite(c.change * 100.0),
        p_value: c.p_value,
        step: c.step,
        regression: c.is_regression(place.better),
        ack: None,
    }
}

/// JSON has no NaN or infinity: a change from a zero mean reads as 0.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}
