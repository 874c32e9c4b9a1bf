//! The ResultsDB view of testfleet's own results: each finished attempt's
//! results mapped into ResultsDB rows (one result per test case, plus one per
//! crash that no case records), by the outbox consumer
//! ([`Store::materialize_pending`](crate::Store::materialize_pending)).
//!
//! A case whose TAP YAML block is a Taskotron result (libtaskotron's
//! `CheckDetail`: `item`, `type`, `outcome`, `summary`, `checkname`) is mapped
//! as Taskotron's ResultsDB reporter did: that outcome, item, type and
//! summary, and the check's name as the testcase.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use sqlx::QueryBuilder;
use testfleet_core::JobSpec;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;
use testfleet_wire::results::{CaseOutcome, Results};

use crate::db::{Tx, on_tx};
use crate::resultsdb::{
    NOTE_MAX, NewRdbResult, RdbGroup, case_outcome, job_group_uuid, testcase_name, upsert_group,
};
use crate::{Missing, Result, StoreError};

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// What every result of one attempt shares.
struct AttemptFacts {
    common: Vec<(String, String)>,
    group: RdbGroup,
    ref_url: String,
}

/// The stored facts [`AttemptFacts`] is built from.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    task_id: i64,
    task_name: String,
    job_id: i64,
    /// The job's spec, JSON.
    spec: String,
    agent: String,
    /// The agent's `MachineInfo`, JSON.
    machine: Option<String>,
}

async fn attempt_facts(tx: &mut Tx, attempt_id: i64) -> Result<AttemptFacts> {
    let row = on_tx!(tx, c => sqlx::query_as::<_, AttemptRow>(
        "SELECT t.id AS task_id, t.name AS task_name, t.job_id, j.spec, a.agent, g.machine
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         LEFT JOIN agents g ON g.hostname = a.agent WHERE a.id = $1",
    )
    .bind(attempt_id)
    .fetch_optional(c)
    .await)?
    .ok_or_else(|| StoreError::NotFound(Missing::Attempt(attempt_id)))?;
    let AttemptRow {
        task_id,
        task_name,
        job_id,
        spec,
        agent,
        machine,
    } = row;
    let spec: JobSpec = serde_json::from_str(&spec)?;
    let machine: Option<MachineInfo> = machine.as_deref().map(serde_json::from_str).transpose()?;
    let integration = spec.integration.as_ref();
    let integration_id = integration
        .map(|i| i.id.clone())
        .unwrap_or_else(|| format!("tf-{job_id}"));
    // A Taskotron-style trigger puts what was tested in the job's environment;
    // otherwise the item is the integration.
    let item = spec
        .env
        .get("ITEM")
        .cloned()
        .unwrap_or(integration_id.clone());
    let item_type = spec
        .env
        .get("ITEM_TYPE")
        .cloned()
        .unwrap_or_else(|| "testfleet_integration".to_owned());
    let mut common = vec![
        ("item".to_owned(), item),
        ("type".to_owned(), item_type),
        ("host".to_owned(), agent),
        ("job_id".to_owned(), job_id.to_string()),
        ("job".to_owned(), spec.name.clone()),
        ("task_id".to_owned(), task_id.to_string()),
        ("task".to_owned(), task_name),
        ("attempt_id".to_owned(), attempt_id.to_string()),
        ("integration_id".to_owned(), integration_id),
    ];
    if let Some(m) = machine.filter(|m| !m.arch.is_empty()) {
        common.push(("arch".to_owned(), m.arch));
    }
    if let Some(branch) = integration.and_then(|i| i.branch.clone()) {
        common.push(("branch".to_owned(), branch));
    }
    let sha = integration
        .and_then(|i| i.sha.clone())
        .or_else(|| spec.source.as_ref().map(|s| s.rev.clone()));
    if let Some(sha) = sha {
        common.push(("sha".to_owned(), sha));
    }
    Ok(AttemptFacts {
        common,
        group: RdbGroup {
            uuid: job_group_uuid(job_id),
            description: Some(spec.name),
            ref_url: Some(format!("/api/v1/jobs/{job_id}")),
        },
        ref_url: format!("/api/v1/tasks/{task_id}/log?attempt={attempt_id}"),
    })
}

/// What a Taskotron-style TAP YAML block says of its case, in ResultsDB's
/// terms. Only a block whose `outcome` is a Taskotron outcome is one: other
/// producers' YAML (node-tap's `found`/`wanted`, …) is left alone.
#[derive(Debug, PartialEq)]
struct TaskotronBlock<'a> {
    /// The ResultsDB outcome.
    outcome: &'static str,
    item: Option<&'a str>,
    item_type: Option<&'a str>,
    /// `summary` (libtaskotron), else `note` (ResultsDB's word).
    note: Option<&'a str>,
    /// The check's name: the ResultsDB testcase.
    checkname: Option<&'a str>,
}

impl<'a> TaskotronBlock<'a> {
    fn of(diagnostics: Option<&'a Value>) -> Option<TaskotronBlock<'a>> {
        let map = diagnostics?.as_object()?;
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        // libtaskotron's outcomes; ResultsDB here knows the first four, and
        // an aborted or crashed check needs a person to look at it.
        let outcome = match text("outcome")?.to_ascii_uppercase().as_str() {
            "PASSED" => "PASSED",
            "INFO" => "INFO",
            "FAILED" => "FAILED",
            "NEEDS_INSPECTION" | "ABORTED" | "CRASHED" => "NEEDS_INSPECTION",
            _ => return None,
        };
        Some(TaskotronBlock {
            outcome,
            item: text("item"),
            item_type: text("type"),
            note: text("summary").or_else(|| text("note")),
            checkname: text("checkname"),
        })
    }

    /// Puts the block's `item` and `type` in place of the attempt's.
    fn replace_item(&self, data: &mut [(String, String)]) {
        for (key, value) in data.iter_mut() {
            let given = match key.as_str() {
                "item" => self.item,
                "type" => self.item_type,
                _ => None,
            };
            if let Some(given) = given {
                given.clone_into(value);
            }
        }
    }
}

/// Maps an attempt's results into ResultsDB results: one per case, plus one
/// per crashed test program that no crashed case already stands for.
pub(crate) async fn materialize(
    tx: &mut Tx,
    attempt_id: i64,
    results: &[Results],
    now: UnixMillis,
) -> Result<()> {
    let rows = attempt_rows(tx, attempt_id, results).await?;
    insert_rows(tx, &rows, now, attempt_id).await
}

/// Rows per multi-row statement: 6 parameters per result and 3 per data
/// pair (about a dozen per result) stay far below both engines' limits.
const ROWS_PER_STATEMENT: usize = 100;

/// Inserts `rows`, the view rows of `attempt_id` (or a slice of them), a
/// hundred results per statement rather than a dozen statements per result.
pub(crate) async fn insert_rows(
    tx: &mut Tx,
    rows: &[NewRdbResult],
    now: UnixMillis,
    attempt_id: i64,
) -> Result<()> {
    for part in rows.chunks(ROWS_PER_STATEMENT) {
        insert_part(tx, part, now, attempt_id).await?;
    }
    Ok(())
}

async fn insert_part(
    tx: &mut Tx,
    rows: &[NewRdbResult],
    now: UnixMillis,
    attempt_id: i64,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Testcases and groups once each (one statement may not upsert a row
    // twice on PostgreSQL); a given ref_url wins over none, as row by row.
    let mut testcases: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut groups: BTreeMap<&str, &RdbGroup> = BTreeMap::new();
    for row in rows {
        let url = testcases.entry(row.testcase.as_str()).or_insert(None);
        if row.testcase_ref_url.is_some() {
            *url = row.testcase_ref_url.as_deref();
        }
        for g in &row.groups {
            groups.insert(g.uuid.as_str(), g);
        }
    }
    on_tx!(tx, c => {
        let mut qb = QueryBuilder::new("INSERT INTO rdb_testcases (name, ref_url) ");
        qb.push_values(&testcases, |mut b, (name, url)| {
            b.push_bind(*name).push_bind(*url);
        });
        qb.push(
            " ON CONFLICT (name) DO UPDATE SET ref_url = COALESCE(excluded.ref_url, rdb_testcases.ref_url)",
        );
        qb.build().execute(c).await.map(|r| r.rows_affected())
    })?;
    for g in groups.values() {
        upsert_group(tx, g).await?;
    }
    // The ids come back in the order of the VALUES rows once sorted: both
    // engines assign them row by row, increasing.
    let mut ids: Vec<i64> = on_tx!(tx, c => {
        let mut qb = QueryBuilder::new(
            "INSERT INTO rdb_results (testcase, outcome, note, ref_url, submit_time, attempt_id) ",
        );
        qb.push_values(rows, |mut b, row| {
            b.push_bind(&row.testcase)
                .push_bind(&row.outcome)
                .push_bind(&row.note)
                .push_bind(&row.ref_url)
                .push_bind(now)
                .push_bind(attempt_id);
        });
        qb.push(" RETURNING id");
        qb.build_query_scalar::<i64>().fetch_all(c).await
    })?;
    ids.sort_unstable();
    if ids.len() != rows.len() {
        return Err(StoreError::Corrupt(format!(
            "{} results inserted for attempt {attempt_id}, {} ids returned",
            rows.len(),
            ids.len()
        )));
    }
    let links: Vec<(i64, &str)> = ids
        .iter()
        .zip(rows)
        .flat_map(|(id, row)| row.groups.iter().map(move |g| (*id, g.uuid.as_str())))
        .collect();
    for part in links.chunks(ROWS_PER_STATEMENT * 4) {
        on_tx!(tx, c => {
            let mut qb = QueryBuilder::new("INSERT INTO rdb_result_groups (result_id, group_uuid) ");
            qb.push_values(part, |mut b, (id, uuid)| {
                b.push_bind(*id).push_bind(*uuid);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let data: Vec<(i64, &str, &str)> = ids
        .iter()
        .zip(rows)
        .flat_map(|(id, row)| {
            row.data
                .iter()
                .map(move |(k, v)| (*id, k.as_str(), v.as_str()))
        })
        .collect();
    for part in data.chunks(ROWS_PER_STATEMENT * 4) {
        on_tx!(tx, c => {
            let mut qb = QueryBuilder::new("INSERT INTO rdb_result_data (result_id, key, value) ");
            qb.push_values(part, |mut b, (id, k, v)| {
                b.push_bind(*id).push_bind(*k).push_bind(*v);
            });
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// Removes the view rows of `attempt_id`: what an interrupted, chunked
/// mapping of it left behind, before it is mapped again from the start.
pub(crate) async fn delete_attempt_rows(tx: &mut Tx, attempt_id: i64) -> Result<()> {
    for sql in [
        "DELETE FROM rdb_result_data WHERE result_id IN (SELECT id FROM rdb_results WHERE attempt_id = $1)",
        "DELETE FROM rdb_result_groups WHERE result_id IN (SELECT id FROM rdb_results WHERE attempt_id = $1)",
    ] {
        on_tx!(tx, c => sqlx::query(sql)
            .bind(attempt_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    on_tx!(tx, c => sqlx::query("DELETE FROM rdb_results WHERE attempt_id = $1")
        .bind(attempt_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The ResultsDB view rows of an attempt's results: one per test case, plus
/// one per crash that no case records.
pub(crate) async fn attempt_rows(
    tx: &mut Tx,
    attempt_id: i64,
    results: &[Results],
) -> Result<Vec<NewRdbResult>> {
    let mut rows = Vec::new();
    let facts = attempt_facts(tx, attempt_id).await?;
    let mut seq = 0usize;
    for r in results {
        let mut crashed_cases = HashSet::new();
        for suite in &r.suites {
            for case in &suite.cases {
                if case.outcome == CaseOutcome::Crash {
                    crashed_cases.insert((suite.name.as_str(), case.name.as_str()));
                }
                let taskotron = TaskotronBlock::of(case.diagnostics.as_ref());
                let mut data = facts.common.clone();
                if let Some(t) = &taskotron {
                    t.replace_item(&mut data);
                }
                data.push(("format".into(), r.format.clone()));
                data.push(("case_outcome".into(), case.outcome.as_str().into()));
                if let Some(tag) = &case.data_tag {
                    data.push(("data_tag".into(), tag.clone()));
                }
                if let Some(ms) = case.duration_ms {
                    data.push(("duration_ms".into(), ms.to_string()));
                }
                if case.flags.flaky {
                    data.push(("flaky".into(), "true".into()));
                }
                for m in &case.metrics {
                    data.push((format!("metric.{}", m.name), m.value.to_string()));
                }
                data.push(("tf_uid".into(), format!("{attempt_id}.{seq}")));
                seq += 1;
                let t = taskotron.as_ref();
                let new = NewRdbResult {
                    testcase: t
                        .and_then(|t| t.checkname)
                        .map_or_else(|| testcase_name(&suite.name, case), str::to_owned),
                    testcase_ref_url: None,
                    outcome: t
                        .map_or_else(|| case_outcome(case), |t| t.outcome)
                        .to_owned(),
                    note: t
                        .and_then(|t| t.note)
                        .or(case.message.as_deref())
                        .map(|m| cut(m, NOTE_MAX)),
                    ref_url: Some(facts.ref_url.clone()),
                    groups: vec![facts.group.clone()],
                    data,
                };
                rows.push(new);
            }
        }
        for crash in &r.crashed {
            let function = crash.function.as_deref().unwrap_or("");
            if crashed_cases.contains(&(crash.test_name.as_str(), function)) {
                continue;
            }
            let mut data = facts.common.clone();
            data.push(("format".into(), r.format.clone()));
            data.push(("case_outcome".into(), "crash".into()));
            data.push(("tf_uid".into(), format!("{attempt_id}.{seq}")));
            seq += 1;
            let testcase = if function.is_empty() {
                crash.test_name.clone()
            } else {
                format!("{}.{function}", crash.test_name)
            };
            let new = NewRdbResult {
                testcase,
                testcase_ref_url: None,
                outcome: "NEEDS_INSPECTION".into(),
                note: Some("the test program crashed".into()),
                ref_url: Some(facts.ref_url.clone()),
                groups: vec![facts.group.clone()],
                data,
            };
            rows.push(new);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::TaskotronBlock;

    #[test]
    fn a_taskotron_yaml_block_gives_outcome_item_type_note_and_testcase() {
        let yaml = json!({
            "checkname": "dist.rpmlint", "item": "xchat-0.5-1.fc20", "type": "koji_build",
            "outcome": "needs_inspection", "summary": "5 ERRORS, 10 WARNINGS",
            "details": {"output": "xchat.x86_64: W: no-manual-page-for-binary xchat"},
        });
        let block = TaskotronBlock::of(Some(&yaml)).expect("a Taskotron block");
        assert_eq!(
            block,
            TaskotronBlock {
                outcome: "NEEDS_INSPECTION",
                item: Some("xchat-0.5-1.fc20"),
                item_type: Some("koji_build"),
                note: Some("5 ERRORS, 10 WARNINGS"),
                checkname: Some("dist.rpmlint"),
            }
        );
        let mut data = vec![
            ("item".to_owned(), "tf-3".to_owned()),
            ("type".to_owned(), "testfleet_integration".to_owned()),
            ("host".to_owned(), "a".to_owned()),
        ];
        block.replace_item(&mut data);
        assert_eq!(data[0].1, "xchat-0.5-1.fc20");
        assert_eq!(data[1].1, "koji_build");
        assert_eq!(data[2].1, "a");
    }

    #[test]
    fn other_yaml_blocks_are_not_taskotron_results() {
        for yaml in [
            json!({"message": "boom", "severity": "fail"}),
            json!({"outcome": "MAYBE", "item": "x"}),
            json!({"outcome": 1}),
            json!("text"),
        ] {
            assert_eq!(TaskotronBlock::of(Some(&yaml)), None, "{yaml}");
        }
        assert_eq!(TaskotronBlock::of(None), None);
        let aborted = json!({"outcome": "ABORTED", "note": "koji timed out"});
        let block = TaskotronBlock::of(Some(&aborted)).expect("a Taskotron block");
        assert_eq!(block.outcome, "NEEDS_INSPECTION");
        assert_eq!(block.note, Some("koji timed out"));
        assert_eq!(block.item, None);
    }
}
