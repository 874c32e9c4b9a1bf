//! Samples of other producers written for this project (tests/data/): Google Benchmark
//! JSON with repetitions and aggregates, and JUnit XML in pytest, cargo-nextest and
//! Maven Surefire styles.

use testfleet_formats::{CaseOutcome, Format, detect};

use crate::common::{data_dir, parse_path};

fn snapshot(name: &str, results: &testfleet_formats::Results) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_yaml_snapshot!(name, results));
}

#[test]
fn google_benchmark_repetitions_and_aggregates() {
    let path = data_dir().join("gbench.json");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(detect(&bytes), Some(Format::GoogleBenchmark));
    let r = parse_path(&path);
    assert!(r.complete);
    let s = &r.suites[0];
    let mean = s
        .cases
        .iter()
        .find(|c| c.name == "BM_StringCopy/64" && c.data_tag.as_deref() == Some("mean"))
        .expect("mean aggregate");
    assert_eq!(mean.metrics[0].name, "real_time");
    assert_eq!(mean.metrics[0].unit, "ns");
    let reps = s
        .cases
        .iter()
        .filter(|c| {
            c.name == "BM_StringCopy/64"
                && c.data_tag.as_deref().is_some_and(|t| t.starts_with("rep"))
        })
        .count();
    assert_eq!(reps, 3);
    assert!(s.cases.iter().any(|c| c.outcome == CaseOutcome::Error));
    snapshot("data__gbench.json", &r);
}

#[test]
fn junit_producers() {
    for (file, cases) in [("pytest.xml", 5), ("nextest.xml", 4), ("surefire.xml", 4)] {
        let path = data_dir().join(file);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(detect(&bytes), Some(Format::Junit), "{file}");
        let r = testfleet_formats::parse(&bytes, None).expect("parse");
        assert!(r.complete, "{file}: {:?}", r.warnings);
        assert_eq!(r.cases().count(), cases, "{file}");
        snapshot(&format!("data__{file}"), &r);
    }
    let pytest = parse_path(&data_dir().join("pytest.xml"));
    assert!(pytest.cases().any(|c| c.outcome == CaseOutcome::Xfail));
    let nextest = parse_path(&data_dir().join("nextest.xml"));
    let flaky = nextest.cases().find(|c| c.flags.flaky).expect("flaky case");
    assert_eq!(flaky.outcome, CaseOutcome::Pass);
    assert_eq!(flaky.reruns.len(), 2);
    let surefire = parse_path(&data_dir().join("surefire.xml"));
    let rerun = surefire
        .cases()
        .find(|c| c.reruns.iter().any(|r| r.kind == "rerun_failure"))
        .expect("rerun case");
    // Its final attempt ended in <error>, so the case is an error, with both reruns.
    assert_eq!(rerun.outcome, CaseOutcome::Error);
    assert_eq!(rerun.reruns.len(), 2);
}
