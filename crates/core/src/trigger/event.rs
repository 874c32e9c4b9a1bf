//! An event a trigger rule is matched against: where it came from, its
//! routing key or webhook kind, and its free-form JSON body.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A message from an AMQP bus (fedora-messaging: topic = routing key,
    /// body = the message's JSON body).
    Amqp,
    /// A Gerrit stream event or webhook (`change-merged`, `patchset-created`, …).
    Gerrit,
    /// A GitLab webhook (`push`, `merge_request`, `pipeline`, …).
    Gitlab,
    /// A GitHub webhook (`push`, `pull_request`, …).
    Github,
    /// An event typed by hand (`testfleet trigger test`, the API).
    Manual,
}

impl Source {
    /// Every source, in the order the docs list them.
    pub const ALL: [Source; 5] = [
        Source::Amqp,
        Source::Gerrit,
        Source::Gitlab,
        Source::Github,
        Source::Manual,
    ];

    /// The name used in rules files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Amqp => "amqp",
            Source::Gerrit => "gerrit",
            Source::Gitlab => "gitlab",
            Source::Github => "github",
            Source::Manual => "manual",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source name that is none of [`Source::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event source `{0}`; use amqp, gerrit, gitlab, github or manual")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Source, UnknownSource> {
        Source::ALL
            .into_iter()
            .find(|src| src.as_str() == s.trim())
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// One event: the input of rule matching and template rendering.
///
/// The body is the event's own free-form payload (a fedora-messaging
/// message body, a webhook's JSON); rules address it by dotted paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub source: Source,
    /// The AMQP routing key (fedora-messaging's topic), for bus messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The webhook event kind: Gerrit's `type` (`change-merged`), GitLab's
    /// `object_kind` (`merge_request`), GitHub's `X-GitHub-Event`
    /// (`pull_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub body: serde_json::Value,
    /// Transport headers (HTTP headers of a webhook, AMQP properties).
    /// Rules do not see them and templates cannot read them: they may carry
    /// tokens and signatures.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Event {
    /// An event with no topic, kind or headers.
    pub fn new(source: Source, body: serde_json::Value) -> Event {
        Event {
            source,
            topic: None,
            kind: None,
            body,
            headers: BTreeMap::new(),
        }
    }

    /// Sets the topic (AMQP routing key).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Event {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the webhook kind.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Event {
        self.kind = Some(kind.into());
        self
    }

    /// The kind the body itself names, when the product puts it there:
    /// Gerrit's stream events carry `type`, GitLab's webhooks `object_kind`.
    /// GitHub names it only in the `X-GitHub-Event` header.
    pub fn kind_from_body(source: Source, body: &serde_json::Value) -> Option<String> {
        let field = match source {
            Source::Gerrit => "type",
            Source::Gitlab => "object_kind",
            Source::Amqp | Source::Github | Source::Manual => return None,
        };
        body.get(field)?.as_str().map(str::to_owned)
    }

    /// Fills `kind` from the body when it is not set (see
    /// [`Event::kind_from_body`]).
    pub fn infer_kind(mut self) -> Event {
        if self.kind.is_none() {
            self.kind = Event::kind_from_body(self.source, &self.body);
        }
        self
    }
}

/// The value at a dotted path of a JSON body: `change.branch`,
/// `commits.0.id` (arrays by index). `None` when any step is missing.
pub fn lookup<'a>(body: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut at = body;
    for seg in path.split('.') {
        at = match at {
            serde_json::Value::Object(map) => map.get(seg)?,
            serde_json::Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_reach_objects_and_arrays_and_miss_cleanly() {
        let body = json!({"change": {"branch": "dev", "number": 5}, "commits": [{"id": "abc"}]});
        assert_eq!(lookup(&body, "change.branch"), Some(&json!("dev")));
        assert_eq!(lookup(&body, "commits.0.id"), Some(&json!("abc")));
        assert_eq!(lookup(&body, "commits.1.id"), None);
        assert_eq!(lookup(&body, "commits.x"), None);
        assert_eq!(lookup(&body, "change.branch.deeper"), None);
        assert_eq!(lookup(&body, "nothing"), None);
    }

    #[test]
    fn sources_parse_by_name() {
        assert_eq!("gerrit".parse::<Source>(), Ok(Source::Gerrit));
        let e = "svn".parse::<Source>().unwrap_err();
        assert!(e.to_string().contains("unknown event source `svn`"), "{e}");
    }

    #[test]
    fn kind_comes_from_the_body_where_the_product_puts_it() {
        let gerrit = Event::new(Source::Gerrit, json!({"type": "change-merged"})).infer_kind();
        assert_eq!(gerrit.kind.as_deref(), Some("change-merged"));
        let gitlab = Event::new(Source::Gitlab, json!({"object_kind": "push"})).infer_kind();
        assert_eq!(gitlab.kind.as_deref(), Some("push"));
        let github = Event::new(Source::Github, json!({"action": "opened"})).infer_kind();
        assert_eq!(github.kind, None);
        let given = Event::new(Source::Gerrit, json!({"type": "x"}))
            .with_kind("change-merged")
            .infer_kind();
        assert_eq!(given.kind.as_deref(), Some("change-merged"));
    }
}
