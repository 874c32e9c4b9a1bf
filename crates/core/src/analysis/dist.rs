//! The distributions the comparison needs: the normal law, and the null
//! distributions of the Mann–Whitney U and two-sample Kolmogorov–Smirnov
//! statistics (exact for small samples, asymptotic beyond).

/// Largest pooled size whose U distribution is computed exactly: the counts
/// are Gaussian binomial coefficients, at most `C(100, 50)` ≈ 1e29, which
/// fit an `i128`.
pub(super) const EXACT_U_MAX_N: usize = 100;

/// Largest pooled size whose KS distribution is counted exactly (path counts
/// up to `C(600, 300)` ≈ 1e179 fit an `f64`).
const EXACT_KS_MAX_N: usize = 600;

/// `P(|Z| ≥ z)` for a standard normal `Z` and `z ≥ 0`.
pub(super) fn normal_two_sided(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// `P(|T| ≥ t)` for Student's `T` with `df` degrees of freedom (`df > 0`):
/// the regularized incomplete beta `I_{df/(df+t²)}(df/2, 1/2)`.
pub(super) fn student_t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { 1.0 } else { 0.0 };
    }
    if df.is_nan() || df <= 0.0 {
        return 1.0;
    }
    let x = df / (df + t * t);
    incomplete_beta(df / 2.0, 0.5, x).clamp(0.0, 1.0)
}

/// The regularized incomplete beta function `I_x(a, b)` (Numerical Recipes'
/// `betai`, with Lentz's continued fraction).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-14 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The complementary error function (Numerical Recipes' `erfcc`, a Chebyshev
/// fit with relative error below 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9); `p` is clamped into (0, 1).
pub(super) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// `P(U ≤ u)` for `u = 0 ..= m·n` under the null hypothesis without ties, or
/// `None` when `m + n` exceeds [`EXACT_U_MAX_N`]. The counts of U are the
/// coefficients of the Gaussian binomial `[m+n choose m]_q`, built by
/// multiplying in `(1 − q^(n+i))` and dividing out `(1 − q^i)` for
/// `i = 1 ..= m`; every intermediate is a Gaussian binomial itself, so the
/// arithmetic stays exact.
pub(super) fn u_cumulative(m: usize, n: usize) -> Option<Vec<f64>> {
    if m + n > EXACT_U_MAX_N || m == 0 || n == 0 {
        return None;
    }
    let (small, large) = if m <= n { (m, n) } else { (n, m) };
    let degree = small * large;
    let mut c = vec![0i128; degree + 1];
    c[0] = 1;
    for i in 1..=small {
        let up = large + i;
        for k in (up..=degree).rev() {
            c[k] -= c[k - up];
        }
        for k in i..=degree {
            c[k] += c[k - i];
        }
    }
    let total: i128 = c.iter().sum();
    let total = total as f64;
    let mut running = 0i128;
    Some(
        c.iter()
            .map(|&count| {
                running += count;
                (running as f64 / total).min(1.0)
            })
            .collect(),
    )
}

/// `P(D·m·n ≥ dmn)` for the two-sample Kolmogorov–Smirnov statistic `D` of
/// samples of sizes `m` and `n` under the null hypothesis (continuous data):
/// exact lattice-path counting up to [`EXACT_KS_MAX_N`] pooled values, the
/// Kolmogorov distribution (with Stephens' small-sample correction) beyond.
pub(super) fn ks_p_value(m: usize, n: usize, dmn: u64) -> f64 {
    if dmn == 0 || m == 0 || n == 0 {
        return 1.0;
    }
    if m + n <= EXACT_KS_MAX_N {
        ks_exact(m, n, dmn)
    } else {
        let d = dmn as f64 / (m as f64 * n as f64);
        let en = ((m * n) as f64 / (m + n) as f64).sqrt();
        kolmogorov_q((en + 0.12 + 0.11 / en) * d)
    }
}

/// Counts the monotone paths from (0, 0) to (m, n) that stay strictly inside
/// `|i·n − j·m| < dmn`; the p-value is the share of paths that leave.
fn ks_exact(m: usize, n: usize, dmn: u64) -> f64 {
    let inside = |i: usize, j: usize| {
        (i as i128 * n as i128 - j as i128 * m as i128).unsigned_abs() < dmn as u128
    };
    // row[j]: the inside paths to (i, j), counted row by row (i) in f64,
    // which holds counts up to C(600, 300) with 16 significant digits.
    let mut row = vec![0.0f64; n + 1];
    for i in 0..=m {
        for j in 0..=n {
            row[j] = if !inside(i, j) {
                0.0
            } else if i == 0 && j == 0 {
                1.0
            } else {
                let from_left = if j > 0 { row[j - 1] } else { 0.0 };
                // row[j] still holds the previous row's value here.
                let from_below = if i > 0 { row[j] } else { 0.0 };
                from_left + from_below
            };
        }
    }
    let total = binomial(m + n, m);
    (1.0 - row[n] / total).clamp(0.0, 1.0)
}

/// `C(n, k)` as an `f64`.
fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// `C(n, k)` as a `u128`, saturating.
pub(super) fn binomial_count(n: usize, k: usize) -> u128 {
    let k = k.min(n.saturating_sub(k));
    let mut acc: u128 = 1;
    for i in 0..k {
        // acc · (n − i) / (i + 1) stays an integer at every step.
        acc = match acc.checked_mul((n - i) as u128) {
            Some(v) => v / (i as u128 + 1),
            None => return u128::MAX,
        };
    }
    acc
}

/// The Kolmogorov distribution's survival function `Q(λ) = 2 Σ (−1)^(k−1) e^(−2k²λ²)`.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-16 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_law() {
        assert!((normal_two_sided(0.0) - 1.0).abs() < 1e-7);
        assert!((normal_two_sided(-2.575_829) - 0.01).abs() < 1e-6);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.995) - 2.575_829).abs() < 1e-5);
        assert!((normal_quantile(0.2) + 0.841_621).abs() < 1e-5);
        assert!((normal_two_sided(1.959_964) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn student_t_law_matches_tables() {
        // Two-sided critical values: t(0.975, 8) = 2.306, t(0.9995, 8) = 5.041,
        // t(0.995, 18) = 2.878, t(0.975, 1) = 12.706.
        assert!((student_t_two_sided(2.306_004, 8.0) - 0.05).abs() < 1e-5);
        assert!((student_t_two_sided(5.041_305, 8.0) - 0.001).abs() < 1e-6);
        assert!((student_t_two_sided(2.878_440, 18.0) - 0.01).abs() < 1e-6);
        assert!((student_t_two_sided(12.706_205, 1.0) - 0.05).abs() < 1e-5);
        assert_eq!(student_t_two_sided(0.0, 5.0), 1.0);
        assert_eq!(student_t_two_sided(f64::INFINITY, 5.0), 0.0);
        assert!((student_t_two_sided(-2.306_004, 8.0) - 0.05).abs() < 1e-5);
        // Large df tends to the normal law.
        assert!((student_t_two_sided(1.959_964, 1e7) - 0.05).abs() < 1e-5);
    }

    #[test]
    fn exact_u_distribution_matches_known_values() {
        // m = n = 5: P(U ≤ 0) = 1/252, P(U ≤ 2) = 4/252, P(U ≤ 3) = 7/252.
        let cdf = u_cumulative(5, 5).unwrap_or_default();
        assert_eq!(cdf.len(), 26);
        assert!((cdf[0] - 1.0 / 252.0).abs() < 1e-12);
        assert!((cdf[2] - 4.0 / 252.0).abs() < 1e-12);
        assert!((cdf[3] - 7.0 / 252.0).abs() < 1e-12);
        assert!((cdf[25] - 1.0).abs() < 1e-12);
        // Symmetric: P(U ≤ k) = 1 − P(U ≤ mn − k − 1).
        for k in 0..25 {
            assert!((cdf[k] - (1.0 - cdf[24 - k])).abs() < 1e-12);
        }
        // The largest exact size still sums to one (no overflow).
        let big = u_cumulative(50, 50).unwrap_or_default();
        assert!((big[2500] - 1.0).abs() < 1e-12);
        assert!(u_cumulative(60, 50).is_none());
    }

    #[test]
    fn exact_ks_matches_known_values() {
        // m = n = 5, D = 1: only the two separations, 2/252.
        assert!((ks_p_value(5, 5, 25) - 2.0 / 252.0).abs() < 1e-12);
        // m = n = 3, D = 2/3 (dmn = 6): 1 − 12/20... counted by hand: 0.6.
        assert!((ks_p_value(3, 3, 6) - 0.6).abs() < 1e-12);
        assert_eq!(ks_p_value(5, 5, 0), 1.0);
        // The asymptotic law agrees with the exact count for large samples.
        let exact = ks_exact(300, 300, 300 * 300 / 10);
        let asymptotic = {
            let en = (150.0f64).sqrt();
            kolmogorov_q((en + 0.12 + 0.11 / en) * 0.1)
        };
        assert!((exact - asymptotic).abs() < 0.01, "{exact} vs {asymptotic}");
    }

    #[test]
    fn binomials() {
        assert_eq!(binomial_count(10, 5), 252);
        assert_eq!(binomial_count(60, 30), 118_264_581_564_861_424);
        assert_eq!(binomial_count(1000, 500), u128::MAX);
        assert!((binomial(10, 5) - 252.0).abs() < 1e-9);
    }
}

/// Seeded random samples for the analysis tests.
#[cfg(test)]
pub(super) mod sampling {
    /// SplitMix64: tiny, seeded, good enough for test data.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box–Muller).
        pub fn normal(&mut self) -> f64 {
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    /// The shapes of benchmark noise the tests draw from.
    #[derive(Debug, Clone, Copy)]
    pub enum Shape {
        /// Normal with this coefficient of variation.
        Normal(f64),
        /// Log-normal with this sigma of the logarithm.
        LogNormal(f64),
        /// Two modes, `1` and `1 + gap`, equally likely, each normal with cv.
        Bimodal { gap: f64, cv: f64 },
        /// Normal with cv, and with probability `rate` a ×0.8–×2 outlier.
        Outliers { cv: f64, rate: f64 },
    }

    impl Shape {
        pub fn draw(self, rng: &mut Rng, center: f64) -> f64 {
            match self {
                Shape::Normal(cv) => center * (1.0 + cv * rng.normal()),
                Shape::LogNormal(sigma) => center * (sigma * rng.normal()).exp(),
                Shape::Bimodal { gap, cv } => {
                    let mode = if rng.uniform() < 0.5 { 1.0 } else { 1.0 + gap };
                    center * mode * (1.0 + cv * rng.normal())
                }
                Shape::Outliers { cv, rate } => {
                    let v = center * (1.0 + cv * rng.normal());
                    if rng.uniform() < rate {
                        v * (0.8 + 1.2 * rng.uniform())
                    } else {
                        v
                    }
                }
            }
        }

        pub fn sample(self, rng: &mut Rng, center: f64, n: usize) -> Vec<f64> {
            (0..n).map(|_| self.draw(rng, center)).collect()
        }
    }
}
