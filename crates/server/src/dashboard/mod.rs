//! The dashboard: server-rendered pages compiled into the binary (askama
//! templates in `crates/server/templates`), a little JavaScript and the
//! vendored uPlot (`crates/server/assets`). Pages follow live updates over
//! socket.io as a `browser` client: on a `tf:update` or `agentData` push a
//! page fetches its own URL again with `X-Fragment: 1` and replaces its
//! `<main>` (the server answers the fragment only); nothing reloads.
//!
//! Every page reads through the same auth guard as the REST API (reading
//! may need a login) and names its JSON twin in `/api/v1`. Actions (cancel,
//! retry) post to the REST endpoints with the user's login or token.
//!
//! One file per page or concern: `fleet` (fleet and queues), `jobs` (the
//! jobs list and a job), `task`, `series` (the list and one series' plot),
//! `compare`, `feeds` (trigger events and exporters), `assets` (the static
//! files), `format` (what templates print).

mod assets;
mod compare;
mod feeds;
mod fleet;
mod format;
mod jobs;
mod series;
mod task;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use testfleet_store::StoreError;

use crate::analytics::{Analytics, AnalyticsError};
use crate::coordinator::Coordinator;

/// What the page handlers share.
#[derive(Clone)]
pub(crate) struct Dash {
    pub coordinator: Arc<Coordinator>,
    pub analytics: Arc<Analytics>,
}

/// The dashboard's routes: pages behind the auth guard (the API's read
/// policy), static assets outside it.
pub fn router(coordinator: Arc<Coordinator>, analytics: Arc<Analytics>) -> Router {
    let dash = Dash {
        coordinator: coordinator.clone(),
        analytics,
    };
    let pages = Router::new()
        .route("/", get(fleet::fleet_page))
        .route("/queues", get(fleet::queues_page))
        .route("/jobs", get(jobs::jobs_page))
        .route("/jobs/{id}", get(jobs::job_page))
        .route("/tasks/{id}", get(task::task_page))
        .route("/series", get(series::series_list_page))
        .route("/series/{id}", get(series::series_page))
        .route("/compare", get(compare::compare_page))
        .route("/events", get(feeds::events_page))
        .route("/exporters", get(feeds::exporters_page))
        .layer(axum::middleware::from_fn_with_state(
            coordinator,
            crate::auth::guard,
        ))
        .with_state(dash);
    Router::new()
        .merge(pages)
        .merge(assets::router())
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("failed to read the store")]
    Store(#[source] StoreError),
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    #[error("failed to render the page")]
    Render(#[from] askama::Error),
    #[error("{0}")]
    BadRequest(String),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        PageError::Store(e)
    }
}

impl PageError {
    /// The status the REST API answers the same error with.
    fn status(&self) -> StatusCode {
        fn of_store(e: &StoreError) -> StatusCode {
            match e {
                StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                StoreError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        match self {
            PageError::Store(e) | PageError::Analytics(AnalyticsError::Store(e)) => of_store(e),
            PageError::Analytics(AnalyticsError::UnknownJob(_)) => StatusCode::NOT_FOUND,
            PageError::Analytics(_) | PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("dashboard: {self}: {:?}", std::error::Error::source(&self));
        }
        let message = match &self {
            PageError::Store(StoreError::NotFound(what)) => format!("No such {what}."),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            }
        };
        let body = ErrorPage { message: &message }
            .render()
            .unwrap_or_else(|_| "error".to_owned());
        let layout = Layout {
            title: "error",
            nav: "",
            json: None,
            content: &body,
            scripts: &[],
        };
        let html = layout.render().unwrap_or(body);
        (status, Html(html)).into_response()
    }
}

/// Every page's frame: navigation, the live-update script and the content.
#[derive(Template)]
#[template(path = "layout.html")]
struct Layout<'a> {
    title: &'a str,
    /// The navigation entry to mark current.
    nav: &'a str,
    /// The page's JSON twin in the API.
    json: Option<&'a str>,
    /// The rendered `<main>` content.
    content: &'a str,
    /// Extra scripts (under `/static/`).
    scripts: &'a [&'a str],
}

impl Layout<'_> {
    /// The navigation: (href, key, label).
    fn nav_items(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("/", "fleet", "Fleet"),
            ("/queues", "queues", "Queues"),
            ("/jobs", "jobs", "Jobs"),
            ("/series", "series", "Benchmarks"),
            ("/compare", "compare", "Compare"),
            ("/events", "events", "Events"),
            ("/exporters", "exporters", "Exporters"),
        ]
    }
}

/// What a page handler returns: its content template and its frame.
pub(crate) struct Page<T> {
    pub title: String,
    pub nav: &'static str,
    pub json: Option<String>,
    pub scripts: &'static [&'static str],
    pub content: T,
}

/// A path's id, or a 400 page that says what an id is.
pub(crate) fn parse_id(kind: &str, raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PageError::BadRequest(format!("`{raw}` is not a {kind} id")))
}

/// Whether the request asks for the `<main>` content only (live updates).
pub(crate) fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-fragment")
}

impl<T: Template> Page<T> {
    /// The full page, or its content alone when `fragment`.
    pub fn respond(self, fragment: bool) -> Result<Response, PageError> {
        let content = self.content.render()?;
        if fragment {
            return Ok(([(header::CACHE_CONTROL, "no-store")], Html(content)).into_response());
        }
        let html = Layout {
            title: &self.title,
            nav: self.nav,
            json: self.json.as_deref(),
            content: &content,
            scripts: self.scripts,
        }
        .render()?;
        Ok(([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response())
    }
}
