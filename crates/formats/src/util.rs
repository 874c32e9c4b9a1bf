//! Small helpers shared by the parsers: size-capped text, lenient numbers, XML attribute
//! and text access.
//!
//! The caps exist because a result file may be a gigabyte of one test's debug output;
//! the parsers stream, and these helpers make sure what they keep per case stays bounded.

use std::borrow::Cow;
use std::hash::{BuildHasherDefault, Hasher};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart};
use testfleet_wire::results::CaseFlags;

/// Most bytes kept for one case's message or log.
pub(crate) const MAX_TEXT: usize = 64 * 1024;

/// Appended once when text was cut at [`MAX_TEXT`].
pub(crate) const TRUNCATION_MARKER: &str = "\n[... truncated by testfleet: output over 64 KiB]";

/// Appends `text` as a new line of `target`, keeping `target` under [`MAX_TEXT`].
/// When the cap is hit, the text is cut at a character boundary, the marker is added
/// and `flags.truncated` is set; later appends are dropped.
pub(crate) fn append_capped(target: &mut Option<String>, text: &str, flags: &mut CaseFlags) {
    let buf = target.get_or_insert_with(String::new);
    if buf.len() >= MAX_TEXT {
        // Already full (and marked): drop the rest.
        return;
    }
    if !buf.is_empty() {
        buf.push('\n');
    }
    let room = MAX_TEXT.saturating_sub(buf.len());
    if text.len() <= room {
        buf.push_str(text);
    } else {
        buf.push_str(&text[..floor_char_boundary(text, room)]);
        buf.push_str(TRUNCATION_MARKER);
        flags.truncated = true;
    }
}

/// Sets `target` to `text`, capped like [`append_capped`].
pub(crate) fn set_capped(target: &mut Option<String>, text: &str, flags: &mut CaseFlags) {
    *target = None;
    append_capped(target, text, flags);
}

/// Like `str::floor_char_boundary` (not yet stable for our MSRV).
pub(crate) fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Parses a number the way result files write them: optional thousands separators
/// (`200,000,158` in QtTest's text logger) and surrounding spaces. Placeholders such
/// as `@TEST_DURATION@` give `None`.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let v: f64 = if s.contains(',') {
        s.replace(',', "").parse().ok()?
    } else {
        s.parse().ok()?
    };
    v.is_finite().then_some(v)
}

/// Parses an unsigned integer, accepting thousands separators and a float spelling
/// of an integer (`15.0`).
pub(crate) fn parse_count(s: &str) -> Option<u64> {
    let v = parse_number(s)?;
    if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
        Some(v as u64)
    } else {
        None
    }
}

/// The unescaped value of attribute `name`, if present and well-formed.
pub(crate) fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let mut attrs = e.attributes();
    attrs.with_checks(false);
    for a in attrs.flatten() {
        if a.key.as_ref() == name {
            return a
                .normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned());
        }
    }
    None
}

/// The unescaped values of several attributes, read in one pass over the element's
/// attributes (each [`attr`] call re-parses them all). Same rules as [`attr`]: the
/// first attribute with a name wins, and a malformed value gives `None`. Values that
/// need no normalization borrow from the element.
pub(crate) fn attrs<'a, const N: usize>(
    e: &'a BytesStart<'_>,
    names: [&str; N],
) -> [Option<Cow<'a, str>>; N] {
    if let Some(out) = attrs_simple(e.attributes_raw(), names) {
        return out;
    }
    attrs_general(e, names)
}

/// [`attrs`] through quick-xml's attribute iterator, for any input.
fn attrs_general<'a, const N: usize>(
    e: &'a BytesStart<'_>,
    names: [&str; N],
) -> [Option<Cow<'a, str>>; N] {
    let mut out = [const { None }; N];
    let mut done = [false; N];
    let mut left = N;
    let mut it = e.attributes();
    it.with_checks(false);
    for a in it.flatten() {
        let key = a.key.as_ref();
        if let Some(j) = (0..N).find(|&j| !done[j] && names[j] == key) {
            done[j] = true;
            out[j] = a.normalized_value(XmlVersion::Implicit1_0).ok();
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    out
}

/// [`attrs`] for the common shape, `name="value"` pairs each after whitespace, with no
/// value needing unescaping or normalization (`&`, tab, CR, LF): then every value is a
/// slice of the element, exactly as quick-xml's iterator would return it. Anything
/// else gives `None` and goes through quick-xml.
fn attrs_simple<'a, const N: usize>(
    raw: &'a str,
    names: [&str; N],
) -> Option<[Option<Cow<'a, str>>; N]> {
    let bytes = raw.as_bytes();
    let mut out = [const { None }; N];
    let mut left = N;
    let mut i = 0;
    while left > 0 {
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        if i == start {
            return None;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
                return None;
            }
            i += 1;
        }
        let key_end = i;
        let quote = *bytes.get(i + 1)?;
        if key_end == key_start || !matches!(quote, b'"' | b'\'') {
            return None;
        }
        let value_start = i + 2;
        let len = bytes.get(value_start..)?.iter().position(|&b| b == quote)?;
        let value_end = value_start + len;
        i = value_end + 1;
        let key = &raw[key_start..key_end];
        if let Some(j) = names.iter().position(|n| *n == key)
            && out[j].is_none()
        {
            let value = &raw[value_start..value_end];
            if value
                .bytes()
                .any(|b| matches!(b, b'&' | b'\t' | b'\r' | b'\n'))
            {
                return None;
            }
            out[j] = Some(Cow::Borrowed(value));
            left -= 1;
        }
    }
    Some(out)
}

/// A small, fast, non-cryptographic hasher (FxHash) for the parsers' internal maps,
/// whose keys come from the input but whose size is bounded by it: SipHash showed up
/// as a tenth of the QtTest XML parse time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// Resolves `&name;` / `&#NN;` references that quick-xml reports as separate events.
pub(crate) fn resolve_ref(r: &BytesRef<'_>, out: &mut String) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        out.push(c);
        return;
    }
    let name = r.clone().into_inner();
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => out.push_str(s),
        // An unknown entity is kept as written rather than lost.
        None => {
            out.push('&');
            out.push_str(&name);
            out.push(';');
        }
    }
}

/// Splits QtTest's `function(tag)` display name (TAP, TeamCity, JUnit loggers) into the
/// function and its data tag. `initTestCase()` has no tag.
pub(crate) fn split_qt_name(name: &str) -> (String, Option<String>) {
    let name = name.trim();
    if let Some(open) = name.find('(')
        && name.ends_with(')')
    {
        let func = &name[..open];
        let tag = &name[open + 1..name.len() - 1];
        // A function name never contains spaces or colons; if it does, this is not a
        // QtTest name and is kept whole.
        if !func.is_empty() && !func.contains([' ', ':']) {
            let tag = (!tag.is_empty()).then(|| tag.to_string());
            return (func.to_string(), tag);
        }
    }
    (name.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_text_stops_at_limit_with_marker() {
        let mut flags = CaseFlags::default();
        let mut t = None;
        let big = "é".repeat(MAX_TEXT);
        append_capped(&mut t, &big, &mut flags);
        append_capped(&mut t, "more", &mut flags);
        let t = t.expect("text");
        assert!(flags.truncated);
        assert!(t.ends_with(TRUNCATION_MARKER));
        assert!(t.len() <= MAX_TEXT + TRUNCATION_MARKER.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn simple_attributes_match_quick_xml(
            raw in "(( |\t|\n)?([abn]{1,2}|=)?( )?=?( )?[\"']?[a-z &;'\"\t<]{0,4}[\"']?){0,4}( |/)?"
        ) {
            let text = format!("<e{raw}>");
            let mut reader = quick_xml::Reader::from_str(&text);
            if let Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) =
                reader.read_event()
                && let Some(fast) = attrs_simple(e.attributes_raw(), ["a", "b", "n"])
            {
                proptest::prop_assert_eq!(fast, attrs_general(&e, ["a", "b", "n"]), "{:?}", text);
            }
        }
    }

    #[test]
    fn numbers_with_separators_and_placeholders() {
        assert_eq!(parse_number("200,000,158"), Some(200_000_158.0));
        assert_eq!(parse_number(" 3.00 "), Some(3.0));
        assert_eq!(parse_number("@TEST_DURATION@"), None);
        assert_eq!(parse_count("15"), Some(15));
        assert_eq!(parse_count("-1"), None);
    }

    #[test]
    fn qt_names() {
        assert_eq!(
            split_qt_name("initTestCase()"),
            ("initTestCase".into(), None)
        );
        assert_eq!(
            split_qt_name("events(100)"),
            ("events".into(), Some("100".into()))
        );
        assert_eq!(
            split_qt_name("testGlobal(global=false:local=true)"),
            ("testGlobal".into(), Some("global=false:local=true".into()))
        );
        assert_eq!(split_qt_name("plain"), ("plain".into(), None));
    }
}
