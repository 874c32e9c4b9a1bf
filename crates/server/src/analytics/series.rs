//! One series: listing, its points (with its noise model and fingerprint
//! changes), its change points, and acknowledgements of its changes; and
//! the change points of a series sent as CSV.

use std::collections::HashMap;

use testfleet_core::analysis::Better;
use testfleet_core::analysis::changes::detect;
use testfleet_core::analysis::csv::{CsvKey, CsvSeries};
use testfleet_core::analysis::noise::NoiseModel;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_store::{NewAck, SeriesFilter};
use testfleet_wire::analysis::{
    AckRequest, AckView, FingerprintView, SeriesChanges, SeriesPage, SeriesPoints, SeriesView,
};

use super::convert::{self, Place};
use super::{Analytics, AnalyticsError, Result};

/// Most points `GET /api/v1/series/{id}/points` answers with.
pub const MAX_POINTS: i64 = 10_000;
/// Points it answers with when not told.
pub const DEFAULT_POINTS: i64 = 1_000;
/// Most series a page holds.
pub const MAX_SERIES_PAGE: i64 = 1_000;
/// Values of a series' current level its noise model is built from, at most.
const NOISE_HISTORY: usize = 1_000;
/// Longest acknowledgement note, bug link and sha.
const MAX_NOTE: usize = 4_000;
const MAX_URL: usize = 2_000;
const MAX_SHA: usize = 200;
/// Shortest sha prefix an acknowledgement may name.
const MIN_SHA_PREFIX: usize = 4;

/// `GET /api/v1/series` after its parameters were checked.
#[derive(Debug, Clone, Default)]
pub struct SeriesQuery {
    pub host: Option<String>,
    pub program: Option<String>,
    pub function: Option<String>,
    pub metric: Option<String>,
    pub search: Option<String>,
    pub after: Option<i64>,
    pub limit: i64,
}

impl Analytics {
    /// A page of series in id order.
    pub async fn list_series(&self, q: SeriesQuery) -> Result<SeriesPage> {
        let limit = q.limit;
        let filter = SeriesFilter {
            host: q.host,
            program: q.program,
            function: q.function,
            metric: q.metric,
            search: q.search,
            after: q.after,
            // One more than asked: whether a next page exists.
            limit: limit + 1,
        };
        let mut rows = self.views().list_series(&filter).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_after = if more {
            rows.last().map(|s| s.id)
        } else {
            None
        };
        Ok(SeriesPage {
            series: rows.iter().map(convert::series_view).collect(),
            next_after,
        })
    }

    /// One series.
    pub async fn series_view(&self, id: i64) -> Result<SeriesView> {
        Ok(convert::series_view(&self.views().series(id).await?))
    }

    /// The newest `limit` points of a series at or after `since`, with the
    /// noise model of its current level (the values after its last change
    /// point) and the fingerprints its points were measured with.
    pub async fn points(
        &self,
        id: i64,
        since: Option<UnixMillis>,
        limit: i64,
    ) -> Result<SeriesPoints> {
        let series = self.views().series(id).await?;
        // One point more: the fingerprint before the first one answered.
        let mut read = self.views().series_points(id, since, limit + 1).await?;
        let before = if read.len() as i64 > limit {
            Some(read.remove(0))
        } else {
            None
        };
        let total = u64::try_from(series.points)
            .unwrap_or(0)
            .max(read.len() as u64);
        let first = total - read.len() as u64;
        let mut previous = before.map(|p| p.fingerprint);
        let mut points = Vec::with_capacity(read.len());
        let mut seen: Vec<(String, u64)> = Vec::new();
        for (i, p) in read.iter().enumerate() {
            let index = first + i as u64;
            let changed = previous.as_ref().is_some_and(|f| *f != p.fingerprint);
            if !seen.iter().any(|(h, _)| *h == p.fingerprint) {
                seen.push((p.fingerprint.clone(), index));
            }
            points.push(convert::point_view(p, index, changed));
            previous = Some(p.fingerprint.clone());
        }
        let hashes: Vec<String> = seen.iter().map(|(h, _)| h.clone()).collect();
        let machines: HashMap<String, _> = self
            .views()
            .fingerprints(&hashes)
            .await?
            .into_iter()
            .map(|f| (f.hash, f.machine))
            .collect();
        let fingerprints = seen
            .into_iter()
            .filter_map(|(hash, first_index)| {
                let machine = machines.get(&hash)?.clone();
                Some(FingerprintView {
                    hash,
                    first_index,
                    machine,
                })
            })
            .collect();
        let noise = self
            .with_entry(&series, |e| {
                NoiseModel::of(&e.current_values(NOISE_HISTORY))
            })
            .await?;
        Ok(SeriesPoints {
            series: convert::series_view(&series),
            noise,
            fingerprints,
            points,
        })
    }

    /// The change points of one series, oldest first, with the
    /// acknowledgements carried from the other metrics of its test.
    pub async fn changes(&self, id: i64) -> Result<SeriesChanges> {
        let series = self.views().series(id).await?;
        let groups = self.test_groups(&series).await?;
        let mut changes: Vec<_> = groups
            .into_iter()
            .flatten()
            .filter(|c| c.series_id == id)
            .collect();
        changes.sort_by_key(|c| c.index);
        Ok(SeriesChanges {
            series: Some(convert::series_view(&series)),
            points: u64::try_from(series.points).unwrap_or(0),
            changes,
        })
    }

    /// Acknowledges the change of series `id` that starts at `req.sha` (a
    /// sha of one of its points, or a unique prefix of one).
    pub async fn add_ack(&self, id: i64, req: AckRequest, by: String) -> Result<AckView> {
        let series = self.views().series(id).await?;
        let sha = req.sha.trim();
        if sha.len() < MIN_SHA_PREFIX || sha.len() > MAX_SHA {
            return Err(AnalyticsError::invalid(
                "sha",
                format!(
                    "give the sha of the change's first point ({MIN_SHA_PREFIX} to {MAX_SHA} characters)"
                ),
            ));
        }
        let note = req.note.trim();
        if note.is_empty() || note.chars().count() > MAX_NOTE {
            return Err(AnalyticsError::invalid(
                "note",
                format!("say why the change is acknowledged (1 to {MAX_NOTE} characters)"),
            ));
        }
        let bug_url = match req.bug_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(check_url(url)?.to_owned()),
        };
        let shas = self
            .with_entry(&series, |e| {
                let mut shas: Vec<String> = e
                    .points()
                    .iter()
                    .filter_map(|p| p.sha.clone())
                    .filter(|s| s.starts_with(sha))
                    .collect();
                shas.sort();
                shas.dedup();
                shas
            })
            .await?;
        let full = match shas.as_slice() {
            _ if shas.iter().any(|s| s == sha) => sha.to_owned(),
            [one] => one.clone(),
            [] => {
                return Err(AnalyticsError::invalid(
                    "sha",
                    format!("no point of series {id} was measured at sha `{sha}`"),
                ));
            }
            many => {
                return Err(AnalyticsError::invalid(
                    "sha",
                    format!(
                        "`{sha}` is a prefix of {} shas of series {id}; give more of it",
                        many.len()
                    ),
                ));
            }
        };
        let ack = NewAck {
            series_id: id,
            sha: full,
            note: note.to_owned(),
            bug_url,
            by,
        };
        let stored = self.coordinator.add_ack(&ack).await?;
        Ok(convert::ack_view(&stored))
    }

    /// The acknowledgements of series `id`, oldest first.
    pub async fn acks(&self, id: i64) -> Result<Vec<AckView>> {
        self.views().series(id).await?;
        let acks = self.views().acks(Some(&[id])).await?;
        Ok(acks.iter().map(convert::ack_view).collect())
    }

    /// The change points of a series sent as CSV (or a list of values):
    /// `series` is absent, a change's `index` is its position in the list,
    /// its `at` the time of a `time,value` CSV (empty otherwise). The
    /// metric's direction is unknown: an upward step is read as a regression,
    /// as for a time.
    pub fn changes_of(&self, csv: &CsvSeries) -> SeriesChanges {
        let values: Vec<f64> = csv.points.iter().map(|(_, v)| *v).collect();
        let changes = detect(&values, &self.changes)
            .iter()
            .map(|c| {
                let at = match csv.key {
                    CsvKey::Time => csv.points.get(c.index).and_then(|(t, _)| *t),
                    CsvKey::Index | CsvKey::None => None,
                };
                convert::change_view(
                    c,
                    Place {
                        series_id: 0,
                        metric: "",
                        unit: "",
                        better: Better::Lower,
                        index: c.index as u64,
                        at,
                        sha: None,
                    },
                )
            })
            .collect();
        SeriesChanges {
            series: None,
            points: values.len() as u64,
            changes,
        }
    }
}

/// A bug link: an `http` or `https` URL without spaces.
fn check_url(url: &str) -> Result<&str> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let host_ok = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if !scheme_ok || !host_ok || url.len() > MAX_URL || url.chars().any(char::is_whitespace) {
        return Err(AnalyticsError::invalid(
            "bug_url",
            format!("`{url}` is not an http(s) URL of at most {MAX_URL} characters"),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_links_are_http_urls() {
        assert!(check_url("https://bugreports.qt.io/browse/QTBUG-1").is_ok());
        assert!(check_url("http://b/1").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https:///x",
            "QTBUG-1",
            "https://a b",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.to_string().starts_with("bug_url: "), "{bad}: {e}");
        }
    }
}
