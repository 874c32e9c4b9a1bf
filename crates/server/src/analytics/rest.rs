//! The analytics routes under `/api/v1` (docs/api.md, "Benchmark
//! analytics"): series, points, change points, acknowledgements,
//! regressions and comparisons. Reads are open unless configured otherwise;
//! acknowledging and comparing with confirmation are writes (the auth guard
//! asks for an identity, and they are audited).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use testfleet_core::analysis::csv::{CsvKey, CsvSeries, parse_csv_series};
use testfleet_core::time_fmt::{UnixMillis, parse_time_or_age};
use testfleet_wire::analysis::{AckRequest, CompareRequest};

use super::series::{DEFAULT_POINTS, MAX_POINTS, MAX_SERIES_PAGE, SeriesQuery};
use super::{Analytics, AnalyticsError};
use crate::auth::Identity;
use crate::http_error::{ApiBytes, ApiJson, ApiPath, ApiQuery, HttpError, method_not_allowed};

type ApiResult<T> = Result<T, HttpError>;

/// Groups `GET /api/v1/regressions` answers with when not told, and at most.
const DEFAULT_GROUPS: i64 = 100;
const MAX_GROUPS: i64 = 1_000;
/// Series a page holds when not told.
const DEFAULT_SERIES_PAGE: i64 = 100;

/// The analytics routes, behind the auth guard. `analytics` is shared with
/// the dashboard (one change-point cache).
pub fn router(analytics: Arc<Analytics>) -> Router {
    let coordinator = analytics.coordinator.clone();
    let limit = coordinator.config.max_body_bytes;
    Router::new()
        .route("/api/v1/series", get(list_series))
        .route("/api/v1/series/{id}", get(show_series))
        .route("/api/v1/series/{id}/points", get(series_points))
        .route("/api/v1/series/{id}/changes", get(series_changes))
        .route("/api/v1/series/{id}/acks", post(add_ack).get(list_acks))
        .route("/api/v1/regressions", get(regressions))
        .route("/api/v1/compare", get(compare).post(compare_post))
        .route("/api/v1/analysis/changes", post(csv_changes))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            coordinator,
            crate::auth::guard,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(analytics)
}

type St = State<Arc<Analytics>>;

fn series_id(raw: &str) -> ApiResult<i64> {
    HttpError::parse_id("series", raw)
}

/// `limit` within `1..=max`, `default` when absent.
fn limit(raw: Option<i64>, default: i64, max: i64) -> Result<i64, AnalyticsError> {
    let n = raw.unwrap_or(default);
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(AnalyticsError::invalid(
            "limit",
            format!("{n} is out of range; use 1 to {max}"),
        ))
    }
}

/// `since`: RFC 3339, or an age such as `30m`, `12h`, `7d` or `2w` before `now`.
pub(super) fn parse_since(raw: &str, now: UnixMillis) -> Result<UnixMillis, AnalyticsError> {
    parse_time_or_age(raw, now).ok_or_else(|| {
        AnalyticsError::invalid(
            "since",
            format!("`{raw}` is neither an RFC 3339 time nor an age such as `7d`, `12h` or `30m`"),
        )
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    host: Option<String>,
    program: Option<String>,
    function: Option<String>,
    metric: Option<String>,
    search: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/series`: a page of series in id order.
async fn list_series(State(a): St, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Response> {
    let limit = limit(q.limit, DEFAULT_SERIES_PAGE, MAX_SERIES_PAGE)?;
    if let Some(after) = q.after.filter(|a| *a < 0) {
        return Err(AnalyticsError::invalid(
            "after",
            format!("{after} is not a series id; use the previous page's `next_after`, or 0"),
        )
        .into());
    }
    let query = SeriesQuery {
        host: q.host,
        program: q.program,
        function: q.function,
        metric: q.metric,
        search: q.search.filter(|s| !s.is_empty()),
        after: q.after,
        limit,
    };
    Ok(Json(a.list_series(query).await?).into_response())
}

async fn show_series(State(a): St, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    Ok(Json(a.series_view(series_id(&id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct PointsQuery {
    since: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/series/{id}/points?since=&limit=`.
async fn series_points(
    State(a): St,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PointsQuery>,
) -> ApiResult<Response> {
    let id = series_id(&id)?;
    let limit = limit(q.limit, DEFAULT_POINTS, MAX_POINTS)?;
    let now = a.coordinator.now();
    let since = q
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()?;
    Ok(Json(a.points(id, since, limit).await?).into_response())
}

async fn series_changes(State(a): St, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    Ok(Json(a.changes(series_id(&id)?).await?).into_response())
}

/// `POST /api/v1/series/{id}/acks`: acknowledges the change starting at a sha.
async fn add_ack(
    State(a): St,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<Response> {
    let id = series_id(&id)?;
    let view = a.add_ack(id, req, who.actor()).await?;
    let detail = serde_json::json!({"sha": view.sha, "ack": view.id});
    a.coordinator
        .audit(&who, "ack", Some(&format!("series {id}")), Some(&detail))
        .await;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_acks(State(a): St, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    Ok(Json(a.acks(series_id(&id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct RegressionsQuery {
    since: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/regressions?since=RFC3339|7d&limit=`.
async fn regressions(State(a): St, ApiQuery(q): ApiQuery<RegressionsQuery>) -> ApiResult<Response> {
    let limit = limit(q.limit, DEFAULT_GROUPS, MAX_GROUPS)?;
    let now = a.coordinator.now();
    let since = q
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(Json(a.regressions(since, limit).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct CompareQuery {
    baseline: Option<String>,
    contender: Option<String>,
}

/// `GET /api/v1/compare?baseline=1,2&contender=3`.
async fn compare(State(a): St, ApiQuery(q): ApiQuery<CompareQuery>) -> ApiResult<Response> {
    let side = |param: &'static str, raw: Option<String>| {
        let raw = raw.ok_or_else(|| {
            AnalyticsError::invalid(param, "missing; give job ids separated by commas")
        })?;
        super::compare::parse_ids(param, &raw)
    };
    let baseline = side("baseline", q.baseline)?;
    let contender = side("contender", q.contender)?;
    Ok(Json(a.compare(&baseline, &contender).await?).into_response())
}

/// `POST /api/v1/compare`: with `confirm`, re-runs both sides of UNKNOWN
/// rows before answering (up to `max_rounds` rounds, 30 minutes in all).
async fn compare_post(
    State(a): St,
    Extension(who): Extension<Identity>,
    ApiJson(req): ApiJson<CompareRequest>,
) -> ApiResult<Response> {
    let (view, confirmed) = a.compare_request(&req).await?;
    if !confirmed.tasks.is_empty() {
        let detail = serde_json::json!({
            "baseline": view.baseline_jobs, "contender": view.contender_jobs,
            "rounds": view.rounds, "tasks": confirmed.tasks, "timed_out": confirmed.timed_out,
        });
        a.coordinator
            .audit(&who, "confirm", Some("compare"), Some(&detail))
            .await;
    }
    Ok(Json(view).into_response())
}

/// `POST /api/v1/analysis/changes`: the change points of a series sent as
/// CSV (`index,value`, `time,value` or `value`) or as a JSON array of numbers.
async fn csv_changes(
    State(a): St,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(&body)
        .map_err(|_| AnalyticsError::invalid("body", "the series is not valid UTF-8"))?;
    let is_json = content_type.contains("json")
        || (!content_type.contains("csv") && text.trim_start().starts_with('['));
    let series = if is_json {
        json_series(text)?
    } else {
        parse_csv_series(text).map_err(AnalyticsError::from)?
    };
    Ok(Json(a.changes_of(&series)).into_response())
}

/// A JSON array of finite numbers.
fn json_series(text: &str) -> ApiResult<CsvSeries> {
    let values: Vec<f64> = serde_json::from_str(text).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        HttpError::new(
            status,
            format!("body: expected a JSON array of numbers: {e}"),
        )
    })?;
    if values.is_empty() {
        return Err(AnalyticsError::invalid("body", "the series has no values").into());
    }
    if values.len() > testfleet_core::analysis::csv::MAX_POINTS {
        return Err(AnalyticsError::invalid(
            "body",
            format!(
                "more than {} values",
                testfleet_core::analysis::csv::MAX_POINTS
            ),
        )
        .into());
    }
    Ok(CsvSeries {
        key: CsvKey::None,
        points: values.into_iter().map(|v| (None, v)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_an_age() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_since("2023-02-10T13:11:13Z", now).unwrap(),
            1_676_034_673_000
        );
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_since("2w", now).unwrap(), now - 14 * 86_400_000);
        assert_eq!(parse_since("90m", now).unwrap(), now - 90 * 60_000);
        for bad in [
            "",
            "d",
            "7",
            "7x",
            "-7d",
            "7é",
            "7.5d",
            "yesterday",
            "99999999999999999999d",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.to_string().starts_with("since: "), "{bad}: {e}");
        }
    }

    #[test]
    fn json_series_are_arrays_of_numbers() {
        assert_eq!(json_series("[1, 2.5]").unwrap().points.len(), 2);
        assert_eq!(
            json_series("[1,").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            json_series("[\"a\"]").unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            json_series("[]").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
