//! The rules file: `[[rule]]` tables with a `when` (conditions on an event)
//! and a `do` list (job templates to render), parsed into typed rules.
//!
//! Everything that can be wrong in a rules file is found here, at load
//! time, with the file, line, rule and field named: unknown keys, bad topic
//! patterns, unknown condition operators, regexes that do not compile,
//! placeholders that are not written right.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use super::event::{Event, Source};
use super::placeholder::{self, pieces};
use super::template::{Overrides, Rendered, Template, TemplateError, line_of};
use super::vars::{Vars, well_known};

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    pub line: Option<usize>,
    /// The rule's name, when the error is inside a rule that has one.
    pub rule: Option<String>,
    /// The field's path inside the rule, such as `when.fields.release`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A scalar a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// One operator of a field condition.
#[derive(Debug, Clone)]
pub enum Op {
    /// A plain scalar: the field equals it.
    Eq(Scalar),
    /// `{ "$in" = [...] }`: the field equals one of them.
    In(Vec<Scalar>),
    /// `{ "$nin" = [...] }`: the field equals none of them (a missing field
    /// matches, as in MongoDB and Taskotron's rules).
    Nin(Vec<Scalar>),
    /// `{ "$regex" = "..." }`: the field's text contains a match
    /// (unanchored; write `^…$` to match all of it).
    Regex(regex::Regex),
    /// `{ "$exists" = true }`: the field is present (and not null), or not.
    Exists(bool),
}

fn list(items: &[Scalar]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Eq(s) => write!(f, "equal to {s}"),
            Op::In(items) => write!(f, "one of {}", list(items)),
            Op::Nin(items) => write!(f, "none of {}", list(items)),
            Op::Regex(r) => write!(f, "matching /{}/", r.as_str()),
            Op::Exists(true) => f.write_str("present"),
            Op::Exists(false) => f.write_str("absent"),
        }
    }
}

/// A condition on one body field: every operator must hold.
#[derive(Debug, Clone)]
pub struct FieldCondition {
    /// Dotted path into the body (`change.branch`, `commits.0.id`).
    pub path: String,
    pub ops: Vec<Op>,
}

/// Why a field condition was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConditionError {
    #[error("`{0}` takes a list, such as {{ \"{0}\" = [\"a\", \"b\"] }}")]
    NotAList(String),
    #[error("`{0}` needs at least one value")]
    EmptyList(String),
    #[error("`{0}` lists strings, numbers or booleans only")]
    NotScalars(String),
    #[error("`$regex` takes a string")]
    RegexNotAString,
    #[error("`$regex` does not compile: {0}")]
    Regex(#[from] regex::Error),
    #[error("`$exists` takes true or false")]
    ExistsNotABool,
    #[error("unknown operator `{0}`; use $in, $nin, $regex or $exists")]
    UnknownOperator(String),
    #[error("an empty table is no condition; use $in, $nin, $regex or $exists")]
    EmptyTable,
    #[error(
        "a condition is a value to equal, or a table of operators such as {{ \"$in\" = [\"a\", \"b\"] }}"
    )]
    NotACondition,
}

/// Why a topic pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicPatternError {
    #[error("a topic pattern must not be empty")]
    Empty,
    #[error(
        "`{word}` in topic pattern `{pattern}`: `*` and `#` stand for whole words between dots"
    )]
    PartWord { word: String, pattern: String },
}

/// An AMQP topic pattern: words separated by `.`, `*` stands for exactly
/// one word and `#` for zero or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Checks a pattern: `*` and `#` must be whole words.
    pub fn parse(pattern: &str) -> Result<TopicPattern, TopicPatternError> {
        if pattern.is_empty() {
            return Err(TopicPatternError::Empty);
        }
        if let Some(word) = pattern
            .split('.')
            .find(|w| w.len() > 1 && (w.contains('*') || w.contains('#')))
        {
            return Err(TopicPatternError::PartWord {
                word: word.to_owned(),
                pattern: pattern.to_owned(),
            });
        }
        Ok(TopicPattern(pattern.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the routing key `topic` matches, with AMQP topic semantics.
    pub fn matches(&self, topic: &str) -> bool {
        let pattern: Vec<&str> = self.0.split('.').collect();
        let words: Vec<&str> = topic.split('.').collect();
        match_words(&pattern, &words)
    }
}

fn match_words(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => {
            // Consecutive `#` match what one does.
            let rest = match rest.iter().position(|w| *w != "#") {
                Some(i) => &rest[i..],
                None => return true,
            };
            (0..=words.len()).any(|skip| match_words(rest, &words[skip..]))
        }
        Some((&"*", rest)) => !words.is_empty() && match_words(rest, &words[1..]),
        Some((word, rest)) => words.first() == Some(word) && match_words(rest, &words[1..]),
    }
}

/// What an event must be for a rule to match: every given condition holds.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// One of these sources (any when empty).
    pub sources: Vec<Source>,
    /// The topic matches one of these patterns (any when empty).
    pub topics: Vec<TopicPattern>,
    /// The kind is one of these (any when empty).
    pub kinds: Vec<String>,
    /// Body fields, checked in the order of their paths.
    pub fields: Vec<FieldCondition>,
}

/// A named variable an action sets before rendering its template: text
/// with placeholders over the event (`{{body.name}}-{{body.version}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionVar {
    pub name: String,
    pub text: String,
    pub line: Option<usize>,
}

/// One job an action submits: a template, overrides and variables.
#[derive(Debug, Clone)]
pub struct Action {
    /// The action's place in its rule's `do` list.
    pub index: usize,
    /// The template's path as written, relative to the rules file.
    pub template_path: String,
    /// The template itself, once the loader has read it.
    pub template: Option<Template>,
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub vars: Vec<ActionVar>,
    pub line: Option<usize>,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The rules file it came from.
    pub file: String,
    pub line: Option<usize>,
    pub when: When,
    pub actions: Vec<Action>,
}

/// A set of rules, in the order they were read.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

// ---- the file's raw shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    when: Spanned<RawWhen>,
    #[serde(rename = "do")]
    actions: Vec<Spanned<RawAction>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default, deserialize_with = "one_or_many")]
    source: Vec<Source>,
    #[serde(default, deserialize_with = "one_or_many")]
    topic: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    kind: Vec<String>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    template: String,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<String>>,
}

/// A string, or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| vec![t])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V(PhantomData))
}

fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let mut out = String::new();
    for seg in path.to_string().split('.') {
        if seg == "?" {
            continue;
        }
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn scalar(v: &toml::Value) -> Option<Scalar> {
    match v {
        toml::Value::String(s) => Some(Scalar::Str(s.clone())),
        toml::Value::Integer(i) => Some(Scalar::Int(*i)),
        toml::Value::Float(x) => Some(Scalar::Float(*x)),
        toml::Value::Boolean(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn scalars(op: &str, v: &toml::Value) -> Result<Vec<Scalar>, ConditionError> {
    let toml::Value::Array(items) = v else {
        return Err(ConditionError::NotAList(op.to_owned()));
    };
    if items.is_empty() {
        return Err(ConditionError::EmptyList(op.to_owned()));
    }
    items
        .iter()
        .map(|i| scalar(i).ok_or_else(|| ConditionError::NotScalars(op.to_owned())))
        .collect()
}

/// A condition as written: a scalar, or a table of `$` operators.
fn condition(v: &toml::Value) -> Result<Vec<Op>, ConditionError> {
    if let Some(s) = scalar(v) {
        return Ok(vec![Op::Eq(s)]);
    }
    let toml::Value::Table(t) = v else {
        return Err(ConditionError::NotACondition);
    };
    if t.is_empty() {
        return Err(ConditionError::EmptyTable);
    }
    t.iter()
        .map(|(op, arg)| match (op.as_str(), arg) {
            ("$in", _) => scalars(op, arg).map(Op::In),
            ("$nin", _) => scalars(op, arg).map(Op::Nin),
            ("$regex", toml::Value::String(re)) => Ok(Op::Regex(regex::Regex::new(re)?)),
            ("$regex", _) => Err(ConditionError::RegexNotAString),
            ("$exists", toml::Value::Boolean(b)) => Ok(Op::Exists(*b)),
            ("$exists", _) => Err(ConditionError::ExistsNotABool),
            (other, _) => Err(ConditionError::UnknownOperator(other.to_owned())),
        })
        .collect()
}

/// The file being parsed, for errors with a line.
struct FileText<'a> {
    text: &'a str,
    file: &'a str,
}

impl FileText<'_> {
    fn line(&self, offset: usize) -> Option<usize> {
        Some(line_of(self.text, offset))
    }

    fn err(
        &self,
        line: Option<usize>,
        rule: Option<&str>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> RuleError {
        RuleError {
            file: self.file.to_owned(),
            line,
            rule: rule.map(str::to_owned),
            field,
            message: message.into(),
        }
    }

    fn rule(&self, raw: Spanned<RawRule>) -> Result<Rule, RuleError> {
        let line = self.line(raw.span().start);
        let raw = raw.into_inner();
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty() {
            let at = self.line(raw.name.span().start);
            return Err(self.err(at, None, Some("name".into()), "must not be empty"));
        }
        let when = self.when(&name, raw.when)?;
        if raw.actions.is_empty() {
            let message = "must list at least one action";
            return Err(self.err(line, Some(&name), Some("do".into()), message));
        }
        let actions = raw
            .actions
            .into_iter()
            .enumerate()
            .map(|(index, a)| self.action(&name, index, a))
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            name,
            file: self.file.to_owned(),
            line,
            when,
            actions,
        })
    }

    fn when(&self, rule: &str, raw: Spanned<RawWhen>) -> Result<When, RuleError> {
        let line = self.line(raw.span().start);
        let raw = raw.into_inner();
        let rule = Some(rule);
        let mut when = When {
            sources: raw.source,
            kinds: raw.kind,
            ..When::default()
        };
        for topic in &raw.topic {
            let pattern = TopicPattern::parse(topic)
                .map_err(|e| self.err(line, rule, Some("when.topic".into()), e.to_string()))?;
            when.topics.push(pattern);
        }
        for (path, value) in &raw.fields {
            let at = self.line(value.span().start);
            let field = Some(format!("when.fields.{path}"));
            if path.is_empty() || path.split('.').any(str::is_empty) {
                let message = format!("`{path}` is not a dotted path such as `change.branch`");
                return Err(self.err(at, rule, field, message));
            }
            let ops =
                condition(value.get_ref()).map_err(|e| self.err(at, rule, field, e.to_string()))?;
            when.fields.push(FieldCondition {
                path: path.clone(),
                ops,
            });
        }
        if when.sources.is_empty()
            && when.topics.is_empty()
            && when.kinds.is_empty()
            && when.fields.is_empty()
        {
            let message = "a rule needs at least one condition (source, topic, kind or fields); it would match every event";
            return Err(self.err(line, rule, Some("when".into()), message));
        }
        Ok(when)
    }

    fn action(
        &self,
        rule: &str,
        index: usize,
        raw: Spanned<RawAction>,
    ) -> Result<Action, RuleError> {
        let line = self.line(raw.span().start);
        let raw = raw.into_inner();
        let rule = Some(rule);
        let at = |f: &str| Some(format!("do[{index}].{f}"));
        if raw.template.trim().is_empty() {
            return Err(self.err(line, rule, at("template"), "must not be empty"));
        }
        if raw.queue.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err(self.err(line, rule, at("queue"), "must not be empty"));
        }
        let mut vars = Vec::new();
        for (name, text) in raw.vars {
            let var_line = self.line(text.span().start);
            let field = at(&format!("vars.{name}"));
            if !placeholder::valid_name(&name) {
                let message = format!(
                    "`{name}` is not a variable name: letters, digits, `_` and `-`, starting with a letter"
                );
                return Err(self.err(var_line, rule, field, message));
            }
            if name.starts_with("body.") || name.starts_with("event.") {
                let message = "`body.` and `event.` name the event itself; pick another name";
                return Err(self.err(var_line, rule, field, message));
            }
            if let Err(e) = pieces(text.get_ref()) {
                return Err(self.err(var_line, rule, field, e.message));
            }
            vars.push(ActionVar {
                name,
                text: text.into_inner(),
                line: var_line,
            });
        }
        Ok(Action {
            index,
            template_path: raw.template,
            template: None,
            queue: raw.queue,
            priority: raw.priority,
            vars,
            line,
        })
    }
}

impl RuleSet {
    /// Parses one rules file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RuleError> {
        let src = FileText { text, file };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let line = e.span().and_then(|s| src.line(s.start));
            src.err(line, None, None, e.message().trim())
        })?;
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = field_path(e.path());
            let inner = e.into_inner();
            let line = inner.span().and_then(|s| src.line(s.start));
            src.err(line, None, field, inner.message().trim())
        })?;
        if raw.rule.is_empty() {
            let message = "no rules: write at least one [[rule]] table";
            return Err(src.err(None, None, None, message));
        }
        let mut set = RuleSet::default();
        for raw_rule in raw.rule {
            set.push(src.rule(raw_rule)?)?;
        }
        Ok(set)
    }

    fn push(&mut self, rule: Rule) -> Result<(), RuleError> {
        if let Some(first) = self.rules.iter().find(|r| r.name == rule.name) {
            return Err(RuleError {
                file: rule.file.clone(),
                line: rule.line,
                rule: Some(rule.name.clone()),
                field: Some("name".into()),
                message: format!(
                    "a rule of this name is already defined in {}{}; rule names must be unique",
                    first.file,
                    first.line.map(|l| format!(":{l}")).unwrap_or_default()
                ),
            });
        }
        self.rules.push(rule);
        Ok(())
    }

    /// Adds the rules of another file; names must stay unique.
    pub fn extend(&mut self, other: RuleSet) -> Result<(), RuleError> {
        for rule in other.rules {
            self.push(rule)?;
        }
        Ok(())
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules, to attach templates to.
    pub fn rules_mut(&mut self) -> &mut [Rule] {
        &mut self.rules
    }

    /// Every template path the actions name, as written (for the loader).
    pub fn template_paths(&self) -> BTreeSet<(&str, &str)> {
        self.rules
            .iter()
            .flat_map(|r| {
                r.actions
                    .iter()
                    .map(|a| (r.file.as_str(), a.template_path.as_str()))
            })
            .collect()
    }
}

impl Action {
    /// The variables this action renders its template with: the event's
    /// (well-known, `body.*`, `event.*`), then the action's own `vars`
    /// (filled over the event's, and replacing a well-known one of the
    /// same name).
    pub fn vars<'e>(&self, rule: &Rule, event: &'e Event) -> Result<Vars<'e>, TemplateError> {
        let base = Vars::for_event(event);
        let mut vars = base.clone();
        for var in &self.vars {
            let value = placeholder::fill(&var.text, false, &base).map_err(|e| TemplateError {
                rule: Some(rule.name.clone()),
                file: rule.file.clone(),
                line: var.line,
                field: Some(format!("do[{}].vars.{}", self.index, var.name)),
                message: e.message(),
            })?;
            vars.insert(var.name.clone(), value);
        }
        Ok(vars)
    }

    /// The variables an event of this rule can have: the action's own and
    /// the well-known ones of every source and kind the rule accepts.
    pub fn possible_vars(&self, rule: &Rule) -> BTreeSet<String> {
        const KINDS: [Option<&str>; 6] = [
            None,
            Some("push"),
            Some("tag_push"),
            Some("merge_request"),
            Some("pipeline"),
            Some("pull_request"),
        ];
        let sources: &[Source] = if rule.when.sources.is_empty() {
            &Source::ALL
        } else {
            &rule.when.sources
        };
        let kinds: Vec<Option<&str>> = if rule.when.kinds.is_empty() {
            KINDS.to_vec()
        } else {
            rule.when.kinds.iter().map(|k| Some(k.as_str())).collect()
        };
        let mut out: BTreeSet<String> = self.vars.iter().map(|v| v.name.clone()).collect();
        for source in sources {
            for kind in &kinds {
                out.extend(well_known(*source, *kind).iter().map(|w| w.var.to_owned()));
            }
        }
        out
    }

    /// Checks the loaded template against what this rule's events can
    /// fill: a placeholder no event could fill is an error now, at load,
    /// with the template's line and field, rather than at the first event.
    pub fn check_template(&self, rule: &Rule) -> Result<(), TemplateError> {
        let Some(template) = &self.template else {
            return Ok(());
        };
        template
            .check(&Vars::only(self.possible_vars(rule)))
            .map_err(|e| e.with_rule(&rule.name))
    }

    /// Renders this action's template for `event`, with its overrides.
    pub fn render(&self, rule: &Rule, event: &Event) -> Result<Rendered, TemplateError> {
        let vars = self.vars(rule, event)?;
        let template = self.template.as_ref().ok_or_else(|| TemplateError {
            rule: Some(rule.name.clone()),
            file: rule.file.clone(),
            line: self.line,
            field: Some(format!("do[{}].template", self.index)),
            message: format!("template `{}` was not loaded", self.template_path),
        })?;
        let overrides = Overrides {
            queue: self.queue.clone(),
            priority: self.priority,
        };
        template
            .render(&vars, &overrides)
            .map_err(|e| e.with_rule(&rule.name))
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
