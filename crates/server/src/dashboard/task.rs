//! A task's page (`/tasks/{id}`): a live tail of its log, its attempts on a
//! timeline with their reason data, why it waits when queued, and the
//! `testfleet repro` command that runs it again here.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use testfleet_core::TaskState;
use testfleet_core::time_fmt::parse_rfc3339_millis;
use testfleet_wire::api::{AttemptView, TaskView};

use super::format::number;
use super::{Dash, Page, PageError, parse_id, wants_fragment};
use crate::http_error::ApiPath;

/// One attempt as the timeline draws it: where its bar starts and how wide
/// it is, in percent of the span from the first start to the last end.
struct Bar {
    attempt: AttemptView,
    left: String,
    width: String,
    reason_data: Option<String>,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskContent {
    task: TaskView,
    bars: Vec<Bar>,
    why: Vec<String>,
    repro: String,
}

impl TaskContent {
    fn outcome(&self, a: &AttemptView) -> String {
        a.outcome.map(|o| o.to_string()).unwrap_or_default()
    }

    fn can_retry(&self) -> bool {
        self.task.state == TaskState::Failed
    }
}

/// Places attempts on one time axis; a running attempt ends at `now`.
fn timeline(attempts: Vec<AttemptView>, now: i64) -> Vec<Bar> {
    let span = |a: &AttemptView| {
        let start = parse_rfc3339_millis(&a.started_at).unwrap_or(now);
        let end = a
            .finished_at
            .as_deref()
            .and_then(parse_rfc3339_millis)
            .unwrap_or(now)
            .max(start);
        (start, end)
    };
    let spans: Vec<(i64, i64)> = attempts.iter().map(span).collect();
    let first = spans.iter().map(|s| s.0).min().unwrap_or(now);
    let last = spans.iter().map(|s| s.1).max().unwrap_or(now);
    let total = (last - first).max(1) as f64;
    attempts
        .into_iter()
        .zip(spans)
        .map(|(attempt, (start, end))| {
            let left = (start - first) as f64 / total * 100.0;
            // At least a sliver, so an instant attempt is still visible.
            let width = ((end - start) as f64 / total * 100.0).max(0.5);
            Bar {
                reason_data: attempt
                    .reason_data
                    .as_ref()
                    .and_then(|r| serde_json::to_string_pretty(r).ok()),
                attempt,
                left: number(left, 2),
                width: number(width.min(100.0 - left).max(0.5), 2),
            }
        })
        .collect()
}

/// `GET /tasks/{id}`.
pub(crate) async fn task_page(
    State(d): State<Dash>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, PageError> {
    let id = parse_id("task", &id)?;
    let detail = d.coordinator.views().task(id).await?;
    let why = if detail.task.state == TaskState::Queued {
        d.coordinator.why(id).await?
    } else {
        Vec::new()
    };
    // The server as this browser reached it: what `repro` must talk to.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if d.coordinator.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let repro = format!("testfleet --server {scheme}://{host} repro {id}");
    let now = d.coordinator.now();
    Page {
        title: format!("Task {id}: {}", detail.task.name),
        nav: "jobs",
        json: Some(format!("/api/v1/tasks/{id}")),
        scripts: &[],
        content: TaskContent {
            bars: timeline(detail.attempts_list, now),
            task: detail.task,
            why,
            repro,
        },
    }
    .respond(wants_fragment(&headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(number: i64, start: &str, end: Option<&str>) -> AttemptView {
        AttemptView {
            id: number,
            task_id: 1,
            number,
            agent: "a".into(),
            stage: None,
            outcome: None,
            reason: None,
            reason_data: None,
            started_at: start.into(),
            finished_at: end.map(str::to_owned),
        }
    }

    #[test]
    fn attempts_share_one_axis() {
        let bars = timeline(
            vec![
                attempt(1, "2026-01-01T00:00:00Z", Some("2026-01-01T00:00:30Z")),
                attempt(2, "2026-01-01T00:00:30Z", Some("2026-01-01T00:01:00Z")),
            ],
            0,
        );
        assert_eq!((bars[0].left.as_str(), bars[0].width.as_str()), ("0", "50"));
        assert_eq!(
            (bars[1].left.as_str(), bars[1].width.as_str()),
            ("50", "50")
        );
    }
}
