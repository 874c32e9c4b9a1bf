//! Matching an event against rules, and saying why a rule did not match
//! (the first condition that failed), for `testfleet trigger test` and the
//! events log.

use std::fmt;

use super::event::{Event, Source, lookup};
use super::rules::{Op, Rule, RuleSet, Scalar, TopicPattern, When};
use super::vars::scalar_text;

/// Why a rule did not match an event: its first failed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    Source {
        got: Source,
        want: Vec<Source>,
    },
    NoTopic {
        want: Vec<String>,
    },
    Topic {
        got: String,
        want: Vec<String>,
    },
    NoKind {
        want: Vec<String>,
    },
    Kind {
        got: String,
        want: Vec<String>,
    },
    /// The field is missing (or null) and the condition needs it.
    FieldMissing {
        path: String,
        condition: String,
    },
    /// The field is there and the condition does not hold.
    Field {
        path: String,
        got: String,
        condition: String,
    },
}

fn one_of<T: fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match parts.len() {
        1 => parts.join(""),
        _ => format!("one of {}", parts.join(", ")),
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Source { got, want } => {
                write!(f, "source is `{got}`, the rule wants {}", one_of(want))
            }
            Mismatch::NoTopic { want } => {
                write!(f, "the event has no topic, the rule wants {}", one_of(want))
            }
            Mismatch::Topic { got, want } => {
                write!(f, "topic `{got}` does not match {}", one_of(want))
            }
            Mismatch::NoKind { want } => {
                write!(f, "the event has no kind, the rule wants {}", one_of(want))
            }
            Mismatch::Kind { got, want } => {
                write!(f, "kind is `{got}`, the rule wants {}", one_of(want))
            }
            Mismatch::FieldMissing { path, condition } => {
                write!(
                    f,
                    "field `{path}` is missing, the rule wants it {condition}"
                )
            }
            Mismatch::Field {
                path,
                got,
                condition,
            } => write!(f, "field `{path}` is {got}, the rule wants it {condition}"),
        }
    }
}

/// Numbers compare as numbers; anything else by its text, so `new = 1`
/// matches `"new": 1` and `"new": "1"`, and `"1.10"` never equals `"1.1"`.
fn equals(value: &serde_json::Value, want: &Scalar) -> bool {
    match (value, want) {
        (serde_json::Value::Number(n), Scalar::Int(i)) => {
            n.as_i64() == Some(*i) || n.as_f64() == Some(*i as f64)
        }
        (serde_json::Value::Number(n), Scalar::Float(x)) => n.as_f64() == Some(*x),
        (serde_json::Value::Bool(b), Scalar::Bool(w)) => b == w,
        _ => {
            let want_text = match want {
                Scalar::Str(s) => s.clone(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(x) => x.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            scalar_text(value).is_some_and(|t| t == want_text)
        }
    }
}

fn show(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Whether `op` holds for the field's value (`None`: missing or null).
fn holds(op: &Op, value: Option<&serde_json::Value>) -> bool {
    match (op, value) {
        (Op::Exists(want), v) => v.is_some() == *want,
        (Op::Nin(_), None) => true,
        (_, None) => false,
        (Op::Eq(s), Some(v)) => equals(v, s),
        (Op::In(items), Some(v)) => items.iter().any(|s| equals(v, s)),
        (Op::Nin(items), Some(v)) => !items.iter().any(|s| equals(v, s)),
        (Op::Regex(re), Some(v)) => scalar_text(v).is_some_and(|t| re.is_match(&t)),
    }
}

fn patterns(topics: &[TopicPattern]) -> Vec<String> {
    topics.iter().map(|t| t.as_str().to_owned()).collect()
}

impl When {
    /// `Ok` when every condition holds, else the first that does not, in
    /// the order source, topic, kind, fields (by path).
    pub fn check(&self, event: &Event) -> Result<(), Mismatch> {
        if !self.sources.is_empty() && !self.sources.contains(&event.source) {
            return Err(Mismatch::Source {
                got: event.source,
                want: self.sources.clone(),
            });
        }
        if !self.topics.is_empty() {
            let Some(topic) = &event.topic else {
                return Err(Mismatch::NoTopic {
                    want: patterns(&self.topics),
                });
            };
            if !self.topics.iter().any(|p| p.matches(topic)) {
                return Err(Mismatch::Topic {
                    got: topic.clone(),
                    want: patterns(&self.topics),
                });
            }
        }
        if !self.kinds.is_empty() {
            let Some(kind) = &event.kind else {
                return Err(Mismatch::NoKind {
                    want: self.kinds.clone(),
                });
            };
            if !self.kinds.contains(kind) {
                return Err(Mismatch::Kind {
                    got: kind.clone(),
                    want: self.kinds.clone(),
                });
            }
        }
        for field in &self.fields {
            let value = lookup(&event.body, &field.path).filter(|v| !v.is_null());
            if let Some(op) = field.ops.iter().find(|op| !holds(op, value)) {
                return Err(match value {
                    None => Mismatch::FieldMissing {
                        path: field.path.clone(),
                        condition: op.to_string(),
                    },
                    Some(v) => Mismatch::Field {
                        path: field.path.clone(),
                        got: show(v),
                        condition: op.to_string(),
                    },
                });
            }
        }
        Ok(())
    }
}

/// A rule that matched an event.
#[derive(Debug, Clone, Copy)]
pub struct Match<'r> {
    pub rule: &'r Rule,
}

/// One rule's verdict on an event.
#[derive(Debug, Clone)]
pub struct Explanation<'r> {
    pub rule: &'r Rule,
    /// `Ok` when it matched, else why not.
    pub verdict: Result<(), Mismatch>,
}

impl RuleSet {
    /// The rules `event` matches, in order.
    pub fn matches(&self, event: &Event) -> Vec<Match<'_>> {
        self.rules()
            .iter()
            .filter(|r| r.when.check(event).is_ok())
            .map(|rule| Match { rule })
            .collect()
    }

    /// Every rule's verdict on `event`, in order.
    pub fn explain(&self, event: &Event) -> Vec<Explanation<'_>> {
        self.rules()
            .iter()
            .map(|rule| Explanation {
                rule,
                verdict: rule.when.check(event),
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
