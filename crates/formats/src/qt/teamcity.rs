//! QtTest TeamCity logger (`-o file,teamcity`): `##teamcity[message key='value' …]`
//! service messages with TeamCity's `|` escaping.
//!
//! QtTest names cases `function(tag)`; failures carry the location in `message` and the
//! text in `details`; expected failures appear only in `testStdOut`.

use std::io::BufRead;

use testfleet_wire::results::{CaseOutcome, Results};

use super::{Incident, QtBuilder};
use crate::Format;
use crate::util::{parse_count, split_qt_name};

pub(crate) fn parse<R: BufRead>(mut input: R) -> Results {
    let mut b = QtBuilder::new(Format::QtTeamcity.name());
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut line = Vec::new();
    let mut read_error = false;
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                b.warn(format!("read error: {e}"));
                read_error = true;
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let l = text.trim();
        let Some(body) = l
            .strip_prefix("##teamcity[")
            .and_then(|r| r.strip_suffix(']'))
        else {
            if !l.is_empty() {
                b.raw_line(l);
            }
            continue;
        };
        let (message, attrs) = parse_message(body);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let name = get("name").unwrap_or("");
        let (function, tag) = split_qt_name(name);
        let tag = tag.as_deref();
        match message.as_str() {
            "testSuiteStarted" => {
                b.start_suite(name);
                started += 1;
            }
            "testSuiteFinished" => finished += 1,
            "testStarted" => {
                b.case_mut(&function, tag);
                b.set_running(Some((&function, tag)));
            }
            "testFinished" => {
                b.case_mut(&function, tag);
                b.set_running(None);
            }
            "testFailed" => {
                let (msg, file, line_no) = split_loc(get("message").unwrap_or(""));
                let details = get("details").filter(|d| !d.is_empty());
                let desc = details.unwrap_or(msg.as_str());
                let outcome = if msg.starts_with("XPASS") {
                    CaseOutcome::Xpass
                } else {
                    CaseOutcome::Fail
                };
                let i = Incident {
                    outcome,
                    blacklisted: false,
                };
                b.incident(&function, tag, i, Some(desc), file.as_deref(), line_no);
                b.set_running(Some((&function, tag)));
            }
            "testIgnored" => {
                let (msg, file, line_no) = split_loc(get("message").unwrap_or(""));
                let i = Incident {
                    outcome: CaseOutcome::Skip,
                    blacklisted: false,
                };
                b.incident(&function, tag, i, Some(&msg), file.as_deref(), line_no);
                b.set_running(Some((&function, tag)));
            }
            "testStdOut" | "testStdErr" => {
                for out in get("out").unwrap_or("").lines() {
                    std_line(&mut b, &function, tag, out);
                }
            }
            _ => {}
        }
    }
    if started == 0 {
        b.warn("no testSuiteStarted message found");
    }
    b.finish(!read_error && started > 0 && finished >= started)
}

/// One line of `testStdOut`: `QDEBUG: text`, or `XFAIL [Loc: f(0)]: text`.
fn std_line(b: &mut QtBuilder, function: &str, tag: Option<&str>, out: &str) {
    let Some((head, text)) = out.split_once(": ") else {
        b.message(function, tag, "output", out);
        return;
    };
    let kind = head.split(' ').next().unwrap_or(head);
    let loc = head.find("[Loc: ").map(|i| &head[i..]);
    match Incident::from_type(kind) {
        Some(i) if i.outcome == CaseOutcome::Xfail || i.outcome == CaseOutcome::Xpass => {
            let (_, file, line_no) = split_loc(loc.unwrap_or(""));
            b.incident(function, tag, i, Some(text), file.as_deref(), line_no);
        }
        _ => b.message(function, tag, kind, text),
    }
}

/// `message text [Loc: file(line)]` → (text, file, line).
fn split_loc(msg: &str) -> (String, Option<String>, Option<u64>) {
    if let Some(i) = msg.find("[Loc: ") {
        let loc = msg[i + 6..].trim_end().trim_end_matches(']');
        let text = msg[..i].trim_end().to_string();
        if let Some(open) = loc.rfind('(')
            && loc.ends_with(')')
        {
            return (
                text,
                Some(loc[..open].to_string()),
                parse_count(&loc[open + 1..loc.len() - 1]),
            );
        }
        return (text, Some(loc.to_string()), None);
    }
    (msg.to_string(), None, None)
}

/// `testFailed name='a' message='b|'c'` → ("testFailed", [(name, a), (message, b'c)]).
fn parse_message(body: &str) -> (String, Vec<(String, String)>) {
    let (message, mut rest) = match body.find(' ') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find("='") else { break };
        let key = rest[..eq].trim().to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                '|' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 'x')) => value.push('\u{85}'),
                    Some((_, 'l')) => value.push('\u{2028}'),
                    Some((_, 'p')) => value.push('\u{2029}'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                other => value.push(other),
            }
        }
        attrs.push((key, value));
        match end {
            Some(e) => rest = &rest[e..],
            None => break,
        }
    }
    (message.to_string(), attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_values() {
        let (m, a) = parse_message(
            "testFailed name='f()' message='Failure! |[Loc: x.cpp(0)|]' details='|'false|' returned'",
        );
        assert_eq!(m, "testFailed");
        assert_eq!(a[1].1, "Failure! [Loc: x.cpp(0)]");
        assert_eq!(a[2].1, "'false' returned");
        let (text, file, line) = split_loc(&a[1].1);
        assert_eq!(
            (text.as_str(), file.as_deref(), line),
            ("Failure!", Some("x.cpp"), Some(0))
        );
    }
}
