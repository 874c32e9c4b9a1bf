//! The detector's behaviour on constant, noisy and stepped series (fixed
//! seeds), its invariances and its handling of bad input.

use proptest::prelude::*;

use super::*;

/// SplitMix64 with Box–Muller normals: the same numbers on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[derive(Debug, Clone, Copy)]
enum Noise {
    Normal1,
    Normal3,
    LogNormal,
    Bimodal,
    Outliers,
}

const NOISES: [Noise; 5] = [
    Noise::Normal1,
    Noise::Normal3,
    Noise::LogNormal,
    Noise::Bimodal,
    Noise::Outliers,
];

/// One noisy multiplier around 1.
fn noise(rng: &mut Rng, kind: Noise) -> f64 {
    match kind {
        Noise::Normal1 => 1.0 + 0.01 * rng.normal(),
        Noise::Normal3 => 1.0 + 0.03 * rng.normal(),
        Noise::LogNormal => (0.03 * rng.normal()).exp(),
        Noise::Bimodal => {
            let mode = if rng.uniform() < 0.3 { 1.05 } else { 1.0 };
            mode * (1.0 + 0.01 * rng.normal())
        }
        Noise::Outliers => {
            let x = 1.0 + 0.01 * rng.normal();
            if rng.uniform() < 0.02 {
                x * (0.8 + 1.2 * rng.uniform())
            } else {
                x
            }
        }
    }
}

/// `len` points around 100 with `kind` noise, ×(1 + `step`) from `at` on.
fn series(seed: u64, kind: Noise, len: usize, at: usize, step: f64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..len)
        .map(|i| {
            let level = if i >= at { 100.0 * (1.0 + step) } else { 100.0 };
            level * noise(&mut rng, kind)
        })
        .collect()
}

fn indexes(changes: &[ChangePoint]) -> Vec<usize> {
    changes.iter().map(|c| c.index).collect()
}

#[test]
fn a_constant_series_has_no_change() {
    for len in [0, 1, 5, 12, 50, 1000, 10_000] {
        assert_eq!(
            detect(&vec![42.0; len], &ChangeOptions::default()),
            vec![],
            "{len} points"
        );
    }
}

#[test]
fn pure_noise_of_every_kind_raises_no_alert() {
    // 5 kinds × 20 seeds × 2,000 points = 200,000 points of noise alone.
    let mut alerts = 0;
    for kind in NOISES {
        for seed in 0..20 {
            let found = detect(
                &series(seed, kind, 2000, usize::MAX, 0.0),
                &ChangeOptions::default(),
            );
            alerts += found.len();
        }
    }
    // The target is ≤ 0.5 per 1,000 points, that is ≤ 100 here.
    assert!(
        alerts <= 10,
        "{alerts} false alerts in 200,000 points of noise"
    );
}

#[test]
fn a_clean_ten_percent_step_is_found_where_it_is() {
    for (seed, step, dir) in [(1, 0.10, Step::Up), (2, -0.10, Step::Down)] {
        let values = series(seed, Noise::Normal1, 300, 150, step);
        let found = detect(&values, &ChangeOptions::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let c = &found[0];
        assert!(c.index.abs_diff(150) <= 2, "{c:?}");
        assert_eq!(c.step, dir);
        assert!((c.mean_before - 100.0).abs() < 1.0, "{c:?}");
        assert!((c.mean_after - 100.0 * (1.0 + step)).abs() < 1.0, "{c:?}");
        assert!((c.change - step).abs() < 0.01, "{c:?}");
        assert!(c.p_value <= ChangeOptions::default().max_p_value);
        assert_eq!(
            c.is_regression(crate::analysis::Better::Lower),
            dir == Step::Up
        );
    }
}

#[test]
fn steps_in_heavy_noise_are_found_with_their_direction() {
    for (i, kind) in NOISES.into_iter().enumerate() {
        let values = series(100 + i as u64, kind, 400, 200, -0.20);
        let found = detect(&values, &ChangeOptions::default());
        assert_eq!(indexes(&found).len(), 1, "{kind:?}: {found:?}");
        assert!(found[0].index.abs_diff(200) <= 2, "{kind:?}: {found:?}");
        assert_eq!(found[0].step, Step::Down, "{kind:?}");
    }
}

#[test]
fn two_steps_in_one_window_are_both_found() {
    // Steps 40 points apart: both inside one 300-point window.
    let mut values = series(7, Noise::Normal1, 240, 100, 0.10);
    for v in values.iter_mut().skip(140) {
        *v *= 1.10;
    }
    let found = indexes(&detect(&values, &ChangeOptions::default()));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].abs_diff(100) <= 2 && found[1].abs_diff(140) <= 2,
        "{found:?}"
    );
}

#[test]
fn the_result_does_not_depend_on_the_scale() {
    for seed in 0..10 {
        let values = series(seed, Noise::Outliers, 600, 300, 0.05);
        let scaled: Vec<f64> = values.iter().map(|v| v * 1000.0).collect();
        let a = detect(&values, &ChangeOptions::default());
        let b = detect(&scaled, &ChangeOptions::default());
        assert_eq!(indexes(&a), indexes(&b), "seed {seed}");
        for (a, b) in a.iter().zip(&b) {
            assert_eq!((a.step, a.p_value), (b.step, b.p_value));
            assert!((a.mean_before * 1000.0 - b.mean_before).abs() < 1e-6 * b.mean_before);
            assert!((a.change - b.change).abs() < 1e-9);
        }
    }
}

#[test]
fn pushing_point_by_point_equals_one_detect_at_every_prefix() {
    let mut values = series(11, Noise::Normal3, 900, 300, 0.10);
    for v in values.iter_mut().skip(600) {
        *v *= 0.85;
    }
    let mut detector = Detector::new(ChangeOptions::default());
    let mut seen: Vec<ChangePoint> = Vec::new();
    for (k, &v) in values.iter().enumerate() {
        detector.push(v);
        if k % 50 == 49 {
            assert_eq!(
                detector.changes(),
                detect(&values[..=k], &ChangeOptions::default())
            );
        }
        // A change once reported keeps its index, p-value and direction;
        // only the newest one's mean after moves.
        let now = detector.changes();
        assert!(now.len() >= seen.len());
        for (old, new) in seen.iter().zip(now) {
            assert_eq!(
                (old.index, old.p_value, old.step),
                (new.index, new.p_value, new.step)
            );
        }
        seen = now.to_vec();
    }
    assert_eq!(indexes(&seen).len(), 2, "{seen:?}");
}

#[test]
fn a_series_shorter_than_two_segments_has_no_change() {
    let options = ChangeOptions::default();
    for len in 0..2 * options.min_segment {
        let values: Vec<f64> = (0..len)
            .map(|i| if i < len / 2 { 1.0 } else { 1000.0 })
            .collect();
        assert_eq!(detect(&values, &options), vec![], "{len} points");
    }
}

#[test]
fn non_finite_values_are_skipped_but_keep_their_index() {
    let mut values = series(3, Noise::Normal1, 200, 100, 0.10);
    values.insert(50, f64::NAN);
    values.insert(60, f64::INFINITY);
    values.insert(70, f64::NEG_INFINITY);
    let mut detector = Detector::new(ChangeOptions::default());
    detector.extend(values.iter().copied());
    assert_eq!(detector.len(), 203);
    let found = detector.changes();
    assert_eq!(found.len(), 1, "{found:?}");
    // The step was at the 100th finite value, index 103 with the three skipped.
    assert!(found[0].index.abs_diff(103) <= 2, "{found:?}");
    assert!(found[0].mean_before.is_finite() && found[0].mean_after.is_finite());
}

#[test]
fn min_change_hides_small_changes_but_keeps_the_segments() {
    let mut values = series(5, Noise::Normal1, 600, 200, 0.03);
    for v in values.iter_mut().skip(400) {
        *v *= 1.2;
    }
    let all = detect(&values, &ChangeOptions::default());
    assert_eq!(all.len(), 2, "{all:?}");
    let options = ChangeOptions {
        min_change: 0.1,
        ..ChangeOptions::default()
    };
    let big = detect(&values, &options);
    assert_eq!(big.len(), 1, "{big:?}");
    assert_eq!(big[0].index, all[1].index);
    // Its mean before is that of the segment after the hidden change.
    assert!((big[0].mean_before - all[1].mean_before).abs() < 1e-9);
}

#[test]
fn bad_options_are_refused_with_a_clear_error() {
    let base = ChangeOptions::default();
    let cases = [
        (
            ChangeOptions {
                max_p_value: 0.0,
                ..base.clone()
            },
            "max_p_value must be in (0, 1], not 0",
        ),
        (
            ChangeOptions {
                max_p_value: f64::NAN,
                ..base.clone()
            },
            "max_p_value must be in (0, 1], not NaN",
        ),
        (
            ChangeOptions {
                min_change: -0.1,
                ..base.clone()
            },
            "min_change must be a finite fraction ≥ 0, not -0.1",
        ),
        (
            ChangeOptions {
                min_segment: 1,
                ..base.clone()
            },
            "min_segment must be at least 2, not 1",
        ),
        (
            ChangeOptions {
                window: 11,
                ..base.clone()
            },
            "window must be at least 2 × min_segment (12), not 11",
        ),
    ];
    for (options, message) in cases {
        let err = Detector::try_new(options.clone())
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(message));
        // `new` brings the knobs in range instead, and never panics.
        let mut d = Detector::new(options);
        d.extend((0..100).map(|i| if i < 50 { 1.0 } else { 2.0 }));
        assert!(d.options().validate().is_ok());
    }
    assert!(Detector::try_new(base).is_ok());
}

#[test]
fn options_read_from_partial_json() {
    let options: Result<ChangeOptions, _> = serde_json::from_str(r#"{"window": 100}"#);
    assert_eq!(
        options.ok(),
        Some(ChangeOptions {
            window: 100,
            ..ChangeOptions::default()
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(14), ..ProptestConfig::default() })]

    /// Any input, wild values and all: no panic, changes in order, inside
    /// the series, significant, with finite means.
    #[test]
    fn any_input_gives_ordered_significant_changes(
        values in prop::collection::vec(
            prop_oneof![
                8 => -1e6_f64..1e6,
                1 => Just(f64::NAN),
                1 => Just(f64::INFINITY),
                1 => Just(0.0),
                1 => prop::num::f64::ANY,
            ],
            0..400,
        )
    ) {
        let options = ChangeOptions::default();
        let found = detect(&values, &options);
        for pair in found.windows(2) {
            prop_assert!(pair[0].index < pair[1].index);
        }
        for c in &found {
            prop_assert!(c.index < values.len());
            prop_assert!(c.p_value <= options.max_p_value);
        }
    }

    /// A step of 20 % in 1 % noise, anywhere with 30 points on each side,
    /// at any scale: found once, in place, with its direction.
    #[test]
    fn a_large_step_is_found_at_any_place_and_scale(
        seed in 0_u64..1000,
        at in 30_usize..270,
        up in any::<bool>(),
        scale in prop_oneof![Just(1e-6), Just(1.0), Just(1e9)],
    ) {
        let step = if up { 0.2 } else { -0.2 };
        let values: Vec<f64> = series(seed, Noise::Normal1, 300, at, step).iter().map(|v| v * scale).collect();
        let found = detect(&values, &ChangeOptions::default());
        prop_assert_eq!(found.len(), 1, "{:?}", found);
        prop_assert!(found[0].index.abs_diff(at) <= 2, "{:?}", found);
        prop_assert_eq!(found[0].step, if up { Step::Up } else { Step::Down });
    }
}
