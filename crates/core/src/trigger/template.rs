//! Job templates: a job file whose string values hold placeholders.
//!
//! Rendering never splices text into TOML: the template is parsed as TOML
//! first, placeholders are filled inside string values only (keys and other
//! values are left as they are), the filled table is written back as TOML by
//! the serializer (which quotes every value) and parsed as a job with the
//! job file's own validation. In a step's `run` every value is one
//! single-quoted shell word (see [`super::placeholder`]).

use std::collections::BTreeSet;
use std::fmt;

use toml::Value;
use toml::de::{DeTable, DeValue};

use super::placeholder::{self, FillError};
use super::vars::Vars;
use crate::JobSpec;

/// Why a template could not become a job: which rule, which template file,
/// the line and field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The rule whose action rendered the template (none for `testfleet run`).
    pub rule: Option<String>,
    /// The file the text came from (a template, or a rules file for its vars).
    pub file: String,
    pub line: Option<usize>,
    /// The field's path, such as `task[0].steps[1].run`.
    pub field: Option<String>,
    pub message: String,
}

impl TemplateError {
    /// The same error, naming the rule it belongs to.
    pub fn with_rule(mut self, rule: &str) -> TemplateError {
        self.rule = Some(rule.to_owned());
        self
    }
}

impl fmt::Display for TemplateError {
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

/// What an action changes on the rendered job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub queue: Option<String>,
    pub priority: Option<i32>,
}

/// A rendered template: the job, and the TOML it was parsed from (what
/// `testfleet trigger test` prints and what would be submitted).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub job: JobSpec,
    pub toml: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn field_string(path: &[Seg]) -> String {
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

/// `task[0].steps[1].run` back into segments.
fn parse_field(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// The 1-based line of byte `offset` in `src`.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line of the value at `path` in TOML `src`; with `needle`, the line
/// inside that value where the needle is (for multi-line strings).
pub(crate) fn locate(src: &str, path: &[Seg], needle: Option<&str>) -> Option<usize> {
    let doc = DeTable::parse(src).ok()?;
    let mut span = doc.span();
    let mut at: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for seg in path {
        let next = match (seg, table, at) {
            (Seg::Key(k), Some(t), _) => {
                t.iter().find(|(key, _)| key.get_ref() == k).map(|(_, v)| v)
            }
            (Seg::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
            _ => None,
        }?;
        span = next.span();
        at = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    let found = needle.and_then(|n| src.get(span.clone())?.find(n));
    Some(line_of(src, span.start + found.unwrap_or(0)))
}

/// A parsed job template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    origin: String,
    text: String,
    table: toml::Table,
}

impl Template {
    /// Parses a template and checks what can be checked before any event:
    /// TOML syntax, placeholder syntax, placeholders in shell commands, and
    /// that it is a valid job when every placeholder has a plain value
    /// (fields whose value holds a placeholder are judged at render time).
    pub fn parse(text: &str, origin: &str) -> Result<Template, TemplateError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| TemplateError {
            rule: None,
            file: origin.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            field: None,
            message: e.message().trim().to_owned(),
        })?;
        let template = Template {
            origin: origin.to_owned(),
            text: text.to_owned(),
            table,
        };
        template.check(&Vars::any())?;
        Ok(template)
    }

    /// Renders with `vars` (made by [`Vars::any`] or [`Vars::only`]) to
    /// find what is wrong before any event; a field whose value holds a
    /// placeholder is not judged as a job field (its value is not known).
    pub fn check(&self, vars: &Vars<'_>) -> Result<(), TemplateError> {
        match self.render_inner(vars, &Overrides::default()) {
            Ok(_) => Ok(()),
            Err((e, Stage::Job)) if self.field_has_placeholder(e.field.as_deref()) => Ok(()),
            Err((e, _)) => Err(e),
        }
    }

    /// The file the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The template's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every placeholder name the template uses.
    pub fn placeholders(&self) -> BTreeSet<String> {
        fn walk(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::String(s) => {
                    out.extend(placeholder::names(s).into_iter().map(str::to_owned))
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Table(t) => t.values().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        self.table.values().for_each(|v| walk(v, &mut out));
        out
    }

    fn field_has_placeholder(&self, field: Option<&str>) -> bool {
        let Some(field) = field else { return false };
        let mut at: Option<&Value> = None;
        for seg in parse_field(field) {
            at = match (seg, at) {
                (Seg::Key(k), None) => self.table.get(&k),
                (Seg::Key(k), Some(Value::Table(t))) => t.get(&k),
                (Seg::Index(i), Some(Value::Array(a))) => a.get(i),
                _ => None,
            };
            if at.is_none() {
                return false;
            }
        }
        fn has_placeholder(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains("{{"),
                Value::Array(items) => items.iter().any(has_placeholder),
                Value::Table(t) => t.values().any(has_placeholder),
                _ => false,
            }
        }
        at.is_some_and(has_placeholder)
    }

    fn error(&self, path: &[Seg], needle: Option<&str>, message: String) -> TemplateError {
        TemplateError {
            rule: None,
            file: self.origin.clone(),
            line: locate(&self.text, path, needle),
            field: (!path.is_empty()).then(|| field_string(path)),
            message,
        }
    }

    /// Fills the placeholders with `vars`, applies the overrides and parses
    /// the result as a job.
    pub fn render(
        &self,
        vars: &Vars<'_>,
        overrides: &Overrides,
    ) -> Result<Rendered, TemplateError> {
        self.render_inner(vars, overrides).map_err(|(e, _)| e)
    }

    fn render_inner(
        &self,
        vars: &Vars<'_>,
        overrides: &Overrides,
    ) -> Result<Rendered, (TemplateError, Stage)> {
        let mut root = Value::Table(self.table.clone());
        self.fill_value(&mut root, &mut Vec::new(), vars)
            .map_err(|e| (e, Stage::Fill))?;
        let Value::Table(mut table) = root else {
            let e = self.error(&[], None, "a template must be a TOML table".to_owned());
            return Err((e, Stage::Fill));
        };
        if let Some(queue) = &overrides.queue {
            table.insert("queue".to_owned(), Value::String(queue.clone()));
        }
        if let Some(priority) = overrides.priority {
            table.insert("priority".to_owned(), Value::Integer(priority.into()));
        }
        let text = toml::to_string(&table).map_err(|e| {
            let message = format!("the rendered job cannot be written as TOML: {e}");
            (self.error(&[], None, message), Stage::Fill)
        })?;
        let job = JobSpec::from_toml(&text).map_err(|e| {
            let path = e.field.as_deref().map(parse_field).unwrap_or_default();
            let mut err = self.error(&path, None, e.message.clone());
            err.field = e.field;
            (err, Stage::Job)
        })?;
        Ok(Rendered { job, toml: text })
    }

    fn fill_value(
        &self,
        value: &mut Value,
        path: &mut Vec<Seg>,
        vars: &Vars<'_>,
    ) -> Result<(), TemplateError> {
        match value {
            Value::String(s) => {
                let filled = placeholder::fill(s, is_shell_field(path), vars)
                    .map_err(|e: FillError| self.error(path, Some(&e.needle(s)), e.message()))?;
                *s = filled;
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    self.fill_value(item, path, vars)?;
                    path.pop();
                }
            }
            Value::Table(t) => {
                for (key, item) in t.iter_mut() {
                    path.push(Seg::Key(key.clone()));
                    if key.contains("{{") {
                        return Err(self.error(
                            path,
                            Some(key),
                            "placeholders are filled in string values only, not in keys".to_owned(),
                        ));
                    }
                    self.fill_value(item, path, vars)?;
                    path.pop();
                }
            }
            Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
        }
        Ok(())
    }
}

/// Where rendering failed: filling placeholders, or validating the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Fill,
    Job,
}

/// `task[i].steps[j].run`: the one field the agent hands to `sh -c`.
fn is_shell_field(path: &[Seg]) -> bool {
    matches!(
        path,
        [Seg::Key(t), Seg::Index(_), Seg::Key(s), Seg::Index(_), Seg::Key(r)]
            if t == "task" && s == "steps" && r == "run"
    )
}

/// Renders a template text in one call: parse, fill with `vars`, validate.
/// `origin` names the file in errors.
pub fn render(text: &str, origin: &str, vars: &Vars<'_>) -> Result<JobSpec, TemplateError> {
    Ok(Template::parse(text, origin)?
        .render(vars, &Overrides::default())?
        .job)
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
