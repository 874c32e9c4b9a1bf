//! The ResultsDB API v2.0, served over the coordinator's own results
//! (testfleet's mapped results plus anything posted here), so ResultsDB's
//! clients (`resultsdb-api`, dashboards, gating tools) read testfleet directly.
//!
//! Shapes follow ResultsDB's `api_v2` and its serializer: lists are
//! `{prev, next, data}` with `page`/`limit` paging, errors are `{message}`,
//! results carry `href`s, data values are lists. The mapping of testfleet's
//! results is in docs/exporters.md.

pub(crate) mod json;
mod query;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use testfleet_wire::resultsdb::{List, Message, NewGroup, NewResult, NewTestcase};

use crate::Coordinator;
use crate::http_error::HttpError;
use json::{bad_body, base_url, group_json, new_group, new_result, result_json, testcase_json};
use query::{page_answer, paging, param, results_query, split_list};

const PREFIX: &str = "/api/v2.0";
/// Catches the ResultsDB view up with the outbox before a request is served.
async fn view_caught_up(
    State(c): State<Arc<Coordinator>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Err(e) = c.catch_up_resultsdb_view().await {
        tracing::warn!("failed to catch the ResultsDB view up: {e}");
    }
    next.run(request).await
}

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/healthcheck"), get(healthcheck))
        .route(
            &format!("{PREFIX}/results"),
            get(list_results).post(create_result),
        )
        .route(&format!("{PREFIX}/results/latest"), get(latest_results))
        .route(&format!("{PREFIX}/results/{{id}}"), get(get_result))
        .route(
            &format!("{PREFIX}/testcases"),
            get(list_testcases).post(create_testcase),
        )
        .route(&format!("{PREFIX}/testcases/{{name}}"), get(get_testcase))
        .route(
            &format!("{PREFIX}/testcases/{{name}}/results"),
            get(testcase_results),
        )
        .route(
            &format!("{PREFIX}/groups"),
            get(list_groups).post(create_group),
        )
        .route(&format!("{PREFIX}/groups/{{uuid}}"), get(get_group))
        .route(
            &format!("{PREFIX}/groups/{{uuid}}/results"),
            get(group_results),
        )
        // Readers see every finished attempt: the view is caught up first.
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            view_caught_up,
        ))
        // Creating results, testcases and groups is a write: same rules as the
        // REST API (docs/security.md).
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            crate::auth::guard,
        ))
        .with_state(coordinator)
}

type Params = Query<Vec<(String, String)>>;
type ApiResult = Result<Response, ApiError>;

/// An error answer: the server's one [`HttpError`], with ResultsDB's
/// `{message}` body (see [`error`]).
type ApiError = HttpError;

/// An error answer with ResultsDB's `{message}` body.
fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    HttpError::new(status, message).resultsdb()
}

fn store_error(e: testfleet_store::StoreError) -> ApiError {
    tracing::error!("resultsdb api: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("store error: {e}"),
    )
}

async fn healthcheck(State(c): State<Arc<Coordinator>>) -> ApiResult {
    c.views().rdb_testcases(&[], &[], 0, 1).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Unable to communicate with database: {e}"),
        )
    })?;
    Ok(Json(Message {
        message: "Health check OK".into(),
    })
    .into_response())
}

async fn list_results(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    results_page(&c, &headers, &uri, params).await
}

async fn results_page(
    c: &Coordinator,
    headers: &HeaderMap,
    uri: &Uri,
    params: Vec<(String, String)>,
) -> ApiResult {
    let base = base_url(headers);
    let (page, limit) = paging(&params)?;
    let q = results_query(&params)?;
    // One row more than asked tells whether there is a next page.
    let rows = c
        .views()
        .rdb_results(&q, page.saturating_mul(limit), limit + 1)
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        uri,
        &params,
        (page, limit),
        rows,
        result_json,
    ))
}

async fn testcase_results(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(mut params): Params,
) -> ApiResult {
    if c.views()
        .rdb_testcase(&name)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(error(StatusCode::NOT_FOUND, "Testcase not found"));
    }
    params.retain(|(k, _)| k != "testcases");
    params.push(("testcases".into(), name));
    results_page(&c, &headers, &uri, params).await
}

async fn group_results(
    State(c): State<Arc<Coordinator>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(mut params): Params,
) -> ApiResult {
    if c.views()
        .rdb_group(&uuid)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("Group not found: {uuid}"),
        ));
    }
    params.retain(|(k, _)| k != "groups");
    params.push(("groups".into(), uuid));
    results_page(&c, &headers, &uri, params).await
}

async fn latest_results(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let q = results_query(&params)?;
    let distinct_on: Vec<String> = param(&params, "_distinct_on")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let rows = c
        .views()
        .rdb_latest(&q, &distinct_on)
        .await
        .map_err(store_error)?;
    let data = rows.iter().map(|r| result_json(&base, r)).collect();
    Ok(Json(List { data }).into_response())
}

async fn get_result(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let not_found = || error(StatusCode::NOT_FOUND, "Result not found");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let r = c
        .views()
        .rdb_result(id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(Json(result_json(&base_url(&headers), &r)).into_response())
}

async fn create_result(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let new = new_result(NewResult::from_json(&body).map_err(bad_body)?);
    let r = c.rdb_create_result(&new).await.map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(result_json(&base_url(&headers), &r)),
    )
        .into_response())
}

async fn list_testcases(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let (page, limit) = paging(&params)?;
    let names: Vec<String> = param(&params, "name")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let like: Vec<String> = param(&params, "name:like")
        .map(|v| split_list(v).collect())
        .unwrap_or_default();
    let rows = c
        .views()
        .rdb_testcases(&names, &like, page.saturating_mul(limit), limit + 1)
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        &uri,
        &params,
        (page, limit),
        rows,
        testcase_json,
    ))
}

async fn get_testcase(
    State(c): State<Arc<Coordinator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let t = c
        .views()
        .rdb_testcase(&name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Testcase not found"))?;
    Ok(Json(testcase_json(&base_url(&headers), &t)).into_response())
}

async fn create_testcase(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let new = NewTestcase::from_json(&body).map_err(bad_body)?;
    let t = c
        .rdb_put_testcase(&new.name, new.ref_url.as_deref())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(testcase_json(&base_url(&headers), &t)),
    )
        .into_response())
}

async fn list_groups(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Params,
) -> ApiResult {
    let base = base_url(&headers);
    let (page, limit) = paging(&params)?;
    let list = |k: &str| -> Vec<String> {
        param(&params, k)
            .map(|v| split_list(v).collect())
            .unwrap_or_default()
    };
    let rows = c
        .views()
        .rdb_groups(
            &list("uuid"),
            &list("description"),
            &list("description:like"),
            page.saturating_mul(limit),
            limit + 1,
        )
        .await
        .map_err(store_error)?;
    Ok(page_answer(
        &base,
        &uri,
        &params,
        (page, limit),
        rows,
        group_json,
    ))
}

async fn get_group(
    State(c): State<Arc<Coordinator>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let g = c
        .views()
        .rdb_group(&uuid)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "Group not found"))?;
    Ok(Json(group_json(&base_url(&headers), &g)).into_response())
}

async fn create_group(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let group = new_group(NewGroup::from_json(&body).map_err(bad_body)?);
    let g = c.rdb_put_group(&group).await.map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(group_json(&base_url(&headers), &g)),
    )
        .into_response())
}
