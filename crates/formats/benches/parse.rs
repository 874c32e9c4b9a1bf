//! Parsing throughput (MB/s) on large generated inputs: QtTest XML, JUnit XML and TAP,
//! about 50 MB each, built in memory so the benchmark needs no files.
//!
//! Run: `cargo bench -p testfleet-formats --bench parse -- --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testfleet_formats::{Format, parse};

mod inputs;
use inputs::{junit, qt_xml, tap};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    for (name, format, input) in [
        ("qtest-xml", Format::QtXml, qt_xml()),
        ("junit", Format::Junit, junit()),
        ("tap", Format::Tap, tap()),
    ] {
        // Sanity: the generated input parses completely, so the number measures work.
        let r = parse(input.as_bytes(), Some(format)).expect("generated input parses");
        assert!(r.complete, "{name}: {:?}", r.warnings);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse(black_box(input.as_bytes()), Some(format)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
