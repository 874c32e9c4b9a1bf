//! Seeded randomness for workloads: a small PRNG (SplitMix64) and the
//! heavy-tailed task-duration generator (a truncated Pareto distribution).
//!
//! Everything here is deterministic for a given seed, so a bench run can be
//! repeated with the same task durations in the same order.

/// SplitMix64: tiny, fast, and good enough to draw workloads.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so it can be raised to a negative power.
    pub fn next_unit(&mut self) -> f64 {
        // 53 random bits, shifted by one so the result is never zero.
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Task durations with a heavy tail: Pareto with scale `min_ms` and shape
/// `alpha`, truncated at `max_ms`. With `alpha` below 2 the variance is
/// unbounded, so a few tasks are orders of magnitude longer than the median —
/// the case where the order of dispatch decides the makespan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeavyTailed {
    pub min_ms: u64,
    pub alpha: f64,
    pub max_ms: u64,
}

impl Default for HeavyTailed {
    /// Median ≈ 8 ms, mean ≈ 20 ms, 1 in 1000 above ≈ 1.2 s, capped at 5 s.
    fn default() -> Self {
        HeavyTailed {
            min_ms: 5,
            alpha: 1.3,
            max_ms: 5_000,
        }
    }
}

impl HeavyTailed {
    /// One duration in milliseconds.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_unit();
        let x = self.min_ms as f64 * u.powf(-1.0 / self.alpha);
        // `as` saturates for huge values; the cap applies after.
        (x.round() as u64).clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }

    /// `n` durations from `seed`, in draw order.
    pub fn durations(&self, seed: u64, n: usize) -> Vec<u64> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| self.sample(&mut rng)).collect()
    }
}
