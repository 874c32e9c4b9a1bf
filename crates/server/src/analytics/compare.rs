//! Comparison of two sets of jobs, benchmark by benchmark.
//!
//! Series are paired by their key (host, program, function, data tag,
//! metric, unit): a benchmark is only ever compared with itself on the same
//! host. Each side's sample is every point the side's jobs gave the series
//! (every attempt and repetition). The noise model comes from the series'
//! history before the baseline (its newest [`NOISE_HISTORY`] points older
//! than the baseline's first, from other jobs), when it holds at least
//! [`MIN_NOISE_POINTS`]. Rows are sorted by severity (slower, unknown,
//! faster, same, new, missing), then by the size of the change.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use testfleet_core::analysis::Verdict;
use testfleet_core::analysis::compare::{CompareOptions, compare};
use testfleet_core::analysis::noise::NoiseModel;
use testfleet_store::{SeriesKey, SeriesPoints, StoreError};
use testfleet_wire::analysis::{CompareRow, CompareStatus, CompareView, VerdictCounts};

use super::convert;
use super::{Analytics, AnalyticsError, Result};

/// Most jobs on one side of a comparison.
pub const MAX_JOBS_PER_SIDE: usize = 100;
/// Fewest history points a noise model is built from.
const MIN_NOISE_POINTS: usize = 10;
/// Most history points a noise model is built from (the newest).
const NOISE_HISTORY: usize = 200;
/// How long a comparison waits for finished attempts' values to reach the
/// series before it reads them.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// A comparison and the tasks whose values gave its UNKNOWN rows.
pub(super) struct Compared {
    pub view: CompareView,
    pub unknown_tasks: BTreeSet<i64>,
}

/// One benchmark's two sides.
#[derive(Default)]
struct Sides<'a> {
    baseline: Option<&'a SeriesPoints>,
    contender: Option<&'a SeriesPoints>,
}

/// Job ids as given: at least one, at most [`MAX_JOBS_PER_SIDE`], each
/// once (in the order given).
pub(super) fn check_side(param: &'static str, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Err(AnalyticsError::invalid(param, "give at least one job id"));
    }
    if let Some(bad) = ids.iter().find(|id| **id < 1) {
        return Err(AnalyticsError::invalid(
            param,
            format!(
                "`{bad}` is not a job id (an integer from 1 to {})",
                i64::MAX
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let unique: Vec<i64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    if unique.len() > MAX_JOBS_PER_SIDE {
        return Err(AnalyticsError::invalid(
            param,
            format!(
                "{} jobs; compare at most {MAX_JOBS_PER_SIDE} per side",
                unique.len()
            ),
        ));
    }
    Ok(unique)
}

/// Parses `1,2,3`: job ids without signs, spaces or leading zeros.
pub(crate) fn parse_ids(param: &'static str, raw: &str) -> Result<Vec<i64>> {
    let ids = raw
        .split(',')
        .map(|part| {
            let digits_only = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && !part.starts_with('0');
            digits_only
                .then(|| part.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| {
                    AnalyticsError::invalid(
                        param,
                        format!(
                            "`{part}` is not a job id (an integer from 1 to {}); give ids separated by commas, such as `12,13`",
                            i64::MAX
                        ),
                    )
                })
        })
        .collect::<Result<Vec<i64>>>()?;
    check_side(param, &ids)
}

impl Analytics {
    /// Compares the benchmarks of the `baseline` jobs with those of the
    /// `contender` jobs.
    pub async fn compare(&self, baseline: &[i64], contender: &[i64]) -> Result<CompareView> {
        let baseline = check_side("baseline", baseline)?;
        let contender = check_side("contender", contender)?;
        for id in baseline.iter().chain(&contender) {
            match self.views().job_summary(*id).await {
                Ok(_) => {}
                Err(StoreError::NotFound(_)) => return Err(AnalyticsError::UnknownJob(*id)),
                Err(e) => return Err(e.into()),
            }
        }
        self.wait_caught_up(CATCH_UP_WAIT).await?;
        Ok(self.compare_jobs(&baseline, &contender).await?.view)
    }

    /// Waits (at most `wait`) until every finished attempt's values are in
    /// the series; true when they are.
    pub(super) async fn wait_caught_up(&self, wait: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.views().series_caught_up().await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The comparison of two checked sides.
    pub(super) async fn compare_jobs(
        &self,
        baseline: &[i64],
        contender: &[i64],
    ) -> Result<Compared> {
        let base = self.views().job_points(baseline).await?;
        let cont = self.views().job_points(contender).await?;
        let mut pairs: BTreeMap<&SeriesKey, Sides<'_>> = BTreeMap::new();
        for s in &base {
            pairs.entry(&s.series.key).or_default().baseline = Some(s);
        }
        for s in &cont {
            pairs.entry(&s.series.key).or_default().contender = Some(s);
        }
        let jobs: BTreeSet<i64> = baseline.iter().chain(contender).copied().collect();
        let mut rows = Vec::with_capacity(pairs.len());
        let mut unknown_tasks = BTreeSet::new();
        for sides in pairs.values() {
            let noise = match sides.baseline {
                Some(b) if sides.contender.is_some() => self.history_noise(b, &jobs).await?,
                _ => None,
            };
            let row = row(sides, noise.as_ref(), &self.compare);
            if row.verdict() == Some(Verdict::Unknown) {
                for side in [sides.baseline, sides.contender].into_iter().flatten() {
                    unknown_tasks.extend(side.points.iter().map(|p| p.task_id));
                }
            }
            rows.push(row);
        }
        sort_rows(&mut rows);
        Ok(Compared {
            view: CompareView {
                baseline_jobs: baseline.to_vec(),
                contender_jobs: contender.to_vec(),
                counts: counts(&rows),
                rows,
                rounds: 0,
                confirm_jobs: Vec::new(),
            },
            unknown_tasks,
        })
    }

    /// The noise model of a series' history before the baseline's points,
    /// from other jobs than those compared.
    async fn history_noise(
        &self,
        baseline: &SeriesPoints,
        jobs: &BTreeSet<i64>,
    ) -> Result<Option<NoiseModel>> {
        let Some(start) = baseline.points.iter().map(|p| p.at).min() else {
            return Ok(None);
        };
        let history = self
            .with_entry(&baseline.series, |e| {
                let before: Vec<f64> = e
                    .points()
                    .iter()
                    .filter(|p| p.at < start && !jobs.contains(&p.job_id))
                    .map(|p| p.value)
                    .collect();
                let from = before.len().saturating_sub(NOISE_HISTORY);
                before[from..].to_vec()
            })
            .await?;
        if history.len() < MIN_NOISE_POINTS {
            return Ok(None);
        }
        Ok(NoiseModel::of(&history))
    }
}

/// One benchmark's row.
fn row(sides: &Sides<'_>, noise: Option<&NoiseModel>, options: &CompareOptions) -> CompareRow {
    let any = sides.baseline.or(sides.contender);
    let series = any.map(|s| &s.series);
    let key = series.map(|s| &s.key);
    let text = |f: fn(&SeriesKey) -> &String| key.map(|k| f(k).clone()).unwrap_or_default();
    let values = |s: Option<&SeriesPoints>| -> Vec<f64> {
        s.map(|s| s.points.iter().map(|p| p.value).collect())
            .unwrap_or_default()
    };
    let (base, cont) = (values(sides.baseline), values(sides.contender));
    let better = series
        .map(convert::better)
        .unwrap_or(testfleet_core::analysis::Better::Lower);
    let (status, comparison) = match (base.is_empty(), cont.is_empty()) {
        (false, false) => {
            let compared = compare(&base, &cont, better, noise, options);
            if let Err(e) = &compared {
                tracing::warn!(series = ?series.map(|s| s.id), "cannot compare: {e}");
            }
            (CompareStatus::Compared, compared.ok())
        }
        (true, false) => (CompareStatus::New, None),
        _ => (CompareStatus::Missing, None),
    };
    CompareRow {
        host: text(|k| &k.host),
        program: text(|k| &k.program),
        function: text(|k| &k.function),
        data_tag: key.and_then(|k| convert::data_tag(&k.data_tag)),
        metric: text(|k| &k.metric),
        unit: text(|k| &k.unit),
        better,
        status,
        comparison,
        series_id: series.map(|s| s.id),
    }
}

/// Where a row goes: slower, unknown, faster, same, new, missing. A row
/// compared without a comparison (a sample that could not be compared)
/// counts as unknown.
fn severity(row: &CompareRow) -> u8 {
    match (row.status, row.verdict()) {
        (CompareStatus::Compared, Some(Verdict::Slower)) => 0,
        (CompareStatus::Compared, Some(Verdict::Unknown) | None) => 1,
        (CompareStatus::Compared, Some(Verdict::Faster)) => 2,
        (CompareStatus::Compared, Some(Verdict::Same)) => 3,
        (CompareStatus::New, _) => 4,
        (CompareStatus::Missing, _) => 5,
    }
}

fn size(row: &CompareRow) -> f64 {
    row.comparison
        .as_ref()
        .map(|c| c.change.abs())
        .filter(|c| c.is_finite())
        .unwrap_or(0.0)
}

/// Severity first, then the largest change, then the benchmark's name.
pub(super) fn sort_rows(rows: &mut [CompareRow]) {
    rows.sort_by(|a, b| {
        severity(a)
            .cmp(&severity(b))
            .then_with(|| size(b).partial_cmp(&size(a)).unwrap_or(Ordering::Equal))
            .then_with(|| {
                (&a.host, &a.program, &a.function, &a.data_tag, &a.metric).cmp(&(
                    &b.host,
                    &b.program,
                    &b.function,
                    &b.data_tag,
                    &b.metric,
                ))
            })
    });
}

pub(super) fn counts(rows: &[CompareRow]) -> VerdictCounts {
    let mut counts = VerdictCounts::default();
    for row in rows {
        match severity(row) {
            0 => counts.slower += 1,
            1 => counts.unknown += 1,
            2 => counts.faster += 1,
            3 => counts.same += 1,
            4 => counts.new += 1,
            _ => counts.missing += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use testfleet_core::analysis::Better;
    use testfleet_core::analysis::compare::{Comparison, SampleSummary};

    use super::*;

    fn summary() -> SampleSummary {
        SampleSummary {
            n: 5,
            median: 1.0,
            mean: 1.0,
            min: 1.0,
            max: 1.0,
            cv: 0.0,
        }
    }

    fn row(name: &str, status: CompareStatus, verdict: Option<(Verdict, f64)>) -> CompareRow {
        CompareRow {
            host: "h".into(),
            program: "p".into(),
            function: name.into(),
            data_tag: None,
            metric: "m".into(),
            unit: "u".into(),
            better: Better::Lower,
            status,
            comparison: verdict.map(|(verdict, change)| Comparison {
                baseline: summary(),
                contender: summary(),
                change,
                ci_low: change,
                ci_high: change,
                p_value: 0.5,
                verdict,
                more_repetitions: None,
                reason: String::new(),
            }),
            series_id: Some(1),
        }
    }

    #[test]
    fn rows_go_by_severity_then_size_of_change() {
        use CompareStatus::{Compared, Missing, New};
        let mut rows = vec![
            row("missing", Missing, None),
            row("same", Compared, Some((Verdict::Same, 0.001))),
            row("new", New, None),
            row("faster", Compared, Some((Verdict::Faster, -0.2))),
            row("slower-small", Compared, Some((Verdict::Slower, 0.05))),
            row("unknown", Compared, Some((Verdict::Unknown, 0.01))),
            row("slower-big", Compared, Some((Verdict::Slower, 0.4))),
            row("broken", Compared, None),
        ];
        sort_rows(&mut rows);
        let order: Vec<&str> = rows.iter().map(|r| r.function.as_str()).collect();
        assert_eq!(
            order,
            [
                "slower-big",
                "slower-small",
                "unknown",
                "broken",
                "faster",
                "same",
                "new",
                "missing"
            ]
        );
        let c = counts(&rows);
        assert_eq!(
            (c.slower, c.unknown, c.faster, c.same, c.new, c.missing),
            (2, 2, 1, 1, 1, 1)
        );
    }

    #[test]
    fn job_lists_are_strict() {
        assert_eq!(parse_ids("baseline", "3,1,3").unwrap(), vec![3, 1]);
        for bad in [
            "",
            "1,",
            ",1",
            "01",
            "+1",
            "-1",
            "0",
            "1 ,2",
            "x",
            "99999999999999999999",
        ] {
            let e = parse_ids("baseline", bad).unwrap_err();
            assert!(e.to_string().starts_with("baseline: "), "{bad}: {e}");
        }
        let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
        let e = parse_ids("contender", &many.join(",")).unwrap_err();
        assert!(e.to_string().contains("at most 100"), "{e}");
    }
}
