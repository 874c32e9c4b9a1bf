//! `testfleet trigger test RULES EVENT.json`: the jobs an event would
//! submit, decided here with no coordinator (seed 001: every component can
//! be fed plain dictionaries). Also the `--var` parsing of `testfleet run`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use testfleet_core::JobSpec;
use testfleet_core::trigger::{Event, Source, Vars};
use testfleet_server::triggers::{load_rules, plan};

use crate::exit;

/// Where the event came from, as the command line says.
pub struct EventArgs<'a> {
    pub source: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub kind: Option<&'a str>,
}

/// The event of `EVENT.json` with its source, topic and kind.
fn read_event(path: &Path, args: &EventArgs<'_>) -> Result<Event> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON event body", path.display()))?;
    let source = match (args.source, args.topic) {
        (Some(s), _) => s.parse::<Source>()?,
        (None, Some(_)) => Source::Amqp,
        (None, None) => bail!(
            "say where the event comes from: --source amqp, gerrit, gitlab, github or manual (--topic alone means amqp)"
        ),
    };
    let mut event = Event::new(source, body);
    event.topic = args.topic.map(str::to_owned);
    event.kind = args.kind.map(str::to_owned);
    let event = event.infer_kind();
    if event.kind.is_none() {
        match source {
            Source::Gerrit => bail!(
                "{}: a Gerrit event names its kind in `type`; this body has none: give --kind (such as change-merged)",
                path.display()
            ),
            Source::Gitlab => bail!(
                "{}: a GitLab event names its kind in `object_kind`; this body has none: give --kind (such as merge_request)",
                path.display()
            ),
            Source::Github => bail!(
                "a GitHub event's kind is its X-GitHub-Event header: give --kind (such as pull_request or push)"
            ),
            Source::Amqp | Source::Manual => {}
        }
    }
    Ok(event)
}

#[derive(Serialize)]
struct RuleVerdict<'a> {
    name: &'a str,
    file: &'a str,
    line: Option<usize>,
    matched: bool,
    /// Why not, when it did not match.
    why: Option<String>,
}

#[derive(Serialize)]
struct JobOut<'a> {
    rule: &'a str,
    action: usize,
    template: &'a str,
    job: &'a JobSpec,
}

#[derive(Serialize)]
struct Report<'a> {
    source: Source,
    topic: Option<&'a str>,
    kind: Option<&'a str>,
    rules: Vec<RuleVerdict<'a>>,
    jobs: Vec<JobOut<'a>>,
    errors: Vec<String>,
}

/// `testfleet trigger test RULES EVENT.json`: exit 0 when the event would
/// submit at least one job, 1 when no rule matched, 2 on bad input.
pub fn test(rules_path: &Path, event_path: &Path, args: &EventArgs<'_>, json: bool) -> Result<u8> {
    let rules = load_rules(rules_path)?;
    let event = read_event(event_path, args)?;
    let planned = plan(&rules, &event);
    let verdicts: Vec<RuleVerdict<'_>> = rules
        .explain(&event)
        .into_iter()
        .map(|x| RuleVerdict {
            name: &x.rule.name,
            file: &x.rule.file,
            line: x.rule.line,
            matched: x.verdict.is_ok(),
            why: x.verdict.err().map(|m| m.to_string()),
        })
        .collect();
    let errors: Vec<String> = planned.errors.iter().map(ToString::to_string).collect();
    if json {
        let report = Report {
            source: event.source,
            topic: event.topic.as_deref(),
            kind: event.kind.as_deref(),
            rules: verdicts,
            jobs: planned
                .jobs
                .iter()
                .map(|j| JobOut {
                    rule: &j.rule,
                    action: j.action,
                    template: &j.template,
                    job: &j.job,
                })
                .collect(),
            errors: errors.clone(),
        };
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for v in &verdicts {
            let at = v.line.map(|l| format!(":{l}")).unwrap_or_default();
            match &v.why {
                None => outln!("rule `{}` ({}{at}): matched", v.name, v.file)?,
                Some(why) => outln!("rule `{}` ({}{at}): no match: {why}", v.name, v.file)?,
            }
        }
        let total = planned.jobs.len();
        for (i, job) in planned.jobs.iter().enumerate() {
            outln!(
                "\n# job {} of {total}: rule `{}`, do[{}], template {}",
                i + 1,
                job.rule,
                job.action,
                job.template
            )?;
            out!("{}", job.toml)?;
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(if !errors.is_empty() {
        exit::USAGE
    } else if planned.jobs.is_empty() {
        exit::JOB_FAILED
    } else {
        exit::OK
    })
}

/// `--var NAME=VALUE` of `testfleet run`.
pub fn parse_vars(pairs: &[String]) -> Result<Vars<'static>> {
    let mut vars = Vars::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--var `{pair}`: write it NAME=VALUE, such as --var item=xchat-0.5-1.fc20");
        };
        let name = name.trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            bail!(
                "--var `{pair}`: `{name}` is not a variable name (letters, digits, `_`, `-`, `.`, starting with a letter)"
            );
        }
        if vars.contains(name) {
            bail!("--var `{name}` is given twice");
        }
        vars.insert(name, value);
    }
    Ok(vars)
}
