//! Where exactly a change found by the rank scan is.
//!
//! The rank scan decides well *whether* there is a change, but ranks forget
//! how far apart the values are: just after a large step, moving the last
//! few points before the step to the right side can raise the standardized
//! rank sum. So the place is chosen again, near the scan's split, as the
//! split whose two sides stray least from their own medians (least absolute
//! deviations: a robust least-squares fit of one step, which a few wild
//! values do not pull).

/// The split of `values` within `reach` of `around` (each side keeping at
/// least `min_segment` values) with the least total absolute deviation of
/// each side from its median; on equal cost, the one nearest `around`.
pub(super) fn refine(values: &[f64], around: usize, reach: usize, min_segment: usize) -> usize {
    let k = values.len();
    if k < 2 * min_segment {
        return around;
    }
    let low = around.saturating_sub(reach).max(min_segment);
    let high = (around + reach).min(k - min_segment);
    let mut scratch = Vec::with_capacity(k);
    let mut best = (f64::INFINITY, usize::MAX, around);
    for at in low..=high {
        let cost = deviation(&values[..at], &mut scratch) + deviation(&values[at..], &mut scratch);
        let candidate = (cost, at.abs_diff(around), at);
        if candidate.0 < best.0 || (candidate.0 == best.0 && candidate.1 < best.1) {
            best = candidate;
        }
    }
    best.2
}

/// Σ |x − median| over `values` (0 when empty).
fn deviation(values: &[f64], scratch: &mut Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    scratch.clear();
    scratch.extend_from_slice(values);
    let mid = scratch.len() / 2;
    let (_, &mut median, _) = scratch.select_nth_unstable_by(mid, f64::total_cmp);
    values.iter().map(|v| (v - median).abs()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_step_is_placed_exactly_even_when_the_scan_is_off() {
        let mut values = vec![10.0, 10.2, 9.9, 10.1, 9.8, 10.0, 10.3, 9.7, 10.1, 9.9];
        values.extend([8.0, 8.1, 7.9, 8.2, 8.0, 7.8]);
        for around in 6..=12 {
            assert_eq!(refine(&values, around, 5, 3), 10, "from {around}");
        }
    }

    #[test]
    fn a_wild_value_does_not_move_the_place() {
        let mut values = vec![10.0; 10];
        values.extend([20.0; 10]);
        values[3] = 1000.0;
        assert_eq!(refine(&values, 9, 5, 3), 10);
    }

    #[test]
    fn too_short_a_series_keeps_the_scan_place() {
        assert_eq!(refine(&[1.0, 2.0, 3.0], 1, 5, 2), 1);
    }
}
