//! Benchmark analytics over REST (SPEC §11): series and their points, change
//! points per series (incremental, cached), regressions across all series
//! grouped per test with their acknowledgements, comparisons of two sets of
//! jobs, and the closed loop that re-runs both sides of a comparison while a
//! verdict is UNKNOWN.
//!
//! The numbers come from `testfleet_core::analysis` (pure); this module reads
//! the series through [`Views`](crate::views::Views), writes acknowledgements
//! and re-runs through the coordinator's named methods, and turns store rows
//! into the JSON views of `testfleet_wire::analysis`.
//!
//! - `convert`: store rows to wire views (RFC 3339 times);
//! - `cache`: one incremental change-point detector per series, LRU-bounded;
//! - `series`: series, points, changes and acknowledgements of one series;
//! - `regressions`: change points of every series, grouped per test;
//! - `compare`: two sets of jobs, series by series;
//! - `confirm`: the re-run loop of `testfleet compare --confirm`;
//! - `rest` and `openapi`: the routes and their description.

mod cache;
pub(crate) mod compare;
mod confirm;
mod convert;
pub(crate) mod openapi;
mod regressions;
pub(crate) mod rest;
pub(crate) mod series;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use testfleet_core::analysis::changes::ChangeOptions;
use testfleet_core::analysis::compare::CompareOptions;
use testfleet_core::analysis::group::GroupOptions;
use testfleet_store::StoreError;

use crate::coordinator::Coordinator;
use crate::http_error::HttpError;

pub use compare::MAX_JOBS_PER_SIDE;
pub use confirm::{DEFAULT_ROUNDS, MAX_ROUNDS};

/// How long `POST /api/v1/compare` with `confirm` waits for its re-runs, in
/// all rounds together, before it answers with what it has.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Series whose change points stay cached (the least recently used go).
const CACHED_SERIES: usize = 512;

/// The analytics service: the knobs of the analysis and the change cache.
pub struct Analytics {
    coordinator: Arc<Coordinator>,
    cache: cache::ChangeCache,
    changes: ChangeOptions,
    compare: CompareOptions,
    groups: GroupOptions,
    confirm_timeout: Duration,
    /// How often the confirm loop looks at its re-runs.
    confirm_poll: Duration,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("changes", &self.changes)
            .field("compare", &self.compare)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl Analytics {
    /// The service with the documented defaults.
    pub fn new(coordinator: Arc<Coordinator>) -> Analytics {
        Analytics {
            coordinator,
            cache: cache::ChangeCache::new(CACHED_SERIES),
            changes: ChangeOptions::default(),
            compare: CompareOptions::default(),
            groups: GroupOptions::default(),
            confirm_timeout: CONFIRM_TIMEOUT,
            confirm_poll: Duration::from_millis(200),
        }
    }

    fn views(&self) -> &crate::views::Views {
        self.coordinator.views()
    }
}

/// Why an analytics request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A parameter or body that is not what is documented; `param` names it.
    #[error("{param}: {message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// A job of a comparison that does not exist.
    #[error("job {0} not found")]
    UnknownJob(i64),
    /// A CSV series that could not be read.
    #[error("invalid CSV series: {0}")]
    Csv(#[from] testfleet_core::analysis::csv::CsvError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AnalyticsError {
    fn invalid(param: &'static str, message: impl Into<String>) -> AnalyticsError {
        AnalyticsError::Invalid {
            param,
            message: message.into(),
        }
    }
}

impl From<AnalyticsError> for HttpError {
    fn from(e: AnalyticsError) -> HttpError {
        match e {
            AnalyticsError::Invalid { .. } | AnalyticsError::Csv(_) => {
                HttpError::bad_request(e.to_string())
            }
            AnalyticsError::UnknownJob(_) => HttpError::new(StatusCode::NOT_FOUND, e.to_string()),
            AnalyticsError::Store(s) => s.into(),
        }
    }
}

type Result<T> = std::result::Result<T, AnalyticsError>;
