//! Change points grouped per test, acknowledgements carried through the
//! groups, and the regressions across all series.
//!
//! A test is a series key without its metric and unit (host, program,
//! function, data tag): its metrics' change points at one place in history
//! form a group (`testfleet_core::analysis::group`). An acknowledgement is
//! stored on (series, sha); it applies to the change of that series whose
//! first point has that sha, and to every change of its group. Since it is
//! keyed by sha, it is carried across re-detections (as openQA carries bug
//! references to the next failure of the same test).

use std::collections::BTreeMap;

use testfleet_core::analysis::group::{GroupOptions, PlacedChange, group_changes};
use testfleet_core::time_fmt::{UnixMillis, format_millis};
use testfleet_store::{SeriesFilter, StoredAck, StoredSeries};
use testfleet_wire::analysis::{ChangeGroup, ChangeView, RegressionsView};

use super::cache::Located;
use super::convert::{self, Place};
use super::{Analytics, Result};

/// Series read per page when all of them are scanned.
const PAGE: i64 = 1_000;

/// A test: what its metrics' series share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TestKey {
    pub host: String,
    pub program: String,
    pub function: String,
    pub data_tag: String,
}

impl TestKey {
    pub(super) fn of(s: &StoredSeries) -> TestKey {
        TestKey {
            host: s.key.host.clone(),
            program: s.key.program.clone(),
            function: s.key.function.clone(),
            data_tag: s.key.data_tag.clone(),
        }
    }
}

/// A change view with the time of its first point, for sorting.
pub(super) struct Grouped {
    pub at: UnixMillis,
    pub view: ChangeView,
}

/// The change points of one test's series grouped by place in history,
/// each with the acknowledgement that applies to it (the oldest one of its
/// group). Groups come oldest first.
pub(super) fn grouped(
    series: &[(&StoredSeries, Vec<Located>)],
    acks: &[StoredAck],
    options: &GroupOptions,
) -> Vec<Vec<Grouped>> {
    let members: Vec<(usize, &Located)> = series
        .iter()
        .enumerate()
        .flat_map(|(i, (_, changes))| changes.iter().map(move |c| (i, c)))
        .collect();
    let placed: Vec<PlacedChange<'_>> = members
        .iter()
        .map(|(i, c)| PlacedChange {
            series: series[*i].0.id,
            index: usize::try_from(c.index).unwrap_or(usize::MAX),
            at: c.at,
            sha: c.sha.as_deref(),
        })
        .collect();
    group_changes(&placed, options)
        .into_iter()
        .map(|group| {
            let ack = acks
                .iter()
                .filter(|a| {
                    group.iter().any(|&m| {
                        placed[m].series == a.series_id && placed[m].sha == Some(a.sha.as_str())
                    })
                })
                .min_by_key(|a| (a.created_at, a.id))
                .map(convert::ack_view);
            group
                .into_iter()
                .map(|m| {
                    let (i, located) = members[m];
                    let s = series[i].0;
                    let mut view = convert::change_view(
                        &located.change,
                        Place {
                            series_id: s.id,
                            metric: &s.key.metric,
                            unit: &s.key.unit,
                            better: convert::better(s),
                            index: located.index,
                            at: Some(located.at),
                            sha: located.sha.clone(),
                        },
                    );
                    view.ack = ack.clone();
                    Grouped {
                        at: located.at,
                        view,
                    }
                })
                .collect()
        })
        .collect()
}

/// The regressions of a test's groups (at or after `since`) as the
/// regressions list shows them; groups without one are left out.
pub(super) fn regression_groups(
    test: &TestKey,
    groups: Vec<Vec<Grouped>>,
    since: Option<UnixMillis>,
) -> Vec<(UnixMillis, ChangeGroup)> {
    groups
        .into_iter()
        .filter_map(|group| {
            let regressions: Vec<Grouped> =
                group.into_iter().filter(|g| g.view.regression).collect();
            let at = regressions.iter().map(|g| g.at).min()?;
            if since.is_some_and(|s| at < s) {
                return None;
            }
            let sha = regressions.iter().find_map(|g| g.view.sha.clone());
            let acknowledged = regressions.iter().all(|g| g.view.ack.is_some());
            Some((
                at,
                ChangeGroup {
                    host: test.host.clone(),
                    program: test.program.clone(),
                    function: test.function.clone(),
                    data_tag: convert::data_tag(&test.data_tag),
                    sha,
                    at: format_millis(at),
                    changes: regressions.into_iter().map(|g| g.view).collect(),
                    acknowledged,
                },
            ))
        })
        .collect()
}

impl Analytics {
    /// Every series matching `filter` (read a page at a time).
    async fn all_series(&self, mut filter: SeriesFilter) -> Result<Vec<StoredSeries>> {
        let mut all = Vec::new();
        filter.limit = PAGE;
        loop {
            let page = self.views().list_series(&filter).await?;
            let full = page.len() as i64 == PAGE;
            filter.after = page.last().map(|s| s.id);
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// The grouped change points of the test `series` belongs to.
    pub(super) async fn test_groups(&self, series: &StoredSeries) -> Result<Vec<Vec<ChangeView>>> {
        let test = TestKey::of(series);
        let filter = SeriesFilter {
            host: Some(test.host.clone()),
            program: Some(test.program.clone()),
            function: Some(test.function.clone()),
            ..SeriesFilter::default()
        };
        let members: Vec<StoredSeries> = self
            .all_series(filter)
            .await?
            .into_iter()
            .filter(|s| s.key.data_tag == test.data_tag)
            .collect();
        let ids: Vec<i64> = members.iter().map(|s| s.id).collect();
        let mut located = Vec::with_capacity(members.len());
        for s in &members {
            located.push((s, self.located_changes(s).await?));
        }
        let acks = self.views().acks(Some(&ids)).await?;
        Ok(grouped(&located, &acks, &self.groups)
            .into_iter()
            .map(|g| g.into_iter().map(|c| c.view).collect())
            .collect())
    }

    /// Regressions across all series (in each metric's direction), grouped
    /// per test and place in history, newest first: the groups whose first
    /// regression is at or after `since`, at most `limit` of them.
    pub async fn regressions(
        &self,
        since: Option<UnixMillis>,
        limit: usize,
    ) -> Result<RegressionsView> {
        let all = self.all_series(SeriesFilter::default()).await?;
        let acks = self.views().acks(None).await?;
        let mut tests: BTreeMap<TestKey, Vec<&StoredSeries>> = BTreeMap::new();
        for s in &all {
            tests.entry(TestKey::of(s)).or_default().push(s);
        }
        let mut found: Vec<(UnixMillis, ChangeGroup)> = Vec::new();
        for (test, members) in tests {
            let mut located = Vec::with_capacity(members.len());
            for s in members {
                located.push((s, self.located_changes(s).await?));
            }
            if located.iter().all(|(_, c)| c.is_empty()) {
                continue;
            }
            let groups = grouped(&located, &acks, &self.groups);
            found.extend(regression_groups(&test, groups, since));
        }
        found.sort_by(|(a, ga), (b, gb)| {
            b.cmp(a).then_with(|| {
                (&ga.host, &ga.program, &ga.function).cmp(&(&gb.host, &gb.program, &gb.function))
            })
        });
        found.truncate(limit);
        Ok(RegressionsView {
            since: since.map(format_millis),
            series_scanned: all.len() as u64,
            groups: found.into_iter().map(|(_, g)| g).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use testfleet_core::analysis::changes::{ChangePoint, Step};
    use testfleet_store::SeriesKey;

    use super::*;

    fn series(id: i64, metric: &str, unit: &str) -> StoredSeries {
        StoredSeries {
            id,
            key: SeriesKey {
                host: "h".into(),
                program: "tst_QString".into(),
                function: "concat".into(),
                data_tag: String::new(),
                metric: metric.into(),
                unit: unit.into(),
            },
            points: 100,
            first_at: 0,
            last_at: 0,
            last_value: 0.0,
        }
    }

    fn located(index: u64, at: i64, sha: &str, step: Step) -> Located {
        let (before, after) = match step {
            Step::Up => (100.0, 120.0),
            Step::Down => (100.0, 80.0),
        };
        Located {
            change: ChangePoint {
                index: usize::try_from(index).unwrap(),
                mean_before: before,
                mean_after: after,
                change: after / before - 1.0,
                p_value: 1e-6,
                step,
            },
            index,
            at,
            sha: Some(sha.into()),
        }
    }

    fn ack(series_id: i64, sha: &str, id: i64) -> StoredAck {
        StoredAck {
            id,
            series_id,
            sha: sha.into(),
            note: format!("known {id}"),
            bug_url: None,
            by: "user:alice".into(),
            created_at: 1_000 * id,
        }
    }

    #[test]
    fn an_ack_on_one_metric_is_carried_to_its_group() {
        let walltime = series(1, "WalltimeMilliseconds", "msecs");
        let instructions = series(2, "InstructionReads", "instr.");
        let throughput = series(3, "items", "items/s");
        let located = vec![
            (
                &walltime,
                vec![
                    located(50, 5_000, "bad", Step::Up),
                    located(80, 8_000, "other", Step::Up),
                ],
            ),
            (&instructions, vec![located(50, 5_000, "bad", Step::Up)]),
            (&throughput, vec![located(51, 5_100, "bad", Step::Down)]),
        ];
        let acks = [ack(2, "bad", 1), ack(2, "bad", 2)];
        let groups = grouped(&located, &acks, &GroupOptions::default());
        assert_eq!(groups.len(), 2);
        let first: Vec<(i64, Option<i64>)> = groups[0]
            .iter()
            .map(|g| (g.view.series_id, g.view.ack.as_ref().map(|a| a.id)))
            .collect();
        assert_eq!(
            first,
            vec![(1, Some(1)), (2, Some(1)), (3, Some(1))],
            "the oldest ack, to all"
        );
        assert!(
            groups[0].iter().all(|g| g.view.regression),
            "up is worse for times, down for rates"
        );
        assert_eq!(groups[1].len(), 1);
        assert_eq!(groups[1][0].view.ack, None, "another place in history");
        assert!((groups[1][0].view.change_pct - 20.0).abs() < 1e-9);

        let test = TestKey::of(&walltime);
        let listed = regression_groups(&test, groups, Some(6_000));
        assert_eq!(listed.len(), 1, "the older group is before `since`");
        let (at, group) = &listed[0];
        assert_eq!(*at, 8_000);
        assert_eq!(group.sha.as_deref(), Some("other"));
        assert!(!group.acknowledged);
        assert_eq!(group.data_tag, None);
    }

    #[test]
    fn improvements_are_not_regressions() {
        let walltime = series(1, "WalltimeMilliseconds", "msecs");
        let located = vec![(&walltime, vec![located(50, 5_000, "good", Step::Down)])];
        let groups = grouped(&located, &[], &GroupOptions::default());
        assert_eq!(groups.len(), 1);
        assert!(!groups[0][0].view.regression);
        assert!(regression_groups(&TestKey::of(&walltime), groups, None).is_empty());
    }
}
