//! The heavy-tailed generator: seeded, deterministic, bounded, and with a
//! tail far heavier than its median.

use testfleet_loadgen::{HeavyTailed, Rng, job_toml, task_name};

#[test]
fn same_seed_same_durations_other_seed_other_durations() {
    let d = HeavyTailed::default();
    let a = d.durations(42, 1000);
    assert_eq!(a, d.durations(42, 1000));
    assert_ne!(a, d.durations(43, 1000));
    // A prefix does not depend on how many are drawn.
    assert_eq!(&a[..10], &d.durations(42, 10)[..]);
}

#[test]
fn durations_are_bounded_and_heavy_tailed() {
    let d = HeavyTailed::default();
    let mut v = d.durations(7, 20_000);
    assert!(v.iter().all(|&ms| ms >= d.min_ms && ms <= d.max_ms));
    v.sort_unstable();
    let median = v[v.len() / 2] as f64;
    let p999 = v[v.len() * 999 / 1000] as f64;
    let max = v[v.len() - 1] as f64;
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    // Pareto(5 ms, 1.3): median ≈ 8.5 ms, p99.9 ≈ 1.0 s.
    assert!((6.0..12.0).contains(&median), "median {median}");
    assert!(p999 > 50.0 * median, "p99.9 {p999} vs median {median}");
    assert!(max > 200.0 * median, "max {max} vs median {median}");
    // The mean sits well above the median: the tail carries the work.
    assert!(mean > 1.8 * median, "mean {mean} vs median {median}");
    // The top 1% of tasks holds a large share of all work.
    let total: u64 = v.iter().sum();
    let top: u64 = v[v.len() * 99 / 100..].iter().sum();
    assert!(
        top as f64 > 0.25 * total as f64,
        "top 1% = {top} of {total}"
    );
}

#[test]
fn rng_is_uniform_enough_and_never_zero() {
    let mut rng = Rng::new(1);
    let n = 100_000;
    let mut sum = 0.0;
    for _ in 0..n {
        let u = rng.next_unit();
        assert!(u > 0.0 && u <= 1.0);
        sum += u;
    }
    let mean = sum / n as f64;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
}

#[test]
fn job_file_carries_names_and_durations() {
    let toml = job_toml("j", 9, &[2, 0], &[10, 0, 30]);
    let a = toml.find(&task_name(9, 2)).expect("task 2");
    let b = toml.find(&task_name(9, 0)).expect("task 0");
    assert!(a < b, "submission order kept:\n{toml}");
    assert!(toml.contains("TESTFLEET_BENCH_MS = \"30\""), "{toml}");
    assert!(toml.contains("TESTFLEET_BENCH_MS = \"10\""), "{toml}");
    assert!(toml.contains("requires = { pool = \"bench\" }"), "{toml}");
}
