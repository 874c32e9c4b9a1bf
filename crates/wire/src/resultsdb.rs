//! The ResultsDB API v2.0 shapes, shared by the coordinator's served
//! `/api/v2.0` and its reporter to an external ResultsDB.
//!
//! Answers ([`Testcase`], [`Group`], [`TestResult`], the paged [`Page`] and
//! the `{message}` [`Message`]) serialize exactly as ResultsDB's serializer
//! prints them; their fields are declared in alphabetical order, the order
//! ResultsDB's (and serde_json's) sorted keys give. Read back, they tolerate
//! what another ResultsDB may leave out (`href`s, `note`, `data`).
//!
//! Request bodies ([`NewResult`], [`NewTestcase`], [`NewGroup`]) keep
//! ResultsDB's leniency: a testcase is a name or an object, a group a uuid or
//! an object, a data value a string, a (nested) list, a number or null, an
//! outcome any case. Whatever else they hold is refused with a [`BodyError`]
//! naming the field; [`NewResult::from_json`] and friends return it as is,
//! the serde `Deserialize` impls wrap it in the format's error.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The outcome of a result, as ResultsDB names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Passed,
    Info,
    Failed,
    NeedsInspection,
}

impl Outcome {
    /// Every outcome, in ResultsDB's order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Passed,
        Outcome::Info,
        Outcome::Failed,
        Outcome::NeedsInspection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "PASSED",
            Outcome::Info => "INFO",
            Outcome::Failed => "FAILED",
            Outcome::NeedsInspection => "NEEDS_INSPECTION",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outcome ResultsDB does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "outcome must be one of [\"PASSED\", \"INFO\", \"FAILED\", \"NEEDS_INSPECTION\"], not {0:?}"
)]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    /// Case-insensitive and trimmed, as ResultsDB reads it.
    fn from_str(s: &str) -> Result<Outcome, UnknownOutcome> {
        let upper = s.trim().to_uppercase();
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == upper)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// The values of one data key. ResultsDB keeps every value as text and
/// answers a list per key; a posted value may be a string, a list (nested
/// lists are flattened), null (`"None"`, as Python prints it) or any other
/// JSON value (its JSON text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DataValues(pub Vec<String>);

impl DataValues {
    fn from_value(v: Value) -> DataValues {
        fn push(v: Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s),
                Value::Array(items) => items.into_iter().for_each(|i| push(i, out)),
                Value::Null => out.push("None".into()),
                other => out.push(other.to_string()),
            }
        }
        let mut out = Vec::new();
        push(v, &mut out);
        DataValues(out)
    }
}

impl<'de> Deserialize<'de> for DataValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DataValues, D::Error> {
        Ok(DataValues::from_value(Value::deserialize(d)?))
    }
}

impl From<Vec<String>> for DataValues {
    fn from(values: Vec<String>) -> DataValues {
        DataValues(values)
    }
}

/// A result's data: values per key, keys sorted.
pub type Data = BTreeMap<String, DataValues>;

/// A testcase as answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Testcase {
    #[serde(default)]
    pub href: String,
    pub name: String,
    #[serde(default)]
    pub ref_url: Option<String>,
}

/// A group as answered; `results` lists its results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub href: String,
    #[serde(default)]
    pub ref_url: Option<String>,
    #[serde(default)]
    pub results: String,
    pub uuid: String,
}

/// A result as answered. `submit_time` is naive UTC with microseconds
/// (`2023-02-10T13:11:13.123000`); `groups` are uuids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    #[serde(default)]
    pub data: Data,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub href: String,
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
    /// As stored; a foreign ResultsDB may know more outcomes than [`Outcome`].
    pub outcome: String,
    #[serde(default)]
    pub ref_url: Option<String>,
    #[serde(default)]
    pub submit_time: String,
    pub testcase: Testcase,
}

/// One page of a list: `prev`/`next` are the request's URL with `page`
/// changed, null at either end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub prev: Option<String>,
}

/// An unpaged list (`/results/latest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// ResultsDB's `{message}`: errors, and the health check's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

/// Why a posted body was refused; each message names the field.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("Malformed Request: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("Malformed Request: expected a JSON object")]
    NotAnObject,
    #[error("{0}: missing required parameter")]
    Missing(&'static str),
    #[error("{0} must be a string")]
    NotAString(String),
    #[error(transparent)]
    Outcome(#[from] UnknownOutcome),
    #[error("testcase name not set")]
    EmptyTestcaseName,
    #[error("testcase.name not set")]
    NoTestcaseName,
    #[error("groups: expected uuids or group objects, got {0}")]
    BadGroup(String),
    #[error("groups must be a list")]
    GroupsNotAList,
    #[error("data must be an object")]
    DataNotAnObject,
    #[error("Colon not allowed in key name: {0:?}")]
    ColonInKey(Vec<String>),
}

/// A JSON object's members, read ResultsDB's way: null is absent.
struct Members {
    map: Map<String, Value>,
    /// Prefix of the field names in errors (`testcase.`, `groups[0].`).
    path: String,
}

impl Members {
    fn new(v: Value, path: &str) -> Option<Members> {
        match v {
            Value::Object(map) => Some(Members {
                map,
                path: path.to_owned(),
            }),
            _ => None,
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn opt_str(&mut self, key: &str) -> Result<Option<String>, BodyError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(BodyError::NotAString(format!("{}{key}", self.path))),
        }
    }
}

fn json_object(body: &[u8]) -> Result<Value, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(e) => Err(BodyError::Malformed(e)),
    }
}

/// The body of `POST /testcases`, and a testcase given as an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTestcase {
    pub name: String,
    pub ref_url: Option<String>,
}

impl NewTestcase {
    /// Parses a `POST /testcases` body.
    pub fn from_json(body: &[u8]) -> Result<NewTestcase, BodyError> {
        NewTestcase::from_value(json_object(body)?)
    }

    fn from_value(v: Value) -> Result<NewTestcase, BodyError> {
        let mut m = Members::new(v, "").ok_or(BodyError::NotAnObject)?;
        match m.opt_str("name")? {
            Some(name) if !name.is_empty() => Ok(NewTestcase {
                name,
                ref_url: m.opt_str("ref_url")?,
            }),
            _ => Err(BodyError::Missing("name")),
        }
    }
}

impl<'de> Deserialize<'de> for NewTestcase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NewTestcase, D::Error> {
        NewTestcase::from_value(Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// The body of `POST /groups`, and a group given as an object. A group
/// without a uuid gets a new one from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewGroup {
    pub description: Option<String>,
    pub ref_url: Option<String>,
    pub uuid: Option<String>,
}

impl NewGroup {
    /// Parses a `POST /groups` body.
    pub fn from_json(body: &[u8]) -> Result<NewGroup, BodyError> {
        NewGroup::from_value(json_object(body)?, "")
    }

    fn from_value(v: Value, path: &str) -> Result<NewGroup, BodyError> {
        let mut m = Members::new(v, path).ok_or(BodyError::NotAnObject)?;
        Ok(NewGroup {
            description: m.opt_str("description")?,
            ref_url: m.opt_str("ref_url")?,
            uuid: m.opt_str("uuid")?,
        })
    }
}

impl<'de> Deserialize<'de> for NewGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NewGroup, D::Error> {
        NewGroup::from_value(Value::deserialize(d)?, "").map_err(D::Error::custom)
    }
}

/// The testcase of a posted result: its name, or an object that may also
/// set its `ref_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TestcaseRef {
    Name(String),
    Object(NewTestcase),
}

impl TestcaseRef {
    /// The testcase as an object (a bare name has no `ref_url`).
    pub fn into_testcase(self) -> NewTestcase {
        match self {
            TestcaseRef::Name(name) => NewTestcase {
                name,
                ref_url: None,
            },
            TestcaseRef::Object(t) => t,
        }
    }

    fn from_value(v: Option<Value>) -> Result<TestcaseRef, BodyError> {
        match v {
            Some(Value::String(s)) if s.is_empty() => Err(BodyError::EmptyTestcaseName),
            Some(Value::String(s)) => Ok(TestcaseRef::Name(s)),
            Some(v @ Value::Object(_)) => {
                let mut m = Members::new(v, "testcase.").ok_or(BodyError::NotAnObject)?;
                match m.take("name") {
                    Some(Value::String(name)) if !name.is_empty() => {
                        Ok(TestcaseRef::Object(NewTestcase {
                            name,
                            ref_url: m.opt_str("ref_url")?,
                        }))
                    }
                    _ => Err(BodyError::NoTestcaseName),
                }
            }
            _ => Err(BodyError::Missing("testcase")),
        }
    }
}

/// A group of a posted result: its uuid, or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GroupRef {
    Uuid(String),
    Object(NewGroup),
}

impl GroupRef {
    /// The group as an object (a bare uuid sets nothing else).
    pub fn into_group(self) -> NewGroup {
        match self {
            GroupRef::Uuid(uuid) => NewGroup {
                uuid: Some(uuid),
                ..NewGroup::default()
            },
            GroupRef::Object(g) => g,
        }
    }
}

/// The body of `POST /results`: what the served API reads and the reporter
/// to an external ResultsDB sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewResult {
    pub data: Data,
    pub groups: Vec<GroupRef>,
    pub note: Option<String>,
    pub outcome: Outcome,
    pub ref_url: Option<String>,
    pub testcase: TestcaseRef,
}

impl NewResult {
    /// Parses a `POST /results` body.
    pub fn from_json(body: &[u8]) -> Result<NewResult, BodyError> {
        NewResult::from_value(json_object(body)?)
    }

    fn from_value(v: Value) -> Result<NewResult, BodyError> {
        let mut m = Members::new(v, "").ok_or(BodyError::NotAnObject)?;
        let outcome = match m.take("outcome") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.parse::<Outcome>()?,
            _ => return Err(BodyError::Missing("outcome")),
        };
        let testcase = TestcaseRef::from_value(m.take("testcase"))?;
        let groups = match m.take("groups") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, g)| match g {
                    Value::String(uuid) => Ok(GroupRef::Uuid(uuid)),
                    g @ Value::Object(_) => {
                        NewGroup::from_value(g, &format!("groups[{i}].")).map(GroupRef::Object)
                    }
                    other => Err(BodyError::BadGroup(other.to_string())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(BodyError::GroupsNotAList),
        };
        let data = match m.take("data") {
            None => Data::new(),
            Some(Value::Object(d)) => {
                let bad: Vec<String> = d.keys().filter(|k| k.contains(':')).cloned().collect();
                if !bad.is_empty() {
                    return Err(BodyError::ColonInKey(bad));
                }
                d.into_iter()
                    .map(|(k, v)| (k, DataValues::from_value(v)))
                    .collect()
            }
            Some(_) => return Err(BodyError::DataNotAnObject),
        };
        Ok(NewResult {
            data,
            groups,
            note: m.opt_str("note")?,
            outcome,
            ref_url: m.opt_str("ref_url")?,
            testcase,
        })
    }
}

impl<'de> Deserialize<'de> for NewResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NewResult, D::Error> {
        NewResult::from_value(Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests;
