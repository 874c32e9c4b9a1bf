//! The dashboard's static files, compiled into the binary: its script and
//! style sheet, and uPlot 1.6.32 (npm `uplot`, MIT; `assets/uPlot.LICENSE`).
//! Served outside the auth guard: they hold no data.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// (path under `/static/`, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "series.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/series.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../../assets/uPlot.LICENSE"),
    ),
];

/// `GET /static/{name}` for every asset.
pub(super) fn router() -> Router {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(name, content_type, body)| {
            router.route(
                &format!("/static/{name}"),
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            // Not versioned in the URL: revalidate after an hour.
                            (header::CACHE_CONTROL, "public, max-age=3600"),
                        ],
                        body,
                    )
                        .into_response()
                }),
            )
        })
}
