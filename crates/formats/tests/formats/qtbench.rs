//! A real QtTest benchmark (tests/qtbench/, the project's own code) built against the
//! system Qt 6 at test time, run once with every QtTest logger, and parsed: all loggers
//! must agree on cases, outcomes and metric values.
//!
//! Without Qt 6 (Debian: `qt6-base-dev cmake g++`) the test kit's peer rule applies:
//! reported as skipped outside CI, a failure under `CI=true` so a missing install
//! step cannot hide.

use std::path::{Path, PathBuf};
use std::process::Command;

use testfleet_formats::{CaseOutcome, Format, Results, parse_file};

const LOGGERS: [(&str, Format); 7] = [
    ("xml", Format::QtXml),
    ("lightxml", Format::QtLightXml),
    ("txt", Format::QtTxt),
    ("csv", Format::QtCsv),
    ("junitxml", Format::QtJunitXml),
    ("tap", Format::QtTap),
    ("teamcity", Format::QtTeamcity),
];

/// The test kit's peer rule: a failure under CI, a reported skip outside.
fn unavailable(why: String) {
    testfleet_testkit::skip(&testfleet_testkit::peers::QT6, &why);
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn build(build_dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qtbench");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(build_dir)
        .arg("-DCMAKE_BUILD_TYPE=Release"))?;
    run(Command::new("cmake")
        .arg("--build")
        .arg(build_dir)
        .arg("-j2"))?;
    Ok(build_dir.join("tst_bench"))
}

/// (function, data tag, metric, value, iterations)
type MetricRow = (String, Option<String>, String, f64, Option<u64>);

#[test]
fn qtest_benchmark_agrees_across_loggers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = match build(&tmp.path().join("build")) {
        Ok(exe) => exe,
        Err(why) => return unavailable(why),
    };
    // One run, every logger at once: the loggers see the very same measurements.
    let mut cmd = Command::new(&exe);
    for (ext, _) in LOGGERS {
        cmd.arg("-o")
            .arg(format!("{}/out.{ext},{ext}", tmp.path().display()));
    }
    run(cmd.env("QT_QPA_PLATFORM", "offscreen")).expect("benchmark run");

    let parsed: Vec<(&str, Results)> = LOGGERS
        .iter()
        .map(|(ext, format)| {
            let path = tmp.path().join(format!("out.{ext}"));
            // Auto-detection must find the same format as the logger's name.
            let auto = parse_file(&path, None).expect("auto parse");
            assert_eq!(auto.format, format.to_string(), "{ext}");
            let r = parse_file(&path, Some(*format)).expect("parse");
            assert!(r.complete, "{ext}: {:?}", r.warnings);
            (*ext, r)
        })
        .collect();

    // Outcomes: every logger but CSV (benchmarks only) reports every case. QtTest's
    // JUnit logger reports an expected failure as a pass with output, so map it back.
    let outcomes = |r: &Results, junit: bool| {
        let mut v: Vec<(String, Option<String>, CaseOutcome)> = r
            .cases()
            .map(|c| {
                let mut o = c.outcome;
                if junit && c.name == "expectedFailure" {
                    o = CaseOutcome::Xfail;
                }
                (c.name.clone(), c.data_tag.clone(), o)
            })
            .collect();
        v.sort();
        v
    };
    let reference = outcomes(&parsed[0].1, false);
    assert_eq!(reference.len(), 11, "{reference:?}");
    assert!(reference.contains(&("skipped".into(), None, CaseOutcome::Skip)));
    assert!(reference.contains(&("expectedFailure".into(), None, CaseOutcome::Xfail)));
    assert!(reference.contains(&(
        "join".into(),
        Some("with space, comma=1".into()),
        CaseOutcome::Pass
    )));
    for (ext, r) in &parsed {
        if *ext == "csv" {
            continue;
        }
        assert_eq!(outcomes(r, *ext == "junitxml"), reference, "{ext}");
    }

    // Metrics: XML, lightxml, CSV and text carry them; text rounds to a few digits.
    let metrics = |r: &Results| {
        let mut v: Vec<MetricRow> = r
            .cases()
            .flat_map(|c| {
                c.metrics.iter().map(|m| {
                    (
                        c.name.clone(),
                        c.data_tag.clone(),
                        m.name.clone(),
                        m.value,
                        m.iterations,
                    )
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    };
    let want = metrics(&parsed[0].1);
    assert_eq!(want.len(), 6, "{want:?}");
    // The text logger keeps two or three significant digits (0.000015 for 1.597e-5),
    // so it agrees to about 10%; CSV prints 13 digits against XML's 6.
    for (ext, tolerance) in [("lightxml", 0.0), ("csv", 1e-4), ("txt", 0.1)] {
        let r = &parsed.iter().find(|(e, _)| *e == ext).expect("parsed").1;
        let got = metrics(r);
        assert_eq!(got.len(), want.len(), "{ext}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.0, &g.1, &g.2, g.4), (&w.0, &w.1, &w.2, w.4), "{ext}");
            let rel = (g.3 - w.3).abs() / w.3.abs().max(f64::MIN_POSITIVE);
            assert!(rel <= tolerance, "{ext}: {g:?} vs {w:?} (relative {rel})");
        }
    }
}
