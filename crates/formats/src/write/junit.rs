//! One merged JUnit XML report from several [`Results`], for CI systems that read JUnit.
//!
//! Hand-written rather than via a builder crate: the mapping needs a few elements that
//! builders do not model the same way (Surefire's rerun elements), and the escaping is
//! small enough to own and test.

use std::fmt::Write;

use testfleet_wire::results::{Case, CaseOutcome, Results};

/// Escapes text for XML element content and attribute values. Characters XML 1.0 cannot
/// carry at all (most control characters) become U+FFFD so the report stays well-formed.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes every suite of every `Results` into one `<testsuites>` document. Crashed test
/// programs become a case with an `<error type="crash">` holding their log.
pub fn junit_xml(all: &[Results]) -> String {
    let mut body = String::new();
    let (mut tests, mut failures, mut errors, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    for results in all {
        for suite in &results.suites {
            let c = suite.counts();
            let crashed: Vec<_> = results
                .crashed
                .iter()
                .filter(|cr| cr.test_name == suite.name)
                .collect();
            let s_fail = c.fail + c.xpass;
            let s_err = c.error + c.crash + crashed.len() as u64;
            let s_skip = c.skip + c.xfail;
            let s_tests = c.total() + crashed.len() as u64;
            tests += s_tests;
            failures += s_fail;
            errors += s_err;
            skipped += s_skip;
            let _ = write!(
                body,
                "  <testsuite name=\"{}\" tests=\"{s_tests}\" failures=\"{s_fail}\" errors=\"{s_err}\" skipped=\"{s_skip}\"",
                escape(&suite.name)
            );
            if let Some(ms) = suite.duration_ms {
                let _ = write!(body, " time=\"{:.3}\"", ms / 1000.0);
            }
            body.push_str(">\n");
            if !suite.properties.is_empty() {
                body.push_str("    <properties>\n");
                for p in &suite.properties {
                    let _ = writeln!(
                        body,
                        "      <property name=\"{}\" value=\"{}\"/>",
                        escape(&p.name),
                        escape(&p.value)
                    );
                }
                body.push_str("    </properties>\n");
            }
            for case in &suite.cases {
                write_case(&mut body, &suite.name, case);
            }
            for cr in crashed {
                let name = cr.function.as_deref().unwrap_or("(crashed)");
                let _ = writeln!(
                    body,
                    "    <testcase name=\"{}\" classname=\"{}\">\n      <error type=\"crash\" message=\"test program crashed\">{}</error>\n    </testcase>",
                    escape(name),
                    escape(&suite.name),
                    escape(&cr.log)
                );
            }
            body.push_str("  </testsuite>\n");
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">\n{body}</testsuites>\n"
    )
}

fn write_case(out: &mut String, suite: &str, case: &Case) {
    let classname = case.classname.as_deref().unwrap_or(suite);
    let _ = write!(
        out,
        "    <testcase name=\"{}\" classname=\"{}\"",
        escape(&case.display_name()),
        escape(classname)
    );
    if let Some(ms) = case.duration_ms {
        let _ = write!(out, " time=\"{:.3}\"", ms / 1000.0);
    }
    if let Some(f) = &case.file {
        let _ = write!(out, " file=\"{}\"", escape(f));
    }
    if let Some(l) = case.line {
        let _ = write!(out, " line=\"{l}\"");
    }
    out.push_str(">\n");
    let msg = escape(case.message.as_deref().unwrap_or(""));
    match case.outcome {
        CaseOutcome::Pass => {}
        CaseOutcome::Fail => {
            let _ = writeln!(out, "      <failure type=\"fail\" message=\"{msg}\"/>");
        }
        CaseOutcome::Xpass => {
            let _ = writeln!(out, "      <failure type=\"xpass\" message=\"{msg}\"/>");
        }
        CaseOutcome::Error => {
            let _ = writeln!(out, "      <error type=\"error\" message=\"{msg}\"/>");
        }
        CaseOutcome::Crash => {
            let _ = writeln!(out, "      <error type=\"crash\" message=\"{msg}\"/>");
        }
        CaseOutcome::Skip => {
            let _ = writeln!(out, "      <skipped message=\"{msg}\"/>");
        }
        CaseOutcome::Xfail => {
            let _ = writeln!(out, "      <skipped type=\"xfail\" message=\"{msg}\"/>");
        }
    }
    for r in &case.reruns {
        let element = match r.kind.as_str() {
            "flaky_failure" => "flakyFailure",
            "flaky_error" => "flakyError",
            "rerun_error" => "rerunError",
            _ => "rerunFailure",
        };
        let _ = writeln!(
            out,
            "      <{element} message=\"{}\" type=\"{}\">{}</{element}>",
            escape(r.message.as_deref().unwrap_or("")),
            escape(r.error_type.as_deref().unwrap_or("")),
            escape(r.log.as_deref().unwrap_or(""))
        );
    }
    if let Some(log) = &case.log {
        let _ = writeln!(out, "      <system-out>{}</system-out>", escape(log));
    }
    out.push_str("    </testcase>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_wire::results::Suite;

    #[test]
    fn escapes_and_round_trips_through_the_parser() {
        let mut r = Results::new("tap");
        let mut s = Suite::new("a<b>&\"c'");
        let mut c = Case::new("x", Some("tag]]>\u{1}".into()));
        c.outcome = CaseOutcome::Fail;
        c.message = Some("bad <thing> & \"quote\"".into());
        s.cases.push(c);
        r.suites.push(s);
        let xml = junit_xml(&[r.clone(), r]);
        let back = crate::parse(xml.as_bytes(), Some(crate::Format::Junit)).expect("parse");
        assert!(back.complete, "{:?}", back.warnings);
        assert_eq!(back.suites.len(), 2);
        assert_eq!(back.suites[0].name, "a<b>&\"c'");
        assert_eq!(back.suites[0].cases[0].name, "x(tag]]>\u{FFFD})");
        assert_eq!(
            back.suites[0].cases[0].message.as_deref(),
            Some("bad <thing> & \"quote\"")
        );
        assert_eq!(back.counts().fail, 2);
    }
}
