//! Writers on real parsed input: the merged JUnit report reads back with the same
//! counts, and InfluxDB lines carry every benchmark value of a fixture.

use testfleet_formats::{Format, InfluxContext, TapItem, influx_lines, junit_xml, parse, tap13};

use crate::common::{parse_path, shared_fixtures};

#[test]
fn merged_junit_keeps_counts() {
    let dir = shared_fixtures().join("qtest");
    let a = parse_path(&dir.join("expected_expectfail.xml"));
    let b = parse_path(&dir.join("expected_crashes_4.txt"));
    let xml = junit_xml(&[a.clone(), b.clone()]);
    let back = parse(xml.as_bytes(), None).expect("parse merged");
    assert_eq!(back.format, Format::Junit.to_string());
    assert!(back.complete, "{:?}", back.warnings);
    assert_eq!(back.suites.len(), 2);
    let want_fail = a.counts().fail + a.counts().xpass + b.counts().fail + b.counts().xpass;
    assert_eq!(back.counts().fail, want_fail);
    // The crashed function shows up as an error case holding the crash log.
    assert!(
        back.cases()
            .any(|c| c.log.as_deref().is_some_and(|l| l.contains("SIGSEGV")))
    );
}

#[test]
fn influx_lines_for_every_metric() {
    let r = parse_path(&shared_fixtures().join("qtest/expected_benchlibeventcounter.xml"));
    let ctx = InfluxContext {
        platform: "Debian 12".into(),
        host: "bench 1".into(),
        branch: "dev".into(),
        gcc: "12.2".into(),
        cpu_model: "AMD, Ryzen=7".into(),
        integration_id: "42".into(),
        sha1: "abc".into(),
        timestamp_ns: 1_700_000_000_000_000_000,
        metric_tag: false,
    };
    let lines = influx_lines(&r, &ctx);
    assert_eq!(lines.lines().count(), r.metric_count());
    let first = lines.lines().next().expect("a line");
    assert!(
        first.starts_with(
            "benchmark,branch=dev,case_name=events,cpu_model=AMD\\,\\ Ryzen\\=7,data_row=0,"
        ),
        "{first}"
    );
    assert!(first.ends_with(" crashed=false,value=0.0,iterations=1i,integration_id=\"42\",sha1=\"abc\" 1700000000000000000"), "{first}");
}

#[test]
fn taskotron_tap_from_results() {
    let r = parse_path(&shared_fixtures().join("qtest/expected_failinit.txt"));
    let items = TapItem::from_results(&r, "qtbase-1.0", "koji_build");
    let tap = tap13(&items);
    let back = parse(tap.as_bytes(), Some(Format::Tap)).expect("parse");
    assert!(back.complete, "{:?}", back.warnings);
    let first = &back.suites[0].cases[0];
    assert_eq!(first.outcome, testfleet_formats::CaseOutcome::Fail);
    let d = first.diagnostics.as_ref().expect("yaml");
    assert_eq!(d["item"], "qtbase-1.0");
    assert_eq!(d["type"], "koji_build");
    assert_eq!(d["outcome"], "FAILED");
    assert_eq!(d["checkname"], "tst_FailInit.initTestCase");
}
