//! `GET /metrics`: the coordinator in Prometheus' text exposition format
//! (version 0.0.4), for dashboards, alerts and autoscalers (KEDA's
//! Prometheus scaler, an HPA through an adapter).
//!
//! Gauges are read at scrape time (the scheduler's queue and fleet, the
//! store's exporter backlog); counters and histograms are this process's
//! ([`recorder`]). Label values stay few: queues, requirement sets without
//! pinned hosts, agent label sets without hostnames, outcomes, operations.
//! The endpoint follows the API's read policy.

pub mod recorder;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use testfleet_store::SinkStatus;

pub use crate::coordinator::{AgentGauge, Gauges, QueueGauge};
pub use recorder::{Histogram, HistogramSnapshot, Recorder};

use crate::Coordinator;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            crate::auth::guard,
        ))
        .with_state(coordinator)
}

async fn scrape(State(c): State<Arc<Coordinator>>) -> Response {
    let gauges = c.gauges().await;
    let sinks = match c.views().outbox_status().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("metrics: failed to read the exporters' backlog: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed to read the store: {e}\n"),
            )
                .into_response();
        }
    };
    let body = render(&gauges, &c.metrics, &sinks);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// A label value, escaped as the format wants (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A float as the format writes it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, count) in &h.buckets {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {count}",
            num(*le)
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", num(h.sum_seconds));
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// The exposition of `gauges`, `recorder` and the exporters' `sinks`.
pub fn render(gauges: &Gauges, recorder: &Recorder, sinks: &[SinkStatus]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "testfleet_queue_depth",
        "gauge",
        "Tasks waiting, per queue and requirement set (pinned: fanned out or retried on one host).",
    );
    for q in &gauges.queues {
        let _ = writeln!(
            out,
            "testfleet_queue_depth{{queue=\"{}\",requires=\"{}\",pinned=\"{}\"}} {}",
            esc(&q.queue),
            esc(&q.requires),
            q.pinned,
            q.depth
        );
    }
    family(
        &mut out,
        "testfleet_queue_oldest_wait_seconds",
        "gauge",
        "How long the oldest waiting task has waited, per queue and requirement set.",
    );
    for q in &gauges.queues {
        let _ = writeln!(
            out,
            "testfleet_queue_oldest_wait_seconds{{queue=\"{}\",requires=\"{}\",pinned=\"{}\"}} {}",
            esc(&q.queue),
            esc(&q.requires),
            q.pinned,
            num(q.oldest_wait_seconds)
        );
    }
    family(
        &mut out,
        "testfleet_queue_running",
        "gauge",
        "Attempts running, per queue.",
    );
    for (queue, n) in &gauges.running {
        let _ = writeln!(
            out,
            "testfleet_queue_running{{queue=\"{}\"}} {n}",
            esc(queue)
        );
    }
    family(
        &mut out,
        "testfleet_agents",
        "gauge",
        "Agents known to this coordinator, per state and label set (hostname left out).",
    );
    for a in &gauges.agents {
        for (state, n) in [("idle", a.idle), ("busy", a.busy), ("offline", a.offline)] {
            let _ = writeln!(
                out,
                "testfleet_agents{{state=\"{state}\",labels=\"{}\"}} {n}",
                esc(&a.labels)
            );
        }
    }
    family(
        &mut out,
        "testfleet_agent_event_queues",
        "gauge",
        "Agent connections whose event queue is alive (each connected agent has one; one that stays after its agent left is a leak).",
    );
    let _ = writeln!(
        out,
        "testfleet_agent_event_queues {}",
        recorder.event_queues()
    );
    family(
        &mut out,
        "testfleet_attempts_finished_total",
        "counter",
        "Attempts ended by this coordinator since it started, per outcome.",
    );
    for (outcome, n) in recorder.attempts() {
        let _ = writeln!(
            out,
            "testfleet_attempts_finished_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut out,
        "testfleet_claims_lost_total",
        "counter",
        "Claims the store refused since this coordinator started: the task was no longer queued (another coordinator claimed it first, or it was cancelled).",
    );
    let _ = writeln!(
        out,
        "testfleet_claims_lost_total {}",
        recorder.claims_lost()
    );
    family(
        &mut out,
        "testfleet_task_start_wait_seconds",
        "histogram",
        "From a task's queueing to its attempt's start (the claim), as dispatched by this coordinator.",
    );
    histogram(
        &mut out,
        "testfleet_task_start_wait_seconds",
        "",
        &recorder.start_wait.snapshot(),
    );
    family(
        &mut out,
        "testfleet_store_operation_seconds",
        "histogram",
        "The store's claim and finish transactions.",
    );
    for (op, h) in [("claim", &recorder.claim), ("finish", &recorder.finish)] {
        histogram(
            &mut out,
            "testfleet_store_operation_seconds",
            &format!("operation=\"{op}\""),
            &h.snapshot(),
        );
    }
    family(
        &mut out,
        "testfleet_exporter_backlog",
        "gauge",
        "Finished attempts not yet delivered, per exporter.",
    );
    for s in sinks {
        let _ = writeln!(
            out,
            "testfleet_exporter_backlog{{exporter=\"{}\"}} {}",
            esc(&s.name),
            s.pending
        );
    }
    family(
        &mut out,
        "testfleet_exporter_failures",
        "gauge",
        "Failed deliveries since the last success, per exporter.",
    );
    for s in sinks {
        let _ = writeln!(
            out,
            "testfleet_exporter_failures{{exporter=\"{}\"}} {}",
            esc(&s.name),
            s.failures
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_claims_are_counted() {
        let recorder = Recorder::default();
        let empty = Gauges {
            queues: Vec::new(),
            running: Vec::new(),
            agents: Vec::new(),
        };
        let text = render(&empty, &recorder, &[]);
        assert!(text.contains("\ntestfleet_claims_lost_total 0\n"), "{text}");
        recorder.claim_lost();
        recorder.claim_lost();
        let text = render(&empty, &recorder, &[]);
        assert!(text.contains("\ntestfleet_claims_lost_total 2\n"), "{text}");
        assert!(
            text.contains("# TYPE testfleet_claims_lost_total counter"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let gauges = Gauges {
            queues: vec![QueueGauge {
                queue: "q\"1\\\n".into(),
                requires: "os=linux".into(),
                pinned: false,
                requirements: Default::default(),
                depth: 3,
                oldest_wait_seconds: 1.5,
            }],
            running: vec![("q".into(), 2)],
            agents: vec![AgentGauge {
                labels: "pool=bench".into(),
                label_set: Default::default(),
                idle: 1,
                busy: 2,
                offline: 0,
            }],
        };
        let text = render(&gauges, &Recorder::default(), &[]);
        assert!(
            text.contains(
                "testfleet_queue_depth{queue=\"q\\\"1\\\\\\n\",requires=\"os=linux\",pinned=\"false\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("testfleet_agents{state=\"busy\",labels=\"pool=bench\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("testfleet_task_start_wait_seconds_bucket{le=\"+Inf\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "testfleet_store_operation_seconds_bucket{operation=\"claim\",le=\"0.0005\"} 0"
            ),
            "{text}"
        );
    }
}
