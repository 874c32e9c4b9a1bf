//! Benchmark series: every metric value of a finished attempt keeps its
//! identity (host, test program, function, data tag, metric, unit) and its
//! place in history (sha, branch, integration, time, machine fingerprint).
//!
//! An outbox consumer ([`Store::map_series_pending`], cursor
//! [`SERIES_VIEW`]) maps each finished attempt's metrics into
//! `bench_series` / `bench_points`, so a new store back-fills every stored
//! result and the finish transaction stays as small as it was.

use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;

use crate::{Result, Store};

/// The cursor of the outbox consumer that maps benchmark values into series.
/// `GET /api/v1/exporters` does not list it.
pub const SERIES_VIEW: &str = "tf:series";

/// What a series is: one metric of one benchmark on one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub host: String,
    pub program: String,
    pub function: String,
    /// `""` when the benchmark has no data tag.
    pub data_tag: String,
    pub metric: String,
    pub unit: String,
}

/// A stored series with a summary of its points.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub id: i64,
    pub key: SeriesKey,
    pub points: i64,
    pub first_at: UnixMillis,
    pub last_at: UnixMillis,
    pub last_value: f64,
}

/// Which series `list_series` returns; every field narrows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFilter {
    pub host: Option<String>,
    pub program: Option<String>,
    pub function: Option<String>,
    pub metric: Option<String>,
    /// Substring of program, function or data tag.
    pub search: Option<String>,
    /// Series with an id above this (paging).
    pub after: Option<i64>,
    pub limit: i64,
}

/// One value of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: i64,
    pub series_id: i64,
    pub attempt_id: i64,
    pub job_id: i64,
    pub task_id: i64,
    pub repetition: i64,
    pub value: f64,
    pub sha: Option<String>,
    pub branch: Option<String>,
    pub integration: Option<String>,
    /// Hash of the host's [`MachineInfo`] when the value was mapped.
    pub fingerprint: String,
    /// The integration's timestamp, else the attempt's finish time.
    pub at: UnixMillis,
}

/// A series with the points one job (or set of jobs) gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoints {
    pub series: StoredSeries,
    pub points: Vec<StoredPoint>,
}

/// A machine fingerprint: its hash and what it hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub hash: String,
    pub machine: MachineInfo,
}

/// An acknowledgement of the change that starts at `sha` in a series.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAck {
    pub series_id: i64,
    pub sha: String,
    pub note: String,
    pub bug_url: Option<String>,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredAck {
    pub id: i64,
    pub series_id: i64,
    pub sha: String,
    pub note: String,
    pub bug_url: Option<String>,
    pub by: String,
    pub created_at: UnixMillis,
}

impl Store {
    /// Maps the benchmark values of up to `max` outbox events after the
    /// series cursor; returns how many events were mapped (0: caught up).
    pub async fn map_series_pending(&self, max: i64) -> Result<usize> {
        let _ = max;
        todo!("helper: series mapping")
    }

    /// True when every committed event's values are in the series tables.
    pub async fn series_caught_up(&self) -> Result<bool> {
        todo!("helper")
    }

    /// Series matching `filter`, by id.
    pub async fn list_series(&self, filter: &SeriesFilter) -> Result<Vec<StoredSeries>> {
        let _ = filter;
        todo!("helper")
    }

    /// One series; `NotFound(Missing::Series(id))` when unknown.
    pub async fn series(&self, id: i64) -> Result<StoredSeries> {
        let _ = id;
        todo!("helper")
    }

    /// The newest `limit` points of a series at or after `since`, oldest first
    /// (ordered by time, then point id).
    pub async fn series_points(
        &self,
        id: i64,
        since: Option<UnixMillis>,
        limit: i64,
    ) -> Result<Vec<StoredPoint>> {
        let _ = (id, since, limit);
        todo!("helper")
    }

    /// Every series the jobs' attempts gave values to, with those values.
    pub async fn job_points(&self, job_ids: &[i64]) -> Result<Vec<SeriesPoints>> {
        let _ = job_ids;
        todo!("helper")
    }

    /// The fingerprints with these hashes.
    pub async fn fingerprints(&self, hashes: &[String]) -> Result<Vec<Fingerprint>> {
        let _ = hashes;
        todo!("helper")
    }

    /// Records an acknowledgement; `NotFound` for an unknown series.
    pub async fn add_ack(&self, ack: &NewAck, now: UnixMillis) -> Result<StoredAck> {
        let _ = (ack, now);
        todo!("helper")
    }

    /// Acknowledgements of these series (all series when `None`), oldest first.
    pub async fn acks(&self, series: Option<&[i64]>) -> Result<Vec<StoredAck>> {
        let _ = series;
        todo!("helper")
    }
}
