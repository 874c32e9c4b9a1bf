//! The fleet page (`/`: every agent, a summary, a label filter) and the
//! queues page (`/queues`: depth, fair share, oldest waiting task, why
//! tasks wait).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use testfleet_wire::fleet::{FleetAgent, FleetSummary, QueueView};

use super::format::{labels, labels_match, number};
use super::{Dash, Page, PageError, wants_fragment};
use crate::http_error::ApiQuery;

#[derive(Debug, Deserialize)]
pub(crate) struct FleetQuery {
    /// `key=value` words every shown agent has.
    label: Option<String>,
    /// `busy`, `idle`, `offline` or `retired`.
    activity: Option<String>,
    /// The page of matching agents, from 1.
    page: Option<usize>,
}

/// Agents a fleet page lists (the summary counts them all).
const AGENTS_PER_PAGE: usize = 200;

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetContent {
    summary: FleetSummary,
    agents: Vec<FleetAgent>,
    label: String,
    activity: String,
    /// Agents before filtering.
    total: usize,
    /// Agents that match the filters.
    matching: usize,
    page: usize,
    /// The previous and next pages' URLs.
    previous: Option<String>,
    next: Option<String>,
}

impl FleetContent {
    fn labels(&self, agent: &FleetAgent) -> Vec<String> {
        labels(&agent.labels)
    }

    fn load(&self, agent: &FleetAgent) -> String {
        agent.load.map(|l| number(l, 2)).unwrap_or_default()
    }
}

/// `GET /`: the fleet.
pub(crate) async fn fleet_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Response, PageError> {
    let fleet = d.coordinator.fleet_view().await?;
    let label = q.label.unwrap_or_default();
    let activity = q.activity.unwrap_or_default();
    let total = fleet.agents.len();
    let matching: Vec<FleetAgent> = fleet
        .agents
        .into_iter()
        .filter(|a| labels_match(&a.labels, &label))
        .filter(|a| activity.is_empty() || a.activity.as_str() == activity)
        .collect();
    let count = matching.len();
    let pages = count.div_ceil(AGENTS_PER_PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let agents = matching
        .into_iter()
        .skip((page - 1) * AGENTS_PER_PAGE)
        .take(AGENTS_PER_PAGE)
        .collect();
    let link = |p: usize| {
        format!(
            "/?label={}&activity={}&page={p}",
            super::series::urlencode(&label),
            super::series::urlencode(&activity)
        )
    };
    let previous = (page > 1).then(|| link(page - 1));
    let next = (page < pages).then(|| link(page + 1));
    Page {
        title: "Fleet".to_owned(),
        nav: "fleet",
        json: Some("/api/v1/fleet".to_owned()),
        scripts: &[],
        content: FleetContent {
            summary: fleet.summary,
            agents,
            label,
            activity,
            total,
            matching: count,
            page,
            previous,
            next,
        },
    }
    .respond(wants_fragment(&headers))
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesContent {
    queues: Vec<QueueView>,
}

impl QueuesContent {
    fn share(&self, q: &QueueView) -> String {
        number(q.share, 2)
    }

    fn weight(&self, q: &QueueView) -> String {
        number(q.weight, 2)
    }
}

/// `GET /queues`: the fair-share queues.
pub(crate) async fn queues_page(
    State(d): State<Dash>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let queues = d.coordinator.queues_view().await.queues;
    Page {
        title: "Queues".to_owned(),
        nav: "queues",
        json: Some("/api/v1/queues".to_owned()),
        scripts: &[],
        content: QueuesContent { queues },
    }
    .respond(wants_fragment(&headers))
}
