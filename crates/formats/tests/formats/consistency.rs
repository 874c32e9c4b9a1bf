//! The `xml`, `lightxml`, `txt` and `csv` outputs of one QtTest selftest give the same
//! benchmark metrics.
//!
//! Qt's expected files are normalized by its generator script: wall-time and CPU-tick
//! values are zeroed in the text and XML files but not in the CSV files, so for those
//! two metrics only names, tags and iteration counts are compared.

use std::path::Path;

use testfleet_formats::Results;

use crate::common::{parse_path, shared_fixtures};

#[derive(Debug, PartialEq)]
struct Row {
    suite: usize,
    function: String,
    tag: Option<String>,
    metric: String,
    iterations: Option<u64>,
    value: Option<f64>,
    variance: Option<f64>,
}

fn rows(r: &Results, compare_variance: bool) -> Vec<Row> {
    let mut out = Vec::new();
    // CSV has no incidents, so suites are numbered among those that have metrics.
    let mut suite_no = 0;
    for s in &r.suites {
        let mut any = false;
        for c in &s.cases {
            for m in &c.metrics {
                any = true;
                let normalized = matches!(m.name.as_str(), "WalltimeMilliseconds" | "CPUTicks");
                out.push(Row {
                    suite: suite_no,
                    function: c.name.clone(),
                    tag: c.data_tag.clone(),
                    metric: m.name.clone(),
                    iterations: m.iterations,
                    value: (!normalized).then_some(m.value),
                    variance: if compare_variance { m.variance } else { None },
                });
            }
        }
        if any {
            suite_no += 1;
        }
    }
    out
}

fn check(dir: &Path, test: &str, exts: &[&str], variance: bool) {
    let mut reference: Option<(String, Vec<Row>)> = None;
    for ext in exts {
        let path = dir.join(format!("expected_{test}.{ext}"));
        let r = parse_path(&path);
        let got = rows(&r, variance);
        assert!(!got.is_empty(), "{}: no metrics", path.display());
        match &reference {
            None => reference = Some((ext.to_string(), got)),
            Some((ref_ext, want)) => {
                assert_eq!(&got, want, "{test}: {ext} differs from {ref_ext}")
            }
        }
    }
}

#[test]
fn benchlib_metrics_agree_across_formats() {
    let dir = shared_fixtures().join("qtest");
    for test in [
        "benchlibwalltime",
        "benchlibcounting",
        "benchlibeventcounter",
        "benchlibtickcounter",
    ] {
        check(&dir, test, &["xml", "lightxml", "txt", "csv"], false);
    }
    // The options CSV is from an older history point (its last run has 1 iteration,
    // the XML and text files 64), so only XML and text are compared.
    check(&dir, "benchliboptions", &["xml", "txt"], false);
    // The callgrind XML files come from a run where the benchmark was skipped.
    check(&dir, "benchlibcallgrind", &["txt", "csv"], false);
}

#[test]
fn upstream_variance_agrees_across_formats() {
    let dir = shared_fixtures().join("qtest/upstream-0cd0d6e0");
    for test in [
        "benchlibwalltime",
        "benchlibcounting",
        "benchlibeventcounter",
        "benchlibtickcounter",
    ] {
        check(&dir, test, &["xml", "lightxml", "csv"], true);
    }
}
