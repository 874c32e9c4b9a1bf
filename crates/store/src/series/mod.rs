//! Benchmark series: every metric value of a finished attempt keeps its
//! identity (host, test program, function, data tag, metric, unit) and its
//! place in history (sha, branch, integration, time, machine fingerprint).
//!
//! An outbox consumer ([`Store::map_series_pending`], cursor
//! [`SERIES_VIEW`]) maps each finished attempt's metrics into
//! `bench_series` / `bench_points`, so a new store back-fills every stored
//! result and the finish transaction stays as small as it was.
//!
//! The tables (migrations sqlite/0017, postgres/0005):
//!
//! - `bench_series`: one row per [`SeriesKey`]. The host is part of the key,
//!   so a series never mixes machines. The row carries its point count,
//!   first and last time and last value, moved only by points really
//!   inserted, so listing series reads no points.
//! - `bench_points`: one value per (series, attempt, repetition), unique, so
//!   an event mapped twice (a crash between two chunks, two coordinators)
//!   adds nothing the second time. Each point names the hash of its host's
//!   [`MachineInfo`] at mapping time: a change of CPU, compiler or kernel
//!   shows as a new fingerprint inside the same series.
//! - `bench_fingerprints`: what each hash stands for.
//! - `bench_acks`: acknowledgements of a change, from a sha on.
//!
//! `map` is the consumer, `query` the reads, `acks` the acknowledgements.

mod acks;
mod map;
mod query;
#[cfg(test)]
mod tests;

use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::protocol::MachineInfo;

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

/// A stored acknowledgement.
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
