//! Mid-ranks of a sliding window of values, kept up to date point by point,
//! and the rank-sum (Mann–Whitney) scan over every split of the window.
//!
//! Ranks make the scan distribution-free: under "no change" (independent
//! values from one continuous distribution) its null distribution is the
//! same for normal, log-normal, bimodal or outlier-ridden noise, so one
//! threshold gives the same false-alert rate for all of them, and a value
//! ×2 weighs no more than any other value above the median.

use std::collections::VecDeque;

/// A window of values in arrival order with the mid-rank of each.
///
/// Ranks are kept doubled (`2 × mid-rank`) so ties stay integers. Adding or
/// removing a value costs one pass over the window.
#[derive(Debug, Clone, Default)]
pub(super) struct RankWindow {
    values: VecDeque<f64>,
    /// `2 × mid-rank` of each value, same order as `values`.
    rank2: VecDeque<i64>,
    /// Σ (t³ − t) over groups of `t` equal values: the tie correction of
    /// the rank-sum variance.
    ties: f64,
}

/// The best split of a window: the first `at` values against the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Split {
    /// Values on the left of the split.
    pub at: usize,
    /// Standardized rank sum of the left part: positive when the left part
    /// ranks higher (the values went down at the split).
    pub z: f64,
}

impl RankWindow {
    /// A window holding `values`, oldest first; `O(n log n)`.
    pub fn from_slice(values: &[f64]) -> RankWindow {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut rank2 = vec![0_i64; values.len()];
        let mut ties = 0.0;
        let mut i = 0;
        while i < order.len() {
            let mut j = i + 1;
            while j < order.len() && values[order[j]] == values[order[i]] {
                j += 1;
            }
            // Positions i..j (0-based) share the mid-rank (i + 1 + j) / 2.
            let shared = (i + 1 + j) as i64;
            for &k in &order[i..j] {
                rank2[k] = shared;
            }
            let t = (j - i) as f64;
            ties += t * t * t - t;
            i = j;
        }
        RankWindow {
            values: values.iter().copied().collect(),
            rank2: rank2.into(),
            ties,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Appends `value` (finite) as the newest value.
    pub fn push(&mut self, value: f64) {
        let mut less = 0_i64;
        let mut equal = 0_i64;
        for (y, r) in self.values.iter().zip(self.rank2.iter_mut()) {
            if *y > value {
                *r += 2;
            } else if *y < value {
                less += 1;
            } else {
                *r += 1;
                equal += 1;
            }
        }
        self.values.push_back(value);
        self.rank2.push_back(2 * less + equal + 2);
        let c = equal as f64;
        self.ties += 3.0 * c * c + 3.0 * c;
    }

    /// Removes the oldest value.
    pub fn pop_front(&mut self) {
        let (Some(gone), Some(_)) = (self.values.pop_front(), self.rank2.pop_front()) else {
            return;
        };
        let mut equal = 0_i64;
        for (y, r) in self.values.iter().zip(self.rank2.iter_mut()) {
            if *y > gone {
                *r -= 2;
            } else if *y == gone {
                *r -= 1;
                equal += 1;
            }
        }
        let c = equal as f64;
        self.ties -= 3.0 * c * c + 3.0 * c;
    }

    /// The split with the largest standardized rank-sum statistic among
    /// those leaving at least `min_segment` values on each side; `None`
    /// when the window is too short or all its values are equal.
    pub fn best_split(&self, min_segment: usize) -> Option<Split> {
        let k = self.len();
        if min_segment == 0 || k < 2 * min_segment {
            return None;
        }
        let kf = k as f64;
        // Var(W) = n₁n₂/12 · ((k + 1) − Σ(t³ − t) / (k(k − 1))).
        let tie_factor = (kf + 1.0) - self.ties / (kf * (kf - 1.0));
        if tie_factor <= 1e-9 {
            return None;
        }
        let mut best: Option<Split> = None;
        let mut prefix = 0_i64;
        for (t, r) in self.rank2.iter().enumerate().take(k - min_segment) {
            prefix += r;
            let left = t + 1;
            if left < min_segment {
                continue;
            }
            let lf = left as f64;
            // 2·(W − E[W]) with E[W] = n₁(k + 1)/2.
            let centred2 = prefix as f64 - lf * (kf + 1.0);
            let var = lf * (kf - lf) / 12.0 * tie_factor;
            let z = centred2 / (2.0 * var.sqrt());
            if best.is_none_or(|b| z.abs() > b.z.abs()) {
                best = Some(Split { at: left, z });
            }
        }
        best
    }
}

/// Two-sided p-value of a standard normal statistic `z`.
pub(super) fn two_sided_p(z: f64) -> f64 {
    crate::analysis::dist::normal_two_sided(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_rank2(values: &[f64]) -> Vec<i64> {
        values
            .iter()
            .map(|&x| {
                let less = values.iter().filter(|&&y| y < x).count() as i64;
                let equal = values.iter().filter(|&&y| y == x).count() as i64;
                2 * less + equal + 1
            })
            .collect()
    }

    #[test]
    fn incremental_ranks_match_a_fresh_sort() {
        let values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0];
        let mut w = RankWindow::default();
        for (i, &v) in values.iter().enumerate() {
            w.push(v);
            if w.len() > 5 {
                w.pop_front();
            }
            let start = (i + 1).saturating_sub(5);
            let fresh = RankWindow::from_slice(&values[start..=i]);
            assert_eq!(w.rank2, fresh.rank2, "at {i}");
            assert_eq!(Vec::from(w.rank2.clone()), naive_rank2(&values[start..=i]));
            assert!((w.ties - fresh.ties).abs() < 1e-9, "ties at {i}");
        }
    }

    #[test]
    fn split_statistic_matches_the_textbook_mann_whitney_z() {
        // Left [1, 2, 3], right [4, 5, 6]: W_left = 6, E = 10.5, Var = 5.25.
        let w = RankWindow::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let s = w.best_split(3).map(|s| (s.at, s.z));
        let z = (6.0 - 10.5) / 5.25_f64.sqrt();
        assert_eq!(s.map(|s| s.0), Some(3));
        assert!(s.is_some_and(|s| (s.1 - z).abs() < 1e-12));
    }

    #[test]
    fn all_equal_values_have_no_split() {
        let w = RankWindow::from_slice(&[7.0; 40]);
        assert_eq!(w.best_split(5), None);
    }

    #[test]
    fn p_values_of_known_quantiles() {
        assert!((two_sided_p(1.959_964) - 0.05).abs() < 1e-6);
        assert!((two_sided_p(-3.290_527) - 0.001).abs() < 1e-7);
        assert!((two_sided_p(0.0) - 1.0).abs() < 1e-6);
    }
}
