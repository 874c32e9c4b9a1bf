//! The job file: its grammar (TOML, or the same structure as JSON), defaults
//! and validation.
//!
//! Errors name the line, column and field (`task[0].steps[1].timeout`) so a
//! user can fix a job file without guessing; a job that fails here is never
//! queued.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod bench;
mod checks;
mod repeat;

pub use bench::BenchSpec;
pub use checks::{GlobError, check_glob};
use checks::{Invalid, Seg, locate_json, locate_toml};
pub use repeat::MAX_REPEAT;

use crate::labels::Requirements;
use crate::state::StepStage;
use crate::time_fmt::{UnixMillis, parse_rfc3339_millis};

/// A validated job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub source: Option<SourceSpec>,
    #[serde(default)]
    pub integration: Option<IntegrationSpec>,
    /// Environment variables set for every step of every task.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// An input tree for every task: a directory relative to the job file,
    /// which the client uploads and replaces by `sha256:<manifest digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    #[serde(rename = "task", deserialize_with = "non_empty")]
    pub tasks: Vec<TaskSpec>,
}

fn default_queue() -> String {
    "default".to_owned()
}

/// Where the agent checks the code out from (`git` stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A URL or a local path that the git CLI can clone.
    pub repo: String,
    /// A commit, branch or tag; `HEAD` when not given.
    #[serde(default = "default_rev")]
    pub rev: String,
}

fn default_rev() -> String {
    "HEAD".to_owned()
}

/// The seed-000 integration a job belongs to; copied into work items and
/// results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSpec {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub data: Vec<IntegrationChange>,
}

/// One change in an integration (`integrationData` of the Qt work item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationChange {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub url: String,
}

/// One task: steps run in order on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    #[serde(default)]
    pub requires: Requirements,
    /// Run once on every agent that matches `requires`.
    #[serde(default)]
    pub each_agent: bool,
    /// Overrides the job's priority for this task.
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(deserialize_with = "non_empty")]
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub results: Vec<ResultSpec>,
    #[serde(default)]
    pub artifacts: ArtifactSpec,
    #[serde(default)]
    pub retries: RetrySpec,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Stop the attempt (`stalled`) when it runs longer than this; scaled by
    /// the agent's `timeout_scale` label. Overrides the limit the
    /// coordinator derives from history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<DurationSpec>,
    /// Stop the attempt (`stalled`) when a step prints nothing for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_timeout: Option<DurationSpec>,
    /// This task's input tree (overrides the job's `inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// How many times one attempt runs the task's `test` steps (from the
    /// first `test` step to the last step), parsing the result files after
    /// each run: 1 to [`MAX_REPEAT`], 1 when not given. The steps before the
    /// first `test` step (configure, build) run once.
    #[serde(
        default = "repeat::one",
        deserialize_with = "repeat::deserialize",
        skip_serializing_if = "repeat::is_one"
    )]
    pub repeat: u32,
    /// How the agent prepares its host for this task (`[task.bench]`):
    /// pinned CPUs, governor, turbo, siblings offline, nice, a load limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchSpec>,
}

/// One command of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub stage: StepStage,
    pub run: String,
    #[serde(default = "default_step_timeout")]
    pub timeout: DurationSpec,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_step_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(30 * 60))
}

/// A result file (glob relative to the checkout) and its format; the format
/// is detected from content when not given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSpec {
    pub path: String,
    #[serde(default)]
    pub format: Option<String>,
}

/// Globs of files to keep after a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    #[serde(default)]
    pub always: Vec<String>,
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// The most a task may keep, all artifacts of an attempt together
    /// (`"100MB"`, `"2GiB"` or a number of bytes); the coordinator's limit
    /// when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
}

/// A size written as humans do: `512KB`, `100MB`, `2GiB`, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Why a size such as `"100MB"` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("`{0}` is not a size; write it like \"100MB\" or \"2GiB\"")]
    NotASize(String),
    #[error("unknown size unit `{unit}` in `{text}`; use B, KB, MB, GB, KiB, MiB or GiB")]
    UnknownUnit { unit: String, text: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, ByteSizeError> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| ByteSizeError::NotASize(text.to_owned()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            other => {
                return Err(ByteSizeError::UnknownUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::TooLarge(text.to_owned()))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a size such as \"100MB\""))?
        {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Separate budgets for test failures and infrastructure failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default)]
    pub tests: u32,
    #[serde(default = "default_infra_retries")]
    pub infra: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            tests: 0,
            infra: default_infra_retries(),
        }
    }
}

fn default_infra_retries() -> u32 {
    2
}

/// A duration written as humans do: `90s`, `10m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match humantime::parse_duration(text.trim()) {
            Ok(v) if v.is_zero() => Err(serde::de::Error::custom(
                "a timeout must be longer than zero",
            )),
            Ok(v) => Ok(DurationSpec(v)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it like \"90s\", \"10m\" or \"1h 30m\""
            ))),
        }
    }
}

/// An RFC 3339 timestamp, kept as milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub UnixMillis);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time_fmt::format_millis(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Toml(toml::value::Datetime),
        }
        let text = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected an RFC 3339 timestamp such as \"2023-02-10T13:11:13Z\"",
            )
        })? {
            Raw::Text(t) => t,
            Raw::Toml(dt) => dt.to_string(),
        };
        parse_rfc3339_millis(&text).map(Timestamp).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not an RFC 3339 timestamp such as \"2023-02-10T13:11:13Z\""
            ))
        })
    }
}

fn non_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let v = Vec::<T>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("must list at least one entry"));
    }
    Ok(v)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a string or an integer"))?
    {
        Raw::Text(t) if t.trim().is_empty() => Err(serde::de::Error::custom("must not be empty")),
        Raw::Text(t) => Ok(t),
        Raw::Number(n) => Ok(n.to_string()),
    }
}

/// Why a job file was refused: where, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobSpecError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The field's path, such as `task[0].steps[1].timeout`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for JobSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src.as_bytes()[..offset.min(src.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, col)
}

fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let text = path.to_string();
    // serde_path_to_error writes sequence indices as `.0`; show them as `[0]`.
    let mut out = String::new();
    for seg in text.split('.') {
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

impl JobSpec {
    /// Parses and validates a TOML job file.
    pub fn from_toml(src: &str) -> Result<JobSpec, JobSpecError> {
        let de = toml::Deserializer::parse(src).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(src, s.start)).unzip();
            JobSpecError {
                line,
                column,
                field: None,
                message: e.message().trim().to_owned(),
            }
        })?;
        let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = field_path(e.path());
            let inner = e.into_inner();
            let (line, column) = inner.span().map(|s| line_col(src, s.start)).unzip();
            JobSpecError {
                line,
                column,
                field,
                message: inner.message().trim().to_owned(),
            }
        })?;
        spec.validate().map_err(|e| {
            let at = locate_toml(src, &e.path);
            e.into_error(at)
        })?;
        Ok(spec)
    }

    /// Parses and validates the JSON form of a job file.
    pub fn from_json(src: &str) -> Result<JobSpec, JobSpecError> {
        let mut de = serde_json::Deserializer::from_str(src);
        let spec: JobSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = field_path(e.path());
            let inner = e.into_inner();
            let message = strip_json_position(&inner.to_string());
            JobSpecError {
                line: Some(inner.line()),
                column: Some(inner.column()),
                field,
                message,
            }
        })?;
        spec.validate().map_err(|e| {
            let at = locate_json(src, &e.path);
            e.into_error(at)
        })?;
        Ok(spec)
    }

    /// Rules serde cannot express: non-empty names, unique task names,
    /// commands, and path globs that stay inside the checkout.
    fn validate(&self) -> Result<(), Invalid> {
        use Seg::{Index, Key};
        if self.name.trim().is_empty() {
            return Err(Invalid::new(vec![Key("name")], "must not be empty"));
        }
        if let Some(inputs) = &self.inputs
            && inputs.trim().is_empty()
        {
            return Err(Invalid::new(vec![Key("inputs")], "must not be empty"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            let at = |rest: &[Seg]| [&[Key("task"), Index(i)], rest].concat();
            if let Some(inputs) = &task.inputs
                && inputs.trim().is_empty()
            {
                return Err(Invalid::new(at(&[Key("inputs")]), "must not be empty"));
            }
            if task.name.trim().is_empty() {
                return Err(Invalid::new(at(&[Key("name")]), "must not be empty"));
            }
            if !seen.insert(task.name.as_str()) {
                return Err(Invalid::new(
                    at(&[Key("name")]),
                    format!(
                        "task name `{}` is used twice; task names must be unique in a job",
                        task.name
                    ),
                ));
            }
            if let Err(e) = repeat::check(task) {
                return Err(Invalid::new(at(&[Key("repeat")]), e.to_string()));
            }
            for (j, step) in task.steps.iter().enumerate() {
                if step.run.trim().is_empty() {
                    return Err(Invalid::new(
                        at(&[Key("steps"), Index(j), Key("run")]),
                        "must not be empty",
                    ));
                }
            }
            for (j, result) in task.results.iter().enumerate() {
                if let Err(e) = check_glob(&result.path) {
                    return Err(Invalid::new(
                        at(&[Key("results"), Index(j), Key("path")]),
                        format!("result file {e}"),
                    ));
                }
            }
            let kinds = [
                ("always", &task.artifacts.always),
                ("on_failure", &task.artifacts.on_failure),
            ];
            for (kind, globs) in kinds {
                for (j, glob) in globs.iter().enumerate() {
                    if let Err(e) = check_glob(glob) {
                        return Err(Invalid::new(
                            at(&[Key("artifacts"), Key(kind), Index(j)]),
                            format!("artifact {e}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The input tree a task runs with: its own, else the job's.
    pub fn task_inputs<'a>(&'a self, task: &'a TaskSpec) -> Option<&'a str> {
        task.inputs.as_deref().or(self.inputs.as_deref())
    }

    /// The priority a task runs at: its own, else the job's.
    pub fn task_priority(&self, task: &TaskSpec) -> i32 {
        task.priority.unwrap_or(self.priority)
    }
}

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests;
