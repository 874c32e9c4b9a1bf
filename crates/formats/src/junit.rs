//! JUnit XML, as written by Ant, Maven Surefire, pytest, cargo-nextest, QtTest and others.
//!
//! Streams with quick-xml. Producers disagree on details, so the reader is lenient:
//! with or without a `<testsuites>` root, nested suites flattened, `failure`/`error`/
//! `skipped` (pytest's `skipped type="pytest.xfail"` is an expected failure),
//! `system-out`/`system-err` at case and suite level, and Surefire/nextest rerun
//! elements (`flakyFailure`, `flakyError`, `rerunFailure`, `rerunError`): a case with
//! only flaky elements passed on a rerun and is flagged flaky.

use std::borrow::Cow;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use testfleet_wire::results::{Case, CaseOutcome, Property, Rerun, Results, Suite};

use crate::Format;
use crate::util::{
    MAX_TEXT, append_capped, attrs, parse_count, parse_number, resolve_ref, set_capped,
};

/// Where character data currently goes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    None,
    Outcome,
    CaseOut,
    CaseErr,
    RerunStack,
    RerunOut,
    RerunErr,
    SuiteOut,
    SuiteErr,
}

pub(crate) fn parse<R: BufRead>(input: R) -> Results {
    let mut reader = Reader::from_reader(input);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;

    let mut results = Results::new(Format::Junit.name());
    let mut suites: Vec<Suite> = Vec::new();
    let mut case: Option<Case> = None;
    let mut rerun: Option<Rerun> = None;
    let mut target = Target::None;
    let mut text = String::new();
    let mut depth: usize = 0;
    let mut saw_root = false;
    let mut closed_root = false;
    let mut buf = Vec::new();
    let mut error = None;

    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => {
                error = Some(format!(
                    "malformed XML at byte {}: {e}",
                    reader.error_position()
                ));
                break;
            }
        };
        let (e, empty) = match event {
            Event::Eof => break,
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                let qname = e.name();
                let name: &str = qname.as_ref();
                end_element(
                    name,
                    &mut target,
                    &mut text,
                    &mut suites,
                    &mut case,
                    &mut rerun,
                    &mut results,
                );
                if depth == 0 && saw_root {
                    closed_root = true;
                }
                buf.clear();
                continue;
            }
            Event::Text(t) => {
                if target != Target::None {
                    push_text(&mut text, &t.xml_content(XmlVersion::Implicit1_0), false);
                }
                buf.clear();
                continue;
            }
            Event::CData(t) => {
                if target != Target::None {
                    push_text(&mut text, &t.xml_content(XmlVersion::Implicit1_0), true);
                }
                buf.clear();
                continue;
            }
            Event::GeneralRef(r) => {
                if target != Target::None && text.len() < MAX_TEXT {
                    resolve_ref(&r, &mut text);
                }
                buf.clear();
                continue;
            }
            _ => {
                buf.clear();
                continue;
            }
        };
        if !empty {
            depth += 1;
        }
        let qname = e.name();
        let name: &str = qname.as_ref();
        match name {
            "testsuites" => {
                saw_root = true;
                if empty {
                    closed_root = true;
                }
            }
            "testsuite" => {
                saw_root = true;
                closed_root = false;
                let [name, time, timestamp, hostname] =
                    attrs(&e, ["name", "time", "timestamp", "hostname"]);
                let mut suite = Suite::new(name.unwrap_or_default());
                suite.duration_ms = time.as_deref().and_then(seconds_to_ms);
                for (key, v) in [("timestamp", timestamp), ("hostname", hostname)] {
                    if let Some(v) = v {
                        suite.properties.push(Property {
                            name: key.to_string(),
                            value: v.into_owned(),
                        });
                    }
                }
                if empty {
                    results.suites.push(suite);
                    if depth == 0 {
                        closed_root = true;
                    }
                } else {
                    suites.push(suite);
                }
            }
            "property" => {
                if let Some(s) = suites.last_mut() {
                    let [name, value] = attrs(&e, ["name", "value"]);
                    s.properties.push(Property {
                        name: name.unwrap_or_default().into_owned(),
                        value: value.unwrap_or_default().into_owned(),
                    });
                }
            }
            "testcase" => {
                let [name, classname, time, file, line] =
                    attrs(&e, ["name", "classname", "time", "file", "line"]);
                let mut c = Case::new(name.unwrap_or_default(), None);
                c.classname = classname.filter(|c| !c.is_empty()).map(Cow::into_owned);
                c.duration_ms = time.as_deref().and_then(seconds_to_ms);
                c.file = file.map(Cow::into_owned);
                c.line = line.as_deref().and_then(parse_count);
                if empty {
                    push_case(&mut suites, c);
                } else {
                    case = Some(c);
                }
            }
            "failure" | "error" | "skipped" => {
                if let Some(c) = case.as_mut() {
                    outcome_element(c, name, &e);
                    if !empty {
                        target = Target::Outcome;
                        text.clear();
                    }
                }
            }
            "flakyFailure" | "flakyError" | "rerunFailure" | "rerunError" if case.is_some() => {
                let [message, error_type, time] = attrs(&e, ["message", "type", "time"]);
                let r = Rerun {
                    kind: rerun_kind(name).to_string(),
                    message: message.map(Cow::into_owned),
                    error_type: error_type.map(Cow::into_owned),
                    log: None,
                    duration_ms: time.as_deref().and_then(seconds_to_ms),
                };
                if empty {
                    finish_rerun(case.as_mut(), r);
                } else {
                    // nextest writes the panic message straight inside the element.
                    rerun = Some(r);
                    target = Target::RerunStack;
                    text.clear();
                }
            }
            "stackTrace" if rerun.is_some() && !empty => {
                flush_rerun_text(&mut rerun, &mut text, target);
                target = Target::RerunStack;
            }
            "system-out" | "system-err" if !empty => {
                flush_rerun_text(&mut rerun, &mut text, target);
                let out = name == "system-out";
                target = match (rerun.is_some(), case.is_some(), out) {
                    (true, _, true) => Target::RerunOut,
                    (true, _, false) => Target::RerunErr,
                    (false, true, true) => Target::CaseOut,
                    (false, true, false) => Target::CaseErr,
                    (false, false, true) => Target::SuiteOut,
                    (false, false, false) => Target::SuiteErr,
                };
                text.clear();
            }
            _ => {}
        }
        buf.clear();
    }

    if let Some(e) = error {
        results.warnings.push(e);
        results.complete = false;
    }
    if let Some(c) = case.take() {
        results
            .warnings
            .push(format!("input ends inside test case `{}`", c.name));
        push_case(&mut suites, c);
    }
    if !suites.is_empty() {
        results.complete = false;
    }
    while let Some(s) = suites.pop() {
        results.suites.insert(0, s);
    }
    if !saw_root {
        results.complete = false;
        results.warnings.push("no <testsuite> element found".into());
    } else if !closed_root {
        results.complete = false;
        results
            .warnings
            .push("output stops before the closing tag (truncated)".into());
    }
    results
}

fn push_text(text: &mut String, s: &str, cdata: bool) {
    if text.len() >= MAX_TEXT {
        return;
    }
    if cdata {
        // One CDATA section per line is how QtTest writes output: keep them as lines.
        let kept = text.trim_end().len();
        text.truncate(kept);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(s);
        text.push('\n');
    } else if !(s.trim().is_empty() && (text.is_empty() || text.ends_with('\n'))) {
        // Whitespace between CDATA sections is layout; other text is kept verbatim
        // (entity references arrive as separate events between text chunks).
        text.push_str(s);
    }
}

/// Keeps text written directly inside a rerun element before a nested element starts.
fn flush_rerun_text(rerun: &mut Option<Rerun>, text: &mut String, target: Target) {
    let t = text.trim().to_string();
    text.clear();
    if target == Target::RerunStack
        && !t.is_empty()
        && let Some(r) = rerun.as_mut()
    {
        let mut flags = Default::default();
        append_capped(&mut r.log, &t, &mut flags);
    }
}

fn seconds_to_ms(s: &str) -> Option<f64> {
    parse_number(s).map(|s| s * 1000.0)
}

fn rerun_kind(name: &str) -> &'static str {
    match name {
        "flakyFailure" => "flaky_failure",
        "flakyError" => "flaky_error",
        "rerunFailure" => "rerun_failure",
        _ => "rerun_error",
    }
}

fn push_case(suites: &mut Vec<Suite>, c: Case) {
    if suites.is_empty() {
        // A bare <testcase> outside any suite: keep it rather than drop it.
        suites.push(Suite::new(""));
    }
    if let Some(s) = suites.last_mut() {
        s.cases.push(c);
    }
}

fn outcome_element(c: &mut Case, name: &str, e: &BytesStart<'_>) {
    let [kind, message] = attrs(e, ["type", "message"]);
    let outcome = match name {
        "failure" => CaseOutcome::Fail,
        "error" => CaseOutcome::Error,
        _ if kind.as_deref() == Some("pytest.xfail") => CaseOutcome::Xfail,
        _ => CaseOutcome::Skip,
    };
    let before = c.outcome;
    c.outcome = c.outcome.merge(outcome);
    if let Some(m) = message.filter(|m| !m.is_empty())
        && (c.outcome != before || c.message.is_none())
    {
        set_capped(&mut c.message, &m, &mut c.flags);
    }
}

fn finish_rerun(case: Option<&mut Case>, r: Rerun) {
    if let Some(c) = case {
        if r.kind.starts_with("flaky") {
            c.flags.flaky = true;
        }
        c.reruns.push(r);
    }
}

fn end_element(
    name: &str,
    target: &mut Target,
    text: &mut String,
    suites: &mut Vec<Suite>,
    case: &mut Option<Case>,
    rerun: &mut Option<Rerun>,
    results: &mut Results,
) {
    match name {
        "testsuite" => {
            if let Some(s) = suites.pop() {
                results.suites.push(s);
            }
        }
        "testcase" => {
            if let Some(c) = case.take() {
                push_case(suites, c);
            }
        }
        "flakyFailure" | "flakyError" | "rerunFailure" | "rerunError" => {
            if let Some(mut r) = rerun.take() {
                let t = text.trim().to_string();
                text.clear();
                if *target == Target::RerunStack && !t.is_empty() {
                    let mut flags = Default::default();
                    append_capped(&mut r.log, &t, &mut flags);
                }
                *target = Target::None;
                finish_rerun(case.as_mut(), r);
            }
        }
        "failure" | "error" | "skipped" | "stackTrace" | "system-out" | "system-err" => {
            // Keep the buffer's allocation for the next element.
            let t = text.trim().to_string();
            text.clear();
            let label = match name {
                "system-out" => "[stdout]",
                "system-err" => "[stderr]",
                _ => "",
            };
            match *target {
                Target::Outcome | Target::CaseOut | Target::CaseErr => {
                    if let Some(c) = case.as_mut()
                        && !t.is_empty()
                    {
                        if !label.is_empty() && c.log.is_some() {
                            append_capped(&mut c.log, label, &mut c.flags);
                        }
                        append_capped(&mut c.log, &t, &mut c.flags);
                    }
                }
                Target::RerunStack | Target::RerunOut | Target::RerunErr => {
                    if let Some(r) = rerun.as_mut()
                        && !t.is_empty()
                    {
                        let mut flags = Default::default();
                        append_capped(&mut r.log, &t, &mut flags);
                    }
                    // Text after a nested element belongs to the rerun element again.
                    if rerun.is_some() {
                        *target = Target::RerunStack;
                        return;
                    }
                }
                Target::SuiteOut | Target::SuiteErr => {
                    if let Some(s) = suites.last_mut()
                        && !t.is_empty()
                    {
                        s.properties.push(Property {
                            name: name.to_string(),
                            value: t,
                        });
                    }
                }
                Target::None => {}
            }
            *target = Target::None;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surefire_flaky_and_rerun() {
        let xml = br#"<testsuite name="s" time="1.5">
  <testcase name="flaky" classname="C" time="0.1">
    <flakyFailure message="boom" type="java.lang.AssertionError"><stackTrace>at C.flaky</stackTrace></flakyFailure>
  </testcase>
  <testcase name="broken" classname="C">
    <failure message="still">trace</failure>
    <rerunFailure message="again"/>
  </testcase>
</testsuite>"#;
        let r = parse(&xml[..]);
        assert!(r.complete, "{:?}", r.warnings);
        let s = &r.suites[0];
        assert_eq!(s.duration_ms, Some(1500.0));
        assert_eq!(s.cases[0].outcome, CaseOutcome::Pass);
        assert!(s.cases[0].flags.flaky);
        assert_eq!(s.cases[0].reruns[0].log.as_deref(), Some("at C.flaky"));
        assert_eq!(s.cases[1].outcome, CaseOutcome::Fail);
        assert_eq!(s.cases[1].reruns[0].kind, "rerun_failure");
    }

    #[test]
    fn truncated_is_incomplete() {
        let r = parse(&b"<testsuites><testsuite name=\"a\"><testcase name=\"x\"/>"[..]);
        assert!(!r.complete);
        assert_eq!(r.suites[0].cases.len(), 1);
    }
}
