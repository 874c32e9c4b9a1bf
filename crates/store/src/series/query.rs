//! Reads of the benchmark series: listing, one series, its points, the
//! points some jobs gave, and fingerprints.

use std::collections::BTreeMap;

use sqlx::QueryBuilder;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;

use super::{Fingerprint, SeriesFilter, SeriesKey, SeriesPoints, StoredPoint, StoredSeries};
use crate::db::on_pool;
use crate::{Missing, Result, Store, StoreError};

/// Most values bound in one `IN (…)` list.
const IN_LIST_MAX: usize = 500;

/// The columns of [`SeriesRow`], for `FROM bench_series s`.
const SERIES_COLUMNS: &str = "s.id, s.host, s.program, s.function, s.data_tag, s.metric, s.unit,
     s.points, s.first_at, s.last_at, s.last_value";

/// The columns of [`PointRow`], for `FROM bench_points p`.
const POINT_COLUMNS: &str = "p.id, p.series_id, p.attempt_id, p.job_id, p.task_id, p.repetition,
     p.value, p.sha, p.branch, p.integration, p.fingerprint, p.at";

#[derive(sqlx::FromRow)]
struct SeriesRow {
    id: i64,
    host: String,
    program: String,
    function: String,
    data_tag: String,
    metric: String,
    unit: String,
    points: i64,
    first_at: UnixMillis,
    last_at: UnixMillis,
    last_value: f64,
}

impl From<SeriesRow> for StoredSeries {
    fn from(r: SeriesRow) -> StoredSeries {
        StoredSeries {
            id: r.id,
            key: SeriesKey {
                host: r.host,
                program: r.program,
                function: r.function,
                data_tag: r.data_tag,
                metric: r.metric,
                unit: r.unit,
            },
            points: r.points,
            first_at: r.first_at,
            last_at: r.last_at,
            last_value: r.last_value,
        }
    }
}

#[derive(sqlx::FromRow)]
struct PointRow {
    id: i64,
    series_id: i64,
    attempt_id: i64,
    job_id: i64,
    task_id: i64,
    repetition: i64,
    value: f64,
    sha: Option<String>,
    branch: Option<String>,
    integration: Option<String>,
    fingerprint: String,
    at: UnixMillis,
}

impl From<PointRow> for StoredPoint {
    fn from(r: PointRow) -> StoredPoint {
        StoredPoint {
            id: r.id,
            series_id: r.series_id,
            attempt_id: r.attempt_id,
            job_id: r.job_id,
            task_id: r.task_id,
            repetition: r.repetition,
            value: r.value,
            sha: r.sha,
            branch: r.branch,
            integration: r.integration,
            fingerprint: r.fingerprint,
            at: r.at,
        }
    }
}

/// A point with the series it belongs to.
#[derive(sqlx::FromRow)]
struct SeriesPointRow {
    #[sqlx(flatten)]
    point: PointRow,
    s_host: String,
    s_program: String,
    s_function: String,
    s_data_tag: String,
    s_metric: String,
    s_unit: String,
    s_points: i64,
    s_first_at: UnixMillis,
    s_last_at: UnixMillis,
    s_last_value: f64,
}

#[derive(sqlx::FromRow)]
struct FingerprintRow {
    hash: String,
    machine: String,
}

/// `LIKE` pattern matching `needle` anywhere, lower-cased, with `%`, `_`
/// and the escape character itself escaped (`ESCAPE '\'`).
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for ch in needle.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// Series matching `filter` (every field narrows), by id; at most
    /// `filter.limit` of them (none when it is not positive). `search` is a
    /// case-insensitive substring of the program, function or data tag
    /// (ASCII case folding on SQLite).
    pub async fn list_series(&self, filter: &SeriesFilter) -> Result<Vec<StoredSeries>> {
        if filter.limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = on_pool!(&self.reader, p => {
            let mut qb = QueryBuilder::new(format!("SELECT {SERIES_COLUMNS} FROM bench_series s WHERE 1 = 1"));
            for (column, value) in [
                ("host", &filter.host),
                ("program", &filter.program),
                ("function", &filter.function),
                ("metric", &filter.metric),
            ] {
                if let Some(value) = value {
                    qb.push(format!(" AND s.{column} = ")).push_bind(value);
                }
            }
            if let Some(search) = &filter.search {
                let pattern = contains_pattern(search);
                qb.push(" AND (LOWER(s.program) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(s.function) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(s.data_tag) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
            if let Some(after) = filter.after {
                qb.push(" AND s.id > ").push_bind(after);
            }
            qb.push(" ORDER BY s.id LIMIT ").push_bind(filter.limit);
            qb.build_query_as::<SeriesRow>().fetch_all(p).await
        })?;
        Ok(rows.into_iter().map(StoredSeries::from).collect())
    }

    /// One series; `NotFound(Missing::Series(id))` when unknown.
    pub async fn series(&self, id: i64) -> Result<StoredSeries> {
        let row = on_pool!(&self.reader, p => sqlx::query_as::<_, SeriesRow>(
            sqlx::AssertSqlSafe(format!("SELECT {SERIES_COLUMNS} FROM bench_series s WHERE s.id = $1")),
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        row.map(StoredSeries::from)
            .ok_or(StoreError::NotFound(Missing::Series(id)))
    }

    /// The newest `limit` points of a series at or after `since`, oldest first
    /// (ordered by time, then point id); none when `limit` is not positive.
    /// `NotFound` for an unknown series.
    pub async fn series_points(
        &self,
        id: i64,
        since: Option<UnixMillis>,
        limit: i64,
    ) -> Result<Vec<StoredPoint>> {
        self.series(id).await?;
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = on_pool!(&self.reader, p => sqlx::query_as::<_, PointRow>(
            sqlx::AssertSqlSafe(format!(
                "SELECT {POINT_COLUMNS} FROM bench_points p
                 WHERE p.series_id = $1 AND p.at >= $2 ORDER BY p.at DESC, p.id DESC LIMIT $3"
            )),
        )
        .bind(id)
        .bind(since.unwrap_or(UnixMillis::MIN))
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().rev().map(StoredPoint::from).collect())
    }

    /// Every series the jobs' attempts gave values to, with those values:
    /// series by id, points by time then id.
    pub async fn job_points(&self, job_ids: &[i64]) -> Result<Vec<SeriesPoints>> {
        let mut by_series: BTreeMap<i64, SeriesPoints> = BTreeMap::new();
        for part in job_ids.chunks(IN_LIST_MAX) {
            let rows = on_pool!(&self.reader, p => {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {POINT_COLUMNS}, s.host AS s_host, s.program AS s_program,
                            s.function AS s_function, s.data_tag AS s_data_tag, s.metric AS s_metric,
                            s.unit AS s_unit, s.points AS s_points, s.first_at AS s_first_at,
                            s.last_at AS s_last_at, s.last_value AS s_last_value
                     FROM bench_points p JOIN bench_series s ON s.id = p.series_id
                     WHERE p.job_id IN ("
                ));
                let mut list = qb.separated(", ");
                for id in part {
                    list.push_bind(*id);
                }
                qb.push(")");
                qb.build_query_as::<SeriesPointRow>().fetch_all(p).await
            })?;
            for r in rows {
                let series = by_series
                    .entry(r.point.series_id)
                    .or_insert_with(|| SeriesPoints {
                        series: StoredSeries {
                            id: r.point.series_id,
                            key: SeriesKey {
                                host: r.s_host,
                                program: r.s_program,
                                function: r.s_function,
                                data_tag: r.s_data_tag,
                                metric: r.s_metric,
                                unit: r.s_unit,
                            },
                            points: r.s_points,
                            first_at: r.s_first_at,
                            last_at: r.s_last_at,
                            last_value: r.s_last_value,
                        },
                        points: Vec::new(),
                    });
                series.points.push(r.point.into());
            }
        }
        let mut out: Vec<SeriesPoints> = by_series.into_values().collect();
        for s in &mut out {
            s.points.sort_by_key(|p| (p.at, p.id));
            s.points.dedup_by_key(|p| p.id);
        }
        Ok(out)
    }

    /// The fingerprints with these hashes, by hash (`unknown` and unknown
    /// hashes have none).
    pub async fn fingerprints(&self, hashes: &[String]) -> Result<Vec<Fingerprint>> {
        let mut out = Vec::new();
        for part in hashes.chunks(IN_LIST_MAX) {
            let rows = on_pool!(&self.reader, p => {
                let mut qb = QueryBuilder::new(
                    "SELECT hash, machine FROM bench_fingerprints WHERE hash IN (",
                );
                let mut list = qb.separated(", ");
                for hash in part {
                    list.push_bind(hash);
                }
                qb.push(")");
                qb.build_query_as::<FingerprintRow>().fetch_all(p).await
            })?;
            for r in rows {
                let machine: MachineInfo = serde_json::from_str(&r.machine)?;
                out.push(Fingerprint {
                    hash: r.hash,
                    machine,
                });
            }
        }
        out.sort_by(|a, b| a.hash.cmp(&b.hash));
        out.dedup_by(|a, b| a.hash == b.hash);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn search_patterns_escape_like_wildcards_and_fold_case() {
        assert_eq!(contains_pattern("QString"), "%qstring%");
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
