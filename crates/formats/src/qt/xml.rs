//! QtTest `xml` and `lightxml` loggers.
//!
//! Both share one element vocabulary (`TestFunction`, `Incident`, `Message`,
//! `BenchmarkResult`, `Duration`); `lightxml` simply has no `<TestCase>` root, which
//! quick-xml's pull reader takes as it comes, so no wrapping is needed. Several reports
//! concatenated in one file (one per test object) become several suites.

use std::borrow::Cow;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use testfleet_wire::results::{Metric, Results};

use super::{Incident, QtBuilder, unit_for_metric};
use crate::Format;
use crate::util::{MAX_TEXT, attr, attrs, parse_count, parse_number, resolve_ref};

/// An `Incident` or `Message` element being read.
#[derive(Default)]
struct Pending {
    is_incident: bool,
    kind: String,
    file: Option<String>,
    line: Option<u64>,
    tag: Option<String>,
    description: Option<String>,
}

/// Where character data currently goes.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    None,
    DataTag,
    Description,
    Env,
}

pub(crate) fn parse<R: BufRead>(input: R, format: Format) -> Results {
    let mut reader = Reader::from_reader(input);
    let config = reader.config_mut();
    config.trim_text(false);
    // Truncated and hand-edited files often close the wrong element; carry on.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;

    let mut b = QtBuilder::new(format.name());
    let light = format == Format::QtLightXml;
    let mut buf = Vec::new();
    let mut stack: Vec<Pending> = Vec::new();
    let mut target = Target::None;
    let mut text = String::new();
    let mut env_name = String::new();
    let mut in_env = false;
    let mut function: Option<String> = None;
    let mut testcase_open = false;
    let mut closed = false;
    let mut saw_anything = false;
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
        match event {
            Event::Eof => break,
            Event::Start(e) => {
                saw_anything = true;
                let qname = e.name();
                let name: &str = qname.as_ref();
                match name {
                    "TestCase" => {
                        b.start_suite(&attr(&e, "name").unwrap_or_default());
                        testcase_open = true;
                        closed = false;
                    }
                    "Environment" => in_env = true,
                    "TestFunction" => {
                        function = Some(attr(&e, "name").unwrap_or_default());
                        closed = false;
                    }
                    "Incident" | "Message" => stack.push(pending(&e, name == "Incident")),
                    "DataTag" => {
                        target = Target::DataTag;
                        text.clear();
                    }
                    "Description" => {
                        target = Target::Description;
                        text.clear();
                    }
                    other if in_env => {
                        env_name = other.to_string();
                        target = Target::Env;
                        text.clear();
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                saw_anything = true;
                let qname = e.name();
                let name: &str = qname.as_ref();
                match name {
                    "Incident" | "Message" => {
                        let p = pending(&e, name == "Incident");
                        emit(&mut b, function.as_deref(), p);
                    }
                    "BenchmarkResult" => {
                        benchmark(&mut b, function.as_deref(), &e);
                    }
                    "Duration" => {
                        let ms = attr(&e, "msecs").as_deref().and_then(parse_number);
                        match &function {
                            Some(f) => b.function_duration(f, ms),
                            None => {
                                b.suite_duration(ms);
                                // lightxml has no closing root: the run's total duration
                                // is the last thing the logger writes.
                                if light {
                                    closed = true;
                                }
                            }
                        }
                    }
                    "TestFunction" => {}
                    other if in_env => b.property(other, ""),
                    _ => {}
                }
            }
            Event::End(e) => {
                let qname = e.name();
                let name: &str = qname.as_ref();
                match name {
                    "TestCase" => {
                        testcase_open = false;
                        closed = true;
                    }
                    "Environment" => in_env = false,
                    "TestFunction" => function = None,
                    "Incident" | "Message" => {
                        if let Some(p) = stack.pop() {
                            emit(&mut b, function.as_deref(), p);
                        }
                    }
                    "DataTag" | "Description" => {
                        if let Some(p) = stack.last_mut() {
                            let value = std::mem::take(&mut text);
                            if target == Target::DataTag {
                                p.tag = Some(value);
                            } else {
                                p.description = Some(value);
                            }
                        }
                        target = Target::None;
                    }
                    _ if target == Target::Env => {
                        b.property(&env_name, text.trim());
                        target = Target::None;
                    }
                    _ => {}
                }
            }
            Event::Text(t) if target != Target::None => {
                push_text(&mut text, &t.xml_content(XmlVersion::Implicit1_0));
            }
            Event::CData(t) if target != Target::None => {
                push_text(&mut text, &t.xml_content(XmlVersion::Implicit1_0));
            }
            Event::GeneralRef(r) if target != Target::None => resolve_ref(&r, &mut text),
            _ => {}
        }
        buf.clear();
    }

    let errored = error.is_some();
    if let Some(e) = error {
        b.warn(e);
    }
    // Whatever was open when the input ended belongs to the crashed function.
    while let Some(p) = stack.pop() {
        emit(&mut b, function.as_deref(), p);
    }
    let complete = !errored && saw_anything && closed && !testcase_open && function.is_none();
    // A function that crashed before logging anything (or after its last data row ended)
    // is still named by its open `<TestFunction>`.
    if !complete
        && !b.is_running()
        && let Some(f) = function.as_deref().filter(|f| !f.is_empty())
    {
        b.set_running(Some((f, None)));
    }
    let mut results = b.finish(complete);
    if !saw_anything {
        results.warnings.push("no QtTest XML elements found".into());
    }
    results
}

fn push_text(text: &mut String, s: &str) {
    if text.len() < MAX_TEXT {
        text.push_str(s);
    }
}

fn pending(e: &BytesStart<'_>, is_incident: bool) -> Pending {
    let [kind, file, line] = attrs(e, ["type", "file", "line"]);
    Pending {
        is_incident,
        kind: kind.unwrap_or_default().into_owned(),
        file: file.filter(|f| !f.is_empty()).map(Cow::into_owned),
        line: line.as_deref().and_then(parse_count),
        tag: None,
        description: None,
    }
}

fn emit(b: &mut QtBuilder, function: Option<&str>, p: Pending) {
    let function = function.unwrap_or("");
    let tag = p.tag.as_deref().filter(|t| !t.is_empty());
    match Incident::from_type(&p.kind) {
        // Old QtTest versions report skips as `<Message type="skip">`.
        Some(i) if p.is_incident || i.outcome == testfleet_wire::results::CaseOutcome::Skip => {
            b.incident(
                function,
                tag,
                i,
                p.description.as_deref(),
                p.file.as_deref(),
                p.line,
            );
        }
        _ => {
            let text = p.description.as_deref().unwrap_or("");
            if p.is_incident {
                b.warn(format!("unknown incident type `{}`", p.kind));
            }
            b.message(function, tag, &p.kind, text);
        }
    }
}

fn benchmark(b: &mut QtBuilder, function: Option<&str>, e: &BytesStart<'_>) {
    let [name, tag, value, iterations, variance] =
        attrs(e, ["metric", "tag", "value", "iterations", "variance"]);
    let name = name.unwrap_or_default().into_owned();
    let tag = tag.filter(|t| !t.is_empty());
    let Some(value) = value.as_deref().and_then(parse_number) else {
        b.warn(format!(
            "benchmark result for `{name}` has no numeric value"
        ));
        return;
    };
    let iterations = iterations.as_deref().and_then(parse_count);
    let metric = Metric {
        unit: unit_for_metric(&name),
        name,
        value,
        total: None,
        iterations,
        variance: variance.as_deref().and_then(parse_number),
    };
    b.benchmark(function.unwrap_or(""), tag.as_deref(), metric);
}

#[cfg(test)]
mod tests {
    use testfleet_wire::results::CaseOutcome;

    use super::*;

    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                        <TestCase name=\"tst_X\">\n\
                        <TestFunction name=\"initTestCase\">\n\
                        <Incident type=\"pass\" file=\"\" line=\"0\" />\n\
                        <Duration msecs=\"0.1\"/>\n\
                        </TestFunction>\n\
                        <TestFunction name=\"crashes\">\n";

    /// Regression: a file ending inside `<TestFunction name="crashes">` recorded the
    /// crash with no function.
    #[test]
    fn crash_inside_an_open_function_names_it() {
        for format in [Format::QtXml, Format::QtLightXml] {
            let input = if format == Format::QtXml {
                HEAD.to_string()
            } else {
                HEAD.replacen("<TestCase name=\"tst_X\">\n", "", 1)
            };
            let r = parse(input.as_bytes(), format);
            assert!(!r.complete, "{format:?}");
            assert_eq!(r.crashed.len(), 1, "{format:?}: {:?}", r.crashed);
            assert_eq!(
                r.crashed[0].function.as_deref(),
                Some("crashes"),
                "{format:?}"
            );
            let case = r.cases().find(|c| c.name == "crashes").expect("case");
            assert_eq!(case.outcome, CaseOutcome::Crash);
        }
    }

    #[test]
    fn crash_after_a_message_keeps_the_message() {
        let input = format!(
            "{HEAD}<Message type=\"qdebug\" file=\"\" line=\"0\">\n\
             <Description><![CDATA[about to crash]]></Description>\n</Message>\n"
        );
        let r = parse(input.as_bytes(), Format::QtXml);
        assert_eq!(r.crashed.len(), 1, "{:?}", r.crashed);
        assert_eq!(r.crashed[0].function.as_deref(), Some("crashes"));
        assert!(
            r.crashed[0].log.contains("about to crash"),
            "{:?}",
            r.crashed
        );
    }

    #[test]
    fn closed_function_is_not_a_crash_candidate() {
        let input =
            format!("{HEAD}<Incident type=\"pass\" file=\"\" line=\"0\" />\n</TestFunction>\n");
        let r = parse(input.as_bytes(), Format::QtXml);
        assert!(!r.complete);
        let case = r.cases().find(|c| c.name == "crashes").expect("case");
        assert_eq!(case.outcome, CaseOutcome::Pass);
        assert!(
            r.crashed.iter().all(|c| c.function.is_none()),
            "{:?}",
            r.crashed
        );
    }
}
