//! The compare page (`/compare?baseline=1,2&contender=3`): two sets of jobs
//! side by side, one row per benchmark metric and host with its verdict
//! (docs/analytics.md).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use testfleet_wire::analysis::{CompareRow, CompareStatus, CompareView};

use super::format::number;
use super::{Dash, Page, PageError, wants_fragment};
use crate::analytics::compare::parse_ids;
use crate::http_error::ApiQuery;

#[derive(Debug, Deserialize)]
pub(crate) struct CompareQuery {
    baseline: Option<String>,
    contender: Option<String>,
}

#[derive(Template)]
#[template(path = "compare.html")]
struct CompareContent {
    baseline: String,
    contender: String,
    view: Option<CompareView>,
}

impl CompareContent {
    fn status(&self, r: &CompareRow) -> &'static str {
        match r.status {
            CompareStatus::Compared => "compared",
            CompareStatus::New => "new",
            CompareStatus::Missing => "missing",
        }
    }

    fn verdict(&self, r: &CompareRow) -> String {
        r.verdict()
            .map(|v| v.to_string())
            .unwrap_or_else(|| self.status(r).to_owned())
    }

    fn change(&self, r: &CompareRow) -> String {
        r.comparison
            .as_ref()
            .map(|c| {
                format!(
                    "{} % [{}, {}]",
                    number(c.change * 100.0, 2),
                    number(c.ci_low * 100.0, 2),
                    number(c.ci_high * 100.0, 2)
                )
            })
            .unwrap_or_default()
    }

    fn medians(&self, r: &CompareRow) -> (String, String) {
        r.comparison
            .as_ref()
            .map(|c| {
                (
                    format!("{} (n={})", number(c.baseline.median, 4), c.baseline.n),
                    format!("{} (n={})", number(c.contender.median, 4), c.contender.n),
                )
            })
            .unwrap_or_default()
    }

    fn p(&self, r: &CompareRow) -> String {
        r.comparison
            .as_ref()
            .map(|c| format!("{:.2e}", c.p_value))
            .unwrap_or_default()
    }

    fn reason(&self, r: &CompareRow) -> String {
        r.comparison
            .as_ref()
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    }
}

/// `GET /compare?baseline=&contender=`: a form, and the comparison when
/// both sides are given.
pub(crate) async fn compare_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CompareQuery>,
) -> Result<Response, PageError> {
    let baseline = q.baseline.unwrap_or_default();
    let contender = q.contender.unwrap_or_default();
    let view = if baseline.trim().is_empty() || contender.trim().is_empty() {
        None
    } else {
        let b = parse_ids("baseline", baseline.trim())?;
        let c = parse_ids("contender", contender.trim())?;
        Some(d.analytics.compare(&b, &c).await?)
    };
    let json = view.as_ref().map(|_| {
        format!(
            "/api/v1/compare?baseline={}&contender={}",
            baseline.trim(),
            contender.trim()
        )
    });
    Page {
        title: "Compare".to_owned(),
        nav: "compare",
        json,
        scripts: &[],
        content: CompareContent {
            baseline,
            contender,
            view,
        },
    }
    .respond(wants_fragment(&headers))
}
