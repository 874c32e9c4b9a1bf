//! What the trigger rules make of a bus message: its jobs, the rules it
//! matched, and why none when it brings no job.
//!
//! This mirrors the webhooks' decision (`hooks::decide`, private to that
//! module); the reasons name the AMQP topic rather than a webhook kind.

use testfleet_core::JobSpec;
use testfleet_core::trigger::{Event, RuleSet};
use testfleet_wire::events::EventOutcome;

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
/// rendered for this message drops it: the same message can never render.
pub(crate) fn decide(rules: &RuleSet, event: &Event) -> Decided {
    let mut matched_rules: Vec<String> = Vec::new();
    for m in rules.matches(event) {
        if !matched_rules.contains(&m.rule.name) {
            matched_rules.push(m.rule.name.clone());
        }
    }
    let plan = crate::triggers::plan(rules, event);
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    let (unqueued, reason) = if matched_rules.is_empty() {
        (EventOutcome::Ignored, Some(no_match_reason(rules, event)))
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

/// Why no rule matched: each rule's first failed condition (at most five).
fn no_match_reason(rules: &RuleSet, event: &Event) -> String {
    let topic = event.topic.as_deref().unwrap_or("");
    let head = format!("no rule matches amqp topic `{topic}`");
    let why: Vec<String> = rules
        .explain(event)
        .into_iter()
        .filter_map(|e| {
            e.verdict
                .err()
                .map(|m| format!("rule `{}`: {m}", e.rule.name))
        })
        .take(5)
        .collect();
    if why.is_empty() {
        format!("{head} (no rules loaded)")
    } else {
        format!("{head}: {}", why.join("; "))
    }
}
