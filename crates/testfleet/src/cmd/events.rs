//! `testfleet events`: the events log — trigger events received, the rules
//! they matched and the jobs they created, or why none. A table, or the
//! REST answer's JSON with `--json`.

use anyhow::Result;
use testfleet_client::{ApiClient, EventQuery};
use testfleet_wire::events::EventSummary;

use crate::exit;

/// What `testfleet events` asks for.
pub struct EventsArgs {
    pub source: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub limit: u32,
    pub json: bool,
}

/// Lists the events, newest first.
pub async fn run(api: &ApiClient, args: EventsArgs) -> Result<u8> {
    let list = api
        .events(&EventQuery {
            source: args.source,
            outcome: args.outcome,
            since: args.since,
            after: None,
            limit: Some(args.limit),
        })
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(exit::OK);
    }
    if list.events.is_empty() {
        outln!("no events")?;
        return Ok(exit::OK);
    }
    outln!(
        "{:>6}  {:<24}  {:<8}  {:<22}  {:<9}  {:<16}  {}",
        "ID",
        "RECEIVED",
        "SOURCE",
        "KIND",
        "OUTCOME",
        "JOBS",
        "RULES / REASON"
    )?;
    for e in &list.events {
        outln!("{}", row(e))?;
    }
    Ok(exit::OK)
}

fn row(e: &EventSummary) -> String {
    let jobs = if e.job_ids.is_empty() {
        "-".to_owned()
    } else {
        e.job_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut detail = e.matched_rules.join(",");
    if let Some(reason) = &e.reason {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(reason);
    }
    format!(
        "{:>6}  {:<24}  {:<8}  {:<22}  {:<9}  {:<16}  {}",
        e.id,
        e.received_at,
        e.source,
        e.kind,
        e.outcome.as_str(),
        jobs,
        detail
    )
}

#[cfg(test)]
mod tests {
    use testfleet_wire::events::EventOutcome;

    use super::*;

    #[test]
    fn a_row_names_jobs_rules_and_reason() {
        let e = EventSummary {
            id: 7,
            source: "github".into(),
            kind: "push".into(),
            topic: "github.push".into(),
            delivery_id: None,
            received_at: "2024-01-01T00:00:00.000Z".into(),
            matched_rules: vec![],
            job_ids: vec![],
            outcome: EventOutcome::Ignored,
            reason: Some("no rule matches github event `push`".into()),
        };
        let line = row(&e);
        assert!(line.contains("ignored"), "{line}");
        assert!(
            line.ends_with("no rule matches github event `push`"),
            "{line}"
        );
        let queued = EventSummary {
            matched_rules: vec!["pr".into()],
            job_ids: vec![3, 4],
            outcome: EventOutcome::Queued,
            reason: None,
            ..e
        };
        let line = row(&queued);
        assert!(line.contains("3,4") && line.ends_with("pr"), "{line}");
    }
}
