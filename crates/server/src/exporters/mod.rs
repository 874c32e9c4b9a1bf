//! Exporters: deliver finished attempts' results to InfluxDB and to an external
//! ResultsDB from the store's durable outbox.
//!
//! The store appends an outbox event in the same transaction that stores an
//! attempt's results. One background task per configured sink reads the events
//! after its cursor, delivers them, and moves the cursor only after a 2xx: a
//! receiver that is down loses nothing, delivery resumes when it returns, and a
//! coordinator restart continues from the stored cursor.

mod influx;
mod resultsdb;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use testfleet_core::time_fmt::format_millis;
use testfleet_store::{Store, StoreError};
use testfleet_wire::api::{ErrorBody, ExporterStatus, ExportersView};
use tokio::task::JoinHandle;

pub use influx::{InfluxApi, InfluxConfig, influx_body};
pub use resultsdb::ResultsDbReporterConfig;

use crate::Coordinator;

/// Sink names, as stored in the outbox and shown by the API.
pub const INFLUX_SINK: &str = "influxdb";
pub const RESULTSDB_SINK: &str = "resultsdb";

/// The exporters section of the server configuration.
#[derive(Debug, Clone)]
pub struct ExportersConfig {
    pub influxdb: Option<InfluxConfig>,
    pub resultsdb: Option<ResultsDbReporterConfig>,
    /// How often an idle sink looks for new events.
    pub poll_interval: Duration,
    /// First wait after a failed delivery; doubled per failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Timeout of one HTTP request to a receiver.
    pub request_timeout: Duration,
}

impl Default for ExportersConfig {
    fn default() -> ExportersConfig {
        ExportersConfig {
            influxdb: None,
            resultsdb: None,
            poll_interval: Duration::from_millis(200),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the receiver is down, slow, or refused for a reason that
    /// can go away (authentication, a missing database).
    #[error("{0}")]
    Retry(String),
    /// The receiver refused the data itself; retrying cannot help.
    #[error("{0}")]
    Refused(String),
    #[error("failed to read the outbox")]
    Store(#[from] testfleet_store::StoreError),
}

/// Classifies a non-2xx answer: 400 and 422 refuse the data, anything else
/// (401/403/404/408/429/5xx) may pass later.
pub(crate) fn status_error(status: reqwest::StatusCode, body: &str) -> DeliveryError {
    let msg = format!(
        "HTTP {status}: {}",
        body.trim().chars().take(300).collect::<String>()
    );
    if status == reqwest::StatusCode::BAD_REQUEST
        || status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
    {
        DeliveryError::Refused(msg)
    } else {
        DeliveryError::Retry(msg)
    }
}

/// Describes a transport error with its causes (reqwest's own message is terse).
pub(crate) fn transport_error(e: &reqwest::Error) -> DeliveryError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    DeliveryError::Retry(msg)
}

/// What one delivery round achieved.
pub(crate) struct Delivered {
    /// The last outbox event covered.
    pub through: i64,
    pub delivered: i64,
    pub dropped: i64,
}

/// Starts one delivery task per configured sink.
pub fn start(store: Store, config: &ExportersConfig) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    let http = match reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("exporters disabled: failed to build the HTTP client: {e}");
            return handles;
        }
    };
    if let Some(influx) = config.influxdb.clone() {
        let sink = influx::InfluxSink::new(http.clone(), influx);
        handles.push(tokio::spawn(run(
            store.clone(),
            config.clone(),
            INFLUX_SINK,
            move |s, batch| {
                let sink = sink.clone();
                async move { sink.deliver(&s, &batch).await }
            },
        )));
    }
    if let Some(rdb) = config.resultsdb.clone() {
        let sink = resultsdb::ResultsDbSink::new(http, rdb);
        handles.push(tokio::spawn(run(
            store,
            config.clone(),
            RESULTSDB_SINK,
            move |s, batch| {
                let sink = sink.clone();
                async move { sink.deliver(&s, &batch).await }
            },
        )));
    }
    handles
}

/// The delivery loop of one sink: take the pending events, deliver, ack on
/// success, back off on failure.
async fn run<F, Fut>(store: Store, config: ExportersConfig, sink: &'static str, deliver: F)
where
    F: Fn(Store, Vec<testfleet_store::ExportEvent>) -> Fut,
    Fut: std::future::Future<Output = Result<Delivered, DeliveryError>>,
{
    if let Err(e) = store.outbox_register(sink).await {
        tracing::error!(sink, "exporter stopped: {e}");
        return;
    }
    let mut backoff = config.retry_initial;
    loop {
        if store.is_closed() {
            return;
        }
        let batch = match store.outbox_pending(sink, 64).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(sink, "failed to read the outbox: {e}");
                tokio::time::sleep(config.retry_max.min(Duration::from_secs(1))).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(config.poll_interval).await;
            continue;
        }
        let last = batch.last().map_or(0, |e| e.id);
        let outcome = deliver(store.clone(), batch).await;
        let result = match outcome {
            Ok(d) => {
                backoff = config.retry_initial;
                store
                    .outbox_ack(sink, d.through, d.delivered, d.dropped, now())
                    .await
            }
            Err(DeliveryError::Refused(msg)) => {
                // The receiver will never take these: count them, say why, move on.
                tracing::error!(sink, "receiver refused a batch, skipping it: {msg}");
                backoff = config.retry_initial;
                let r = store.outbox_failed(sink, &msg, now()).await;
                r.and(store.outbox_ack(sink, last, 0, 1, now()).await)
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(sink, retry_in = ?backoff, "delivery failed: {msg}");
                let r = store.outbox_failed(sink, &msg, now()).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.retry_max);
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(sink, "failed to record delivery state: {e}");
        }
    }
}

/// Wall-clock time for the delivery records (not lease logic, so no `Clock`).
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `GET /api/v1/exporters`: the outbox state of every configured sink.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/api/v1/exporters", get(status))
        .with_state(coordinator)
}

async fn status(
    State(c): State<Arc<Coordinator>>,
) -> Result<Json<ExportersView>, (axum::http::StatusCode, Json<ErrorBody>)> {
    let view = exporters_view(&c).await.map_err(|e| {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorBody {
                error: format!("failed to read the outbox: {e}"),
                field: None,
                line: None,
                column: None,
            }),
        )
    })?;
    Ok(Json(view))
}

/// The outbox state of every configured sink (`GET /api/v1/exporters` and
/// the dashboard's exporters page).
pub(crate) async fn exporters_view(c: &Coordinator) -> Result<ExportersView, StoreError> {
    let sinks = c.views().outbox_status().await?;
    let cfg = &c.config.exporters;
    let url_of = |name: &str| match name {
        INFLUX_SINK => cfg.influxdb.as_ref().map(|i| i.url.clone()),
        RESULTSDB_SINK => cfg.resultsdb.as_ref().map(|r| r.url.clone()),
        _ => None,
    };
    let exporters = sinks
        .into_iter()
        .map(|s| {
            let url = url_of(&s.name);
            ExporterStatus {
                configured: url.is_some(),
                url,
                pending: s.pending,
                delivered: s.delivered,
                dropped: s.dropped,
                failures: s.failures,
                last_error: s.last_error,
                last_error_at: s.last_error_at.map(format_millis),
                last_success_at: s.last_success_at.map(format_millis),
                name: s.name,
            }
        })
        .collect();
    Ok(ExportersView { exporters })
}
