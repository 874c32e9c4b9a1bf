//! The job file's rules that serde cannot express, and where in the source
//! a refused field is.
//!
//! Cross-field rules run on the parsed [`JobSpec`](super::JobSpec); a rule
//! that fails names its field as a path of [`Seg`]s. The path is then looked
//! up in the source text by deserializing it once more with a probe that
//! fails exactly at that field, so the TOML or JSON parser reports the line
//! and column as it does for any other error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{JobSpecError, line_col};

/// One step of a field's path: a key of a table or an index of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A rule a parsed job file broke: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub(super) path: Vec<Seg>,
    pub(super) message: String,
}

impl Invalid {
    pub(super) fn new(path: Vec<Seg>, message: impl Into<String>) -> Invalid {
        Invalid {
            path,
            message: message.into(),
        }
    }

    /// The error a user sees, at `position` (line, column) when known.
    pub(super) fn into_error(self, position: Option<(usize, usize)>) -> JobSpecError {
        JobSpecError {
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            field: Some(path_string(&self.path)),
            message: self.message,
        }
    }
}

/// `task[0].artifacts.always[1]`.
fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Why a path glob would leave the checkout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("glob must not be empty")]
    Empty,
    #[error(
        "glob `{0}` is an absolute path; write it relative to the checkout, such as \"results/*.xml\""
    )]
    Absolute(String),
    #[error(
        "glob `{0}` names a drive; write it relative to the checkout, such as \"results/*.xml\""
    )]
    Drive(String),
    #[error(
        "glob `{0}` leaves the checkout with `..`; write it relative to the checkout, without `..`"
    )]
    ParentDir(String),
}

/// Checks that a result or artifact glob stays inside the checkout: not
/// empty, not absolute (`/…`, `\…`), no drive (`C:`), no `..` component
/// (with `/` or `\` as the separator). The agent refuses these too; here
/// they are refused before the job is queued.
pub fn check_glob(glob: &str) -> Result<(), GlobError> {
    let g = glob.trim();
    if g.is_empty() {
        return Err(GlobError::Empty);
    }
    if g.starts_with('/') || g.starts_with('\\') {
        return Err(GlobError::Absolute(glob.to_owned()));
    }
    let b = g.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(GlobError::Drive(glob.to_owned()));
    }
    if g.split(['/', '\\']).any(|part| part.trim() == "..") {
        return Err(GlobError::ParentDir(glob.to_owned()));
    }
    Ok(())
}

/// Where the field at `path` is in a TOML job file.
pub(super) fn locate_toml(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = toml::Deserializer::parse(src).ok()?;
    let err = Probe(path).deserialize(de).err()?;
    err.span().map(|s| line_col(src, s.start))
}

/// Where the field at `path` is in the JSON form of a job file.
pub(super) fn locate_json(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let mut de = serde_json::Deserializer::from_str(src);
    let err = Probe(path).deserialize(&mut de).err()?;
    (err.line() > 0).then(|| (err.line(), err.column()))
}

/// Walks a document along a path and fails at its end, so that the
/// parser's error carries the position of that value.
struct Probe<'p>(&'p [Seg]);

const FOUND: &str = "the field looked for";

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            d.deserialize_any(Found)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match self.0.split_first() {
                Some((Seg::Key(k), rest)) if *k == key => map.next_value_seed(Probe(rest))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = match self.0.split_first() {
                Some((Seg::Index(n), rest)) if *n == i => {
                    seq.next_element_seed(Probe(rest))?.is_some()
                }
                _ => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    // Scalars on the way are not the field looked for.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The value at the end of the path: always an error, raised while the
/// parser is at that value.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(FOUND)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_inside_the_checkout_pass() {
        for ok in [
            "results/*.xml",
            "**/core*",
            "a..b",
            "x..y/..z",
            "./out/*",
            "C/x:y",
        ] {
            assert_eq!(check_glob(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn globs_leaving_the_checkout_are_refused() {
        let cases = [
            (
                "../../etc/passwd",
                GlobError::ParentDir("../../etc/passwd".into()),
            ),
            ("out/../../x", GlobError::ParentDir("out/../../x".into())),
            ("..", GlobError::ParentDir("..".into())),
            (
                "..\\..\\secret",
                GlobError::ParentDir("..\\..\\secret".into()),
            ),
            ("/etc/shadow", GlobError::Absolute("/etc/shadow".into())),
            (
                "\\\\server\\share",
                GlobError::Absolute("\\\\server\\share".into()),
            ),
            ("C:\\Windows\\*", GlobError::Drive("C:\\Windows\\*".into())),
            ("c:/x", GlobError::Drive("c:/x".into())),
            ("  ", GlobError::Empty),
        ];
        for (glob, want) in cases {
            assert_eq!(check_glob(glob), Err(want), "{glob}");
        }
    }

    #[test]
    fn probe_finds_a_nested_list_element() {
        let src = "name = \"x\"\n[[task]]\nname = \"a\"\n[[task]]\nname = \"b\"\nartifacts = { always = [\n  \"ok/*\",\n  \"../x\",\n] }\n";
        let path = [
            Seg::Key("task"),
            Seg::Index(1),
            Seg::Key("artifacts"),
            Seg::Key("always"),
            Seg::Index(1),
        ];
        assert_eq!(locate_toml(src, &path).map(|p| p.0), Some(8));
        assert_eq!(path_string(&path), "task[1].artifacts.always[1]");
        let json = "{\"name\": \"x\",\n \"task\": [{\"name\": \"a\"},\n  {\"name\": \"b\", \"artifacts\": {\"always\": [\"ok\",\n   \"../x\"]}}]}";
        assert_eq!(locate_json(json, &path).map(|p| p.0), Some(4));
        // A path that is not in the document has no position.
        assert_eq!(locate_toml(src, &[Seg::Key("nope")]), None);
    }
}
