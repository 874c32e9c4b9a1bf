//! Small statistics over durations: mean and nearest-rank percentiles.

/// Mean and 95th percentile of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    /// Summarizes `values`; an empty sample gives zeros.
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary {
                count: 0,
                mean: 0.0,
                p95: 0.0,
                max: 0.0,
            };
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p95: percentile(&sorted, 0.95),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The nearest-rank percentile of an ascending, non-empty sample.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_p95() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v);
        assert_eq!((s.count, s.mean, s.p95, s.max), (100, 50.5, 95.0, 100.0));
        assert_eq!(Summary::of(&[7.0]).p95, 7.0);
        assert_eq!(Summary::of(&[]).count, 0);
    }
}
