//! The ResultsDB v2.0 model (testcases, groups, results with key/value data)
//! and the mapping of testfleet's results into it.
//!
//! testfleet results are mapped once, when their attempt finishes
//! ([`materialize`], inside `finish_attempt`'s transaction), so listing and
//! filtering them is plain SQL over indexed tables, as in ResultsDB itself.
//! The mapping is documented in docs/exporters.md.

use std::collections::{BTreeMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use testfleet_core::JobSpec;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;
use testfleet_wire::results::{Case, CaseOutcome, Results};

use crate::{Result, Store, StoreError};

/// The outcomes ResultsDB accepts.
pub const RDB_OUTCOMES: [&str; 4] = ["PASSED", "INFO", "FAILED", "NEEDS_INSPECTION"];

/// Longest note kept for a mapped result; the full message stays in the attempt's results.
const NOTE_MAX: usize = 1000;

/// A stored result, as ResultsDB serializes it (before URLs are added).
#[derive(Debug, Clone, PartialEq)]
pub struct RdbResult {
    pub id: i64,
    pub testcase: RdbTestcase,
    pub outcome: String,
    pub note: Option<String>,
    pub ref_url: Option<String>,
    pub submit_time: UnixMillis,
    pub groups: Vec<String>,
    /// Every key holds a list of values, as in ResultsDB.
    pub data: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbTestcase {
    pub name: String,
    pub ref_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbGroup {
    pub uuid: String,
    pub description: Option<String>,
    pub ref_url: Option<String>,
}

/// A result to create. `testcase_ref_url` and the groups' fields update the
/// stored testcase or group when set, as ResultsDB does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewRdbResult {
    pub testcase: String,
    pub testcase_ref_url: Option<String>,
    pub outcome: String,
    pub note: Option<String>,
    pub ref_url: Option<String>,
    pub groups: Vec<RdbGroup>,
    pub data: Vec<(String, String)>,
}

/// One data filter: `key=v1,v2` or `key:like=pat*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilter {
    pub key: String,
    pub like: bool,
    pub values: Vec<String>,
}

/// The filters of `GET /results` and `/results/latest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RdbQuery {
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub outcomes: Vec<String>,
    pub groups: Vec<String>,
    pub testcases: Vec<String>,
    pub testcases_like: Vec<String>,
    pub data: Vec<DataFilter>,
    /// Oldest first (`_sort=asc:submit_time`); newest first otherwise.
    pub ascending: bool,
}

/// The group of every result of a testfleet job: a fixed UUID-shaped name
/// (`74657374-666c-6565-8000-` is "testflee" in hex, then the job id).
pub fn job_group_uuid(job_id: i64) -> String {
    format!("74657374-666c-6565-8000-{:012x}", job_id.max(0))
}

/// ResultsDB's outcome of one case (see docs/exporters.md).
pub fn case_outcome(case: &Case) -> &'static str {
    match case.outcome {
        CaseOutcome::Pass | CaseOutcome::Xfail => "PASSED",
        CaseOutcome::Skip => "INFO",
        CaseOutcome::Crash => "NEEDS_INSPECTION",
        CaseOutcome::Xpass | CaseOutcome::Fail | CaseOutcome::Error => {
            if case.flags.todo || case.flags.blacklisted {
                "INFO"
            } else {
                "FAILED"
            }
        }
    }
}

/// The ResultsDB testcase name of a case: `suite.case`, plus `(tag)` when data-driven.
pub fn testcase_name(suite: &str, case: &Case) -> String {
    match &case.data_tag {
        Some(tag) => format!("{suite}.{}({tag})", case.name),
        None => format!("{suite}.{}", case.name),
    }
}

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

async fn attempt_facts(tx: &mut Transaction<'_, Sqlite>, attempt_id: i64) -> Result<AttemptFacts> {
    let row = sqlx::query(
        "SELECT t.id, t.name, t.job_id, j.spec, a.agent, g.machine
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         LEFT JOIN agents g ON g.hostname = a.agent WHERE a.id = ?",
    )
    .bind(attempt_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("attempt {attempt_id}")))?;
    let task_id: i64 = row.get(0);
    let task_name: String = row.get(1);
    let job_id: i64 = row.get(2);
    let spec: JobSpec = serde_json::from_str(row.get::<&str, _>(3))?;
    let agent: String = row.get(4);
    let machine: Option<MachineInfo> = row
        .get::<Option<&str>, _>(5)
        .map(serde_json::from_str)
        .transpose()?;
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
    tx: &mut Transaction<'_, Sqlite>,
    attempt_id: i64,
    results: &[Results],
    now: UnixMillis,
) -> Result<()> {
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
                insert_result(tx, &new, now, Some(attempt_id)).await?;
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
            insert_result(tx, &new, now, Some(attempt_id)).await?;
        }
    }
    Ok(())
}

async fn upsert_testcase(
    tx: &mut Transaction<'_, Sqlite>,
    name: &str,
    ref_url: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rdb_testcases (name, ref_url) VALUES (?, ?)
         ON CONFLICT (name) DO UPDATE SET ref_url = COALESCE(excluded.ref_url, ref_url)",
    )
    .bind(name)
    .bind(ref_url)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_group(tx: &mut Transaction<'_, Sqlite>, g: &RdbGroup) -> Result<()> {
    sqlx::query(
        "INSERT INTO rdb_groups (uuid, description, ref_url) VALUES (?, ?, ?)
         ON CONFLICT (uuid) DO UPDATE SET description = COALESCE(excluded.description, description),
         ref_url = COALESCE(excluded.ref_url, ref_url)",
    )
    .bind(&g.uuid)
    .bind(&g.description)
    .bind(&g.ref_url)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_result(
    tx: &mut Transaction<'_, Sqlite>,
    new: &NewRdbResult,
    now: UnixMillis,
    attempt_id: Option<i64>,
) -> Result<i64> {
    upsert_testcase(tx, &new.testcase, new.testcase_ref_url.as_deref()).await?;
    let id: i64 = sqlx::query(
        "INSERT INTO rdb_results (testcase, outcome, note, ref_url, submit_time, attempt_id)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&new.testcase)
    .bind(&new.outcome)
    .bind(&new.note)
    .bind(&new.ref_url)
    .bind(now)
    .bind(attempt_id)
    .fetch_one(&mut **tx)
    .await?
    .get(0);
    for g in &new.groups {
        upsert_group(tx, g).await?;
        sqlx::query(
            "INSERT OR IGNORE INTO rdb_result_groups (result_id, group_uuid) VALUES (?, ?)",
        )
        .bind(id)
        .bind(&g.uuid)
        .execute(&mut **tx)
        .await?;
    }
    for (k, v) in &new.data {
        sqlx::query("INSERT INTO rdb_result_data (result_id, key, value) VALUES (?, ?, ?)")
            .bind(id)
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}

/// ResultsDB's `*` wildcard in SQL `LIKE` form.
fn like_pattern(p: &str) -> String {
    p.replace('*', "%")
}

/// ` AND (column = any exact value OR column LIKE any pattern)`; nothing when
/// both lists are empty. `column` is a constant of this module, never input.
fn push_exact_or_like(
    qb: &mut QueryBuilder<Sqlite>,
    column: &str,
    exact: &[String],
    like: &[String],
) {
    if exact.is_empty() && like.is_empty() {
        return;
    }
    qb.push(" AND (0");
    for v in exact {
        qb.push(format!(" OR {column} = ")).push_bind(v.clone());
    }
    for v in like {
        qb.push(format!(" OR {column} LIKE "))
            .push_bind(like_pattern(v));
    }
    qb.push(")");
}

fn push_filters(qb: &mut QueryBuilder<Sqlite>, q: &RdbQuery, with_outcome: bool) {
    if let Some(since) = q.since {
        qb.push(" AND r.submit_time >= ").push_bind(since);
    }
    if let Some(until) = q.until {
        qb.push(" AND r.submit_time <= ").push_bind(until);
    }
    if with_outcome && !q.outcomes.is_empty() {
        qb.push(" AND r.outcome IN (");
        let mut s = qb.separated(", ");
        for o in &q.outcomes {
            s.push_bind(o.clone());
        }
        qb.push(")");
    }
    if !q.groups.is_empty() {
        qb.push(" AND EXISTS (SELECT 1 FROM rdb_result_groups g WHERE g.result_id = r.id AND g.group_uuid IN (");
        let mut s = qb.separated(", ");
        for g in &q.groups {
            s.push_bind(g.clone());
        }
        qb.push("))");
    }
    push_exact_or_like(qb, "r.testcase", &q.testcases, &q.testcases_like);
    for f in &q.data {
        qb.push(
            " AND EXISTS (SELECT 1 FROM rdb_result_data d WHERE d.result_id = r.id AND d.key = ",
        )
        .push_bind(f.key.clone())
        .push(" AND (0");
        for v in &f.values {
            if f.like {
                qb.push(" OR d.value LIKE ").push_bind(like_pattern(v));
            } else {
                qb.push(" OR d.value = ").push_bind(v.clone());
            }
        }
        qb.push("))");
    }
}

fn order(q: &RdbQuery) -> &'static str {
    if q.ascending {
        " ORDER BY r.submit_time ASC, r.id ASC"
    } else {
        " ORDER BY r.submit_time DESC, r.id DESC"
    }
}

impl Store {
    /// Creates a result (and its testcase and groups when new).
    pub async fn rdb_create_result(
        &self,
        new: &NewRdbResult,
        now: UnixMillis,
    ) -> Result<RdbResult> {
        let mut tx = self.writer.begin().await?;
        let id = insert_result(&mut tx, new, now, None).await?;
        tx.commit().await?;
        self.rdb_result(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("result {id}")))
    }

    pub async fn rdb_result(&self, id: i64) -> Result<Option<RdbResult>> {
        Ok(self.rdb_load(&[id]).await?.into_iter().next())
    }

    /// One page of results matching `q`: `limit` rows from `offset`.
    pub async fn rdb_results(
        &self,
        q: &RdbQuery,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbResult>> {
        let mut qb = QueryBuilder::new("SELECT r.id FROM rdb_results r WHERE 1");
        push_filters(&mut qb, q, true);
        qb.push(order(q));
        qb.push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let ids: Vec<i64> = qb
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.rdb_load(&ids).await
    }

    /// The newest result per testcase (and per value of each `distinct_on`
    /// data key) among those matching `q`; the outcome filter does not apply,
    /// as in ResultsDB.
    pub async fn rdb_latest(&self, q: &RdbQuery, distinct_on: &[String]) -> Result<Vec<RdbResult>> {
        let mut qb = QueryBuilder::new(
            "SELECT id FROM (SELECT r.id, r.submit_time, ROW_NUMBER() OVER (PARTITION BY r.testcase",
        );
        for key in distinct_on {
            qb.push(", (SELECT group_concat(d.value, ',') FROM rdb_result_data d WHERE d.result_id = r.id AND d.key = ")
                .push_bind(key.clone())
                .push(")");
        }
        qb.push(" ORDER BY r.submit_time DESC, r.id DESC) AS rn FROM rdb_results r WHERE 1");
        push_filters(&mut qb, q, false);
        qb.push(") r WHERE rn = 1");
        qb.push(order(q));
        let ids: Vec<i64> = qb
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.rdb_load(&ids).await
    }

    /// The results mapped from one attempt, in the order they were mapped.
    pub async fn rdb_attempt_results(&self, attempt_id: i64) -> Result<Vec<RdbResult>> {
        let ids: Vec<i64> =
            sqlx::query("SELECT id FROM rdb_results WHERE attempt_id = ? ORDER BY id")
                .bind(attempt_id)
                .fetch_all(&self.reader)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        self.rdb_load(&ids).await
    }

    /// Loads results by id, keeping the order of `ids`.
    async fn rdb_load(&self, ids: &[i64]) -> Result<Vec<RdbResult>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids_json = serde_json::to_string(ids)?;
        let rows = sqlx::query(
            "SELECT r.id, r.testcase, t.ref_url, r.outcome, r.note, r.ref_url, r.submit_time
             FROM rdb_results r JOIN rdb_testcases t ON t.name = r.testcase
             WHERE r.id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids_json)
        .fetch_all(&self.reader)
        .await?;
        let mut by_id: BTreeMap<i64, RdbResult> = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                (
                    id,
                    RdbResult {
                        id,
                        testcase: RdbTestcase {
                            name: r.get(1),
                            ref_url: r.get(2),
                        },
                        outcome: r.get(3),
                        note: r.get(4),
                        ref_url: r.get(5),
                        submit_time: r.get(6),
                        groups: Vec::new(),
                        data: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for r in sqlx::query(
            "SELECT result_id, group_uuid FROM rdb_result_groups
             WHERE result_id IN (SELECT value FROM json_each(?)) ORDER BY rowid",
        )
        .bind(&ids_json)
        .fetch_all(&self.reader)
        .await?
        {
            if let Some(res) = by_id.get_mut(&r.get::<i64, _>(0)) {
                res.groups.push(r.get(1));
            }
        }
        for r in sqlx::query(
            "SELECT result_id, key, value FROM rdb_result_data
             WHERE result_id IN (SELECT value FROM json_each(?)) ORDER BY rowid",
        )
        .bind(&ids_json)
        .fetch_all(&self.reader)
        .await?
        {
            if let Some(res) = by_id.get_mut(&r.get::<i64, _>(0)) {
                res.data.entry(r.get(1)).or_default().push(r.get(2));
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Creates a testcase, or updates its `ref_url` when given.
    pub async fn rdb_put_testcase(&self, name: &str, ref_url: Option<&str>) -> Result<RdbTestcase> {
        let mut tx = self.writer.begin().await?;
        upsert_testcase(&mut tx, name, ref_url).await?;
        tx.commit().await?;
        self.rdb_testcase(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("testcase {name}")))
    }

    pub async fn rdb_testcase(&self, name: &str) -> Result<Option<RdbTestcase>> {
        Ok(
            sqlx::query("SELECT name, ref_url FROM rdb_testcases WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?
                .map(|r| RdbTestcase {
                    name: r.get(0),
                    ref_url: r.get(1),
                }),
        )
    }

    /// Testcases by name (exact, or with `*` wildcards), sorted by name.
    pub async fn rdb_testcases(
        &self,
        names: &[String],
        like: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbTestcase>> {
        let mut qb = QueryBuilder::new("SELECT name, ref_url FROM rdb_testcases WHERE 1");
        push_exact_or_like(&mut qb, "name", names, like);
        qb.push(" ORDER BY name LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        Ok(qb
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| RdbTestcase {
                name: r.get(0),
                ref_url: r.get(1),
            })
            .collect())
    }

    /// Creates a group, or updates the fields given.
    pub async fn rdb_put_group(&self, group: &RdbGroup) -> Result<RdbGroup> {
        let mut tx = self.writer.begin().await?;
        upsert_group(&mut tx, group).await?;
        tx.commit().await?;
        self.rdb_group(&group.uuid)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("group {}", group.uuid)))
    }

    pub async fn rdb_group(&self, uuid: &str) -> Result<Option<RdbGroup>> {
        Ok(
            sqlx::query("SELECT uuid, description, ref_url FROM rdb_groups WHERE uuid = ?")
                .bind(uuid)
                .fetch_optional(&self.reader)
                .await?
                .map(|r| RdbGroup {
                    uuid: r.get(0),
                    description: r.get(1),
                    ref_url: r.get(2),
                }),
        )
    }

    /// Groups, newest first, filtered by uuid and description (exact or `*` wildcards).
    pub async fn rdb_groups(
        &self,
        uuids: &[String],
        descriptions: &[String],
        descriptions_like: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<Vec<RdbGroup>> {
        let mut qb = QueryBuilder::new("SELECT uuid, description, ref_url FROM rdb_groups WHERE 1");
        if !uuids.is_empty() {
            qb.push(" AND uuid IN (");
            let mut s = qb.separated(", ");
            for u in uuids {
                s.push_bind(u.clone());
            }
            qb.push(")");
        }
        push_exact_or_like(&mut qb, "description", descriptions, descriptions_like);
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        Ok(qb
            .build()
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| RdbGroup {
                uuid: r.get(0),
                description: r.get(1),
                ref_url: r.get(2),
            })
            .collect())
    }
}
