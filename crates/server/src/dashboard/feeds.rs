//! The trigger events page (`/events`: newest first, by source and
//! outcome) and the exporters page (`/exporters`: each sink's outbox).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use testfleet_store::EventFilter;
use testfleet_wire::api::ExporterStatus;
use testfleet_wire::events::{EventOutcome, EventSummary};

use super::{Dash, Page, PageError, wants_fragment};
use crate::http_error::ApiQuery;

/// Events a page shows.
const EVENTS_PAGE: u32 = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    source: Option<String>,
    outcome: Option<String>,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsContent {
    events: Vec<EventSummary>,
    source: String,
    outcome: String,
}

impl EventsContent {
    fn outcomes(&self) -> Vec<&'static str> {
        EventOutcome::ALL.iter().map(|o| o.as_str()).collect()
    }

    fn sources(&self) -> &'static [&'static str] {
        &["github", "gitlab", "gerrit", "amqp"]
    }
}

/// `GET /events?source=&outcome=`.
pub(crate) async fn events_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, PageError> {
    let source = q.source.unwrap_or_default();
    let outcome_text = q.outcome.unwrap_or_default();
    let outcome = match outcome_text.as_str() {
        "" => None,
        o => Some(
            o.parse::<EventOutcome>()
                .map_err(|e| PageError::BadRequest(e.to_string()))?,
        ),
    };
    if !source.is_empty() {
        source
            .parse::<testfleet_core::trigger::Source>()
            .map_err(|e| PageError::BadRequest(e.to_string()))?;
    }
    let filter = EventFilter {
        source: Some(source.clone()).filter(|s| !s.is_empty()),
        outcome,
        since: None,
        after: None,
        limit: EVENTS_PAGE,
    };
    let events = d.coordinator.views().events(&filter).await?;
    let mut json = format!("/api/v1/events?limit={EVENTS_PAGE}");
    if !source.is_empty() {
        json.push_str(&format!("&source={source}"));
    }
    if !outcome_text.is_empty() {
        json.push_str(&format!("&outcome={outcome_text}"));
    }
    Page {
        title: "Trigger events".to_owned(),
        nav: "events",
        json: Some(json),
        scripts: &[],
        content: EventsContent {
            events,
            source,
            outcome: outcome_text,
        },
    }
    .respond(wants_fragment(&headers))
}

#[derive(Template)]
#[template(path = "exporters.html")]
struct ExportersContent {
    exporters: Vec<ExporterStatus>,
}

/// `GET /exporters`.
pub(crate) async fn exporters_page(
    State(d): State<Dash>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let view = crate::exporters::exporters_view(&d.coordinator).await?;
    Page {
        title: "Exporters".to_owned(),
        nav: "exporters",
        json: Some("/api/v1/exporters".to_owned()),
        scripts: &[],
        content: ExportersContent {
            exporters: view.exporters,
        },
    }
    .respond(wants_fragment(&headers))
}
