//! The benchmark pages: the series list (`/series`, selected by host,
//! metric and words) and one series' plot (`/series/{id}`: uPlot over
//! integrations or time, the noise band of its current level, the change
//! points marked; clicking a point opens its task).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use testfleet_core::analysis::Better;
use testfleet_core::time_fmt::parse_rfc3339_millis;
use testfleet_wire::analysis::{ChangeView, SeriesView};

use super::format::number;
use super::{Dash, Page, PageError, parse_id, wants_fragment};
use crate::analytics::series::{DEFAULT_POINTS, MAX_POINTS, SeriesQuery};
use crate::http_error::{ApiPath, ApiQuery};

/// Series a list page shows.
const SERIES_PAGE: i64 = 100;
/// Change points a series page lists (the newest of those in the plotted
/// range; the JSON twin `/api/v1/series/{id}/changes` has them all).
const CHANGES_LISTED: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    host: Option<String>,
    program: Option<String>,
    function: Option<String>,
    metric: Option<String>,
    q: Option<String>,
    after: Option<i64>,
    /// Open the series when exactly one matches (the selectors of a
    /// series page).
    go: Option<String>,
}

#[derive(Template)]
#[template(path = "series_list.html")]
struct ListContent {
    series: Vec<SeriesView>,
    host: String,
    metric: String,
    q: String,
    next: Option<String>,
}

impl ListContent {
    fn last(&self, s: &SeriesView) -> String {
        number(s.last_value, 4)
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// `GET /series?host=&metric=&q=&program=&function=&after=`.
pub(crate) async fn series_list_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, PageError> {
    let query = SeriesQuery {
        host: non_empty(q.host.clone()),
        program: non_empty(q.program.clone()),
        function: non_empty(q.function.clone()),
        metric: non_empty(q.metric.clone()),
        search: non_empty(q.q.clone()),
        after: q.after.filter(|a| *a > 0),
        limit: SERIES_PAGE,
    };
    let page = d.analytics.list_series(query).await?;
    if q.go.is_some()
        && let [only] = page.series.as_slice()
    {
        return Ok(Redirect::to(&format!("/series/{}", only.id)).into_response());
    }
    let next = page.next_after.map(|after| {
        let mut url = format!("/series?after={after}");
        for (key, value) in [("host", &q.host), ("metric", &q.metric), ("q", &q.q)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                url.push_str(&format!("&{key}={}", urlencode(v)));
            }
        }
        url
    });
    Page {
        title: "Benchmarks".to_owned(),
        nav: "series",
        json: Some("/api/v1/series".to_owned()),
        scripts: &[],
        content: ListContent {
            series: page.series,
            host: q.host.unwrap_or_default(),
            metric: q.metric.unwrap_or_default(),
            q: q.q.unwrap_or_default(),
            next,
        },
    }
    .respond(wants_fragment(&headers))
}

/// Percent-encodes a query value.
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub(crate) struct SeriesPageQuery {
    /// `index` (integrations, the default) or `time`.
    x: Option<String>,
    limit: Option<i64>,
}

/// What the plot script draws, embedded in the page as JSON.
#[derive(Debug, Serialize)]
struct PlotData {
    /// Point indices (integrations) or times in seconds, ascending.
    x: Vec<f64>,
    y: Vec<f64>,
    /// The task that measured each point (a click opens it).
    task: Vec<i64>,
    /// Positions in `x` where a change point starts.
    changes: Vec<usize>,
    /// The noise band of the current level: median ± spread.
    band: Option<(f64, f64)>,
    time: bool,
    unit: String,
}

#[derive(Template)]
#[template(path = "series.html")]
struct SeriesContent {
    series: SeriesView,
    changes: Vec<ChangeView>,
    /// [`PlotData`] as JSON, `<` escaped.
    data: String,
    change_positions: String,
    /// Older change points in the plotted range, not listed.
    more_changes: usize,
    time: bool,
    shown: usize,
    hosts: Vec<String>,
    metrics: Vec<String>,
}

impl SeriesContent {
    fn pct(&self, c: &ChangeView) -> String {
        number(c.change_pct, 1)
    }

    fn better(&self) -> &'static str {
        match self.series.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }

    fn p(&self, c: &ChangeView) -> String {
        format!("{:.2e}", c.p_value)
    }
}

/// `GET /series/{id}?x=index|time&limit=`.
pub(crate) async fn series_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SeriesPageQuery>,
) -> Result<Response, PageError> {
    let id = parse_id("series", &id)?;
    let limit = q.limit.unwrap_or(DEFAULT_POINTS);
    if !(1..=MAX_POINTS).contains(&limit) {
        return Err(PageError::BadRequest(format!(
            "limit {limit} is out of range; use 1 to {MAX_POINTS}"
        )));
    }
    let time = q.x.as_deref() == Some("time");
    let points = d.analytics.points(id, None, limit).await?;
    // The change points in the plotted range, the newest few.
    let first_shown = points.points.first().map_or(u64::MAX, |p| p.index);
    let mut changes: Vec<ChangeView> = d
        .analytics
        .changes(id)
        .await?
        .changes
        .into_iter()
        .filter(|c| c.index >= first_shown)
        .collect();
    // Marked on the plot: every change point in range (points are in index
    // order, one per index).
    let marked: Vec<usize> = changes
        .iter()
        .filter_map(|c| {
            points
                .points
                .binary_search_by_key(&c.index, |p| p.index)
                .ok()
        })
        .collect();
    let more_changes = changes.len().saturating_sub(CHANGES_LISTED);
    changes.drain(..more_changes);
    let mut data = PlotData {
        x: Vec::with_capacity(points.points.len()),
        y: Vec::with_capacity(points.points.len()),
        task: Vec::with_capacity(points.points.len()),
        changes: Vec::new(),
        band: points
            .noise
            .as_ref()
            .map(|n| (n.median - n.spread, n.median + n.spread)),
        time,
        unit: points.series.unit.clone(),
    };
    for p in &points.points {
        let x = if time {
            parse_rfc3339_millis(&p.at).map_or(0.0, |ms| ms as f64 / 1000.0)
        } else {
            p.index as f64
        };
        data.x.push(x);
        data.y.push(p.value);
        data.task.push(p.task_id);
    }
    data.changes = marked;
    let change_positions = data
        .changes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let json = serde_json::to_string(&data)
        .map_err(|e| PageError::BadRequest(format!("the series cannot be drawn: {e}")))?
        .replace('<', "\\u003c");
    // The selectors: the same test on other hosts and in other metrics.
    let same_test = SeriesQuery {
        program: Some(points.series.program.clone()),
        function: Some(points.series.function.clone()),
        limit: SERIES_PAGE,
        ..SeriesQuery::default()
    };
    let siblings = d.analytics.list_series(same_test).await?.series;
    let mut hosts: Vec<String> = siblings.iter().map(|s| s.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let mut metrics: Vec<String> = siblings.iter().map(|s| s.metric.clone()).collect();
    metrics.sort();
    metrics.dedup();
    let title = format!(
        "{} {}{} · {} on {}",
        points.series.program,
        points.series.function,
        points
            .series
            .data_tag
            .as_deref()
            .map(|t| format!(" [{t}]"))
            .unwrap_or_default(),
        points.series.metric,
        points.series.host
    );
    Page {
        title,
        nav: "series",
        json: Some(format!("/api/v1/series/{id}/points?limit={limit}")),
        scripts: &["uPlot.iife.min.js", "series.js"],
        content: SeriesContent {
            shown: points.points.len(),
            series: points.series,
            changes,
            data: json,
            change_positions,
            more_changes,
            time,
            hosts,
            metrics,
        },
    }
    .respond(wants_fragment(&headers))
}
