//! The events log over REST (`GET /api/v1/events`, `GET /api/v1/events/{id}`,
//! behind the auth guard like every read) and its retention: a background
//! task deletes events older than `events_retention`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use testfleet_core::time_fmt::{UnixMillis, parse_time_or_age};
use testfleet_store::EventFilter;
use testfleet_wire::events::{EventList, EventOutcome, MAX_EVENT_PAGE};

use crate::coordinator::Coordinator;
use crate::http_error::{ApiPath, ApiQuery, HttpError};

/// The events log's routes, behind the auth guard.
pub fn events_router(c: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/{id}", get(show))
        .method_not_allowed_fallback(crate::http_error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            c.clone(),
            crate::auth::guard,
        ))
        .with_state(c)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    source: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
}

/// `since`: RFC 3339, or an age such as `30m`, `12h`, `7d` or `2w` before `now`.
fn parse_since(raw: &str, now: UnixMillis) -> Result<UnixMillis, HttpError> {
    parse_time_or_age(raw, now).ok_or_else(|| {
        HttpError::bad_request(format!(
            "since `{raw}` is neither an RFC 3339 time nor an age such as `7d`, `12h` or `30m`"
        ))
    })
}

/// `GET /api/v1/events?source=&outcome=&since=&limit=&after=`: newest first.
async fn list(
    State(c): State<Arc<Coordinator>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, HttpError> {
    let outcome = q
        .outcome
        .as_deref()
        .map(|o| {
            o.parse::<EventOutcome>()
                .map_err(|e| HttpError::bad_request(e.to_string()))
        })
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .map(|s| parse_since(s, c.now()))
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_EVENT_PAGE).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "limit {limit} is out of range; use 1 to {MAX_EVENT_PAGE}"
        )));
    }
    if let Some(source) = &q.source {
        source
            .parse::<testfleet_core::trigger::Source>()
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
    }
    let filter = EventFilter {
        source: q.source,
        outcome,
        since,
        after: q.after,
        limit,
    };
    let events = c.views().events(&filter).await?;
    Ok(Json(EventList { events }).into_response())
}

/// `GET /api/v1/events/{id}`: one event with its body.
async fn show(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, HttpError> {
    let id = HttpError::parse_id("event", &id)?;
    Ok(Json(c.views().event(id).await?).into_response())
}

/// Deletes events older than the configured retention, at start and then
/// hourly, until the coordinator is gone.
pub fn start_retention(c: &Arc<Coordinator>) {
    let weak: Weak<Coordinator> = Arc::downgrade(c);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let Some(c) = weak.upgrade() else { break };
            match c.prune_events(c.config.events_retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned the events log"),
                Err(e) => tracing::warn!("failed to prune the events log: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_an_age() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_since("1d", now).unwrap(), now - 86_400_000);
        assert_eq!(parse_since("30m", now).unwrap(), now - 1_800_000);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        for bad in ["", "d", "1y", "-1d", "yesterday", "\u{18}°"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.message().contains("neither an RFC 3339"), "{bad}: {e}");
        }
    }
}
