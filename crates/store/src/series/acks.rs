//! Acknowledgements: a user's note (and bug link) on the change that starts
//! at a sha in a series. They are kept apart from the points, so an
//! acknowledgement is carried forward however many points follow it.

use sqlx::QueryBuilder;
use testfleet_core::time_fmt::UnixMillis;

use super::{NewAck, StoredAck};
use crate::db::{on_pool, on_tx};
use crate::{Missing, Result, Store, StoreError};

/// Most series ids bound in one `IN (…)` list.
const IN_LIST_MAX: usize = 500;

#[derive(sqlx::FromRow)]
struct AckRow {
    id: i64,
    series_id: i64,
    sha: String,
    note: String,
    bug_url: Option<String>,
    by_user: String,
    created_at: UnixMillis,
}

impl From<AckRow> for StoredAck {
    fn from(r: AckRow) -> StoredAck {
        StoredAck {
            id: r.id,
            series_id: r.series_id,
            sha: r.sha,
            note: r.note,
            bug_url: r.bug_url,
            by: r.by_user,
            created_at: r.created_at,
        }
    }
}

const ACK_COLUMNS: &str = "id, series_id, sha, note, bug_url, by_user, created_at";

impl Store {
    /// Records an acknowledgement; `NotFound` for an unknown series.
    pub async fn add_ack(&self, ack: &NewAck, now: UnixMillis) -> Result<StoredAck> {
        let mut tx = self.writer.begin().await?;
        // The series is checked in the transaction that inserts: series
        // are never deleted, so it cannot go away before the commit.
        let known = on_tx!(&mut tx, c => sqlx::query_scalar::<_, i64>(
            "SELECT id FROM bench_series WHERE id = $1",
        )
        .bind(ack.series_id)
        .fetch_optional(c)
        .await)?;
        if known.is_none() {
            return Err(StoreError::NotFound(Missing::Series(ack.series_id)));
        }
        let row = on_tx!(&mut tx, c => sqlx::query_as::<_, AckRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bench_acks (series_id, sha, note, bug_url, by_user, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ACK_COLUMNS}"
        )))
        .bind(ack.series_id)
        .bind(&ack.sha)
        .bind(&ack.note)
        .bind(&ack.bug_url)
        .bind(&ack.by)
        .bind(now)
        .fetch_one(c)
        .await)?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Acknowledgements of these series (all series when `None`), oldest
    /// first (by time, then id).
    pub async fn acks(&self, series: Option<&[i64]>) -> Result<Vec<StoredAck>> {
        let mut rows: Vec<AckRow> = Vec::new();
        match series {
            None => {
                rows = on_pool!(&self.reader, p => sqlx::query_as::<_, AckRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACK_COLUMNS} FROM bench_acks ORDER BY created_at, id"
                )))
                .fetch_all(p)
                .await)?;
            }
            Some(ids) => {
                for part in ids.chunks(IN_LIST_MAX) {
                    let found = on_pool!(&self.reader, p => {
                        let mut qb = QueryBuilder::new(format!(
                            "SELECT {ACK_COLUMNS} FROM bench_acks WHERE series_id IN ("
                        ));
                        let mut list = qb.separated(", ");
                        for id in part {
                            list.push_bind(*id);
                        }
                        qb.push(")");
                        qb.build_query_as::<AckRow>().fetch_all(p).await
                    })?;
                    rows.extend(found);
                }
                rows.sort_by_key(|r| (r.created_at, r.id));
                rows.dedup_by_key(|r| r.id);
            }
        }
        Ok(rows.into_iter().map(StoredAck::from).collect())
    }
}
