//! Every shared fixture parses, auto-detection agrees with the file extension, and the
//! normalized model is pinned by insta snapshots (reviewed by hand).

use testfleet_formats::{CaseOutcome, Format, detect, parse};

use crate::common::{fixture_files, format_of, parse_path};

#[test]
fn every_fixture_matches_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, path) in fixture_files() {
            let results = parse_path(&path);
            insta::assert_yaml_snapshot!(name, results);
        }
    });
}

#[test]
fn detection_matches_extension() {
    for (_, path) in fixture_files() {
        let bytes = std::fs::read(&path).expect("read fixture");
        let expected = format_of(&path);
        let detected = detect(&bytes);
        // A lightxml file that is only a fragment without Environment still starts
        // with TestFunction; a QtTest CSV can only be told apart by its shape.
        assert_eq!(detected, Some(expected), "{}", path.display());
        // parse with detection gives the same as with the explicit format.
        let auto = parse(&bytes, None).expect("auto parse");
        let explicit = parse(&bytes, Some(expected)).expect("explicit parse");
        assert_eq!(auto, explicit, "{}", path.display());
    }
}

#[test]
fn complete_fixtures_are_complete_and_crashes_are_not() {
    for (name, path) in fixture_files() {
        let r = parse_path(&path);
        let stops_early = [
            "crashes_1.txt",
            "crashes_3.txt",
            "crashes_4.txt",
            "crashes_5.txt",
            "benchlibcallgrind_2.txt",
            "crashes.lightxml",
            "bailout.tap",
            "giving-up.tap",
        ]
        .iter()
        .any(|s| name.ends_with(s));
        assert_eq!(r.complete, !stops_early, "{name}: {:?}", r.warnings);
    }
}

#[test]
fn tap_directives_follow_tap14() {
    let dir = crate::common::shared_fixtures().join("tap");
    let skip = parse_path(&dir.join("skip.tap"));
    let outcomes: Vec<_> = skip.suites[0]
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("test 1", CaseOutcome::Pass),
            ("test 2", CaseOutcome::Skip),
            ("#skip should not skip because escaped", CaseOutcome::Pass),
            (
                "notskip, because testTitle#skip is not a directive",
                CaseOutcome::Pass
            ),
            ("test 5", CaseOutcome::Skip),
        ]
    );
    let todo = parse_path(&dir.join("todo_inline.tap"));
    let cases = &todo.suites[0].cases;
    assert_eq!(cases[0].outcome, CaseOutcome::Xfail);
    assert!(cases[0].flags.todo);
    assert_eq!(cases[1].outcome, CaseOutcome::Xpass);
    assert!(cases[1].flags.todo);
    assert_eq!(cases[2].outcome, CaseOutcome::Pass);
    assert!(
        cases[3].flags.todo,
        "`#todo` at the start of the description is a directive"
    );
    assert!(!cases[4].flags.todo, "`testTitle#todo` is not a directive");
    assert!(todo.passed(), "TODO failures do not fail the run");
}

#[test]
fn tap_bail_out_ignores_later_points() {
    let r = parse_path(&crate::common::shared_fixtures().join("tap/bailout.tap"));
    assert_eq!(r.suites[0].cases.len(), 3);
    assert_eq!(r.suites[0].property("bail_out"), Some("GERONIMMMOOOOOO!!!"));
    assert!(!r.complete);
}

#[test]
fn tap_yaml_and_subtests() {
    let dir = crate::common::shared_fixtures().join("tap");
    let y = parse_path(&dir.join("yamlish.tap"));
    let d = y.suites[0].cases[0].diagnostics.as_ref().expect("yaml");
    assert_eq!(d["data"]["got"]["address"], serde_json::Value::Null);
    assert_eq!(d["data"]["expected"]["address"], "85.193.201.85");
    let node = parse_path(&dir.join("node-test-cjs.tap"));
    let names: Vec<_> = node.suites[0]
        .cases
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "uhoh, this one throws",
            "test thing > nesting test",
            "test thing"
        ]
    );
    assert_eq!(node.suites[0].cases[0].duration_ms, Some(0.686334));
    let todo = parse_path(&dir.join("todo.tap"));
    assert!(todo.suites[0].cases.iter().any(|c| c.name
        == "a set of tests to be done later > the subset > has some of these things > ten is also truthy"));
}

#[test]
fn qt_metrics_tags_and_variance() {
    let dir = crate::common::shared_fixtures().join("qtest");
    let ev = parse_path(&dir.join("expected_benchlibeventcounter.xml"));
    let c = ev.suites[0]
        .cases
        .iter()
        .find(|c| c.data_tag.as_deref() == Some("5000"))
        .expect("row 5000");
    assert_eq!(c.metrics[0].name, "Events");
    assert_eq!(c.metrics[0].value, 5000.0);
    let up = parse_path(&dir.join("upstream-0cd0d6e0/expected_benchlibwalltime.xml"));
    assert!(
        up.cases()
            .flat_map(|c| &c.metrics)
            .all(|m| m.variance == Some(0.0))
    );
    let gd = parse_path(&dir.join("expected_globaldata.xml"));
    assert!(
        gd.cases()
            .any(|c| c.data_tag.as_deref() == Some("global=false:local=true"))
    );
    let opts = parse_path(&dir.join("expected_benchliboptions.xml"));
    assert_eq!(opts.suites.len(), 3);
}

#[test]
fn qt_blacklisted_and_xfail() {
    let dir = crate::common::shared_fixtures().join("qtest");
    for ext in ["xml", "lightxml", "txt"] {
        let r = parse_path(&dir.join(format!("expected_blacklisted.{ext}")));
        let c = r.counts();
        // tst_Blacklisted's own totals: 2 passed, 0 failed, 3 skipped, 8 blacklisted.
        assert_eq!(c.blacklisted, 8, "{ext}");
        assert_eq!(c.skip, 3, "{ext}");
        assert!(
            r.passed(),
            "{ext}: blacklisted failures do not fail the run"
        );
    }
    let xf = parse_path(&dir.join("expected_expectfail.xml"));
    assert!(xf.cases().any(|c| c.outcome == CaseOutcome::Xfail));
}

#[test]
fn qt_crashes_keep_their_log() {
    let dir = crate::common::shared_fixtures().join("qtest");
    let r = parse_path(&dir.join("expected_crashes_4.txt"));
    assert!(!r.complete);
    assert_eq!(r.crashed.len(), 1);
    assert_eq!(r.crashed[0].test_name, "tst_Crashes");
    assert_eq!(r.crashed[0].function.as_deref(), Some("crash"));
    assert!(
        r.crashed[0].log.contains("Received signal 11"),
        "{:?}",
        r.crashed[0]
    );
    let r3 = parse_path(&dir.join("expected_crashes_3.txt"));
    assert!(r3.crashed[0].log.contains("SIGSEGV"), "{:?}", r3.crashed);
    let x = parse_path(&dir.join("expected_crashes.xml"));
    assert_eq!(x.crashed[0].function.as_deref(), Some("crash"));
    assert!(x.cases().any(|c| c.outcome == CaseOutcome::Crash));
    assert_eq!(Format::QtXml.to_string(), x.format);
}
