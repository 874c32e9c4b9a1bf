//! The REST API under `/api/v1` (see docs/api.md and `/api/v1/openapi.json`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use testfleet_core::{JobSpec, JobSpecError, JobState};
use testfleet_store::StoreError;
use testfleet_wire::api::{ErrorBody, StatsView};

use crate::auth::Identity;
use crate::coordinator::{Coordinator, SubmitError};

/// An error answer: a status and a JSON [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
                line: None,
                column: None,
            },
        }
    }

    fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, what),
            StoreError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            other => {
                tracing::error!("store error: {other:?}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {other}"),
                )
            }
        }
    }
}

impl From<JobSpecError> for ApiError {
    fn from(e: JobSpecError) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: ErrorBody {
                error: format!("invalid job file: {e}"),
                field: e.field,
                line: e.line,
                column: e.column,
            },
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Invalid(msg) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg),
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    let limit = coordinator.config.max_body_bytes;
    Router::new()
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/tasks/{id}", get(show_task))
        .route("/api/v1/tasks/{id}/log", get(task_log))
        .route("/api/v1/jobs/{id}/report", get(job_report))
        .route("/api/v1/attempts/{id}/results", get(attempt_results))
        .route("/api/v1/attempts/{id}/summary", get(attempt_summary))
        .route("/api/v1/tasks/{id}/why", get(task_why))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            crate::auth::guard,
        ))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(coordinator)
}

fn parse_id(kind: &str, raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(format!("`{raw}` is not a {kind} id (a positive integer)"))
    })
}

/// `POST /api/v1/jobs`: a TOML job file, or its JSON form.
async fn submit_job(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    blobs: Option<Extension<Arc<crate::blobs::Blobs>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the job file is not valid UTF-8"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_json = content_type.contains("json")
        || (!content_type.contains("toml") && text.trim_start().starts_with('{'));
    let spec = if is_json {
        JobSpec::from_json(text)?
    } else {
        JobSpec::from_toml(text)?
    };
    crate::blobs::check_job_inputs(blobs.as_deref().map(|b| &**b), &spec)
        .await
        .map_err(|(status, msg)| ApiError::new(status, msg))?;
    let name = spec.name.clone();
    let view = c.submit(spec).await?;
    c.audit(
        &who,
        "submit",
        Some(&format!("job {}", view.id)),
        Some(&serde_json::json!({"name": name, "tasks": view.tasks.len()})),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/jobs/{}", view.id))],
        Json(view),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    state: Option<String>,
}

async fn list_jobs(
    State(c): State<Arc<Coordinator>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(c.store.jobs(limit, state).await?).into_response())
}

async fn show_job(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(c.store.job(parse_id("job", &id)?).await?).into_response())
}

async fn cancel_job(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id("job", &id)?;
    let view = c.cancel(id).await?;
    c.audit(&who, "cancel", Some(&format!("job {id}")), None)
        .await;
    Ok(Json(view).into_response())
}

async fn show_task(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(c.store.task(parse_id("task", &id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    attempt: Option<i64>,
}

async fn task_log(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let task = parse_id("task", &id)?;
    Ok(Json(
        c.store
            .task_log(task, q.attempt, q.offset.unwrap_or(0))
            .await?,
    )
    .into_response())
}

async fn attempt_results(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(c.store.attempt_results(parse_id("attempt", &id)?).await?).into_response())
}

async fn list_agents(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(c.agents().await?).into_response())
}

async fn attempt_summary(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ctx = c.store.attempt_context(parse_id("attempt", &id)?).await?;
    Ok(Json(crate::reports::run_summary(&ctx)).into_response())
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

/// `GET /api/v1/jobs/{id}/report?format=junit|tap`: the job's results as one
/// JUnit XML document (default) or Taskotron-style TAP 13.
async fn job_report(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let results = c.store.job_results(parse_id("job", &id)?).await?;
    match q.format.as_deref().unwrap_or("junit") {
        "junit" => Ok((
            [(header::CONTENT_TYPE, "application/xml")],
            crate::reports::junit(&results),
        )
            .into_response()),
        "tap" => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::reports::tap(&results),
        )
            .into_response()),
        other => Err(ApiError::bad_request(format!(
            "unknown report format `{other}`; use `junit` or `tap`"
        ))),
    }
}

/// `GET /api/v1/tasks/{id}/why`: why a task is still pending, in words.
async fn task_why(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let task = parse_id("task", &id)?;
    let reasons = c.why(task).await?;
    Ok(Json(serde_json::json!({"task_id": task, "reasons": reasons})).into_response())
}

/// `GET /api/v1/stats`: attempts stopped per threshold, runtime history per
/// task key, flaky counts per task key.
async fn stats(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(StatsView {
        flaky: c.store.flaky_stats(100).await?,
        runtimes: c.store.runtime_stats(100).await?,
        thresholds: c.store.threshold_stats().await?,
    })
    .into_response())
}
