//! Line-protocol encoding throughput: encodes the seed-000 points of a
//! generated run (200,000 benchmark values with data rows and characters that
//! need escaping) and prints points per second.
//!
//! `cargo run --release -p testfleet-formats --example influx_encode`

use std::time::Instant;

use testfleet_formats::{InfluxContext, influx_lines};
use testfleet_wire::results::{Case, Metric, Results, Suite};

fn main() {
    let mut suite = Suite {
        name: "tst_bench_qstring".into(),
        ..Suite::default()
    };
    for i in 0..200_000u32 {
        let mut case = Case::new(
            format!("concatenation_{}", i % 500),
            Some(format!("row {i}, with=escapes")),
        );
        case.metrics.push(Metric {
            name: "WalltimeMilliseconds".into(),
            unit: "msecs".into(),
            value: f64::from(i) * 0.37,
            total: None,
            iterations: Some(200),
            variance: None,
        });
        suite.cases.push(case);
    }
    let results = Results {
        format: "qtest-xml".into(),
        suites: vec![suite],
        complete: true,
        ..Results::default()
    };
    let ctx = InfluxContext {
        platform: "Debian GNU/Linux 12 (bookworm)".into(),
        host: "bench host 1".into(),
        branch: "dev".into(),
        gcc: "12.2.0".into(),
        cpu_model: "Intel(R) Core(TM) i7-7700K CPU @ 4.20GHz".into(),
        integration_id: "189470895".into(),
        sha1: "69609f0b3575c571fff4564f6f16cbca9c7d81f6".into(),
        timestamp_ns: 1_676_034_673_000_000_000,
        metric_tag: false,
    };
    let mut best = f64::MAX;
    let mut points = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let body = influx_lines(&results, &ctx);
        best = best.min(started.elapsed().as_secs_f64());
        points = body.lines().count();
    }
    println!(
        "{points} points in {:.1} ms: {:.0} points/s (best of 5)",
        best * 1000.0,
        points as f64 / best
    );
}
