//! Truncated and arbitrary input never panics: every prefix of every fixture parses to
//! a partial result, strict prefixes of framed formats are marked incomplete, and
//! proptest feeds arbitrary bytes to every parser.

use proptest::prelude::*;
use testfleet_formats::{Format, parse};

use crate::common::{fixture_files, format_of};

/// Formats whose streams have an explicit end marker, so a cut is always detectable.
fn framed(f: Format) -> bool {
    matches!(
        f,
        Format::QtXml
            | Format::QtLightXml
            | Format::QtTxt
            | Format::QtTeamcity
            | Format::QtJunitXml
    )
}

#[test]
fn every_prefix_of_every_fixture_parses() {
    for (name, path) in fixture_files() {
        let bytes = std::fs::read(&path).expect("read fixture");
        let format = format_of(&path);
        let full = parse(&bytes, Some(format)).expect("full parse");
        let end = bytes.trim_ascii_end().len();
        // Every byte prefix of small files; larger ones every 3rd byte plus every line
        // boundary, which keeps the debug-build run short without skipping any shape.
        let step = if bytes.len() <= 4096 { 1 } else { 3 };
        let cuts =
            (0..bytes.len()).filter(|i| i % step == 0 || bytes[i.saturating_sub(1)] == b'\n');
        for cut in cuts {
            let prefix = &bytes[..cut];
            let r = match parse(prefix, Some(format)) {
                Ok(r) => r,
                Err(e) => panic!("{name}[..{cut}]: {e}"),
            };
            // benchliboptions holds three complete reports back to back: a cut between
            // two of them is a complete report, so it cannot be flagged.
            let concatenated = name.contains("benchliboptions");
            if full.complete && framed(format) && cut < end && !concatenated {
                assert!(!r.complete, "{name}[..{cut}] claims to be complete");
                assert!(!r.warnings.is_empty(), "{name}[..{cut}] has no warning");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for f in Format::ALL {
            let _ = parse(&bytes, Some(f));
        }
        let _ = parse(&bytes, None);
    }

    #[test]
    fn arbitrary_text_lines_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            Just("ok 1 - a # SKIP".to_string()),
            Just("not ok 2 \\# b # TODO x".to_string()),
            Just("    # Subtest: s".to_string()),
            Just("  ---".to_string()),
            Just("  ...".to_string()),
            Just("1..3".to_string()),
            Just("<TestFunction name=\"f\">".to_string()),
            Just("<Incident type=\"fail\" file=\"\" line=\"0\">".to_string()),
            Just("RESULT : tst_X::f():\"t\":".to_string()),
            Just("     1,0 events per iteration (total: 1, iterations: 1)".to_string()),
            Just("##teamcity[testStarted name='f(x)']".to_string()),
            Just("<testcase name=\"x\"><failure message=\"m\">".to_string()),
            "[ -~]{0,40}",
        ],
        0..40,
    )) {
        let text = lines.join("\n");
        for f in Format::ALL {
            let _ = parse(text.as_bytes(), Some(f));
        }
    }
}
