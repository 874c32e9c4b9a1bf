//! The ResultsDB v2.0 model (testcases, groups, results with key/value data)
//! and the mapping of testfleet's results into it.
//!
//! testfleet results are mapped once, when their attempt finishes
//! ([`materialize`], inside `finish_attempt`'s transaction), so listing and
//! filtering them is plain SQL over indexed tables, as in ResultsDB itself.
//! The mapping is documented in docs/exporters.md.

use std::collections::BTreeMap;

use sqlx::{Database, Encode, QueryBuilder, Type};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::results::{Case, CaseOutcome};

use crate::db::{Backend, Tx, on_pool, on_tx};
use crate::{Missing, Result, Store, StoreError};

/// Longest note kept for a mapped result; the full message stays in the attempt's results.
pub(crate) const NOTE_MAX: usize = 1000;

/// Most ids bound in one `IN (…)` list, well under both engines' parameter limits.
const IN_LIST_MAX: usize = 1000;

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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RdbTestcase {
    pub name: String,
    pub ref_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

pub(crate) async fn upsert_testcase(tx: &mut Tx, name: &str, ref_url: Option<&str>) -> Result<()> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO rdb_testcases (name, ref_url) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET ref_url = COALESCE(excluded.ref_url, rdb_testcases.ref_url)",
    )
    .bind(name)
    .bind(ref_url)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub(crate) async fn upsert_group(tx: &mut Tx, g: &RdbGroup) -> Result<()> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO rdb_groups (uuid, description, ref_url) VALUES ($1, $2, $3)
         ON CONFLICT (uuid) DO UPDATE SET
         description = COALESCE(excluded.description, rdb_groups.description),
         ref_url = COALESCE(excluded.ref_url, rdb_groups.ref_url)",
    )
    .bind(&g.uuid)
    .bind(&g.description)
    .bind(&g.ref_url)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub(crate) async fn insert_result(
    tx: &mut Tx,
    new: &NewRdbResult,
    now: UnixMillis,
    attempt_id: Option<i64>,
) -> Result<i64> {
    upsert_testcase(tx, &new.testcase, new.testcase_ref_url.as_deref()).await?;
    let id = on_tx!(tx, c => sqlx::query_scalar::<_, i64>(
        "INSERT INTO rdb_results (testcase, outcome, note, ref_url, submit_time, attempt_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&new.testcase)
    .bind(&new.outcome)
    .bind(&new.note)
    .bind(&new.ref_url)
    .bind(now)
    .bind(attempt_id)
    .fetch_one(c)
    .await)?;
    for g in &new.groups {
        upsert_group(tx, g).await?;
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO rdb_result_groups (result_id, group_uuid) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&g.uuid)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    for (k, v) in &new.data {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO rdb_result_data (result_id, key, value) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(k)
        .bind(v)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(id)
}

/// ResultsDB's `*` wildcard in SQL `LIKE` form. `%` and `_` stay wildcards:
/// ResultsDB hands the pattern to `LIKE` as it is.
fn like_pattern(p: &str) -> String {
    p.replace('*', "%")
}

/// The same pattern in SQLite `GLOB` form: `*` and `%` become `*`, `_`
/// becomes `?`, and GLOB's own `?` and `[` are matched literally.
fn glob_pattern(p: &str) -> String {
    let mut glob = String::with_capacity(p.len());
    for ch in p.chars() {
        match ch {
            '*' | '%' => glob.push('*'),
            '_' => glob.push('?'),
            '?' => glob.push_str("[?]"),
            '[' => glob.push_str("[[]"),
            _ => glob.push(ch),
        }
    }
    glob
}

/// ` OR column` matches the wildcard pattern `p`. Matching is case-sensitive
/// on both backends, as in ResultsDB (which runs on PostgreSQL): SQLite's
/// `LIKE` ignores ASCII case, so SQLite gets the `GLOB` form. `ESCAPE ''`
/// keeps a backslash an ordinary character on PostgreSQL, as it is in GLOB.
/// `column` is a constant of this module, never input.
fn push_wildcard<DB>(qb: &mut QueryBuilder<DB>, backend: Backend, column: &str, p: &str)
where
    DB: Database,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    match backend {
        Backend::Sqlite => {
            qb.push(format!(" OR {column} GLOB "))
                .push_bind(glob_pattern(p));
        }
        Backend::Postgres => {
            qb.push(format!(" OR {column} LIKE "))
                .push_bind(like_pattern(p))
                .push(" ESCAPE ''");
        }
    }
}

/// ` AND (column = any exact value OR column matches any pattern)`; nothing
/// when both lists are empty. `column` is a constant of this module, never input.
fn push_exact_or_like<DB>(
    qb: &mut QueryBuilder<DB>,
    backend: Backend,
    column: &str,
    exact: &[String],
    like: &[String],
) where
    DB: Database,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    if exact.is_empty() && like.is_empty() {
        return;
    }
    qb.push(" AND (FALSE");
    for v in exact {
        qb.push(format!(" OR {column} = ")).push_bind(v.clone());
    }
    for v in like {
        push_wildcard(qb, backend, column, v);
    }
    qb.push(")");
}

fn push_filters<DB>(qb: &mut QueryBuilder<DB>, backend: Backend, q: &RdbQuery, with_outcome: bool)
where
    DB: Database,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
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
    push_exact_or_like(qb, backend, "r.testcase", &q.testcases, &q.testcases_like);
    for f in &q.data {
        qb.push(
            " AND EXISTS (SELECT 1 FROM rdb_result_data d WHERE d.result_id = r.id AND d.key = ",
        )
        .push_bind(f.key.clone())
        .push(" AND (FALSE");
        for v in &f.values {
            if f.like {
                push_wildcard(qb, backend, "d.value", v);
            } else {
                qb.push(" OR d.value = ").push_bind(v.clone());
            }
        }
        qb.push("))");
    }
}

/// `(id, id, …)`.
fn push_id_list<DB>(qb: &mut QueryBuilder<DB>, ids: &[i64])
where
    DB: Database,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    qb.push("(");
    let mut s = qb.separated(", ");
    for id in ids {
        s.push_bind(*id);
    }
    qb.push(")");
}

fn order(q: &RdbQuery) -> &'static str {
    if q.ascending {
        " ORDER BY r.submit_time ASC, r.id ASC"
    } else {
        " ORDER BY r.submit_time DESC, r.id DESC"
    }
}

/// A result's own row, before its groups and data are attached.
#[derive(sqlx::FromRow)]
struct ResultRow {
    id: i64,
    testcase: String,
    testcase_ref_url: Option<String>,
    outcome: String,
    note: Option<String>,
    ref_url: Option<String>,
    submit_time: i64,
}

#[derive(sqlx::FromRow)]
struct GroupLinkRow {
    result_id: i64,
    group_uuid: String,
}

#[derive(sqlx::FromRow)]
struct DataRow {
    result_id: i64,
    key: String,
    value: String,
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
            .ok_or_else(|| StoreError::NotFound(Missing::Result(id)))
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
        let backend = self.reader.backend();
        let ids = on_pool!(&self.reader, p => {
            let mut qb = QueryBuilder::new("SELECT r.id FROM rdb_results r WHERE TRUE");
            push_filters(&mut qb, backend, q, true);
            qb.push(order(q));
            qb.push(" LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            qb.build_query_scalar::<i64>().fetch_all(p).await
        })?;
        self.rdb_load(&ids).await
    }

    /// The newest result per testcase (and per value of each `distinct_on`
    /// data key) among those matching `q`; the outcome filter does not apply,
    /// as in ResultsDB.
    pub async fn rdb_latest(&self, q: &RdbQuery, distinct_on: &[String]) -> Result<Vec<RdbResult>> {
        let backend = self.reader.backend();
        // A key's values joined in the order they were stored.
        let joined_values = match backend {
            Backend::Sqlite => ", (SELECT group_concat(d.value, ',') FROM rdb_result_data d",
            Backend::Postgres => {
                ", (SELECT string_agg(d.value, ',' ORDER BY d.id) FROM rdb_result_data d"
            }
        };
        let ids = on_pool!(&self.reader, p => {
            let mut qb = QueryBuilder::new(
                "SELECT id FROM (SELECT r.id, r.submit_time, ROW_NUMBER() OVER (PARTITION BY r.testcase",
            );
            for key in distinct_on {
                qb.push(joined_values)
                    .push(" WHERE d.result_id = r.id AND d.key = ")
                    .push_bind(key.clone())
                    .push(")");
            }
            qb.push(" ORDER BY r.submit_time DESC, r.id DESC) AS rn FROM rdb_results r WHERE TRUE");
            push_filters(&mut qb, backend, q, false);
            qb.push(") r WHERE rn = 1");
            qb.push(order(q));
            qb.build_query_scalar::<i64>().fetch_all(p).await
        })?;
        self.rdb_load(&ids).await
    }

    /// The results mapped from one attempt, in the order they were mapped.
    pub async fn rdb_attempt_results(&self, attempt_id: i64) -> Result<Vec<RdbResult>> {
        let ids = on_pool!(&self.reader, p => sqlx::query_scalar::<_, i64>(
            "SELECT id FROM rdb_results WHERE attempt_id = $1 ORDER BY id",
        )
        .bind(attempt_id)
        .fetch_all(p)
        .await)?;
        self.rdb_load(&ids).await
    }

    /// Loads results by id, keeping the order of `ids`.
    async fn rdb_load(&self, ids: &[i64]) -> Result<Vec<RdbResult>> {
        // A result's groups and values come in the order they were stored:
        // SQLite's rowid; PostgreSQL's rdb_result_data has an `id` for that,
        // and rdb_result_groups has none, so its groups come sorted by uuid.
        let (groups_order, data_order) = match self.reader.backend() {
            Backend::Sqlite => (" ORDER BY rowid", " ORDER BY rowid"),
            Backend::Postgres => (" ORDER BY id", " ORDER BY id"),
        };
        let mut by_id: BTreeMap<i64, RdbResult> = BTreeMap::new();
        for chunk in ids.chunks(IN_LIST_MAX) {
            let (rows, links, data) = on_pool!(&self.reader, p => {
                let mut qb = QueryBuilder::new(
                    "SELECT r.id, r.testcase, t.ref_url AS testcase_ref_url, r.outcome, r.note,
                            r.ref_url, r.submit_time
                     FROM rdb_results r JOIN rdb_testcases t ON t.name = r.testcase
                     WHERE r.id IN ",
                );
                push_id_list(&mut qb, chunk);
                let rows = qb.build_query_as::<ResultRow>().fetch_all(p).await?;
                let mut qb = QueryBuilder::new(
                    "SELECT result_id, group_uuid FROM rdb_result_groups WHERE result_id IN ",
                );
                push_id_list(&mut qb, chunk);
                qb.push(groups_order);
                let links = qb.build_query_as::<GroupLinkRow>().fetch_all(p).await?;
                let mut qb = QueryBuilder::new(
                    "SELECT result_id, key, value FROM rdb_result_data WHERE result_id IN ",
                );
                push_id_list(&mut qb, chunk);
                qb.push(data_order);
                let data = qb.build_query_as::<DataRow>().fetch_all(p).await?;
                (rows, links, data)
            });
            by_id.extend(rows.into_iter().map(|r| {
                (
                    r.id,
                    RdbResult {
                        id: r.id,
                        testcase: RdbTestcase {
                            name: r.testcase,
                            ref_url: r.testcase_ref_url,
                        },
                        outcome: r.outcome,
                        note: r.note,
                        ref_url: r.ref_url,
                        submit_time: r.submit_time,
                        groups: Vec::new(),
                        data: BTreeMap::new(),
                    },
                )
            }));
            for link in links {
                if let Some(res) = by_id.get_mut(&link.result_id) {
                    res.groups.push(link.group_uuid);
                }
            }
            for d in data {
                if let Some(res) = by_id.get_mut(&d.result_id) {
                    res.data.entry(d.key).or_default().push(d.value);
                }
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
            .ok_or_else(|| StoreError::NotFound(Missing::Testcase(name.to_owned())))
    }

    pub async fn rdb_testcase(&self, name: &str) -> Result<Option<RdbTestcase>> {
        Ok(
            on_pool!(&self.reader, p => sqlx::query_as::<_, RdbTestcase>(
            "SELECT name, ref_url FROM rdb_testcases WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(p)
        .await)?,
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
        let backend = self.reader.backend();
        Ok(on_pool!(&self.reader, p => {
            let mut qb = QueryBuilder::new("SELECT name, ref_url FROM rdb_testcases WHERE TRUE");
            push_exact_or_like(&mut qb, backend, "name", names, like);
            qb.push(" ORDER BY name LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            qb.build_query_as::<RdbTestcase>().fetch_all(p).await
        })?)
    }

    /// Creates a group, or updates the fields given.
    pub async fn rdb_put_group(&self, group: &RdbGroup) -> Result<RdbGroup> {
        let mut tx = self.writer.begin().await?;
        upsert_group(&mut tx, group).await?;
        tx.commit().await?;
        self.rdb_group(&group.uuid)
            .await?
            .ok_or_else(|| StoreError::NotFound(Missing::Group(group.uuid.to_string())))
    }

    pub async fn rdb_group(&self, uuid: &str) -> Result<Option<RdbGroup>> {
        Ok(on_pool!(&self.reader, p => sqlx::query_as::<_, RdbGroup>(
            "SELECT uuid, description, ref_url FROM rdb_groups WHERE uuid = $1",
        )
        .bind(uuid)
        .fetch_optional(p)
        .await)?)
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
        let backend = self.reader.backend();
        Ok(on_pool!(&self.reader, p => {
            let mut qb =
                QueryBuilder::new("SELECT uuid, description, ref_url FROM rdb_groups WHERE TRUE");
            if !uuids.is_empty() {
                qb.push(" AND uuid IN (");
                let mut s = qb.separated(", ");
                for u in uuids {
                    s.push_bind(u.clone());
                }
                qb.push(")");
            }
            push_exact_or_like(&mut qb, backend, "description", descriptions, descriptions_like);
            qb.push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            qb.build_query_as::<RdbGroup>().fetch_all(p).await
        })?)
    }
}
