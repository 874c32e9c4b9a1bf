use super::*;
use crate::analysis::dist::sampling::{Rng, Shape};

fn model(history: &[f64]) -> NoiseModel {
    NoiseModel::of(history).unwrap_or_else(|| panic!("no model of {history:?}"))
}

fn assert_all_finite(m: &NoiseModel) {
    for (name, v) in [
        ("median", m.median),
        ("spread", m.spread),
        ("cv", m.cv),
        ("min_detectable_effect", m.min_detectable_effect),
    ] {
        assert!(v.is_finite(), "{name} = {v} in {m:?}");
    }
}

#[test]
fn fewer_than_three_finite_values_give_no_model() {
    assert!(NoiseModel::of(&[]).is_none());
    assert!(NoiseModel::of(&[1.0, 2.0]).is_none());
    assert!(NoiseModel::of(&[1.0, f64::NAN, f64::INFINITY, 2.0]).is_none());
    let m = model(&[1.0, f64::NAN, 2.0, 3.0]);
    assert_eq!(m.n, 3);
    assert_eq!(m.median, 2.0);
}

#[test]
fn constant_series_has_no_noise() {
    let m = model(&[42.0; 20]);
    assert_eq!((m.median, m.spread, m.cv), (42.0, 0.0, 0.0));
    assert_eq!((m.outliers, m.bimodal), (0, false));
    assert_eq!(m.min_detectable_effect, 0.0);
    assert_eq!(m.reference_repetitions, REFERENCE_REPETITIONS);
}

#[test]
fn zero_median_never_gives_nan_or_infinity() {
    let zeros = model(&[0.0; 10]);
    assert_eq!((zeros.median, zeros.spread, zeros.cv), (0.0, 0.0, 0.0));
    assert_all_finite(&zeros);
    // Median 0 with spread: cv is relative to the mean magnitude.
    let around_zero = model(&[-1.0, -0.5, 0.0, 0.0, 0.0, 0.5, 1.0]);
    assert_eq!(around_zero.median, 0.0);
    assert!(around_zero.cv > 0.0);
    assert_all_finite(&around_zero);
    let extreme = model(&[-f64::MAX, 0.0, f64::MAX]);
    assert_all_finite(&extreme);
}

#[test]
fn spread_of_a_normal_history_is_its_standard_deviation() {
    let mut rng = Rng::new(7);
    let history = Shape::Normal(0.02).sample(&mut rng, 100.0, 400);
    let m = model(&history);
    assert!((m.median - 100.0).abs() < 0.5, "{m:?}");
    assert!((m.cv - 0.02).abs() < 0.003, "{m:?}");
    assert!(!m.bimodal, "{m:?}");
    assert!(m.outliers <= 2, "{m:?}");
}

#[test]
fn outliers_barely_move_the_model() {
    let mut rng = Rng::new(11);
    let clean = Shape::Normal(0.02).sample(&mut rng, 100.0, 100);
    let mut dirty = clean.clone();
    // Every 20th value doubled: 5 % ×2 outliers.
    for v in dirty.iter_mut().step_by(20) {
        *v *= 2.0;
    }
    let (c, d) = (model(&clean), model(&dirty));
    assert!(
        (d.median - c.median).abs() / c.median < 0.005,
        "{c:?} {d:?}"
    );
    assert!((d.spread - c.spread).abs() / c.spread < 0.15, "{c:?} {d:?}");
    assert!(d.outliers >= 5, "{d:?}");
    assert!(!d.bimodal, "{d:?}");
    assert!(d.cv < 0.03, "{d:?}");
}

#[test]
fn two_modes_are_flagged_and_widen_the_spread() {
    // 70 % at 100, 30 % at 110, each mode tight (0.3 %), alternating.
    let mut rng = Rng::new(3);
    let history: Vec<f64> = (0..60)
        .map(|i| {
            let center = if i % 10 < 7 { 100.0 } else { 110.0 };
            center * (1.0 + 0.003 * rng.normal())
        })
        .collect();
    let m = model(&history);
    assert!(m.bimodal, "{m:?}");
    // The mixture's sd is √(0.7·0.3)·10 ≈ 4.6: not the tight modes' 0.3.
    assert!(m.spread > 4.0 && m.spread < 5.5, "{m:?}");
    assert!(m.cv > 0.04, "{m:?}");
    assert_eq!(m.outliers, 0, "the minority mode is not outliers: {m:?}");
}

#[test]
fn unimodal_shapes_are_not_flagged_bimodal() {
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        for shape in [
            Shape::Normal(0.01),
            Shape::Normal(0.05),
            Shape::LogNormal(0.05),
            Shape::Outliers {
                cv: 0.02,
                rate: 0.03,
            },
        ] {
            for n in [10, 30, 200] {
                let m = model(&shape.sample(&mut rng, 50.0, n));
                assert!(!m.bimodal, "seed {seed} {shape:?} n {n}: {m:?}");
            }
        }
    }
}

#[test]
fn min_detectable_effect_shrinks_with_the_noise() {
    let mut rng = Rng::new(5);
    let base: Vec<f64> = (0..100).map(|_| rng.normal()).collect();
    let mut last = f64::INFINITY;
    for cv in [0.1, 0.03, 0.01, 0.001] {
        let history: Vec<f64> = base.iter().map(|z| 100.0 * (1.0 + cv * z)).collect();
        let m = model(&history);
        assert!(m.min_detectable_effect < last, "{cv}: {m:?}");
        // About 2.2 × cv for 5 repetitions per side at α = 0.01.
        assert!(
            (m.min_detectable_effect / m.cv - 2.21).abs() < 0.02,
            "{m:?}"
        );
        last = m.min_detectable_effect;
    }
}

#[test]
fn quantized_history_is_not_read_as_noiseless() {
    // Integer milliseconds: 80 % 10 ms, 20 % 11 ms.
    let history: Vec<f64> = (0..50)
        .map(|i| if i % 5 == 0 { 11.0 } else { 10.0 })
        .collect();
    let m = model(&history);
    assert!(m.spread > 0.3, "{m:?}");
    assert!(m.cv > 0.03, "{m:?}");
}

#[test]
fn two_modes_are_found_across_seeds_even_with_outliers() {
    let shape = Shape::Bimodal { gap: 0.1, cv: 0.01 };
    let mut flagged = 0;
    for seed in 0..100 {
        let mut rng = Rng::new(seed);
        let mut history = shape.sample(&mut rng, 100.0, 40);
        // Two wild values: one ×2, one ×0.8.
        history[5] *= 2.0;
        history[17] *= 0.8;
        let m = model(&history);
        if m.bimodal {
            flagged += 1;
            assert!(m.cv > 0.04, "seed {seed}: {m:?}");
            assert!(m.outliers >= 2, "seed {seed}: {m:?}");
        }
    }
    assert!(flagged >= 95, "{flagged} of 100 bimodal histories flagged");
}
