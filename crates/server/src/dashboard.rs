//! A small server-rendered dashboard at `/`: agents and recent jobs, refreshed
//! every few seconds. The REST API and socket.io carry the same data for
//! richer front ends.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use serde::Deserialize;
use testfleet_wire::api::OutcomeCounts;

use crate::coordinator::Coordinator;

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        .with_state(coordinator)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:2em}\
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}.passed{color:#187a2f}.failed{color:#b3261e}\
.running{color:#1a5fb4}.queued{color:#777}.cancelled{color:#a05a00}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=3><title>{t}</title><style>{STYLE}</style></head>\
         <body><h1><a href=\"/\">testfleet</a> — {t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

async fn index(State(c): State<Arc<Coordinator>>) -> Html<String> {
    let mut body = String::from(
        "<h2>Agents</h2><table><tr><th>host</th><th>online</th><th>status</th><th>labels</th></tr>",
    );
    for a in c.agents().await.unwrap_or_default() {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.hostname),
            if a.online { "yes" } else { "no" },
            esc(a.status.as_deref().unwrap_or("")),
            esc(&labels.join(", "))
        );
    }
    body.push_str("</table><h2>Jobs</h2><table><tr><th>id</th><th>name</th><th>state</th><th>tasks done</th><th>outcomes</th><th>retried</th><th>created</th></tr>");
    // Summaries: counts per state and outcome, never the tasks themselves.
    for j in c.views().jobs(50, None).await.unwrap_or_default() {
        let _ = write!(
            body,
            "<tr><td><a href=\"/jobs/{id}\">{id}</a></td><td>{}</td><td class={s}>{s}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.name),
            j.tasks.finished(),
            j.tasks.total,
            outcome_text(&j.outcomes),
            j.retried,
            esc(&j.created_at),
            id = j.id,
            s = j.state,
        );
    }
    body.push_str("</table>");
    page("fleet", &body)
}

/// The non-zero outcome counts, as `3 passed, 1 failed`.
fn outcome_text(o: &OutcomeCounts) -> String {
    let parts: Vec<String> = [
        (o.passed, "passed"),
        (o.flaky, "flaky"),
        (o.failed, "failed"),
        (o.timed_out, "timed out"),
        (o.stalled, "stalled"),
        (o.crashed, "crashed"),
        (o.infra_error, "infra error"),
        (o.cancelled, "cancelled"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, name)| format!("{n} {name}"))
    .collect();
    parts.join(", ")
}

/// The tasks shown on one job page; the rest are a link away.
const TASKS_PER_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
struct JobPageQuery {
    after: Option<i64>,
}

async fn job_page(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<i64>,
    Query(q): Query<JobPageQuery>,
) -> Html<String> {
    let Ok(job) = c.views().job_summary(id).await else {
        return page("not found", "<p>No such job.</p>");
    };
    let Ok(tasks) = c
        .views()
        .job_tasks(id, q.after.filter(|a| *a > 0), TASKS_PER_PAGE)
        .await
    else {
        return page("not found", "<p>No such job.</p>");
    };
    let mut body = format!(
        "<p>state: <b class={s}>{s}</b>, queue {}; tasks: {} of {} done ({}), {} retried</p>",
        esc(&job.queue),
        job.tasks.finished(),
        job.tasks.total,
        outcome_text(&job.outcomes),
        job.retried,
        s = job.state
    );
    if let Some(next) = tasks.next_after {
        let _ = write!(
            body,
            "<p>Showing {} tasks. <a href=\"/jobs/{id}?after={next}\">next tasks</a></p>",
            tasks.tasks.len()
        );
    }
    let tasks = tasks.tasks;
    body.push_str("<table><tr><th>task</th><th>state</th><th>stage</th><th>outcome</th><th>agent</th><th>tests</th><th>detail</th></tr>");
    for t in &tasks {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class={s}>{s}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
            esc(&t.name),
            esc(t.stage.as_deref().unwrap_or("")),
            t.outcome.map(|o| o.to_string()).unwrap_or_default(),
            esc(t.agent.as_deref().unwrap_or("")),
            t.counts.pass,
            t.counts.total(),
            esc(t.detail_message.as_deref().unwrap_or("")),
            s = t.state,
        );
    }
    body.push_str("</table><h2>Benchmarks</h2><table><tr><th>task</th><th>case</th><th>data</th><th>metric</th><th>value</th></tr>");
    for t in &tasks {
        for m in &t.metrics {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
                esc(&t.name),
                esc(&m.case),
                esc(m.data_tag.as_deref().unwrap_or("")),
                esc(&m.name),
                m.value,
                esc(&m.unit)
            );
        }
    }
    body.push_str("</table>");
    page(&job.name, &body)
}
