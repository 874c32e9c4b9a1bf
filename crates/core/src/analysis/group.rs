//! Change points in the metrics of one test, grouped together.
//!
//! One code change usually moves several metrics of a benchmark at once
//! (walltime, instructions, cycles …): a regressions list shows them as one
//! group, and an acknowledgement of one carries to all. The caller passes the
//! change points of one test (host, program, function, data tag), each placed
//! in history by the first point after it; [`group_changes`] puts together
//! those at the same place:
//!
//! - the same sha (when both have one) is the same place;
//! - otherwise, first points measured at most `max_time_gap_ms` apart, or at
//!   most `max_index_gap` positions apart in their series (detection may put
//!   the change one point early or late in a noisier metric), are.
//!
//! A group never holds two changes of one series: a series that steps twice
//! in quick succession keeps two groups.

use crate::time_fmt::UnixMillis;

/// Knobs of the grouping; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// Changes whose first points are at most this many positions apart are
    /// at the same place (default 2).
    pub max_index_gap: usize,
    /// Changes whose first points were measured at most this many
    /// milliseconds apart are at the same place (default 0: the same run).
    pub max_time_gap_ms: i64,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            max_index_gap: 2,
            max_time_gap_ms: 0,
        }
    }
}

/// A change point of one series of the test, placed in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedChange<'a> {
    /// Which series (any id the caller uses; only compared for equality).
    pub series: i64,
    /// Index of the first point after the change in its series.
    pub index: usize,
    /// When the first point after the change was measured.
    pub at: UnixMillis,
    /// The sha of the first point after the change, when known.
    pub sha: Option<&'a str>,
}

/// Groups `changes` (the change points of one test): each group is a list
/// of indexes into `changes`, in time order; groups are ordered by their
/// earliest change.
pub fn group_changes(changes: &[PlacedChange<'_>], options: &GroupOptions) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by_key(|&i| (changes[i].at, changes[i].index, changes[i].series, i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        let change = &changes[i];
        let free = |g: &Vec<usize>| g.iter().all(|&m| changes[m].series != change.series);
        let same_sha = |g: &Vec<usize>| {
            change.sha.is_some() && g.iter().any(|&m| changes[m].sha == change.sha)
        };
        let near = |g: &Vec<usize>| {
            g.iter().any(|&m| {
                let other = &changes[m];
                let shas_differ = matches!((other.sha, change.sha), (Some(a), Some(b)) if a != b);
                !shas_differ
                    && ((other.at - change.at).abs() <= options.max_time_gap_ms
                        || other.index.abs_diff(change.index) <= options.max_index_gap)
            })
        };
        // The same sha wins over nearness; among near groups, the latest.
        let target = groups
            .iter()
            .position(|g| free(g) && same_sha(g))
            .or_else(|| groups.iter().rposition(|g| free(g) && near(g)));
        match target {
            Some(g) => groups[g].push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(series: i64, index: usize, at: i64, sha: Option<&str>) -> PlacedChange<'_> {
        PlacedChange {
            series,
            index,
            at,
            sha,
        }
    }

    fn group(changes: &[PlacedChange<'_>]) -> Vec<Vec<usize>> {
        group_changes(changes, &GroupOptions::default())
    }

    #[test]
    fn nothing_to_group() {
        assert!(group(&[]).is_empty());
        assert_eq!(group(&[c(1, 5, 100, None)]), vec![vec![0]]);
    }

    #[test]
    fn the_same_sha_is_one_place() {
        let changes = [
            c(1, 10, 1_000, Some("abc")),
            c(2, 40, 9_000_000, Some("abc")),
            c(3, 12, 1_000, Some("def")),
        ];
        // Series 3 is near series 1 by time and index, but at another sha.
        assert_eq!(group(&changes), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn the_same_run_is_one_place_and_a_point_off_is_too() {
        let changes = [
            c(1, 20, 5_000, None),
            c(2, 20, 5_000, None),
            // Detected one point late in a noisier metric.
            c(3, 21, 6_000, None),
            // Far away in index and time: another change.
            c(1, 50, 90_000, None),
        ];
        assert_eq!(group(&changes), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn a_group_never_holds_two_changes_of_one_series() {
        // Series 1 steps up at 10 and back down at 11; series 2 steps at 10.
        let changes = [
            c(1, 10, 1_000, None),
            c(1, 11, 2_000, None),
            c(2, 10, 1_000, None),
        ];
        let groups = group(&changes);
        assert_eq!(groups, vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn time_tolerance_joins_changes_far_apart_in_index() {
        let changes = [c(1, 10, 1_000, None), c(2, 300, 1_500, None)];
        assert_eq!(group(&changes), vec![vec![0], vec![1]]);
        let wide = GroupOptions {
            max_index_gap: 0,
            max_time_gap_ms: 600,
        };
        assert_eq!(group_changes(&changes, &wide), vec![vec![0, 1]]);
    }

    #[test]
    fn groups_come_in_time_order_whatever_the_input_order() {
        let changes = [
            c(2, 30, 30_000, None),
            c(1, 10, 10_000, None),
            c(1, 30, 30_000, None),
        ];
        // Within a group: by time, then index, then series.
        assert_eq!(group(&changes), vec![vec![1], vec![2, 0]]);
    }
}
