//! TAP 13 and TAP 14 (Test Anything Protocol), plus the base for QtTest's TAP logger.
//!
//! Line by line: test points with TAP 14 directive rules (a `#` starts a directive only
//! when unescaped and preceded by whitespace; `\#` is a literal `#`), plans first or
//! last (`1..0 # reason` skips everything), YAML diagnostic blocks parsed into JSON
//! values, indented subtests (with or without `# Subtest:` headers) flattened into cases
//! named `parent > child`, and `Bail out!`, after which nothing more is read.

use std::borrow::Cow;
use std::io::BufRead;

use serde_json::Value;
use testfleet_wire::results::{Case, CaseOutcome, Property, Results, Suite};

use crate::Format;
use crate::util::{MAX_TEXT, append_capped, parse_count, parse_number, set_capped};

/// One level of subtest nesting.
struct Frame {
    indent: usize,
    /// Name announced by `# Subtest: name`.
    name: Option<String>,
    cases: Vec<Case>,
    /// A finished child subtest, waiting for the test point that closes it.
    closed_child: Option<(Option<String>, Vec<Case>)>,
    plan: Option<u64>,
    points: u64,
    max_number: u64,
    /// Index in `cases` of the last test point, for YAML blocks.
    last_point: Option<usize>,
}

impl Frame {
    fn new(indent: usize, name: Option<String>) -> Frame {
        Frame {
            indent,
            name,
            cases: Vec::new(),
            closed_child: None,
            plan: None,
            points: 0,
            max_number: 0,
            last_point: None,
        }
    }
}

struct Yaml {
    indent: usize,
    text: String,
    truncated: bool,
}

struct Parser {
    results: Results,
    suite: Suite,
    frames: Vec<Frame>,
    /// `# Subtest: name` seen, with its indent, not yet matched to a frame.
    announced: Option<(usize, String)>,
    yaml: Option<Yaml>,
    started: bool,
    bailed: bool,
    skip_all: bool,
    suite_complete: bool,
    qt: bool,
    cut_warned: bool,
    /// The last YAML block's buffer, reused.
    spare_text: String,
}

/// Parses TAP. With `qt` set, the first comment before any test point names the suite
/// (QtTest's logger writes `# tst_Name` there).
pub(crate) fn parse<R: BufRead>(input: R) -> Results {
    parse_with(input, false)
}

pub(crate) fn parse_qt<R: BufRead>(input: R) -> Results {
    parse_with(input, true)
}

fn parse_with<R: BufRead>(mut input: R, qt: bool) -> Results {
    let mut p = Parser {
        results: Results::new(Format::Tap.name()),
        suite: Suite::new(""),
        frames: vec![Frame::new(0, None)],
        announced: None,
        yaml: None,
        started: false,
        bailed: false,
        skip_all: false,
        suite_complete: true,
        qt,
        cut_warned: false,
        spare_text: String::new(),
    };
    // Lines are handled in place in the reader's buffer; only a line split across two
    // reads is copied, into `long`, and at most MAX_LINE bytes of it are kept.
    let mut long: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                p.warn(format!("read error: {e}"));
                p.suite_complete = false;
                break;
            }
        };
        if buf.is_empty() {
            if !long.is_empty() {
                p.raw_line(&long, cut);
            }
            break;
        }
        let used = match find_newline(buf) {
            Some(i) if long.is_empty() => {
                let end = if i > MAX_LINE {
                    cut = true;
                    MAX_LINE
                } else {
                    i
                };
                p.raw_line(&buf[..end], cut);
                cut = false;
                i + 1
            }
            Some(i) => {
                cut |= keep_part(&mut long, &buf[..i]);
                p.raw_line(&long, cut);
                long.clear();
                cut = false;
                i + 1
            }
            None => {
                cut |= keep_part(&mut long, buf);
                buf.len()
            }
        };
        input.consume(used);
        if p.bailed {
            // TAP: nothing after `Bail out!` counts.
            break;
        }
    }
    p.finish_suite();
    if p.results.suites.is_empty() {
        p.results.complete = false;
        p.warn("no TAP content found".to_string());
    }
    p.results
}

/// Longest line kept: the rest of a longer line is dropped, so one huge line (a log
/// written without newlines) cannot exhaust memory. Far above the per-case text cap.
const MAX_LINE: usize = 1024 * 1024;

/// Appends the part of a line that still fits under [`MAX_LINE`]; true when some was
/// dropped.
fn keep_part(long: &mut Vec<u8>, part: &[u8]) -> bool {
    let room = MAX_LINE - long.len().min(MAX_LINE);
    long.extend_from_slice(&part[..part.len().min(room)]);
    part.len() > room
}

/// The index of the first `\n`, eight bytes at a time.
fn find_newline(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ NL;
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

impl Parser {
    /// One input line without its `\n`; `cut` when it was longer than [`MAX_LINE`].
    fn raw_line(&mut self, mut bytes: &[u8], cut: bool) {
        if cut && !self.cut_warned {
            self.cut_warned = true;
            self.warn(format!("a line longer than {MAX_LINE} bytes was cut"));
        }
        while let [rest @ .., b'\n' | b'\r'] = bytes {
            bytes = rest;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => self.line(text),
            Err(_) => self.line(&String::from_utf8_lossy(bytes)),
        }
    }

    fn warn(&mut self, w: String) {
        if self.results.warnings.len() < 100 {
            self.results.warnings.push(w);
        }
    }

    fn line(&mut self, raw: &str) {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let content = raw.trim_start_matches(' ');
        if let Some(y) = &mut self.yaml {
            if content == "..." && indent == y.indent {
                self.end_yaml();
                return;
            }
            if content.is_empty() || indent >= y.indent {
                if y.text.len() + raw.len() < MAX_TEXT {
                    y.text.push_str(raw.get(y.indent..).unwrap_or(""));
                    y.text.push('\n');
                } else {
                    y.truncated = true;
                }
                return;
            }
            // Dedent without `...`: the block was not closed.
            self.warn("YAML block not closed with `...`".to_string());
            self.end_yaml();
        }
        let content = content.trim_end();
        if content.is_empty() {
            return;
        }
        if content
            .get(..11)
            .is_some_and(|v| v.eq_ignore_ascii_case("tap version"))
        {
            if self.started {
                // Several TAP streams concatenated: one suite each.
                self.finish_suite();
            }
            self.started = true;
            let v = content[11..].trim().to_string();
            self.suite.properties.push(Property {
                name: "tap_version".into(),
                value: v,
            });
            return;
        }
        if let Some(reason) = content.strip_prefix("Bail out!") {
            let reason = reason.trim().to_string();
            self.warn(format!("bailed out: {reason}"));
            self.suite.properties.push(Property {
                name: "bail_out".into(),
                value: reason,
            });
            self.suite_complete = false;
            self.bailed = true;
            return;
        }
        if content == "---" {
            if let Some(frame) = self.frames.last()
                && frame.last_point.is_some()
                && indent >= frame.indent
            {
                self.yaml = Some(Yaml {
                    indent,
                    text: std::mem::take(&mut self.spare_text),
                    truncated: false,
                });
            }
            return;
        }
        if let Some(name) = content.strip_prefix("# Subtest") {
            let name = name.trim_start_matches(':').trim().to_string();
            self.announced = Some((indent, name));
            return;
        }
        let is_point = content.starts_with("ok") || content.starts_with("not ok");
        let is_plan = content.starts_with("1..");
        if !is_point && !is_plan {
            if let Some(c) = content.strip_prefix('#')
                && self.qt
                && self.frames.len() == 1
                && self.frames[0].points == 0
                && !self
                    .suite
                    .properties
                    .iter()
                    .any(|p| p.name == "first_comment")
            {
                self.suite.properties.push(Property {
                    name: "first_comment".into(),
                    value: c.trim().to_string(),
                });
            }
            // Comments, pragmas and anything unknown are ignored, as TAP says.
            return;
        }
        self.started = true;
        self.enter_indent(indent);
        if is_plan {
            self.plan(content);
        } else {
            self.point(content);
        }
    }

    /// Opens or closes subtest frames so that the top frame has this indent.
    fn enter_indent(&mut self, indent: usize) {
        while self.frames.len() > 1 && self.frames.last().is_some_and(|f| f.indent > indent) {
            self.close_frame();
        }
        let top = self.frames.last().map_or(0, |f| f.indent);
        if indent > top {
            let name = match &self.announced {
                Some((i, _)) if *i <= indent => self.announced.take().map(|(_, n)| n),
                _ => None,
            };
            self.frames.push(Frame::new(indent, name));
        }
    }

    fn close_frame(&mut self) {
        if let Some(mut frame) = self.frames.pop() {
            if let Some(plan) = frame.plan
                && plan != frame.points
                && plan != frame.max_number
            {
                self.warn(format!(
                    "subtest {} planned {plan} tests but ran {}",
                    frame.name.as_deref().unwrap_or("(unnamed)"),
                    frame.points
                ));
            }
            flush_child(&mut frame, None);
            if let Some(parent) = self.frames.last_mut() {
                parent.closed_child = Some((frame.name, frame.cases));
            }
        }
    }

    fn plan(&mut self, content: &str) {
        let (plan, directive) = match content.split_once('#') {
            Some((p, d)) => (p.trim(), Some(d.trim())),
            None => (content, None),
        };
        let end = plan.strip_prefix("1..").and_then(parse_count);
        let depth = self.frames.len();
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        frame.plan = end;
        if end == Some(0) && depth == 1 {
            self.skip_all = true;
            let reason = directive.unwrap_or("").to_string();
            self.suite.properties.push(Property {
                name: "skip_all".into(),
                value: reason,
            });
        }
        if end.is_none() {
            self.warn(format!("malformed plan `{content}`"));
        }
    }

    fn point(&mut self, content: &str) {
        let (ok, rest) = match content.strip_prefix("not ok") {
            Some(r) => (false, r),
            None => (true, content.strip_prefix("ok").unwrap_or("")),
        };
        // `okay` is not a test point.
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return;
        }
        let rest = rest.trim_start();
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number = rest[..digits].parse::<u64>().ok();
        let rest = rest[digits..].trim_start();
        let rest = rest
            .strip_prefix("- ")
            .or_else(|| rest.strip_prefix('-').filter(|r| r.is_empty()))
            .unwrap_or(rest);
        let (description, directive) = split_directive(rest);
        let directive = directive.map(str::trim);

        let frame_idx = self.frames.len() - 1;
        let frame = &mut self.frames[frame_idx];
        frame.points += 1;
        let number = number.unwrap_or(frame.points);
        frame.max_number = frame.max_number.max(number);
        let name = if description.is_empty() {
            format!("test {number}")
        } else {
            description.into_owned()
        };
        let mut case = Case::new(name, None);
        case.outcome = if ok {
            CaseOutcome::Pass
        } else {
            CaseOutcome::Fail
        };
        if let Some(d) = directive {
            let word = d.split_whitespace().next().unwrap_or("");
            // Lowercase only when needed: most directives are already lowercase.
            let word: Cow<'_, str> = if word.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(word.to_ascii_lowercase())
            } else {
                Cow::Borrowed(word)
            };
            let reason = d[d.find(char::is_whitespace).unwrap_or(d.len())..].trim();
            if word.starts_with("skip") {
                case.outcome = CaseOutcome::Skip;
                if !reason.is_empty() {
                    set_capped(&mut case.message, reason, &mut case.flags);
                }
            } else if word.starts_with("todo") {
                case.flags.todo = true;
                case.outcome = if ok {
                    CaseOutcome::Xpass
                } else {
                    CaseOutcome::Xfail
                };
                if !reason.is_empty() {
                    set_capped(&mut case.message, reason, &mut case.flags);
                }
            } else if let Some(t) = word.strip_prefix("time=") {
                case.duration_ms = parse_duration(t);
            }
        }
        // A subtest that just closed belongs to this point.
        flush_child(frame, Some(&case.name));
        // Node's runner announces a subtest at the parent's indent even when it has no
        // children: the announcement is used up by its own point.
        if matches!(&self.announced, Some((i, _)) if *i == frame.indent) {
            self.announced = None;
        }
        frame.cases.push(case);
        frame.last_point = Some(frame.cases.len() - 1);
    }

    fn end_yaml(&mut self) {
        let Some(y) = self.yaml.take() else { return };
        let parsed = match simple_yaml(&y.text) {
            Some(v) => Ok(v),
            None => serde_norway::from_str::<Value>(&y.text),
        };
        let value = match parsed {
            Ok(v) => v,
            Err(e) => {
                self.warn(format!("YAML block is not valid YAML: {e}"));
                Value::String(y.text.clone())
            }
        };
        // Keep the buffer for the next block.
        let mut spare = y.text;
        spare.clear();
        self.spare_text = spare;
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        let Some(case) = frame.last_point.and_then(|i| frame.cases.get_mut(i)) else {
            return;
        };
        if y.truncated {
            case.flags.truncated = true;
        }
        if let Value::Object(map) = &value {
            if case.message.is_none()
                && let Some(Value::String(m)) = map.get("message")
            {
                set_capped(&mut case.message, m, &mut case.flags);
            }
            if case.duration_ms.is_none() {
                case.duration_ms = map.get("duration_ms").and_then(Value::as_f64);
            }
            if let Some(Value::String(f)) = map.get("file") {
                case.file = Some(f.clone());
                case.line = map.get("line").and_then(Value::as_u64);
            }
            if let Some(Value::String(stack)) = map.get("stack") {
                append_capped(&mut case.log, stack, &mut case.flags);
            }
        }
        case.diagnostics = Some(value);
    }

    fn finish_suite(&mut self) {
        if self.yaml.is_some() {
            self.warn("input ends inside a YAML block".to_string());
            self.end_yaml();
            self.suite_complete = false;
        }
        if self.frames.len() > 1 {
            self.warn("input ends inside a subtest".to_string());
            self.suite_complete = false;
            while self.frames.len() > 1 {
                self.close_frame();
            }
        }
        let mut top = std::mem::replace(&mut self.frames[0], Frame::new(0, None));
        flush_child(&mut top, None);
        match top.plan {
            None if !self.bailed => {
                if self.started {
                    self.warn("no plan line (`1..N`): the stream may be truncated".to_string());
                }
                self.suite_complete = false;
            }
            Some(n) if !self.skip_all && n != top.points && n != top.max_number => {
                self.warn(format!("planned {n} tests but saw {}", top.points));
                self.suite_complete = false;
            }
            _ => {}
        }
        if !self.started && top.cases.is_empty() {
            return;
        }
        let mut suite = std::mem::replace(&mut self.suite, Suite::new(""));
        suite.cases = top.cases;
        self.results.suites.push(suite);
        self.results.complete &= self.suite_complete;
        self.suite_complete = true;
        self.skip_all = false;
        self.started = false;
        self.announced = None;
    }
}

/// Moves a finished child subtest's cases into `frame`, prefixed with the subtest name
/// (the closing point's description when no `# Subtest:` header named it).
fn flush_child(frame: &mut Frame, point_name: Option<&str>) {
    let Some((name, cases)) = frame.closed_child.take() else {
        return;
    };
    // The closing point's description names the subtest in every producer's style
    // (TAP 14 puts `# Subtest:` at the child's indent, node's runner at the parent's),
    // so it wins; the announced name is the fallback when the stream was cut.
    let prefix = point_name
        .map(str::to_string)
        .or(name.filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "(subtest)".to_string());
    for mut c in cases {
        c.name = format!("{prefix} > {}", c.name);
        frame.cases.push(c);
    }
}

/// Splits a test point's text into description and directive, TAP 14 style.
/// The directive is returned untrimmed at the end.
fn split_directive(rest: &str) -> (Cow<'_, str>, Option<&str>) {
    // No escape before the directive (the common case): the description is a slice of
    // the input. An escape sends the whole line to the general loop below.
    let mut fast = true;
    for (i, &b) in rest.as_bytes().iter().enumerate() {
        match b {
            b'\\' => {
                fast = false;
                break;
            }
            b'#' if rest[..i]
                .chars()
                .next_back()
                .is_none_or(char::is_whitespace) =>
            {
                return (Cow::Borrowed(rest[..i].trim()), Some(&rest[i + 1..]));
            }
            _ => {}
        }
    }
    if fast {
        return (Cow::Borrowed(rest.trim()), None);
    }
    let mut desc = String::new();
    let mut chars = rest.char_indices().peekable();
    let mut prev_space = true;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some((_, '#')) | Some((_, '\\')) => {
                    let (_, n) = chars.next().unwrap_or((i, c));
                    desc.push(n);
                    prev_space = false;
                }
                _ => {
                    desc.push(c);
                    prev_space = false;
                }
            },
            '#' if prev_space => {
                return (Cow::Owned(desc.trim().to_string()), Some(&rest[i + 1..]));
            }
            _ => {
                prev_space = c.is_whitespace();
                desc.push(c);
            }
        }
    }
    (Cow::Owned(desc.trim().to_string()), None)
}

/// Parses the common YAML block shape, one `key: value` per line with plain keys and
/// plain string or unsigned-integer values, exactly as serde_norway would, without its
/// (comparatively slow) general machinery. Anything else (nesting, quotes, lists,
/// comments, floats, booleans, nulls, special characters, duplicate keys) gives `None`
/// and is left to serde_norway, so the result never differs.
fn simple_yaml(text: &str) -> Option<Value> {
    const SPECIAL: [&str; 9] = [
        "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
    ];
    let body = text.strip_suffix('\n')?;
    let mut map = serde_json::Map::new();
    for line in body.split('\n') {
        let (key, value) = line.split_once(':')?;
        let kb = key.as_bytes();
        if !kb.first()?.is_ascii_alphabetic()
            || !kb
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || SPECIAL.contains(&key)
        {
            return None;
        }
        let value = value.strip_prefix(' ')?.trim_start_matches(' ');
        let vb = value.as_bytes();
        let first = *vb.first()?;
        let json = if first.is_ascii_alphabetic() {
            let plain = vb.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b' ' | b'_' | b'.' | b'-' | b'/' | b'=' | b'(' | b')' | b'+' | b';'
                    )
            });
            if !plain || vb.last() == Some(&b' ') || SPECIAL.contains(&value) {
                return None;
            }
            Value::String(value.to_string())
        } else if first.is_ascii_digit()
            && (first != b'0' || vb.len() == 1)
            && vb.len() <= 18
            && vb.iter().all(u8::is_ascii_digit)
        {
            Value::from(value.parse::<u64>().ok()?)
        } else {
            return None;
        };
        if map.insert(key.to_string(), json).is_some() {
            // Duplicate key: leave the verdict to serde_norway.
            return None;
        }
    }
    Some(Value::Object(map))
}

/// `13.457ms` or `2s` → milliseconds.
fn parse_duration(t: &str) -> Option<f64> {
    if let Some(ms) = t.strip_suffix("ms") {
        parse_number(ms)
    } else if let Some(s) = t.strip_suffix('s') {
        parse_number(s).map(|s| s * 1000.0)
    } else {
        parse_number(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_follow_tap14_escaping() {
        assert_eq!(
            split_directive("foo # SKIP why"),
            ("foo".into(), Some(" SKIP why"))
        );
        assert_eq!(
            split_directive("\\#skip not a skip"),
            ("#skip not a skip".into(), None)
        );
        assert_eq!(split_directive("title#skip"), ("title#skip".into(), None));
        assert_eq!(
            split_directive("#todo reason"),
            ("".into(), Some("todo reason"))
        );
        assert_eq!(split_directive("a \\\\ b"), ("a \\ b".into(), None));
    }

    #[test]
    fn simple_yaml_matches_serde_norway() {
        for text in [
            "message: value 10 was wrong\nseverity: fail\n",
            "line: 42\nfile: src/a.rs\nduration_ms: 0\n",
            "a: Infinity\nb: nan\nc: e5\nd: x-y_z (1+2) = 3; ok\n",
        ] {
            let fast = simple_yaml(text).expect("simple block");
            let slow: Value = serde_norway::from_str(text).expect("valid YAML");
            assert_eq!(fast, slow, "{text:?}");
        }
        for text in [
            "message: true\n",
            "a: 1.5\n",
            "a: 012\n",
            "a: 'q'\n",
            "a:\n  b: c\n",
            "a: b\na: c\n",
            "a: b # c\n",
            "null: x\n",
            "a: b \n",
            "",
        ] {
            assert_eq!(simple_yaml(text), None, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn simple_yaml_never_disagrees(
            text in "([a-zA-Z0-9_ -]{0,5}:[ ]{0,2}[a-zA-Z0-9 _.:#'\"(),=+;-]{0,10}\n){1,4}"
        ) {
            if let Some(fast) = simple_yaml(&text) {
                let slow: Value = serde_norway::from_str(&text).expect("accepted text is YAML");
                proptest::prop_assert_eq!(fast, slow, "{:?}", text);
            }
        }
    }

    #[test]
    fn skip_all_plan() {
        let r = parse(&b"1..0 # skipping: rope\n"[..]);
        assert!(r.complete);
        assert_eq!(r.suites[0].property("skip_all"), Some("skipping: rope"));
    }

    #[test]
    fn missing_plan_is_incomplete() {
        let r = parse(&b"TAP version 14\nok 1 - a\n"[..]);
        assert!(!r.complete);
        assert_eq!(r.suites[0].cases.len(), 1);
    }
}
