//! Rank statistics of two samples: the combined Mann–Whitney U /
//! Kolmogorov–Smirnov test (Pinpoint's p-value, adjusted for taking the
//! smaller of two) and the Hodges–Lehmann shift with its confidence interval.

use super::dist;

/// At most this many ways of splitting the pooled values are enumerated to
/// give the combined test its exact permutation p-value; beyond, the smaller
/// p-value is doubled (Bonferroni).
const MAX_ENUMERATED_SPLITS: u128 = 5_000;

/// At most this many pairwise differences are formed for the Hodges–Lehmann
/// estimate; beyond, the difference of the medians stands in for it.
const MAX_PAIRS: usize = 1_000_000;

/// The pooled, sorted values of two samples with their midranks.
struct Pooled {
    /// Size of the first (baseline) sample.
    m: usize,
    /// Size of the second (contender) sample.
    n: usize,
    /// Whether the value at each sorted position came from the baseline.
    from_baseline: Vec<bool>,
    /// Midrank (1-based, ties averaged) of each sorted position.
    midranks: Vec<f64>,
    /// Exclusive end of the tie group of each group, in sorted order.
    group_ends: Vec<usize>,
    /// `Σ (t³ − t)` over tie groups of size `t`.
    tie_term: f64,
}

impl Pooled {
    fn of(baseline: &[f64], contender: &[f64]) -> Pooled {
        let mut all: Vec<(f64, bool)> = baseline
            .iter()
            .map(|&v| (v, true))
            .chain(contender.iter().map(|&v| (v, false)))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = all.len();
        let mut midranks = vec![0.0; total];
        let mut group_ends = Vec::new();
        let mut tie_term = 0.0;
        let mut start = 0;
        while start < total {
            let mut end = start + 1;
            while end < total && all[end].0 == all[start].0 {
                end += 1;
            }
            let rank = (start + end + 1) as f64 / 2.0;
            midranks[start..end].iter_mut().for_each(|r| *r = rank);
            let t = (end - start) as f64;
            tie_term += t * t * t - t;
            group_ends.push(end);
            start = end;
        }
        Pooled {
            m: baseline.len(),
            n: contender.len(),
            from_baseline: all.iter().map(|&(_, b)| b).collect(),
            midranks,
            group_ends,
            tie_term,
        }
    }

    fn has_ties(&self) -> bool {
        self.tie_term > 0.0
    }

    /// `2·U` of the baseline (an integer even with midranks) and `D·m·n` for
    /// the split `from_baseline`.
    fn statistics(&self, from_baseline: &[bool]) -> (usize, u64) {
        let rank_sum: f64 = from_baseline
            .iter()
            .zip(&self.midranks)
            .filter(|(b, _)| **b)
            .map(|(_, r)| r)
            .sum();
        let m = self.m as f64;
        let twice_u = (2.0 * rank_sum - m * (m + 1.0)).round().max(0.0) as usize;
        let (mut seen_b, mut seen_c, mut dmn) = (0i128, 0i128, 0u64);
        let mut start = 0;
        for &end in &self.group_ends {
            for &b in &from_baseline[start..end] {
                if b {
                    seen_b += 1;
                } else {
                    seen_c += 1;
                }
            }
            let gap = (seen_b * self.n as i128 - seen_c * self.m as i128).unsigned_abs() as u64;
            dmn = dmn.max(gap);
            start = end;
        }
        (twice_u, dmn)
    }
}

/// The two-sided Mann–Whitney p-value of a `2·U`: exact without ties for
/// small samples, else the normal approximation with tie and continuity
/// corrections.
struct UTest {
    m: usize,
    n: usize,
    exact: Option<Vec<f64>>,
    sd: f64,
}

impl UTest {
    fn new(pooled: &Pooled) -> UTest {
        let (m, n) = (pooled.m, pooled.n);
        let exact = if pooled.has_ties() {
            None
        } else {
            dist::u_cumulative(m, n)
        };
        let total = (m + n) as f64;
        let (mf, nf) = (m as f64, n as f64);
        let variance =
            mf * nf / 12.0 * ((total + 1.0) - pooled.tie_term / (total * (total - 1.0)).max(1.0));
        UTest {
            m,
            n,
            exact,
            sd: variance.max(0.0).sqrt(),
        }
    }

    fn p_value(&self, twice_u: usize) -> f64 {
        let mn = self.m * self.n;
        match &self.exact {
            Some(cdf) => {
                let u = (twice_u / 2).min(mn);
                let tail = u.min(mn - u);
                (2.0 * cdf[tail]).min(1.0)
            }
            None => {
                if self.sd <= 0.0 {
                    return 1.0;
                }
                let deviation = (twice_u as f64 / 2.0 - mn as f64 / 2.0).abs();
                let z = (deviation - 0.5).max(0.0) / self.sd;
                dist::normal_two_sided(z)
            }
        }
    }
}

/// The p-value of "the two samples come from one distribution": the smaller
/// of the Mann–Whitney U and Kolmogorov–Smirnov p-values (Pinpoint's test),
/// adjusted for taking the smaller of two. When the pooled values can be
/// split into the two sample sizes in at most [`MAX_ENUMERATED_SPLITS`] ways
/// (up to 6 + 6, or 5 + 8), the adjustment is exact: the share of all splits
/// whose smaller p-value is at most the observed one (a permutation test,
/// valid with ties). Beyond, the smaller p-value is doubled (Bonferroni),
/// which costs little power at those sizes.
pub(super) fn combined_p_value(baseline: &[f64], contender: &[f64]) -> f64 {
    let pooled = Pooled::of(baseline, contender);
    let (m, n) = (pooled.m, pooled.n);
    if m == 0 || n == 0 {
        return 1.0;
    }
    let u_test = UTest::new(&pooled);
    let ks = |dmn: u64| dist::ks_p_value(m, n, dmn);
    let (twice_u, dmn) = pooled.statistics(&pooled.from_baseline);
    let observed = u_test.p_value(twice_u).min(ks(dmn));
    let splits = dist::binomial_count(m + n, m);
    if splits > MAX_ENUMERATED_SPLITS {
        return (2.0 * observed).min(1.0);
    }
    // Cache the KS p-value per D·m·n: few distinct values occur.
    let mut ks_cache: Vec<Option<f64>> = vec![None; m * n + 1];
    let threshold = observed * (1.0 + 1e-9) + 1e-15;
    let mut at_most = 0u64;
    let mut seen = 0u64;
    let mut split = vec![false; m + n];
    let mut chosen: Vec<usize> = (0..m).collect();
    loop {
        split.iter_mut().for_each(|s| *s = false);
        chosen.iter().for_each(|&i| split[i] = true);
        let (twice_u, dmn) = pooled.statistics(&split);
        let slot = (dmn as usize).min(m * n);
        let ks_p = *ks_cache[slot].get_or_insert_with(|| ks(dmn));
        if u_test.p_value(twice_u).min(ks_p) <= threshold {
            at_most += 1;
        }
        seen += 1;
        if !next_combination(&mut chosen, m + n) {
            break;
        }
    }
    (at_most as f64 / seen as f64).clamp(0.0, 1.0)
}

/// Advances `chosen` (ascending indices below `total`) to the next
/// combination in lexicographic order; false after the last one.
fn next_combination(chosen: &mut [usize], total: usize) -> bool {
    let k = chosen.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if chosen[i] < total - k + i {
            chosen[i] += 1;
            for j in i + 1..k {
                chosen[j] = chosen[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// The Hodges–Lehmann shift of the contender against the baseline (the
/// median of all pairwise differences `contender − baseline`) and its 95 %
/// confidence interval (Moses' distribution-free interval from the order
/// statistics of the differences).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Shift {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// False when the samples are too small for any 95 % interval (fewer
    /// than 40 ways to split them, e.g. 3 + 4): `low ..= high` is then the
    /// range of all differences, whose coverage is lower.
    pub proper: bool,
}

/// The Hodges–Lehmann shift of `contender` against `baseline` (both
/// non-empty, finite, and small enough that their differences do not
/// overflow).
pub(super) fn hodges_lehmann(baseline: &[f64], contender: &[f64]) -> Shift {
    let (m, n) = (baseline.len(), contender.len());
    if m * n > MAX_PAIRS {
        return large_sample_shift(baseline, contender);
    }
    let mut diffs: Vec<f64> = contender
        .iter()
        .flat_map(|c| baseline.iter().map(move |b| c - b))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let pairs = diffs.len();
    let estimate = sorted_median(&diffs);
    // k: the largest count with P(U ≤ k − 1) ≤ 2.5 %.
    let k = match dist::u_cumulative(m, n) {
        Some(cdf) => cdf.iter().take_while(|&&p| p <= 0.025 + 1e-12).count(),
        None => {
            let (mf, nf) = (m as f64, n as f64);
            let half = dist::normal_quantile(0.975) * (mf * nf * (mf + nf + 1.0) / 12.0).sqrt();
            (mf * nf / 2.0 - half).floor().max(0.0) as usize
        }
    };
    if k == 0 || 2 * k > pairs {
        return Shift {
            estimate,
            low: diffs[0],
            high: diffs[pairs - 1],
            proper: false,
        };
    }
    Shift {
        estimate,
        low: diffs[k - 1],
        high: diffs[pairs - k],
        proper: true,
    }
}

/// For very large samples: the difference of the medians, with the normal
/// approximation of its standard error from the robust spreads.
fn large_sample_shift(baseline: &[f64], contender: &[f64]) -> Shift {
    let sorted = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (b, c) = (sorted(baseline), sorted(contender));
    let (mb, mc) = (sorted_median(&b), sorted_median(&c));
    let (sb, sc) = (
        super::noise::robust_scale(&b, mb),
        super::noise::robust_scale(&c, mc),
    );
    // The median's standard error is √(π/2)·σ/√n for normal data.
    let factor = (std::f64::consts::PI / 2.0).sqrt();
    let se = factor * (sb * sb / b.len() as f64 + sc * sc / c.len() as f64).sqrt();
    let half = dist::normal_quantile(0.975) * se;
    let estimate = mc - mb;
    Shift {
        estimate,
        low: estimate - half,
        high: estimate + half,
        proper: true,
    }
}

/// The median of an ascending, non-empty slice.
pub(super) fn sorted_median(sorted: &[f64]) -> f64 {
    let len = sorted.len();
    if len % 2 == 1 {
        sorted[len / 2]
    } else {
        sorted[len / 2 - 1] / 2.0 + sorted[len / 2] / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_separation_of_five_and_five_is_exactly_two_in_252() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        assert!((combined_p_value(&a, &b) - 2.0 / 252.0).abs() < 1e-12);
        assert!((combined_p_value(&b, &a) - 2.0 / 252.0).abs() < 1e-12);
    }

    #[test]
    fn identical_values_give_p_one() {
        let a = [3.0; 6];
        assert_eq!(combined_p_value(&a, &a), 1.0);
        let big = [3.0; 40];
        assert_eq!(combined_p_value(&big, &big), 1.0);
    }

    #[test]
    fn interleaved_samples_are_not_significant() {
        let a = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0];
        let b = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0];
        let p = combined_p_value(&a, &b);
        assert!(p > 0.5, "{p}");
    }

    #[test]
    fn large_separated_samples_are_bonferroni_adjusted() {
        let a: Vec<f64> = (0..20).map(f64::from).collect();
        let b: Vec<f64> = (100..120).map(f64::from).collect();
        let p = combined_p_value(&a, &b);
        // Exact MWU and KS: 2/C(40, 20) each; the smaller doubled (the KS
        // count, 1 − inside/all, is exact to about 1e-16 absolute).
        let expected = 2.0 * 2.0 / dist::binomial_count(40, 20) as f64;
        assert!((p - expected).abs() / expected < 1e-4, "{p} vs {expected}");
    }

    #[test]
    fn mann_whitney_with_ties_matches_scipy() {
        let a = [
            1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0, 6.0, 6.0, 6.0, 7.0,
        ];
        let b = [4.0, 5.0, 6.0, 6.0, 7.0, 7.0, 8.0, 8.0, 8.0, 9.0, 9.0, 10.0];
        let pooled = Pooled::of(&a, &b);
        let test = UTest::new(&pooled);
        let (twice_u, _) = pooled.statistics(&pooled.from_baseline);
        let p = test.p_value(twice_u);
        assert!((p - SCIPY_TIED_P).abs() < 1e-4, "{p}");
    }

    /// `scipy.stats.mannwhitneyu(a, b, method="asymptotic").pvalue` for the
    /// samples of `mann_whitney_with_ties_matches_scipy`.
    const SCIPY_TIED_P: f64 = 0.001_007_853;

    #[test]
    fn hodges_lehmann_shift_and_interval() {
        let a = [10.0, 11.0, 12.0, 13.0, 14.0];
        let b = [20.0, 21.0, 22.0, 23.0, 24.0];
        let shift = hodges_lehmann(&a, &b);
        assert_eq!(shift.estimate, 10.0);
        assert!(shift.proper);
        // k = 3 for 5 + 5: the 3rd smallest and 3rd largest of 25 differences.
        // The differences 6 ..= 14 occur 1, 2, 3, 4, 5, 4, 3, 2, 1 times.
        assert_eq!(shift.low, 7.0);
        assert_eq!(shift.high, 13.0);
        let tiny = hodges_lehmann(&[1.0], &[2.0]);
        assert!(!tiny.proper);
        assert_eq!((tiny.low, tiny.estimate, tiny.high), (1.0, 1.0, 1.0));
    }

    #[test]
    fn combinations_are_enumerated_once_each() {
        let mut chosen = vec![0, 1];
        let mut count = 1;
        while next_combination(&mut chosen, 5) {
            count += 1;
        }
        assert_eq!(count, 10);
    }
}
