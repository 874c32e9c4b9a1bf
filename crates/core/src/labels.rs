//! Agent labels and the requirements a task places on them.
//!
//! A requirement value in a job file is a string (exact match), a list of
//! strings (set membership) or a string `">=N"` (numeric at least). Every
//! agent carries the implicit label `hostname`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The labels an agent advertises, `key → value`.
pub type LabelSet = BTreeMap<String, String>;

/// One condition on one label.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Exact(String),
    OneOf(Vec<String>),
    AtLeast(f64),
}

impl Requirement {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        match self {
            Requirement::Exact(want) => want == value,
            Requirement::OneOf(set) => set.iter().any(|v| v == value),
            Requirement::AtLeast(min) => value.trim().parse::<f64>().is_ok_and(|v| v >= *min),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Exact(v) => write!(f, "{v}"),
            Requirement::OneOf(vs) => write!(f, "one of [{}]", vs.join(", ")),
            Requirement::AtLeast(n) => write!(f, ">={n}"),
        }
    }
}

impl Serialize for Requirement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Requirement::Exact(v) => s.serialize_str(v),
            Requirement::OneOf(vs) => vs.serialize(s),
            Requirement::AtLeast(n) => s.serialize_str(&format!(">={n}")),
        }
    }
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
            List(Vec<String>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a requirement is a string, a number, a list of strings or \">=N\"",
            )
        })? {
            Raw::Number(n) => Ok(Requirement::Exact(n.to_string())),
            Raw::List(vs) if vs.is_empty() => Err(serde::de::Error::custom(
                "a list of accepted values must not be empty",
            )),
            Raw::List(vs) => Ok(Requirement::OneOf(vs)),
            Raw::Text(t) => match t.trim().strip_prefix(">=") {
                Some(n) => n
                    .trim()
                    .parse::<f64>()
                    .map(Requirement::AtLeast)
                    .map_err(|_| {
                        serde::de::Error::custom(format!("`{t}` is not `>=` followed by a number"))
                    }),
                None => Ok(Requirement::Exact(t)),
            },
        }
    }
}

/// All conditions a task places on an agent's labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Requirements(pub BTreeMap<String, Requirement>);

impl Requirements {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.0
            .iter()
            .all(|(k, req)| req.matches(labels.get(k).map(String::as_str)))
    }

    /// The first requirement the labels fail, for "why is this pending?".
    pub fn first_mismatch<'a>(&'a self, labels: &LabelSet) -> Option<(&'a str, &'a Requirement)> {
        self.0
            .iter()
            .find(|(k, req)| !req.matches(labels.get(k.as_str()).map(String::as_str)))
            .map(|(k, r)| (k.as_str(), r))
    }
}

/// Why a label list such as `pool=bench,os=linux` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelListError {
    #[error("label `{0}` is not of the form key=value")]
    NotKeyValue(String),
    #[error("label `{0}` has an empty key")]
    EmptyKey(String),
}

/// Parses `k=v,k2=v2` as given on the agent's command line.
pub fn parse_label_list(s: &str) -> Result<LabelSet, LabelListError> {
    let mut out = LabelSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| LabelListError::NotKeyValue(part.to_owned()))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(LabelListError::EmptyKey(part.to_owned()));
        }
        out.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> LabelSet {
        parse_label_list(s).unwrap()
    }

    fn reqs(toml_src: &str) -> Requirements {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn exact_set_and_numeric() {
        let r = reqs("pool = \"benchmark\"\nos = [\"linux\", \"freebsd\"]\ncores = \">=8\"");
        assert!(r.matches(&labels("pool=benchmark,os=linux,cores=16")));
        assert!(!r.matches(&labels("pool=benchmark,os=windows,cores=16")));
        assert!(!r.matches(&labels("pool=benchmark,os=linux,cores=4")));
        assert!(!r.matches(&labels("pool=benchmark,os=linux")));
        assert_eq!(
            r.first_mismatch(&labels("pool=benchmark,os=linux,cores=2"))
                .unwrap()
                .0,
            "cores"
        );
    }

    #[test]
    fn bad_label_lists_are_refused() {
        assert_eq!(
            parse_label_list("a=b,c"),
            Err(LabelListError::NotKeyValue("c".into()))
        );
        assert_eq!(
            parse_label_list("=b"),
            Err(LabelListError::EmptyKey("=b".into()))
        );
        assert_eq!(
            LabelListError::NotKeyValue("c".into()).to_string(),
            "label `c` is not of the form key=value"
        );
        assert_eq!(labels(" a = b ,, c=d").len(), 2);
    }

    #[test]
    fn bad_numeric_requirement_is_refused() {
        assert!(toml::from_str::<Requirements>("cores = \">=many\"").is_err());
    }
}
