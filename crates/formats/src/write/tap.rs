//! TAP 13 with YAML blocks in the Taskotron (libtaskotron `check.export_TAP`) style:
//! one test point per checked item, whose YAML block carries `item`, `type`, `outcome`,
//! `summary` and `details`, as ResultsDB reporters expect.

use serde::Serialize;
use testfleet_wire::results::{CaseOutcome, Results};

/// One Taskotron check result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TapItem {
    /// What was checked, e.g. `xchat-2.8.8-21.fc20`.
    pub item: String,
    /// Its kind, e.g. `koji_build`.
    #[serde(rename = "type")]
    pub item_type: String,
    /// `PASSED`, `INFO`, `FAILED`, `NEEDS_INSPECTION`, `ABORTED` or `CRASHED`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<TapDetails>,
    /// The check's name (Taskotron's `checkname`).
    pub checkname: String,
}

/// The `details` mapping of a Taskotron result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TapDetails {
    pub output: String,
}

impl TapItem {
    /// One item per case of `results`, named `suite.case(tag)`.
    pub fn from_results(results: &Results, item: &str, item_type: &str) -> Vec<TapItem> {
        let mut items = Vec::new();
        for suite in &results.suites {
            for case in &suite.cases {
                let outcome = match case.outcome {
                    CaseOutcome::Pass | CaseOutcome::Xfail => "PASSED",
                    CaseOutcome::Skip => "INFO",
                    CaseOutcome::Fail | CaseOutcome::Xpass => "FAILED",
                    CaseOutcome::Error => "NEEDS_INSPECTION",
                    CaseOutcome::Crash => "CRASHED",
                };
                let checkname = if suite.name.is_empty() {
                    case.display_name()
                } else {
                    format!("{}.{}", suite.name, case.display_name())
                };
                items.push(TapItem {
                    item: item.to_string(),
                    item_type: item_type.to_string(),
                    outcome: outcome.to_string(),
                    summary: case.message.clone(),
                    details: case.log.clone().map(|output| TapDetails { output }),
                    checkname,
                });
            }
        }
        items
    }
}

/// Renders the items as a TAP 13 stream with one YAML block per test point.
pub fn tap13(items: &[TapItem]) -> String {
    let mut out = format!("TAP version 13\n1..{}\n", items.len());
    for (i, item) in items.iter().enumerate() {
        let ok = matches!(item.outcome.as_str(), "PASSED" | "INFO");
        // A `#` in the description would start a directive: escape it (TAP 14 rule,
        // harmless for TAP 13 readers).
        let desc = format!("{} for {}", item.checkname, item.item)
            .replace('\\', "\\\\")
            .replace('#', "\\#")
            .replace('\n', " ");
        out.push_str(&format!(
            "{} {} - {}\n",
            if ok { "ok" } else { "not ok" },
            i + 1,
            desc
        ));
        // serde_norway quotes and escapes every scalar that needs it.
        let yaml = serde_norway::to_string(item).unwrap_or_default();
        out.push_str("  ---\n");
        for line in yaml.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("  ...\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_tap_parser() {
        let items = vec![
            TapItem {
                item: "xchat-2.8.8-21.fc20".into(),
                item_type: "koji_build".into(),
                outcome: "PASSED".into(),
                summary: Some("all good # really".into()),
                details: None,
                checkname: "rpmlint".into(),
            },
            TapItem {
                item: "foo-1.0".into(),
                item_type: "koji_build".into(),
                outcome: "FAILED".into(),
                summary: None,
                details: Some(TapDetails {
                    output: "line 1\nline: 2\n".into(),
                }),
                checkname: "depcheck #2".into(),
            },
        ];
        let tap = tap13(&items);
        let r = crate::parse(tap.as_bytes(), None).expect("parse");
        assert!(r.complete, "{:?}\n{tap}", r.warnings);
        let cases = &r.suites[0].cases;
        assert_eq!(cases[1].name, "depcheck #2 for foo-1.0");
        assert_eq!(cases[1].outcome, CaseOutcome::Fail);
        let d = cases[1].diagnostics.as_ref().expect("yaml");
        assert_eq!(d["outcome"], "FAILED");
        assert_eq!(d["type"], "koji_build");
        assert_eq!(d["details"]["output"], "line 1\nline: 2\n");
        assert_eq!(
            cases[0].diagnostics.as_ref().expect("yaml")["summary"],
            "all good # really"
        );
    }
}
