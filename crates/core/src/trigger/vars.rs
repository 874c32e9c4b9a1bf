//! The values placeholders are filled with: the well-known variables each
//! source derives from its payload, `body.<path>` and `event.<field>`, and
//! the variables a rule's action or the command line sets.

use std::collections::{BTreeMap, BTreeSet};

use super::event::{Event, Source, lookup};

/// One well-known variable: its name and the body paths it is read from,
/// first present wins.
#[derive(Debug, Clone, Copy)]
pub struct WellKnown {
    pub var: &'static str,
    pub paths: &'static [&'static str],
    /// Strip `refs/heads/` from the value (Git refs named as branches).
    pub strip_ref: bool,
}

const fn wk(var: &'static str, paths: &'static [&'static str]) -> WellKnown {
    WellKnown {
        var,
        paths,
        strip_ref: false,
    }
}

const fn wk_ref(var: &'static str, paths: &'static [&'static str]) -> WellKnown {
    WellKnown {
        var,
        paths,
        strip_ref: true,
    }
}

/// Gerrit stream events and webhooks (`change-merged`, `patchset-created`,
/// `comment-added`, `ref-updated`): `newRev` is the merged commit, which
/// differs from the patch set's revision when Gerrit rebased on submit.
const GERRIT: &[WellKnown] = &[
    wk("sha", &["newRev", "patchSet.revision", "refUpdate.newRev"]),
    wk_ref("branch", &["change.branch", "refUpdate.refName"]),
    wk("change", &["change.number"]),
    wk("patchset", &["patchSet.number"]),
    wk(
        "project",
        &["change.project", "refUpdate.project", "project"],
    ),
    wk("url", &["change.url"]),
];

const GITLAB_PUSH: &[WellKnown] = &[
    wk("sha", &["checkout_sha", "after"]),
    wk_ref("branch", &["ref"]),
    wk("project", &["project.path_with_namespace"]),
];

const GITLAB_MR: &[WellKnown] = &[
    wk("sha", &["object_attributes.last_commit.id"]),
    wk("branch", &["object_attributes.source_branch"]),
    wk("target_branch", &["object_attributes.target_branch"]),
    wk("change", &["object_attributes.iid"]),
    wk("project", &["project.path_with_namespace"]),
    wk("url", &["object_attributes.url"]),
];

const GITLAB_PIPELINE: &[WellKnown] = &[
    wk("sha", &["object_attributes.sha"]),
    wk("branch", &["object_attributes.ref"]),
    wk("change", &["merge_request.iid"]),
    wk("project", &["project.path_with_namespace"]),
    wk("url", &["object_attributes.url"]),
];

const GITLAB_OTHER: &[WellKnown] = &[wk("project", &["project.path_with_namespace"])];

const GITHUB_PUSH: &[WellKnown] = &[
    wk("sha", &["after", "head_commit.id"]),
    wk_ref("branch", &["ref"]),
    wk("project", &["repository.full_name"]),
];

const GITHUB_PR: &[WellKnown] = &[
    wk("sha", &["pull_request.head.sha"]),
    wk("branch", &["pull_request.head.ref"]),
    wk("target_branch", &["pull_request.base.ref"]),
    wk("change", &["number", "pull_request.number"]),
    wk("project", &["repository.full_name"]),
    wk("url", &["pull_request.html_url"]),
];

const GITHUB_OTHER: &[WellKnown] = &[wk("project", &["repository.full_name"])];

/// The well-known variables of an event of `source` and `kind`, with the
/// body paths they come from (docs/triggers.md prints this table).
pub fn well_known(source: Source, kind: Option<&str>) -> &'static [WellKnown] {
    match (source, kind) {
        (Source::Gerrit, _) => GERRIT,
        (Source::Gitlab, Some("push" | "tag_push")) => GITLAB_PUSH,
        (Source::Gitlab, Some("merge_request")) => GITLAB_MR,
        (Source::Gitlab, Some("pipeline")) => GITLAB_PIPELINE,
        (Source::Gitlab, _) => GITLAB_OTHER,
        (Source::Github, Some("push")) => GITHUB_PUSH,
        (Source::Github, Some("pull_request")) => GITHUB_PR,
        (Source::Github, _) => GITHUB_OTHER,
        (Source::Amqp | Source::Manual, _) => &[],
    }
}

/// Why a placeholder has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    #[error("placeholder `{{{{{name}}}}}` has no value; known here: {known}")]
    Unknown { name: String, known: String },
    #[error("placeholder `{{{{{name}}}}}`: the event's body has no field `{path}`")]
    Missing { name: String, path: String },
    #[error(
        "placeholder `{{{{{name}}}}}`: body field `{path}` is {what}, not a string, number or boolean"
    )]
    NotScalar {
        name: String,
        path: String,
        what: &'static str,
    },
}

/// The text of a JSON scalar as a placeholder's value; `None` for null,
/// arrays and objects.
pub(crate) fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

/// Values for placeholders.
///
/// Names are looked up in the named variables first; `body.<path>` reads
/// the event's body at a dotted path and `event.source`, `event.topic`,
/// `event.kind` the event itself (when there is an event).
#[derive(Debug, Clone, Default)]
pub struct Vars<'e> {
    named: BTreeMap<String, String>,
    event: Option<&'e Event>,
    /// Every name has a value (its own name): used to check a template's
    /// shape without an event.
    fill_any: bool,
    /// With `fill_any`: only these names (and `body.*`, `event.*`) exist.
    allowed: Option<BTreeSet<String>>,
}

impl<'e> Vars<'e> {
    /// No variables at all.
    pub fn new() -> Vars<'e> {
        Vars::default()
    }

    /// Every placeholder is filled with its own name: checks a template
    /// (syntax, shell contexts, the job's validity) before any event.
    pub fn any() -> Vars<'e> {
        Vars {
            fill_any: true,
            ..Vars::default()
        }
    }

    /// Like [`Vars::any`], but only `names`, `body.*` and `event.*` exist:
    /// checks a rule's template before any event (a placeholder no event
    /// of the rule could fill is refused at load).
    pub fn only(names: impl IntoIterator<Item = String>) -> Vars<'e> {
        Vars {
            fill_any: true,
            allowed: Some(names.into_iter().collect()),
            ..Vars::default()
        }
    }

    /// The event's `body.*` and `event.*` and the well-known variables of
    /// its source and kind (those whose body fields are present).
    pub fn for_event(event: &'e Event) -> Vars<'e> {
        let mut named = BTreeMap::new();
        for w in well_known(event.source, event.kind.as_deref()) {
            let found = w
                .paths
                .iter()
                .find_map(|p| lookup(&event.body, p).and_then(scalar_text));
            if let Some(mut value) = found {
                if w.strip_ref
                    && let Some(rest) = value.strip_prefix("refs/heads/")
                {
                    value = rest.to_owned();
                }
                named.insert(w.var.to_owned(), value);
            }
        }
        Vars {
            named,
            event: Some(event),
            fill_any: false,
            allowed: None,
        }
    }

    /// Sets (or replaces) a named variable.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.named.insert(name.into(), value.into());
    }

    /// The named variables' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }

    /// Whether `name` is a named variable.
    pub fn contains(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// The value of placeholder `name`.
    pub fn get(&self, name: &str) -> Result<String, VarError> {
        if let Some(v) = self.named.get(name) {
            return Ok(v.clone());
        }
        if self.fill_any {
            let exists = match &self.allowed {
                None => true,
                Some(names) => {
                    names.contains(name) || name.starts_with("body.") || name.starts_with("event.")
                }
            };
            if exists {
                return Ok(name.to_owned());
            }
        }
        if let Some(event) = self.event {
            if let Some(path) = name.strip_prefix("body.") {
                let value = lookup(&event.body, path).ok_or_else(|| VarError::Missing {
                    name: name.to_owned(),
                    path: path.to_owned(),
                })?;
                return scalar_text(value).ok_or_else(|| match value {
                    serde_json::Value::Null => VarError::Missing {
                        name: name.to_owned(),
                        path: path.to_owned(),
                    },
                    other => VarError::NotScalar {
                        name: name.to_owned(),
                        path: path.to_owned(),
                        what: kind_name(other),
                    },
                });
            }
            let field = match name {
                "event.source" => Some(Some(event.source.as_str().to_owned())),
                "event.topic" => Some(event.topic.clone()),
                "event.kind" => Some(event.kind.clone()),
                _ => None,
            };
            if let Some(Some(v)) = field {
                return Ok(v);
            }
        }
        Err(VarError::Unknown {
            name: name.to_owned(),
            known: self.known(),
        })
    }

    fn known(&self) -> String {
        let mut names: Vec<String> = self.named.keys().map(|k| format!("`{k}`")).collect();
        if let Some(allowed) = &self.allowed {
            names.extend(allowed.iter().map(|k| format!("`{k}`")));
            names.push("`body.<path>`".to_owned());
            names.push("`event.source`, `event.topic`, `event.kind`".to_owned());
        }
        if let Some(event) = self.event {
            names.push("`body.<path>`".to_owned());
            names.push("`event.source`".to_owned());
            if event.topic.is_some() {
                names.push("`event.topic`".to_owned());
            }
            if event.kind.is_some() {
                names.push("`event.kind`".to_owned());
            }
        }
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn gerrit_change_merged_derives_sha_branch_change_project() {
        let event = Event::new(
            Source::Gerrit,
            json!({
                "type": "change-merged",
                "change": {"project": "qt/qtbase", "branch": "dev", "number": 456789,
                           "url": "https://codereview.qt-project.org/c/qt/qtbase/+/456789"},
                "patchSet": {"number": 3, "revision": "aaaa"},
                "newRev": "bbbb"
            }),
        )
        .infer_kind();
        let vars = Vars::for_event(&event);
        assert_eq!(vars.get("sha").unwrap(), "bbbb", "newRev wins");
        assert_eq!(vars.get("branch").unwrap(), "dev");
        assert_eq!(vars.get("change").unwrap(), "456789");
        assert_eq!(vars.get("patchset").unwrap(), "3");
        assert_eq!(vars.get("project").unwrap(), "qt/qtbase");
        assert_eq!(vars.get("event.kind").unwrap(), "change-merged");
        assert_eq!(vars.get("body.change.number").unwrap(), "456789");
    }

    #[test]
    fn gitlab_and_github_use_their_documented_fields() {
        let mr = Event::new(
            Source::Gitlab,
            json!({"object_kind": "merge_request",
                   "project": {"path_with_namespace": "group/app"},
                   "object_attributes": {"iid": 7, "source_branch": "feature", "target_branch": "main",
                                         "last_commit": {"id": "cafe"}}}),
        )
        .infer_kind();
        let vars = Vars::for_event(&mr);
        assert_eq!(vars.get("sha").unwrap(), "cafe");
        assert_eq!(vars.get("branch").unwrap(), "feature");
        assert_eq!(vars.get("target_branch").unwrap(), "main");
        assert_eq!(vars.get("change").unwrap(), "7");
        assert_eq!(vars.get("project").unwrap(), "group/app");

        let push = Event::new(
            Source::Github,
            json!({"ref": "refs/heads/main", "after": "f00d", "repository": {"full_name": "o/r"}}),
        )
        .with_kind("push");
        let vars = Vars::for_event(&push);
        assert_eq!(vars.get("branch").unwrap(), "main", "refs/heads/ stripped");
        assert_eq!(vars.get("sha").unwrap(), "f00d");
        assert!(matches!(vars.get("change"), Err(VarError::Unknown { .. })));

        let pr = Event::new(
            Source::Github,
            json!({"number": 12, "pull_request": {"head": {"sha": "beef", "ref": "topic"},
                   "base": {"ref": "main"}}, "repository": {"full_name": "o/r"}}),
        )
        .with_kind("pull_request");
        let vars = Vars::for_event(&pr);
        assert_eq!(vars.get("change").unwrap(), "12");
        assert_eq!(vars.get("sha").unwrap(), "beef");
        assert_eq!(vars.get("target_branch").unwrap(), "main");
    }

    #[test]
    fn body_placeholders_say_what_is_missing_or_unusable() {
        let event = Event::new(
            Source::Amqp,
            json!({"name": "xchat", "tags": ["a"], "n": null}),
        );
        let vars = Vars::for_event(&event);
        assert_eq!(vars.get("body.name").unwrap(), "xchat");
        let e = vars.get("body.version").unwrap_err();
        assert_eq!(
            e.to_string(),
            "placeholder `{{body.version}}`: the event's body has no field `version`"
        );
        let e = vars.get("body.tags").unwrap_err();
        assert!(e.to_string().contains("is a list"), "{e}");
        assert!(matches!(vars.get("body.n"), Err(VarError::Missing { .. })));
        let e = vars.get("arch").unwrap_err();
        assert!(e.to_string().contains("`{{arch}}` has no value"), "{e}");
        assert!(e.to_string().contains("`body.<path>`"), "{e}");
    }
}
