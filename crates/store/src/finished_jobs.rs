//! Finished jobs in the order they finished, for a consumer that follows
//! them with a cursor kept in `export_sinks` (the AMQP publisher of
//! finished jobs).
//!
//! The cursor is a `finished_at` time: every job finished after it and at
//! or before a settle horizon is delivered, then the cursor moves to the
//! last one's time. A page never splits one millisecond's jobs, so the
//! cursor is exact; the horizon (a little before now) leaves time for a
//! finish stamped earlier to commit later. A job queued again and finished
//! anew has a new `finished_at` and is delivered again.

use testfleet_core::time_fmt::UnixMillis;

use crate::db::on_pool;
use crate::{Result, Store};

/// A finished job as the feed lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct FinishedJob {
    pub id: i64,
    pub finished_at: UnixMillis,
}

impl Store {
    /// The cursor named `name`, created at `start` when missing (a new
    /// follower starts now, not at the first job ever finished).
    pub async fn feed_cursor(&self, name: &str, start: UnixMillis) -> Result<UnixMillis> {
        on_pool!(&self.writer, p => sqlx::query(
            "INSERT INTO export_sinks (name, cursor) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(start)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(on_pool!(&self.writer, p => sqlx::query_scalar(
            "SELECT cursor FROM export_sinks WHERE name = $1",
        )
        .bind(name)
        .fetch_one(p)
        .await)?)
    }

    /// Jobs finished after `after` and at or before `until`, by
    /// (`finished_at`, id). About `max` of them: a page that would end inside
    /// one millisecond's jobs ends before them, or takes all of them when
    /// they alone fill it.
    pub async fn jobs_finished_between(
        &self,
        after: UnixMillis,
        until: UnixMillis,
        max: i64,
    ) -> Result<Vec<FinishedJob>> {
        let max = max.max(1);
        let mut jobs: Vec<FinishedJob> = on_pool!(&self.reader, p => sqlx::query_as(
            "SELECT id, finished_at FROM jobs
             WHERE finished_at > $1 AND finished_at <= $2
             ORDER BY finished_at, id LIMIT $3",
        )
        .bind(after)
        .bind(until)
        .bind(max)
        .fetch_all(p)
        .await)?;
        if i64::try_from(jobs.len()).unwrap_or(i64::MAX) < max {
            return Ok(jobs);
        }
        let (Some(first), Some(last)) = (jobs.first().copied(), jobs.last().copied()) else {
            return Ok(jobs);
        };
        if first.finished_at == last.finished_at {
            // One millisecond fills the page: take the whole millisecond.
            return Ok(on_pool!(&self.reader, p => sqlx::query_as(
                "SELECT id, finished_at FROM jobs WHERE finished_at = $1 ORDER BY id",
            )
            .bind(last.finished_at)
            .fetch_all(p)
            .await)?);
        }
        jobs.retain(|j| j.finished_at < last.finished_at);
        Ok(jobs)
    }
}
