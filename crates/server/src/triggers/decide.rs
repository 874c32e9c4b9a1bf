//! What the trigger rules make of an event, for every source (webhooks and
//! AMQP): its jobs, the rules it matched, and why none when it brings no
//! job. Only the wording of "no rule matched" differs by source (a webhook
//! names its event kind, a bus message its topic); the caller passes it.

use testfleet_core::JobSpec;
use testfleet_core::trigger::{Event, RuleSet};
use testfleet_wire::events::EventOutcome;

/// Most rules named in a "no rule matches" reason.
const MAX_EXPLAINED: usize = 5;

/// What the rules made of an event.
#[derive(Debug)]
pub(crate) struct Decided {
    pub matched_rules: Vec<String>,
    pub jobs: Vec<JobSpec>,
    /// The outcome recorded when `jobs` is empty.
    pub unqueued: EventOutcome,
    pub reason: Option<String>,
}

/// Matches and renders (`triggers::plan`). A rule whose action cannot be
/// rendered for this event drops it: the same event can never render.
/// When no rule matches, the reason starts with `no_match` (such as
/// ``no rule matches github event `push` ``) and goes on with each rule's
/// first failed condition.
pub(crate) fn decide(rules: &RuleSet, event: &Event, no_match: &str) -> Decided {
    let mut matched_rules: Vec<String> = Vec::new();
    for m in rules.matches(event) {
        if !matched_rules.contains(&m.rule.name) {
            matched_rules.push(m.rule.name.clone());
        }
    }
    let plan = super::plan(rules, event);
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    let (unqueued, reason) = if matched_rules.is_empty() {
        (
            EventOutcome::Ignored,
            Some(no_match_reason(rules, event, no_match)),
        )
    } else if plan.jobs.is_empty() && errors.is_empty() {
        (
            EventOutcome::Ignored,
            Some("the matching rules have no actions".to_owned()),
        )
    } else if errors.is_empty() {
        (EventOutcome::Ignored, None)
    } else {
        (EventOutcome::Dropped, Some(errors.join("; ")))
    };
    Decided {
        matched_rules,
        jobs: plan.jobs.into_iter().map(|j| j.job).collect(),
        unqueued,
        reason,
    }
}

/// `head`, then why no rule matched: each rule's first failed condition
/// (at most [`MAX_EXPLAINED`]).
fn no_match_reason(rules: &RuleSet, event: &Event, head: &str) -> String {
    let why: Vec<String> = rules
        .explain(event)
        .into_iter()
        .filter_map(|e| {
            e.verdict
                .err()
                .map(|m| format!("rule `{}`: {m}", e.rule.name))
        })
        .take(MAX_EXPLAINED)
        .collect();
    if why.is_empty() {
        format!("{head} (no rules loaded)")
    } else {
        format!("{head}: {}", why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use testfleet_core::trigger::{Source, Template};

    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "on-push"
when = { source = "github", kind = "push" }
[[rule.do]]
template = "t.toml"
vars = { item = "{{body.name}}" }

[[rule]]
name = "bare"
when = { source = "github", kind = "release" }
[[rule.do]]
template = "t.toml"
"#;

    const TEMPLATE: &str = r#"name = "job-{{item}}"
[[task]]
name = "t"
steps = [{ stage = "test", run = "echo {{item}}" }]
"#;

    fn rules() -> RuleSet {
        let mut set = RuleSet::parse(RULES, "rules.toml").unwrap();
        let t = Template::parse(TEMPLATE, "t.toml").unwrap();
        for rule in set.rules_mut() {
            for action in &mut rule.actions {
                action.template = Some(t.clone());
            }
            if rule.name == "bare" {
                rule.actions.clear();
            }
        }
        set
    }

    fn event(kind: &str, body: serde_json::Value) -> Event {
        Event::new(Source::Github, body).with_kind(kind.to_owned())
    }

    #[test]
    fn a_matching_rendering_rule_brings_its_job() {
        let d = decide(
            &rules(),
            &event("push", serde_json::json!({"name": "bash"})),
            "unused",
        );
        assert_eq!(d.matched_rules, vec!["on-push".to_owned()]);
        assert_eq!(d.jobs.len(), 1);
        assert_eq!(d.jobs[0].name, "job-bash");
        assert_eq!(d.reason, None);
    }

    #[test]
    fn no_match_is_worded_by_the_caller_and_explained_per_rule() {
        let d = decide(
            &rules(),
            &event("tag", serde_json::json!({})),
            "no rule matches github event `tag`",
        );
        assert!(d.jobs.is_empty() && d.matched_rules.is_empty());
        assert_eq!(d.unqueued, EventOutcome::Ignored);
        let reason = d.reason.unwrap();
        assert!(
            reason.starts_with("no rule matches github event `tag`: rule `on-push`: "),
            "{reason}"
        );
        assert!(reason.contains("rule `bare`: "), "{reason}");

        let d = decide(
            &RuleSet::default(),
            &event("tag", serde_json::json!({})),
            "head",
        );
        assert_eq!(d.reason.as_deref(), Some("head (no rules loaded)"));
    }

    #[test]
    fn actionless_rules_are_ignored_and_unrenderable_ones_dropped() {
        let d = decide(&rules(), &event("release", serde_json::json!({})), "x");
        assert_eq!(d.matched_rules, vec!["bare".to_owned()]);
        assert_eq!(d.unqueued, EventOutcome::Ignored);
        assert_eq!(
            d.reason.as_deref(),
            Some("the matching rules have no actions")
        );

        let d = decide(&rules(), &event("push", serde_json::json!({})), "x");
        assert!(d.jobs.is_empty());
        assert_eq!(d.unqueued, EventOutcome::Dropped);
        assert!(d.reason.unwrap().contains("body.name"));
    }
}
