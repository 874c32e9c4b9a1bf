//! Format detection from the first bytes of a result file.
//!
//! Detection looks only at the head of the input (so it works on a stream) and checks
//! the most specific signatures first: QtTest's own markers before the generic TAP and
//! JUnit shapes they resemble.

use crate::Format;

/// How many leading bytes detection looks at.
pub(crate) const HEAD_LEN: usize = 16 * 1024;

/// Guesses the format of a result file from its content, or `None` when nothing fits.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    let head = &bytes[..bytes.len().min(HEAD_LEN)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    // Lossy is fine: detection only looks for ASCII markers.
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return (trimmed.contains("\"benchmarks\"") || trimmed.contains("\"context\""))
            .then_some(Format::GoogleBenchmark);
    }
    if trimmed.starts_with('<') {
        return detect_xml(trimmed);
    }
    if trimmed.starts_with("********* Start testing of ") {
        return Some(Format::QtTxt);
    }
    if trimmed.starts_with("##teamcity[") {
        return Some(Format::QtTeamcity);
    }
    if is_qt_csv_line(trimmed.lines().next().unwrap_or("")) {
        return Some(Format::QtCsv);
    }
    detect_tap(trimmed)
}

fn detect_xml(text: &str) -> Option<Format> {
    let root = first_element_name(text)?;
    match root {
        "TestCase" => Some(Format::QtXml),
        "Environment" | "TestFunction" => Some(Format::QtLightXml),
        "testsuites" => Some(Format::Junit),
        "testsuite" => {
            // QtTest's JUnit logger has a bare <testsuite> root and always writes these
            // properties first.
            if text.contains("name=\"QTestVersion\"") || text.contains("name=\"QtVersion\"") {
                Some(Format::QtJunitXml)
            } else {
                Some(Format::Junit)
            }
        }
        _ => None,
    }
}

/// Name of the first element, skipping the declaration, comments and doctype.
fn first_element_name(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->")? + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = &r[r.find('>')? + 1..];
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .unwrap_or(r.len());
            return Some(&r[..end]);
        } else {
            return None;
        }
    }
}

/// `"function","tag","Metric",value,...` as QtTest's CSV logger writes it.
fn is_qt_csv_line(line: &str) -> bool {
    let fields = crate::qt::csv::split_csv(line);
    fields.len() >= 6
        && line.starts_with('"')
        && fields[3..]
            .iter()
            .all(|f| crate::util::parse_number(f).is_some())
}

fn detect_tap(text: &str) -> Option<Format> {
    let mut is_tap = false;
    for line in text.lines().take(200) {
        let l = line.trim_start();
        if l.get(..11)
            .is_some_and(|v| v.eq_ignore_ascii_case("tap version"))
        {
            is_tap = true;
            continue;
        }
        if let Some(desc) = l.strip_prefix("ok ").or_else(|| l.strip_prefix("not ok ")) {
            // QtTest's TAP logger always runs initTestCase first.
            let desc = desc.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            let desc = desc.strip_prefix("- ").unwrap_or(desc);
            if desc.starts_with("initTestCase()") {
                return Some(Format::QtTap);
            }
            return Some(Format::Tap);
        }
        if l == "ok" || l == "not ok" || l.starts_with("1..") || l.starts_with("Bail out!") {
            is_tap = true;
        }
    }
    is_tap.then_some(Format::Tap)
}

/// True when the input may be XML: it starts with `<` after whitespace and a BOM, or
/// is empty (an empty file is a truncated document, not a different format).
pub(crate) fn looks_like_xml(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(b) => *b == b'<',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_shape() {
        assert_eq!(
            detect(b"<?xml version=\"1.0\"?>\n<TestCase name=\"x\">"),
            Some(Format::QtXml)
        );
        assert_eq!(detect(b"  <Environment>"), Some(Format::QtLightXml));
        assert_eq!(
            detect(b"<testsuites><testsuite name=\"a\">"),
            Some(Format::Junit)
        );
        assert_eq!(
            detect(b"<testsuite><properties><property name=\"QTestVersion\" value=\"6\"/>"),
            Some(Format::QtJunitXml)
        );
        assert_eq!(
            detect(b"********* Start testing of tst_X *********\n"),
            Some(Format::QtTxt)
        );
        assert_eq!(
            detect(b"##teamcity[testSuiteStarted name='x']"),
            Some(Format::QtTeamcity)
        );
        assert_eq!(
            detect(b"\"f\",\"\",\"Events\",1,1,1\n"),
            Some(Format::QtCsv)
        );
        assert_eq!(
            detect(b"TAP version 13\n# tst_X\nok 1 - initTestCase()\n"),
            Some(Format::QtTap)
        );
        assert_eq!(detect(b"TAP version 14\nok 1 - foo\n"), Some(Format::Tap));
        assert_eq!(detect(b"1..0 # skip\n"), Some(Format::Tap));
        assert_eq!(
            detect(b"{\n \"context\": {}, \"benchmarks\": []}"),
            Some(Format::GoogleBenchmark)
        );
        assert_eq!(detect(b"hello"), None);
        assert_eq!(detect(b""), None);
    }
}
