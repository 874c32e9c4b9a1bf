//! The REST API under `/api/v1` (see docs/api.md and `/api/v1/openapi.json`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use testfleet_core::{JobSpec, JobState};
use testfleet_wire::api::{MAX_TASK_PAGE, WhyView};

use crate::auth::Identity;
use crate::coordinator::Coordinator;
use crate::http_error::{ApiBytes, ApiPath, ApiQuery, HttpError};

/// Every error answer of the REST API: a status and a JSON [`ErrorBody`](testfleet_wire::api::ErrorBody).
pub type ApiError = HttpError;

type ApiResult<T> = Result<T, ApiError>;

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    let limit = coordinator.config.max_body_bytes;
    Router::new()
        .route("/api/v1/jobs", post(submit_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/tasks/{id}/retry", post(retry_task))
        .route("/api/v1/jobs/{id}/tasks", get(job_tasks))
        .route("/api/v1/tasks/{id}", get(show_task))
        .route("/api/v1/tasks/{id}/log", get(task_log))
        .route("/api/v1/jobs/{id}/report", get(job_report))
        .route("/api/v1/attempts/{id}/results", get(attempt_results))
        .route("/api/v1/attempts/{id}/summary", get(attempt_summary))
        .route("/api/v1/tasks/{id}/why", get(task_why))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/queues", get(queues))
        .route("/api/v1/openapi.json", get(crate::openapi::document))
        .route("/healthz", get(|| async { "ok" }))
        // After every route: a wrong method is a JSON 405 too.
        .method_not_allowed_fallback(crate::http_error::method_not_allowed)
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
    HttpError::parse_id(kind, raw)
}

/// `POST /api/v1/jobs`: a TOML job file, or its JSON form.
async fn submit_job(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    blobs: Option<Extension<Arc<crate::blobs::Blobs>>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
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
    crate::blobs::check_job_inputs(blobs.as_deref().map(|b| &**b), &spec).await?;
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
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; use 1 to 1000"
        )));
    }
    Ok(Json(c.views().jobs(limit, state).await?).into_response())
}

async fn show_job(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(c.views().job(parse_id("job", &id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct TaskPageQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/jobs/{id}/tasks?after=&limit=`: a page of the job's tasks in
/// id order; the answer's `next_after` is the next page's `after`.
async fn job_tasks(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TaskPageQuery>,
) -> ApiResult<Response> {
    let id = parse_id("job", &id)?;
    let max = i64::from(MAX_TASK_PAGE);
    let limit = q.limit.unwrap_or(max);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; use 1 to {max}"
        )));
    }
    if let Some(after) = q.after.filter(|a| *a < 0) {
        return Err(ApiError::bad_request(format!(
            "after {after} is not a task id; use the previous page's `next_after`, or 0 for the first page"
        )));
    }
    Ok(Json(c.views().job_tasks(id, q.after, limit).await?).into_response())
}

async fn cancel_job(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_id("job", &id)?;
    let view = c.cancel(id).await?;
    c.audit(&who, "cancel", Some(&format!("job {id}")), None)
        .await;
    Ok(Json(view).into_response())
}

/// `POST /api/v1/jobs/{id}/retry`: the failed tasks of a finished job
/// queued again as new attempts.
async fn retry_job(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_id("job", &id)?;
    let view = c.retry_job(id).await?;
    let tasks = serde_json::json!({"tasks": view.retried});
    c.audit(&who, "retry", Some(&format!("job {id}")), Some(&tasks))
        .await;
    Ok(Json(view).into_response())
}

/// `POST /api/v1/tasks/{id}/retry`: one failed task queued again as a new
/// attempt.
async fn retry_task(
    State(c): State<Arc<Coordinator>>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_id("task", &id)?;
    let view = c.retry_task(id).await?;
    c.audit(&who, "retry", Some(&format!("task {id}")), None)
        .await;
    Ok(Json(view).into_response())
}

async fn show_task(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(c.views().task(parse_id("task", &id)?).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    attempt: Option<i64>,
}

async fn task_log(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let task = parse_id("task", &id)?;
    Ok(Json(
        c.views()
            .task_log(task, q.attempt, q.offset.unwrap_or(0))
            .await?,
    )
    .into_response())
}

async fn attempt_results(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(c.views().attempt_results(parse_id("attempt", &id)?).await?).into_response())
}

async fn list_agents(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(c.agents().await?).into_response())
}

async fn attempt_summary(
    State(c): State<Arc<Coordinator>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let ctx = c.views().attempt_context(parse_id("attempt", &id)?).await?;
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
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Response> {
    let results = c.views().job_results(parse_id("job", &id)?).await?;
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
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let task = parse_id("task", &id)?;
    let reasons = c.why(task).await?;
    Ok(Json(WhyView {
        reasons,
        task_id: task,
    })
    .into_response())
}

/// `GET /api/v1/stats`: attempts stopped per threshold, runtime history per
/// task key, flaky counts per task key.
async fn stats(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(c.views().stats(100).await?).into_response())
}

/// `GET /api/v1/fleet`: every agent with its state, current attempt, lease,
/// last contact and load, and a count per state (the dashboard's fleet page).
async fn fleet(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(c.fleet_view().await?).into_response())
}

/// `GET /api/v1/queues`: the fair-share queues in the order they are served,
/// with their first waiting tasks and why they wait (the queues page).
async fn queues(State(c): State<Arc<Coordinator>>) -> ApiResult<Response> {
    Ok(Json(c.queues_view().await).into_response())
}
