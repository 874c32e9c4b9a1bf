//! Results out of the store in the shapes other tools read: the seed-000 run
//! summary per attempt, a merged JUnit XML report and Taskotron-style TAP per job.

use serde_json::json;
use testfleet_core::time_fmt::format_millis;
use testfleet_store::AttemptContext;
use testfleet_wire::api::{CrashedEntry, ExecutedTest, RunSummary};
use testfleet_wire::results::Results;

/// The seed-000 summary of one agent run: one executed test per benchmark
/// value (the value is the result), or per case with its outcome when the
/// case measured nothing; crashed test programs with their logs.
pub fn run_summary(ctx: &AttemptContext) -> RunSummary {
    let mut executed = Vec::new();
    let mut crashed = Vec::new();
    for results in &ctx.results {
        for suite in &results.suites {
            for case in &suite.cases {
                let function = match &case.data_tag {
                    Some(tag) => format!("{}:{tag}", case.name),
                    None => case.name.clone(),
                };
                if case.metrics.is_empty() {
                    executed.push(ExecutedTest {
                        test_name: suite.name.clone(),
                        test_function: function.clone(),
                        result: json!(case.outcome.as_str()),
                    });
                }
                for metric in &case.metrics {
                    executed.push(ExecutedTest {
                        test_name: suite.name.clone(),
                        test_function: function.clone(),
                        result: json!(metric.value),
                    });
                }
            }
        }
        crashed.extend(results.crashed.iter().map(|c| CrashedEntry {
            test_name: c.test_name.clone(),
            log: c.log.clone(),
        }));
    }
    RunSummary {
        integration_id: ctx.integration_id.clone(),
        integration_timestamp: format_millis(ctx.integration_timestamp),
        hostname: ctx.agent.clone(),
        platform: ctx
            .machine
            .as_ref()
            .map(|m| m.platform.clone())
            .unwrap_or_default(),
        executed_tests: executed,
        crashed,
    }
}

/// One JUnit XML document for a whole job.
pub fn junit(results: &[(String, String, Results)]) -> String {
    let all: Vec<Results> = results.iter().map(|(_, _, r)| r.clone()).collect();
    testfleet_formats::junit_xml(&all)
}

/// TAP 13 with a YAML block per case (item, type, outcome, summary, details),
/// as Taskotron tasks emit it; the item is the task, the type `testfleet_task`.
pub fn tap(results: &[(String, String, Results)]) -> String {
    let items: Vec<_> = results
        .iter()
        .flat_map(|(task, agent, r)| {
            testfleet_formats::TapItem::from_results(
                r,
                &format!("{task}@{agent}"),
                "testfleet_task",
            )
        })
        .collect();
    testfleet_formats::tap13(&items)
}
