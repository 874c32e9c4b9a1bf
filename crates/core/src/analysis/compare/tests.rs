use proptest::prelude::*;

use super::*;
use crate::analysis::dist::sampling::{Rng, Shape};

fn run(baseline: &[f64], contender: &[f64]) -> Comparison {
    run_with(baseline, contender, Better::Lower, None)
}

fn run_with(
    baseline: &[f64],
    contender: &[f64],
    better: Better,
    noise: Option<&NoiseModel>,
) -> Comparison {
    compare(
        baseline,
        contender,
        better,
        noise,
        &CompareOptions::default(),
    )
    .unwrap_or_else(|e| panic!("compare failed: {e}"))
}

/// Every number of a comparison is finite and consistent.
fn assert_well_formed(c: &Comparison) {
    let numbers = [
        c.change,
        c.ci_low,
        c.ci_high,
        c.p_value,
        c.baseline.median,
        c.baseline.mean,
        c.baseline.min,
        c.baseline.max,
        c.baseline.cv,
        c.contender.median,
        c.contender.mean,
        c.contender.min,
        c.contender.max,
        c.contender.cv,
    ];
    assert!(numbers.iter().all(|v| v.is_finite()), "{c:?}");
    assert!(c.ci_low <= c.change && c.change <= c.ci_high, "{c:?}");
    assert!((0.0..=1.0).contains(&c.p_value), "{c:?}");
    assert_eq!(
        c.more_repetitions.is_some(),
        c.verdict == Verdict::Unknown,
        "{c:?}"
    );
    if let Some(more) = c.more_repetitions {
        assert!((1..=50).contains(&more), "{c:?}");
    }
    assert!(c.reason.starts_with(c.verdict.as_str()), "{c:?}");
}

const SHAPES: [Shape; 6] = [
    Shape::Normal(0.01),
    Shape::Normal(0.03),
    Shape::LogNormal(0.03),
    Shape::Bimodal { gap: 0.1, cv: 0.01 },
    Shape::Outliers {
        cv: 0.01,
        rate: 0.05,
    },
    Shape::Outliers {
        cv: 0.03,
        rate: 0.05,
    },
];

#[test]
fn identical_samples_are_never_different() {
    let mut rng = Rng::new(1);
    for shape in SHAPES {
        for n in [1, 2, 3, 5, 10, 30] {
            let sample = shape.sample(&mut rng, 250.0, n);
            let c = run(&sample, &sample);
            assert_well_formed(&c);
            assert_eq!(c.change, 0.0, "{shape:?} n {n}: {c:?}");
            assert!(!c.verdict.is_different(), "{shape:?} n {n}: {c:?}");
            if n >= 5 && matches!(shape, Shape::Normal(0.01)) {
                assert_eq!(c.verdict, Verdict::Same, "{shape:?} n {n}: {c:?}");
            }
        }
    }
    let constant = run(&[7.0; 5], &[7.0; 5]);
    assert_eq!((constant.verdict, constant.p_value), (Verdict::Same, 1.0));
    let single = run(&[7.0], &[7.0]);
    assert_eq!(single.verdict, Verdict::Unknown);
    assert_eq!(single.more_repetitions, Some(4));
}

/// A/A: both samples from one distribution, with the series' noise model
/// built from a history of that distribution, are never DIFFERENT.
#[test]
fn a_a_runs_are_never_different() {
    let mut same = 0;
    for shape in SHAPES {
        for n in [5, 10] {
            for seed in 0..200u64 {
                let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ n as u64);
                let history = shape.sample(&mut rng, 100.0, 30);
                let model = NoiseModel::of(&history);
                let a = shape.sample(&mut rng, 100.0, n);
                let b = shape.sample(&mut rng, 100.0, n);
                let c = run_with(&a, &b, Better::Lower, model.as_ref());
                assert_well_formed(&c);
                assert!(
                    !c.verdict.is_different(),
                    "{shape:?} n {n} seed {seed}: {c:?}"
                );
                same += usize::from(c.verdict == Verdict::Same);
            }
        }
    }
    // Most of them are recognized as SAME, not just left UNKNOWN.
    assert!(same > 2400 * 3 / 4, "{same} of 2400 A/A comparisons same");
}

/// Without a noise model only `min_effect` guards against noise: A/A runs
/// are then DIFFERENT at most at the test's own rate (alpha).
#[test]
fn a_a_runs_without_a_noise_model_are_rarely_different() {
    let mut different = 0;
    for shape in SHAPES {
        for n in [5, 10] {
            for seed in 0..200u64 {
                let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ n as u64);
                let a = shape.sample(&mut rng, 100.0, n);
                let b = shape.sample(&mut rng, 100.0, n);
                different += usize::from(run(&a, &b).verdict.is_different());
            }
        }
    }
    // Measured: 6 of 2400 (0.25 %), with 3 % noise or two modes.
    assert!(
        different <= 24,
        "{different} of 2400 A/A comparisons different"
    );
}

#[test]
fn a_thirty_percent_slowdown_is_slower() {
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let base = Shape::Normal(0.03).sample(&mut rng, 100.0, 5);
        let slow = Shape::Normal(0.03).sample(&mut rng, 130.0, 5);
        let c = run(&base, &slow);
        assert_eq!(c.verdict, Verdict::Slower, "seed {seed}: {c:?}");
        assert!((c.change - 0.30).abs() < 0.06, "seed {seed}: {c:?}");
        assert!(
            c.ci_low > 0.0 && c.ci_low <= c.change && c.change <= c.ci_high,
            "{c:?}"
        );
        assert!(c.p_value <= 0.01, "{c:?}");
        assert_eq!(c.more_repetitions, None);
        // The same numbers for a throughput: more is better, so worse.
        let throughput = run_with(&base, &slow, Better::Higher, None);
        assert_eq!(
            throughput.verdict,
            Verdict::Faster,
            "seed {seed}: {throughput:?}"
        );
        assert_eq!(throughput.change, c.change);
        // And the other way round.
        assert_eq!(run(&slow, &base).verdict, Verdict::Faster);
        assert_eq!(
            run_with(&slow, &base, Better::Higher, None).verdict,
            Verdict::Slower
        );
    }
}

#[test]
fn a_five_percent_change_at_one_percent_noise_is_different() {
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let base = Shape::Normal(0.01).sample(&mut rng, 100.0, 10);
        let faster = Shape::Normal(0.01).sample(&mut rng, 95.0, 10);
        let c = run(&base, &faster);
        assert_eq!(c.verdict, Verdict::Faster, "seed {seed}: {c:?}");
        assert!((c.change + 0.05).abs() < 0.015, "seed {seed}: {c:?}");
    }
}

#[test]
fn a_tiny_change_in_heavy_noise_is_never_different() {
    let mut asked = Vec::new();
    let mut different_without_model = 0;
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let base = Shape::Normal(0.03).sample(&mut rng, 100.0, 5);
        let contender = Shape::Normal(0.03).sample(&mut rng, 100.3, 5);
        let model = NoiseModel::of(&Shape::Normal(0.03).sample(&mut rng, 100.0, 30));
        let c = run_with(&base, &contender, Better::Lower, model.as_ref());
        assert_well_formed(&c);
        assert!(!c.verdict.is_different(), "seed {seed}: {c:?}");
        let c = run(&base, &contender);
        assert_well_formed(&c);
        if c.verdict.is_different() {
            different_without_model += 1;
        } else if c.verdict == Verdict::Unknown {
            let more = c.more_repetitions.unwrap_or(0);
            assert!(
                c.reason.contains(&format!("{more} more repetitions")),
                "{}",
                c.reason
            );
            asked.push(more);
        }
    }
    // Without the series' noise model only min_effect (2 %) guards, and 3 %
    // noise is larger: five against five are then completely separated by
    // chance 2 times in 252, and such a split is DIFFERENT when its shift
    // passes 2 %. Measured: 1 of these 200.
    assert!(different_without_model <= 2, "{different_without_model}");
    assert!(asked.len() > 180, "{} unknown", asked.len());
    // 3 % noise against the 2 % floor needs ~55 per side, so 50 more (the
    // cap); five values estimate the noise loosely, hence the median.
    asked.sort_unstable();
    let median = asked[asked.len() / 2];
    assert!(median >= 30, "{asked:?}");
}

#[test]
fn more_repetitions_follow_the_noise() {
    let options = CompareOptions::default();
    let more =
        |cv: f64, floor: f64, current: usize| repetitions_to_decide(cv, floor, current, &options);
    // 2 (z₀.₉₉₉₅ + z₀.₈)² (π/3) (cv / floor)² = 35.76 (cv / floor)², the
    // t-test's stricter level deciding: 8.9 → 9 per side at 1 %/2 %.
    assert_eq!(more(0.01, 0.02, 3), 6);
    // 80.5 → 81 per side at 3 %/2 %: capped at 50 more.
    assert_eq!(more(0.03, 0.02, 5), 50);
    assert_eq!(more(0.02, 0.02, 10), 26);
    // No noise seen: the 5 per side an exact test needs at α = 0.01.
    assert_eq!(more(0.0, 0.02, 1), 4);
    // Enough already by the estimate: double.
    assert_eq!(more(0.001, 0.02, 10), 10);
    // A zero floor cannot be reached with any noise.
    assert_eq!(more(0.01, 0.0, 5), 50);
    assert_eq!(smallest_deciding_size(0.01), 5);
    assert_eq!(smallest_deciding_size(0.05), 4);
    assert_eq!(smallest_deciding_size(0.001), 7);
    // One value per side never decides.
    let c = run(&[100.0], &[200.0]);
    assert_eq!(
        (c.verdict, c.more_repetitions),
        (Verdict::Unknown, Some(4)),
        "{c:?}"
    );
    assert!(c.reason.contains("one repetition"), "{}", c.reason);
}

#[test]
fn the_noise_model_raises_the_floor() {
    let mut rng = Rng::new(21);
    let base = Shape::Normal(0.01).sample(&mut rng, 100.0, 10);
    let slower = Shape::Normal(0.01).sample(&mut rng, 105.0, 10);
    assert_eq!(run(&base, &slower).verdict, Verdict::Slower);
    // A series whose runs vary by 3 % makes 5 % within its own noise.
    let history = Shape::Normal(0.03).sample(&mut rng, 100.0, 50);
    let model = NoiseModel::of(&history);
    let floor = effect_floor(model.as_ref(), &CompareOptions::default()).unwrap_or(0.0);
    assert!(floor > 0.06 && floor < 0.10, "{floor}");
    let c = run_with(&base, &slower, Better::Lower, model.as_ref());
    assert!(!c.verdict.is_different(), "{c:?}");
    // A quiet series never lowers min_effect.
    let quiet = NoiseModel::of(&[100.0; 10]);
    assert_eq!(
        effect_floor(quiet.as_ref(), &CompareOptions::default()),
        Ok(0.02)
    );
}

#[test]
fn verdict_and_change_do_not_depend_on_the_unit() {
    for seed in 0..30 {
        let mut rng = Rng::new(seed);
        let shape = SHAPES[seed as usize % SHAPES.len()];
        let a = shape.sample(&mut rng, 10.0, 8);
        let b = shape.sample(&mut rng, 10.0 * (0.9 + 0.02 * seed as f64 / 3.0), 8);
        let c = run(&a, &b);
        for factor in [1000.0, 1e-3, 1e200, 1e-200] {
            let scaled = |v: &[f64]| v.iter().map(|x| x * factor).collect::<Vec<_>>();
            let s = run(&scaled(&a), &scaled(&b));
            assert_eq!(
                s.verdict, c.verdict,
                "seed {seed} ×{factor}: {c:?} vs {s:?}"
            );
            assert_eq!(s.more_repetitions, c.more_repetitions);
            for (x, y) in [
                (s.change, c.change),
                (s.ci_low, c.ci_low),
                (s.ci_high, c.ci_high),
                (s.p_value, c.p_value),
            ] {
                assert!(
                    (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                    "seed {seed} ×{factor}: {c:?} vs {s:?}"
                );
            }
            assert!(
                (s.baseline.median / factor - c.baseline.median).abs() < 1e-9 * c.baseline.median
            );
        }
    }
}

#[test]
fn larger_samples_use_the_bonferroni_adjustment() {
    let mut rng = Rng::new(4);
    let base = Shape::LogNormal(0.02).sample(&mut rng, 100.0, 30);
    let slower = Shape::LogNormal(0.02).sample(&mut rng, 104.0, 30);
    let c = run(&base, &slower);
    assert_eq!(c.verdict, Verdict::Slower, "{c:?}");
    assert!(c.p_value < 1e-6, "{c:?}");
}

#[test]
fn a_zero_baseline_median_gives_finite_numbers() {
    let c = run(&[0.0, 0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_well_formed(&c);
    assert_eq!((c.change, c.verdict), (0.0, Verdict::Same));
    let c = run(&[0.0, 0.0, 0.0, 1.0, 0.0], &[5.0, 6.0, 5.0, 7.0, 6.0]);
    assert_well_formed(&c);
    assert_eq!(c.verdict, Verdict::Slower, "{c:?}");
    let c = run(&[-1.0, 0.0, 1.0], &[-1.0, 0.0, 2.0]);
    assert_well_formed(&c);
}

#[test]
fn bad_input_is_refused() {
    let ok = [1.0, 2.0, 3.0];
    let options = CompareOptions::default();
    let err =
        |b: &[f64], c: &[f64], o: &CompareOptions| compare(b, c, Better::Lower, None, o).err();
    assert_eq!(
        err(&[], &ok, &options),
        Some(CompareError::Empty("baseline"))
    );
    assert_eq!(
        err(&ok, &[], &options),
        Some(CompareError::Empty("contender"))
    );
    assert_eq!(
        err(&[1.0, f64::NAN], &ok, &options),
        Some(CompareError::NotFinite("baseline"))
    );
    assert_eq!(
        err(&ok, &[f64::INFINITY], &options),
        Some(CompareError::NotFinite("contender"))
    );
    assert_eq!(
        err(&[], &ok, &options).map(|e| e.to_string()),
        Some("the baseline sample is empty".to_owned())
    );
    for bad in [
        CompareOptions {
            alpha: 0.0,
            ..options.clone()
        },
        CompareOptions {
            alpha: 1.0,
            ..options.clone()
        },
        CompareOptions {
            alpha: f64::NAN,
            ..options.clone()
        },
        CompareOptions {
            min_effect: -0.1,
            ..options.clone()
        },
        CompareOptions {
            min_effect: f64::INFINITY,
            ..options.clone()
        },
        CompareOptions {
            max_repetitions: 0,
            ..options.clone()
        },
    ] {
        assert!(
            matches!(err(&ok, &ok, &bad), Some(CompareError::BadOption { .. })),
            "{bad:?}"
        );
    }
    let message = err(
        &ok,
        &ok,
        &CompareOptions {
            alpha: 2.0,
            ..options.clone()
        },
    )
    .map(|e| e.to_string());
    assert_eq!(
        message.as_deref(),
        Some("alpha is 2, expected a probability strictly between 0 and 1")
    );
    let broken = NoiseModel::of(&[1.0, 2.0, 3.0]).map(|m| NoiseModel { cv: f64::NAN, ..m });
    let refused = compare(&ok, &ok, Better::Lower, broken.as_ref(), &options);
    assert!(
        matches!(
            refused,
            Err(CompareError::BadOption {
                option: "noise.cv",
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn reasons_read_as_sentences() {
    let c = run(
        &[100.0, 101.0, 99.0, 100.5, 99.5],
        &[130.0, 131.0, 129.0, 130.5, 129.5],
    );
    assert_eq!(
        c.reason,
        "slower: change +30.00 % (95 % CI +28.50 % to +31.50 %, p = 0.0079) is significant \
         and beyond the ±2.00 % that matters"
    );
    let c = run(&[100.0; 5], &[100.0; 5]);
    assert_eq!(
        c.reason,
        "same: change +0.00 % (95 % CI +0.00 % to +0.00 %, p = 1.0000) lies within the ±2.00 % that matters"
    );
}

fn finite_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6..1e6f64,
        2 => 0.5..2.0f64,
        1 => Just(0.0),
        1 => prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        1 => prop::sample::select(vec![f64::MAX, f64::MIN, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 1e-300]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(14),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// No NaN (or infinity) in any output, for any finite input.
    #[test]
    fn every_output_is_finite(
        baseline in prop::collection::vec(finite_value(), 1..14),
        contender in prop::collection::vec(finite_value(), 1..14),
        higher in any::<bool>(),
        noise in prop::collection::vec(finite_value(), 0..12),
    ) {
        let model = NoiseModel::of(&noise);
        if let Some(m) = &model {
            for v in [m.median, m.spread, m.cv, m.min_detectable_effect] {
                prop_assert!(v.is_finite(), "{m:?}");
            }
        }
        let better = if higher { Better::Higher } else { Better::Lower };
        let c = compare(&baseline, &contender, better, model.as_ref(), &CompareOptions::default());
        let c = c.map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_well_formed(&c);
    }
}
