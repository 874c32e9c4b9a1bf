//! The series consumer of the outbox: each finished attempt's metric values
//! become points of their series.
//!
//! The consumer reads the events after its cursor ([`SERIES_VIEW`] in
//! `export_sinks`), takes each attempt's context (results, host, machine,
//! integration) through the same read as the exporters
//! ([`Store::attempt_context`]), outside any write transaction, and writes
//! its points in chunks: [`SQLITE_CHUNK`] points per transaction on SQLite,
//! whose one writer connection also serves the claims' group commit, with a
//! pause three times as long as the chunk took after each, so a 10,000-case
//! report with benchmarks in every case never holds the writer for long;
//! [`POSTGRES_CHUNK`] on PostgreSQL. The event's last chunk moves the
//! cursor. Events without metric values move the cursor in one small
//! transaction (none at all when nothing is pending).
//!
//! Mapping is idempotent: a point is unique per (series, attempt,
//! repetition) and inserted with `ON CONFLICT DO NOTHING … RETURNING`, and
//! the series' counters move by the rows that came back. An event whose
//! chunks were interrupted (a crash, a failed transaction) is mapped again
//! from the start, and only its missing points are added. Every write
//! transaction first takes the cursor's row (`FOR UPDATE` on PostgreSQL), so
//! coordinators sharing a database take turns.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest as _, Sha256};
use sqlx::QueryBuilder;
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;

use super::{SERIES_VIEW, SeriesKey};
use crate::db::{Backend, Tx, on_pool, on_tx};
use crate::views::AttemptFacts;
use crate::{AttemptContext, Result, Store, StoreError};

/// Points per transaction on SQLite (a few milliseconds of the writer).
pub(crate) const SQLITE_CHUNK: usize = 200;

/// Points per transaction on PostgreSQL, where writers do not queue behind
/// one connection.
pub(crate) const POSTGRES_CHUNK: usize = 5_000;

/// After each SQLite transaction the mapping sleeps this many times as long
/// as it took: claims and finishes keep at least three quarters of the
/// writer's time.
const SQLITE_IDLE_FACTOR: u32 = 3;

/// Rows per multi-row statement (at most 11 parameters each).
const ROWS_PER_STATEMENT: usize = 100;

/// The fingerprint of a host without a reported [`MachineInfo`].
pub(crate) const UNKNOWN_FINGERPRINT: &str = "unknown";

/// The fingerprint of a machine: the first 16 hex digits of the SHA-256 of
/// its JSON (fields in declaration order), with that JSON; `unknown` (and no
/// JSON) when the host never reported one.
pub(crate) fn fingerprint_of(machine: Option<&MachineInfo>) -> Result<(String, Option<String>)> {
    let Some(machine) = machine else {
        return Ok((UNKNOWN_FINGERPRINT.to_owned(), None));
    };
    let json = serde_json::to_string(machine)?;
    let digest = Sha256::digest(json.as_bytes());
    let mut hash = hex::encode(digest);
    hash.truncate(16);
    Ok((hash, Some(json)))
}

/// One value to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewPoint {
    pub key: SeriesKey,
    pub attempt_id: i64,
    pub job_id: i64,
    pub task_id: i64,
    pub repetition: i64,
    pub value: f64,
    pub sha: Option<String>,
    pub branch: Option<String>,
    pub integration: Option<String>,
    pub fingerprint: String,
    pub at: UnixMillis,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The points of one attempt: one per metric of every case of every result
/// set. Values that are not finite (NaN, infinities) are left out: they
/// cannot be plotted or compared, and SQLite stores NaN as NULL.
pub(super) fn points_of(
    ctx: &AttemptContext,
    facts: &AttemptFacts,
    fingerprint: &str,
) -> Vec<NewPoint> {
    let integration = facts.integration.as_ref();
    let at = integration
        .and_then(|i| i.timestamp)
        .map(|t| t.0)
        .or(facts.finished_at)
        .unwrap_or(ctx.integration_timestamp);
    let sha = non_empty(&ctx.sha);
    let branch = non_empty(&ctx.branch);
    let integration = integration.and_then(|i| non_empty(&i.id));
    let mut points = Vec::new();
    for results in &ctx.results {
        for suite in &results.suites {
            for case in &suite.cases {
                for metric in case.metrics.iter().filter(|m| m.value.is_finite()) {
                    points.push(NewPoint {
                        key: SeriesKey {
                            host: ctx.agent.clone(),
                            program: suite.name.clone(),
                            function: case.name.clone(),
                            data_tag: case.data_tag.clone().unwrap_or_default(),
                            metric: metric.name.clone(),
                            unit: metric.unit.clone(),
                        },
                        attempt_id: ctx.attempt_id,
                        job_id: ctx.job_id,
                        task_id: facts.task_id,
                        repetition: i64::from(results.repetition),
                        value: metric.value,
                        sha: sha.clone(),
                        branch: branch.clone(),
                        integration: integration.clone(),
                        fingerprint: fingerprint.to_owned(),
                        at,
                    });
                }
            }
        }
    }
    points
}

/// An event after the series cursor.
#[derive(sqlx::FromRow)]
struct PendingEvent {
    id: i64,
    attempt_id: i64,
    created_at: UnixMillis,
}

/// A series' id by its key.
#[derive(sqlx::FromRow)]
struct SeriesIdRow {
    id: i64,
    host: String,
    program: String,
    function: String,
    data_tag: String,
    metric: String,
    unit: String,
}

/// A point the insert really added.
#[derive(sqlx::FromRow)]
struct InsertedPoint {
    id: i64,
    series_id: i64,
    value: f64,
    at: UnixMillis,
}

/// How one chunk's inserted points move a series' counters.
struct SeriesDelta {
    added: i64,
    first_at: UnixMillis,
    /// (time, point id) of the newest inserted point, and its value.
    last: (UnixMillis, i64),
    last_value: f64,
}

/// Takes the series cursor's row for this transaction, creating it when
/// missing; on PostgreSQL the row stays locked until the transaction ends.
async fn lock_cursor(tx: &mut Tx) -> Result<()> {
    on_tx!(tx, c => sqlx::query("INSERT INTO export_sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(SERIES_VIEW)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, c => sqlx::query_scalar::<_, i64>(
            "SELECT cursor FROM export_sinks WHERE name = $1 FOR UPDATE",
        )
        .bind(SERIES_VIEW)
        .fetch_one(c)
        .await)?;
    }
    Ok(())
}

/// Moves the series cursor past event `id` (created at `at`); never back.
async fn move_cursor(tx: &mut Tx, id: i64, at: UnixMillis) -> Result<()> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE export_sinks SET cursor = CASE WHEN cursor > $1 THEN cursor ELSE $1 END,
         last_success_at = $2 WHERE name = $3",
    )
    .bind(id)
    .bind(at)
    .bind(SERIES_VIEW)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records what a fingerprint hash stands for.
async fn upsert_fingerprint(tx: &mut Tx, hash: &str, machine: &str) -> Result<()> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO bench_fingerprints (hash, machine) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash)
    .bind(machine)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The ids of the series of `points`, creating the missing series (with no
/// points yet: [`add_points`] moves their counters).
async fn series_ids(tx: &mut Tx, points: &[NewPoint]) -> Result<HashMap<SeriesKey, i64>> {
    // One row per key (PostgreSQL refuses to touch a row twice in one
    // statement), seeded with its first point; new series get their ids in
    // the order the report names them.
    let mut seen: HashSet<&SeriesKey> = HashSet::new();
    let seeds: Vec<(&SeriesKey, &NewPoint)> = points
        .iter()
        .filter(|p| seen.insert(&p.key))
        .map(|p| (&p.key, p))
        .collect();
    let mut ids = HashMap::with_capacity(seeds.len());
    for part in seeds.chunks(ROWS_PER_STATEMENT) {
        on_tx!(tx, c => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO bench_series (host, program, function, data_tag, metric, unit, points, first_at, last_at, last_value) ",
            );
            qb.push_values(part, |mut b, (k, p)| {
                b.push_bind(&k.host)
                    .push_bind(&k.program)
                    .push_bind(&k.function)
                    .push_bind(&k.data_tag)
                    .push_bind(&k.metric)
                    .push_bind(&k.unit)
                    .push_bind(0_i64)
                    .push_bind(p.at)
                    .push_bind(p.at)
                    .push_bind(p.value);
            });
            qb.push(" ON CONFLICT (host, program, function, data_tag, metric, unit) DO NOTHING");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
        let rows = on_tx!(tx, c => {
            let mut qb = QueryBuilder::new(
                "SELECT s.id, s.host, s.program, s.function, s.data_tag, s.metric, s.unit
                 FROM bench_series s JOIN (",
            );
            qb.push_values(part, |mut b, (k, _)| {
                b.push_bind(&k.host)
                    .push_bind(&k.program)
                    .push_bind(&k.function)
                    .push_bind(&k.data_tag)
                    .push_bind(&k.metric)
                    .push_bind(&k.unit);
            });
            qb.push(
                ") AS v ON s.host = v.column1 AND s.program = v.column2 AND s.function = v.column3
                 AND s.data_tag = v.column4 AND s.metric = v.column5 AND s.unit = v.column6",
            );
            qb.build_query_as::<SeriesIdRow>().fetch_all(c).await
        })?;
        for r in rows {
            let key = SeriesKey {
                host: r.host,
                program: r.program,
                function: r.function,
                data_tag: r.data_tag,
                metric: r.metric,
                unit: r.unit,
            };
            ids.insert(key, r.id);
        }
    }
    Ok(ids)
}

/// Inserts `points` (those already stored are left alone) and moves the
/// counters of their series by what was really inserted.
pub(super) async fn add_points(tx: &mut Tx, points: &[NewPoint]) -> Result<()> {
    let ids = series_ids(tx, points).await?;
    let mut rows = Vec::with_capacity(points.len());
    for p in points {
        let id = ids.get(&p.key).copied().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "series {}/{}/{} of host {} was created but is not found",
                p.key.program, p.key.function, p.key.metric, p.key.host
            ))
        })?;
        rows.push((id, p));
    }
    let mut deltas: BTreeMap<i64, SeriesDelta> = BTreeMap::new();
    for part in rows.chunks(ROWS_PER_STATEMENT) {
        let inserted = on_tx!(tx, c => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO bench_points (series_id, attempt_id, job_id, task_id, repetition, value, sha, branch, integration, fingerprint, at) ",
            );
            qb.push_values(part, |mut b, (id, p)| {
                b.push_bind(*id)
                    .push_bind(p.attempt_id)
                    .push_bind(p.job_id)
                    .push_bind(p.task_id)
                    .push_bind(p.repetition)
                    .push_bind(p.value)
                    .push_bind(&p.sha)
                    .push_bind(&p.branch)
                    .push_bind(&p.integration)
                    .push_bind(&p.fingerprint)
                    .push_bind(p.at);
            });
            qb.push(
                " ON CONFLICT (series_id, attempt_id, repetition) DO NOTHING
                 RETURNING id, series_id, value, at",
            );
            qb.build_query_as::<InsertedPoint>().fetch_all(c).await
        })?;
        for p in inserted {
            let d = deltas.entry(p.series_id).or_insert(SeriesDelta {
                added: 0,
                first_at: p.at,
                last: (p.at, p.id),
                last_value: p.value,
            });
            d.added += 1;
            d.first_at = d.first_at.min(p.at);
            if (p.at, p.id) > d.last {
                d.last = (p.at, p.id);
                d.last_value = p.value;
            }
        }
    }
    let deltas: Vec<(i64, SeriesDelta)> = deltas.into_iter().collect();
    for part in deltas.chunks(ROWS_PER_STATEMENT) {
        // Every right-hand side reads the row as it was: a point at the same
        // time as the last one is newer (a larger id), so its value wins.
        on_tx!(tx, c => {
            let mut qb = QueryBuilder::new(
                "UPDATE bench_series SET points = bench_series.points + v.column2,
                 first_at = CASE WHEN bench_series.first_at < v.column3 THEN bench_series.first_at ELSE v.column3 END,
                 last_at = CASE WHEN bench_series.last_at > v.column4 THEN bench_series.last_at ELSE v.column4 END,
                 last_value = CASE WHEN v.column4 >= bench_series.last_at THEN v.column5 ELSE bench_series.last_value END
                 FROM (",
            );
            qb.push_values(part, |mut b, (id, d)| {
                b.push_bind(*id)
                    .push_bind(d.added)
                    .push_bind(d.first_at)
                    .push_bind(d.last.0)
                    .push_bind(d.last_value);
            });
            qb.push(") AS v WHERE bench_series.id = v.column1");
            qb.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

impl Store {
    /// Maps the benchmark values of up to `max` outbox events after the
    /// series cursor; returns how many events were mapped (0: caught up).
    pub async fn map_series_pending(&self, max: i64) -> Result<usize> {
        let events = on_pool!(&self.reader, p => sqlx::query_as::<_, PendingEvent>(
            "SELECT e.id, e.attempt_id, e.created_at FROM export_events e
             WHERE e.id > COALESCE((SELECT cursor FROM export_sinks WHERE name = $1), 0)
             ORDER BY e.id LIMIT $2",
        )
        .bind(SERIES_VIEW)
        .bind(max.max(0))
        .fetch_all(p)
        .await)?;
        // The last event without values whose cursor move is still owed.
        let mut owed: Option<&PendingEvent> = None;
        for event in &events {
            let (ctx, facts) = self.attempt_context_facts(event.attempt_id).await?;
            let (hash, machine) = fingerprint_of(ctx.machine.as_ref())?;
            let points = points_of(&ctx, &facts, &hash);
            if points.is_empty() {
                owed = Some(event);
                continue;
            }
            self.map_event(event, &points, &hash, machine.as_deref())
                .await?;
            owed = None;
        }
        if let Some(event) = owed {
            let mut tx = self.writer.begin().await?;
            lock_cursor(&mut tx).await?;
            move_cursor(&mut tx, event.id, event.created_at).await?;
            tx.commit().await?;
        }
        Ok(events.len())
    }

    /// Writes one event's points in chunks; the last chunk moves the cursor.
    async fn map_event(
        &self,
        event: &PendingEvent,
        points: &[NewPoint],
        hash: &str,
        machine: Option<&str>,
    ) -> Result<()> {
        let backend = self.writer.backend();
        let chunk = match backend {
            Backend::Sqlite => SQLITE_CHUNK,
            Backend::Postgres => POSTGRES_CHUNK,
        };
        let mut chunks = points.chunks(chunk).peekable();
        let mut first = true;
        while let Some(part) = chunks.next() {
            let started = std::time::Instant::now();
            let mut tx = self.writer.begin().await?;
            lock_cursor(&mut tx).await?;
            if let (true, Some(machine)) = (first, machine) {
                upsert_fingerprint(&mut tx, hash, machine).await?;
            }
            add_points(&mut tx, part).await?;
            if chunks.peek().is_none() {
                move_cursor(&mut tx, event.id, event.created_at).await?;
            }
            tx.commit().await?;
            first = false;
            if backend == Backend::Sqlite {
                // Leave the writer to the claims' group commit for a while.
                tokio::time::sleep(started.elapsed() * SQLITE_IDLE_FACTOR).await;
            }
        }
        Ok(())
    }

    /// True when every committed event's values are in the series tables.
    pub async fn series_caught_up(&self) -> Result<bool> {
        Ok(on_pool!(&self.reader, p => sqlx::query_scalar::<_, bool>(
            "SELECT COALESCE((SELECT MAX(id) FROM export_events), 0)
                    <= COALESCE((SELECT cursor FROM export_sinks WHERE name = $1), 0)",
        )
        .bind(SERIES_VIEW)
        .fetch_one(p)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testfleet_core::job::IntegrationSpec;
    use testfleet_wire::results::{Case, Metric, Results, Suite};

    fn metric(name: &str, value: f64) -> Metric {
        Metric {
            name: name.into(),
            unit: "msecs".into(),
            value,
            total: None,
            iterations: None,
            variance: None,
        }
    }

    fn context(results: Vec<Results>) -> AttemptContext {
        AttemptContext {
            attempt_id: 7,
            agent: "host-a".into(),
            job_id: 3,
            task_name: "bench".into(),
            integration_id: "tf-3".into(),
            integration_timestamp: 1_000,
            branch: String::new(),
            sha: String::new(),
            machine: None,
            results,
        }
    }

    #[test]
    fn fingerprints_are_16_hex_digits_of_the_machine_and_unknown_without_one() {
        let m = MachineInfo {
            cpu_model: "Xeon".into(),
            ..MachineInfo::default()
        };
        let (a, json) = fingerprint_of(Some(&m)).unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            json.as_deref()
                .map(serde_json::from_str::<MachineInfo>)
                .unwrap()
                .unwrap(),
            m
        );
        let other = MachineInfo {
            compiler: "gcc 13".into(),
            ..m.clone()
        };
        assert_ne!(fingerprint_of(Some(&other)).unwrap().0, a);
        assert_eq!(fingerprint_of(Some(&m)).unwrap().0, a);
        assert_eq!(fingerprint_of(None).unwrap(), ("unknown".to_owned(), None));
    }

    #[test]
    fn points_take_the_finish_time_without_an_integration_and_skip_non_finite_values() {
        let mut case = Case::new("bench", Some("tag".into()));
        case.metrics = vec![
            metric("a", 1.5),
            metric("nan", f64::NAN),
            metric("inf", f64::INFINITY),
        ];
        let ctx = context(vec![Results {
            suites: vec![Suite {
                name: "tst_x".into(),
                cases: vec![case],
                ..Suite::default()
            }],
            repetition: 2,
            ..Results::default()
        }]);
        let facts = AttemptFacts {
            task_id: 5,
            finished_at: Some(9_000),
            integration: None,
        };
        let points = points_of(&ctx, &facts, "fp");
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(
            (
                p.key.data_tag.as_str(),
                p.repetition,
                p.at,
                p.task_id,
                p.value
            ),
            ("tag", 2, 9_000, 5, 1.5)
        );
        assert_eq!(
            (p.sha.clone(), p.branch.clone(), p.integration.clone()),
            (None, None, None)
        );
        let facts = AttemptFacts {
            integration: Some(IntegrationSpec {
                id: "42".into(),
                timestamp: None,
                branch: None,
                sha: None,
                url: None,
                data: Vec::new(),
            }),
            ..facts
        };
        let points = points_of(&ctx, &facts, "fp");
        assert_eq!(
            (points[0].integration.as_deref(), points[0].at),
            (Some("42"), 9_000)
        );
    }
}
