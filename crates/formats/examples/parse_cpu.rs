//! Parse throughput in CPU time rather than wall time, for a machine busy with other
//! work (criterion's wall-clock numbers then swing widely): the same generated inputs as
//! `benches/parse.rs`, each parsed (and the result dropped) a few times, best run kept.
//! CPU time is read from `/proc/thread-self/schedstat` (Linux; wall time elsewhere) and
//! includes the kernel's page-fault time, so it is what one core really spends.
//!
//! Run: `cargo run --release -p testfleet-formats --example parse_cpu [qtest-xml|junit|tap]`.

use std::time::Instant;

use testfleet_formats::{Format, parse};

#[path = "../benches/inputs/mod.rs"]
mod inputs;

/// Nanoseconds this thread has run on a CPU, or wall-clock nanoseconds when unknown.
fn cpu_ns(start: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| start.elapsed().as_nanos() as u64)
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    for (name, format, make) in [
        ("qtest-xml", Format::QtXml, inputs::qt_xml as fn() -> String),
        ("junit", Format::Junit, inputs::junit),
        ("tap", Format::Tap, inputs::tap),
    ] {
        if !which.is_empty() && !which.iter().any(|w| w == name) {
            continue;
        }
        let input = make();
        let mut best = u64::MAX;
        for _ in 0..8 {
            let t = cpu_ns(start);
            let r = parse(std::hint::black_box(input.as_bytes()), Some(format));
            drop(std::hint::black_box(r));
            best = best.min(cpu_ns(start) - t);
        }
        let secs = best as f64 / 1e9;
        println!(
            "{name}: {:.1} ms, {:.1} MiB/s ({:.1} MB/s)",
            secs * 1e3,
            input.len() as f64 / (1024.0 * 1024.0) / secs,
            input.len() as f64 / 1e6 / secs
        );
    }
}
