//! The jobs an event would submit: every action of every matching rule,
//! rendered. An action that fails to render is reported and does not stop
//! the others.

use testfleet_core::JobSpec;
use testfleet_core::trigger::{Event, RuleSet, TemplateError};

/// One job an event would submit.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// The rule that matched.
    pub rule: String,
    /// The action's place in the rule's `do` list.
    pub action: usize,
    /// The template file it was rendered from.
    pub template: String,
    pub job: JobSpec,
    /// The rendered job file (TOML), as it would be submitted.
    pub toml: String,
}

/// What an event leads to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The rendered jobs, in rule then action order.
    pub jobs: Vec<PlannedJob>,
    /// Actions of matching rules that could not be rendered for this event.
    pub errors: Vec<TemplateError>,
}

/// Renders every action of every rule `event` matches.
pub fn plan(rules: &RuleSet, event: &Event) -> Plan {
    let mut out = Plan::default();
    for m in rules.matches(event) {
        for action in &m.rule.actions {
            match action.render(m.rule, event) {
                Ok(rendered) => out.jobs.push(PlannedJob {
                    rule: m.rule.name.clone(),
                    action: action.index,
                    template: action
                        .template
                        .as_ref()
                        .map(|t| t.origin().to_owned())
                        .unwrap_or_else(|| action.template_path.clone()),
                    job: rendered.job,
                    toml: rendered.toml,
                }),
                Err(e) => out.errors.push(e),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use testfleet_core::trigger::{Source, Template};

    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "benchmarks"
[rule.when]
source = "gerrit"
kind = "change-merged"
fields = { "change.branch" = { "$in" = ["dev", "6.5"] } }
[[rule.do]]
template = "bench.toml"
queue = "benchmarks"
priority = 5
vars = { suffix = "" }
[[rule.do]]
template = "bench.toml"
vars = { suffix = "{{body.change.topic}}" }
"#;

    const TEMPLATE: &str = r#"name = "{{project}}-{{change}}{{suffix}}"
[source]
repo = "https://codereview.qt-project.org/{{project}}"
rev = "{{sha}}"
[integration]
id = "{{change}}"
branch = "{{branch}}"
sha = "{{sha}}"
[[task]]
name = "corelib"
each_agent = true
requires = { pool = "benchmark" }
steps = [{ stage = "test", run = "git log -1 {{sha}}" }]
"#;

    fn rules() -> RuleSet {
        let mut set = RuleSet::parse(RULES, "gerrit.toml").unwrap();
        let t = Template::parse(TEMPLATE, "bench.toml").unwrap();
        for rule in set.rules_mut() {
            for action in &mut rule.actions {
                action.template = Some(t.clone());
            }
        }
        set
    }

    fn merged(branch: &str, topic: Option<&str>) -> Event {
        let mut body = json!({
            "type": "change-merged",
            "change": {"project": "qt/qtbase", "branch": branch, "number": 456789},
            "patchSet": {"number": 2, "revision": "1111"},
            "newRev": "69609f0b3575c571fff4564f6f16cbca9c7d81f6"
        });
        if let Some(t) = topic {
            body["change"]["topic"] = json!(t);
        }
        Event::new(Source::Gerrit, body).infer_kind()
    }

    #[test]
    fn renders_every_action_of_a_matching_rule() {
        let plan = plan(&rules(), &merged("dev", Some("-perf")));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.jobs.len(), 2);
        let first = &plan.jobs[0];
        assert_eq!((first.rule.as_str(), first.action), ("benchmarks", 0));
        assert_eq!(first.job.name, "qt/qtbase-456789");
        assert_eq!(
            (first.job.queue.as_str(), first.job.priority),
            ("benchmarks", 5)
        );
        let source = first.job.source.as_ref().unwrap();
        assert_eq!(source.rev, "69609f0b3575c571fff4564f6f16cbca9c7d81f6");
        let integration = first.job.integration.as_ref().unwrap();
        assert_eq!(integration.branch.as_deref(), Some("dev"));
        assert!(first.job.tasks[0].each_agent);
        assert_eq!(
            first.job.tasks[0].steps[0].run,
            "git log -1 '69609f0b3575c571fff4564f6f16cbca9c7d81f6'"
        );
        assert_eq!(plan.jobs[1].job.name, "qt/qtbase-456789-perf");
        assert_eq!(plan.jobs[1].job.queue, "default");
    }

    #[test]
    fn no_match_plans_nothing_and_render_errors_are_kept_apart() {
        assert_eq!(plan(&rules(), &merged("5.15", None)), Plan::default());
        let plan = plan(&rules(), &merged("dev", None));
        assert_eq!(plan.jobs.len(), 1, "the first action still renders");
        assert_eq!(plan.errors.len(), 1);
        let e = &plan.errors[0];
        assert_eq!(e.rule.as_deref(), Some("benchmarks"));
        assert_eq!(e.field.as_deref(), Some("do[1].vars.suffix"));
        assert!(e.message.contains("no field `change.topic`"), "{e}");
    }
}
