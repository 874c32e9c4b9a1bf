//! The synthetic corpus: series of five kinds of noise, with steps of one
//! size each (2, 5, 10 or 20 %, up or down) or none, from a seed.

use serde::Serialize;

/// SplitMix64 with Box–Muller normals: the same corpus for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in `[low, high)`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high.saturating_sub(low).max(1)) as u64) as usize
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A kind of noise around a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// Normal, coefficient of variation 1 %.
    Normal1,
    /// Normal, coefficient of variation 3 %.
    Normal3,
    /// Log-normal, σ of the log 3 % (skewed to the right).
    LogNormal,
    /// Two modes 3–10 % apart, the upper one 20–50 % of the time, 1 % noise
    /// in each.
    Bimodal,
    /// 1 % normal noise, and 1–2 % of the points ×0.8–×2.
    Outliers,
}

impl Noise {
    pub const ALL: [Noise; 5] = [
        Noise::Normal1,
        Noise::Normal3,
        Noise::LogNormal,
        Noise::Bimodal,
        Noise::Outliers,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Noise::Normal1 => "normal, CV 1 %",
            Noise::Normal3 => "normal, CV 3 %",
            Noise::LogNormal => "log-normal, σ 3 %",
            Noise::Bimodal => "bimodal",
            Noise::Outliers => "outliers ×0.8–×2",
        }
    }
}

/// A series' own noise parameters, drawn once per series.
struct NoiseDraw {
    kind: Noise,
    gap: f64,
    upper: f64,
    outlier_rate: f64,
}

impl NoiseDraw {
    fn new(kind: Noise, rng: &mut Rng) -> NoiseDraw {
        NoiseDraw {
            kind,
            gap: rng.between(0.03, 0.10),
            upper: rng.between(0.2, 0.5),
            outlier_rate: rng.between(0.01, 0.02),
        }
    }

    /// One noisy multiplier around 1.
    fn sample(&self, rng: &mut Rng) -> f64 {
        match self.kind {
            Noise::Normal1 => 1.0 + 0.01 * rng.normal(),
            Noise::Normal3 => 1.0 + 0.03 * rng.normal(),
            Noise::LogNormal => (0.03 * rng.normal()).exp(),
            Noise::Bimodal => {
                let mode = if rng.uniform() < self.upper {
                    1.0 + self.gap
                } else {
                    1.0
                };
                mode * (1.0 + 0.01 * rng.normal())
            }
            Noise::Outliers => {
                let x = 1.0 + 0.01 * rng.normal();
                if rng.uniform() < self.outlier_rate {
                    x * rng.between(0.8, 2.0)
                } else {
                    x
                }
            }
        }
    }
}

/// The step sizes of the corpus, in percent.
pub const STEP_SIZES: [u32; 4] = [2, 5, 10, 20];

/// One series of the corpus and its truth.
pub struct Series {
    pub noise: Noise,
    /// The size of every step in it (percent), `None` for a series without.
    pub size: Option<u32>,
    pub values: Vec<f64>,
    /// Index of the first point after each true step.
    pub steps: Vec<usize>,
}

/// Builds `series` points of `noise` around a level with a random scale,
/// with steps of `size` % (random direction) 100–300 points apart, none in
/// the first or last 60 points.
pub fn series(rng: &mut Rng, noise: Noise, size: Option<u32>, len: usize) -> Series {
    let draw = NoiseDraw::new(noise, rng);
    let mut steps = Vec::new();
    if size.is_some() {
        let mut at = rng.range(60, 160);
        while at + 60 <= len {
            steps.push(at);
            at += rng.range(100, 300);
        }
    }
    let mut level = 10_f64.powf(rng.between(0.0, 6.0));
    let fraction = f64::from(size.unwrap_or(0)) / 100.0;
    let mut next = steps.iter().peekable();
    let values = (0..len)
        .map(|i| {
            if next.next_if(|&&at| at == i).is_some() {
                level *= if rng.uniform() < 0.5 {
                    1.0 + fraction
                } else {
                    1.0 - fraction
                };
            }
            level * draw.sample(rng)
        })
        .collect();
    Series {
        noise,
        size,
        values,
        steps,
    }
}

/// The corpus of `seed`: for every noise kind and every step size (and
/// none), `per_cell` series of 600–1,400 points.
pub fn corpus(seed: u64, per_cell: usize) -> Vec<Series> {
    let mut rng = Rng::new(seed);
    let sizes = std::iter::once(None).chain(STEP_SIZES.iter().copied().map(Some));
    let cells: Vec<(Noise, Option<u32>)> = sizes
        .flat_map(|size| Noise::ALL.into_iter().map(move |noise| (noise, size)))
        .collect();
    let mut out = Vec::new();
    for (noise, size) in cells {
        for _ in 0..per_cell {
            let len = rng.range(600, 1401);
            out.push(series(&mut rng, noise, size, len));
        }
    }
    out
}
