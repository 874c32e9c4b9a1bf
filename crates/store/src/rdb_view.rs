//! The ResultsDB view of testfleet's own results: each finished attempt's
//! results mapped into ResultsDB rows (one result per test case, plus one per
//! crash that no case records), by the outbox consumer
//! ([`Store::materialize_pending`](crate::Store::materialize_pending)).

use std::collections::{BTreeMap, HashSet};

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
                let mut data = facts.common.clone();
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
                let new = NewRdbResult {
                    testcase: testcase_name(&suite.name, case),
                    testcase_ref_url: None,
                    outcome: case_outcome(case).to_owned(),
                    note: case.message.as_deref().map(|m| cut(m, NOTE_MAX)),
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
