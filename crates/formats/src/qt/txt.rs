//! QtTest plain-text logger (`-o file,txt`, the console default).
//!
//! Line oriented: `PASS   : tst_X::func(tag) message`, indented continuation and
//! `Loc: [file(line)]` lines, `RESULT :` blocks with one line per metric, framed by
//! `********* Start testing of …` / `********* Finished testing of …`. A run that crashed
//! has no `Finished` line; unrecognized lines (signal reports) are kept for its log.

use std::io::BufRead;

use testfleet_wire::results::{Metric, Results};

use super::{Incident, QtBuilder, metric_for_unit};
use crate::Format;
use crate::util::{append_capped, parse_count, parse_number};

#[derive(Clone, PartialEq)]
enum Last {
    Nothing,
    Incident(String, Option<String>),
    Message(String, Option<String>),
    Result(String, Option<String>),
}

pub(crate) fn parse<R: BufRead>(mut input: R) -> Results {
    let mut b = QtBuilder::new(Format::QtTxt.name());
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut last = Last::Nothing;
    let mut line = Vec::new();
    let mut read_error = None;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let l = text.trim_end_matches(['\n', '\r']);
        if let Some(rest) = l.strip_prefix("********* Start testing of ") {
            b.start_suite(rest.trim_end_matches('*').trim());
            started += 1;
            last = Last::Nothing;
            continue;
        }
        // The closing stars matter: a file cut inside this very line is not finished.
        if l.starts_with("********* Finished testing of ") && l.ends_with(" *********") {
            finished += 1;
            // The suite stays open until the next Start so trailing lines still land.
            last = Last::Nothing;
            continue;
        }
        if let Some(cfg) = l.strip_prefix("Config: ") {
            config(&mut b, cfg);
            continue;
        }
        if let Some(totals) = l.strip_prefix("Totals: ") {
            let ms = totals
                .rsplit(", ")
                .next()
                .and_then(|t| t.strip_suffix("ms"))
                .and_then(parse_number);
            b.suite_duration(ms);
            continue;
        }
        if let Some(loc) = l.trim_start().strip_prefix("Loc: [") {
            if let Last::Incident(f, t) = &last {
                let (file, line_no) = parse_loc(loc.trim_end_matches(']'));
                let case = b.case_mut(f, t.as_deref());
                if case.file.is_none() || case.outcome != testfleet_wire::results::CaseOutcome::Pass
                {
                    case.file = Some(file);
                    case.line = line_no;
                }
            }
            continue;
        }
        if let Some((prefix, rest)) = split_prefix(l) {
            let Some((function, tag, msg)) = split_function(rest, prefix == "RESULT") else {
                b.raw_line(l);
                continue;
            };
            if prefix == "RESULT" {
                last = Last::Result(function, tag);
                continue;
            }
            let msg = msg.trim();
            if let Some(i) = Incident::from_type(prefix) {
                let desc = (!msg.is_empty()).then_some(msg);
                b.incident(&function, tag.as_deref(), i, desc, None, None);
                last = Last::Incident(function, tag);
            } else {
                b.raw_line(l);
                b.message(&function, tag.as_deref(), prefix, msg);
                last = Last::Message(function, tag);
            }
            continue;
        }
        if let Last::Result(f, t) = &last
            && let Some(metric) = parse_metric_line(l)
        {
            b.benchmark(f, t.as_deref(), metric);
            continue;
        }
        // Indented continuation of a multi-line message (e.g. QCOMPARE's Actual/Expected).
        if l.starts_with("   ")
            && !l.trim().is_empty()
            && let Last::Incident(f, t) = &last
        {
            let case = b.case_mut(f, t.as_deref());
            let mut msg = case.message.take();
            append_capped(&mut msg, l.trim(), &mut case.flags);
            case.message = msg;
            append_capped(&mut case.log, l.trim(), &mut case.flags);
            continue;
        }
        if !l.trim().is_empty() {
            b.raw_line(l);
        }
    }
    if let Some(e) = read_error {
        b.warn(format!("read error: {e}"));
    }
    if started == 0 {
        b.warn("no `Start testing of` line found");
    }
    let complete = started > 0 && finished >= started;
    b.finish(complete)
}

/// `Config: Using QtTest library 6.4.2, Qt 6.4.2 (build details)`.
fn config(b: &mut QtBuilder, cfg: &str) {
    let Some(rest) = cfg.strip_prefix("Using QtTest library") else {
        b.property("Config", cfg);
        return;
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return;
    }
    let (testlib, qt) = rest.split_once(", Qt ").unwrap_or((rest, ""));
    b.property("QTestVersion", testlib.trim());
    let (version, build) = qt.split_once(' ').unwrap_or((qt, ""));
    if !version.is_empty() {
        b.property("QtVersion", version);
    }
    let build = build.trim();
    if !build.is_empty() {
        b.property(
            "QtBuild",
            build.trim_start_matches('(').trim_end_matches(')'),
        );
    }
}

/// `PASS   : rest` → ("PASS", "rest"). The prefix is upper-case, padded to 6 columns.
fn split_prefix(l: &str) -> Option<(&str, &str)> {
    let colon = l.find(" : ")?;
    if colon > 10 {
        return None;
    }
    let prefix = l[..colon].trim();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_uppercase() || c == '!') {
        return None;
    }
    Some((prefix, &l[colon + 3..]))
}

/// `tst_X::func(tag) message` → (func, tag, message); for RESULT headers
/// `tst_X::func():"tag":`.
fn split_function(rest: &str, result_header: bool) -> Option<(String, Option<String>, &str)> {
    let sep = rest.find("::")?;
    let after = &rest[sep + 2..];
    let open = after.find('(')?;
    let function = after[..open].to_string();
    let args = &after[open + 1..];
    if result_header {
        let tail = args.strip_prefix(')')?;
        let tail = tail.strip_suffix(':').unwrap_or(tail);
        let tag = tail
            .strip_prefix(":\"")
            .and_then(|t| t.strip_suffix('"'))
            .map(str::to_string);
        return Some((function, tag, ""));
    }
    // The tag ends at the first `)` followed by a space or the end of the line.
    let close = args
        .match_indices(')')
        .map(|(i, _)| i)
        .find(|&i| args[i + 1..].is_empty() || args[i + 1..].starts_with(' '))?;
    let tag = &args[..close];
    let msg = &args[close + 1..];
    let tag = (!tag.is_empty()).then(|| tag.to_string());
    Some((function, tag, msg))
}

/// `file(line)` → (file, line).
fn parse_loc(loc: &str) -> (String, Option<u64>) {
    if let Some(open) = loc.rfind('(')
        && loc.ends_with(')')
    {
        return (
            loc[..open].to_string(),
            parse_count(&loc[open + 1..loc.len() - 1]),
        );
    }
    (loc.to_string(), None)
}

/// `     5,000 events per iteration (total: 5,000, iterations: 1)` for a `QBENCHMARK`, or
/// `     42 bytes` for a result set with `QTest::setBenchmarkResult`, which QtTest prints
/// without the per-iteration tail (its other loggers say one iteration of that value).
pub(crate) fn parse_metric_line(l: &str) -> Option<Metric> {
    let l = l.trim();
    let Some((head, tail)) = l.split_once(" per iteration") else {
        return parse_custom_metric(l);
    };
    let (value, unit) = head.split_once(' ')?;
    let value = parse_number(value)?;
    let unit = unit.trim();
    let mut total = None;
    let mut iterations = None;
    let mut variance = None;
    if let Some(inner) = tail
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
    {
        // Split on ", " followed by a key, not on thousands separators.
        for part in inner.split(", ") {
            if let Some((k, v)) = part.split_once(':') {
                match k.trim() {
                    "total" => total = parse_number(v),
                    "iterations" => iterations = parse_count(v),
                    "variance" => variance = parse_number(v),
                    _ => {}
                }
            }
        }
    }
    Some(Metric {
        name: metric_for_unit(unit),
        unit: unit.to_string(),
        value,
        total,
        iterations,
        variance,
    })
}

/// `42 bytes`: a value and a unit QtTest knows, nothing else, so that a stray line of
/// program output after a `RESULT` block is not taken for a metric.
fn parse_custom_metric(l: &str) -> Option<Metric> {
    let (value, unit) = l.split_once(' ')?;
    let value = parse_number(value)?;
    let unit = unit.trim();
    let name = metric_for_unit(unit);
    if name == unit {
        return None;
    }
    Some(Metric {
        name,
        unit: unit.to_string(),
        value,
        total: Some(value),
        iterations: Some(1),
        variance: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_and_tag() {
        let (f, t, m) = split_function("tst_X::f(Pass Abort) oops (really)", false).expect("split");
        assert_eq!(
            (f.as_str(), t.as_deref(), m),
            ("f", Some("Pass Abort"), " oops (really)")
        );
        let (f, t, _) = split_function("tst_X::events():\"100\":", true).expect("split");
        assert_eq!((f.as_str(), t.as_deref()), ("events", Some("100")));
        let (f, t, m) =
            split_function("tst_X::init() 'false' returned FALSE. ()", false).expect("split");
        assert_eq!(
            (f.as_str(), t, m),
            ("init", None, " 'false' returned FALSE. ()")
        );
    }

    #[test]
    fn metric_line_with_separators() {
        let m = parse_metric_line(
            "     200,000,158 instruction reads per iteration (total: 200,000,158, iterations: 1)",
        )
        .expect("metric");
        assert_eq!(m.name, "InstructionReads");
        assert_eq!(m.value, 200_000_158.0);
        assert_eq!(m.total, Some(200_000_158.0));
        assert_eq!(m.iterations, Some(1));
    }
    /// Regression: a metric set with `QTest::setBenchmarkResult` is printed without
    /// "per iteration" and was dropped; the CSV logger's line for the same run is the
    /// reference.
    #[test]
    fn custom_metric_without_per_iteration_is_kept() {
        let txt = "********* Start testing of tst_X *********\n\
                   PASS   : tst_X::bytesMetric()\n\
                   RESULT : tst_X::bytesMetric():\n\
                   \x20    42 bytes\n\
                   PASS   : tst_X::tagged(a)\n\
                   RESULT : tst_X::tagged():\"a\":\n\
                   \x20    1,500 CPU cycles\n\
                   \x20    7 widgets\n\
                   Totals: 2 passed, 0 failed, 0 skipped, 0 blacklisted, 1ms\n\
                   ********* Finished testing of tst_X *********\n";
        let r = parse(txt.as_bytes());
        let csv = "\"bytesMetric\",\"\",\"BytesAllocated\",42.5,42.5,1\n\
                   \"tagged\",\"a\",\"CPUCycles\",1500,1500,1\n";
        let reference = super::super::csv::parse(csv.as_bytes());
        let rows = |r: &Results| {
            r.cases()
                .flat_map(|c| {
                    c.metrics.iter().map(|m| {
                        (
                            c.name.clone(),
                            c.data_tag.clone(),
                            m.name.clone(),
                            m.unit.clone(),
                            m.iterations,
                            m.value.round(),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        let got = rows(&r);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "bytesMetric");
        assert_eq!(
            (got[0].2.as_str(), got[0].3.as_str()),
            ("BytesAllocated", "bytes")
        );
        assert_eq!(got[0].5, 42.0);
        assert_eq!(got[1].5, 1500.0);
        let want = rows(&reference);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.0, &g.1, &g.2, &g.3, g.4), (&w.0, &w.1, &w.2, &w.3, w.4));
        }
        // `7 widgets` names no QtTest unit: program output, not a metric.
        assert!(r.complete, "{:?}", r.warnings);
    }

    #[test]
    fn custom_metric_line_needs_a_known_unit() {
        let m = parse_metric_line("     42 bytes").expect("metric");
        assert_eq!(
            (m.value, m.total, m.iterations),
            (42.0, Some(42.0), Some(1))
        );
        assert!(parse_metric_line("7 widgets").is_none());
        assert!(parse_metric_line("Received signal 11").is_none());
        assert!(parse_metric_line("bytes 42").is_none());
    }
}
