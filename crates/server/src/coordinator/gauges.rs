//! What the queue and the fleet look like now, for `GET /metrics`: read
//! under the scheduler's lock, grouped so that label values stay few
//! (a task's requirements without its pinned host; an agent's labels
//! without its hostname).

use std::collections::BTreeMap;

use testfleet_core::labels::Requirement;
use testfleet_core::{LabelSet, Requirements};

use super::Coordinator;

/// Queued tasks of one queue and requirement set.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGauge {
    pub queue: String,
    /// The requirements as `key=value` pairs, sorted, joined with `,`
    /// (`key=a|b` for one of several, `key>=n`); `hostname` left out.
    pub requires: String,
    /// Tasks pinned to one agent (fan-out, retries on a given host).
    pub pinned: bool,
    /// The requirements themselves (`hostname` left out), for matching.
    pub requirements: Requirements,
    pub depth: u64,
    /// The longest a task of this group has waited, in seconds.
    pub oldest_wait_seconds: f64,
}

/// Agents of one label set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentGauge {
    /// The labels as sorted `key=value` pairs joined with `,`; `hostname`
    /// left out.
    pub labels: String,
    /// The labels themselves (`hostname` left out), for matching.
    pub label_set: LabelSet,
    /// Connected, running nothing.
    pub idle: u64,
    /// Running an attempt (connected or not: an offline agent keeps its
    /// attempt until its lease runs out).
    pub busy: u64,
    /// Not connected, running nothing.
    pub offline: u64,
}

/// The queue and the fleet at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    pub queues: Vec<QueueGauge>,
    /// Attempts running per queue.
    pub running: Vec<(String, u64)>,
    pub agents: Vec<AgentGauge>,
}

fn requirement_text(key: &str, r: &Requirement) -> String {
    match r {
        Requirement::Exact(v) => format!("{key}={v}"),
        Requirement::OneOf(vs) => format!("{key}={}", vs.join("|")),
        Requirement::AtLeast(n) => format!("{key}>={n}"),
    }
}

fn without_hostname(r: &Requirements) -> Requirements {
    Requirements(
        r.0.iter()
            .filter(|(k, _)| k.as_str() != "hostname")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn requires_text(r: &Requirements) -> String {
    r.0.iter()
        .filter(|(k, _)| k.as_str() != "hostname")
        .map(|(k, v)| requirement_text(k, v))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels_without_hostname(labels: &LabelSet) -> LabelSet {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "hostname")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels as sorted `key=value` pairs joined with `,`.
pub fn labels_text(labels: &LabelSet) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "hostname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Coordinator {
    /// The queue and the fleet now.
    pub async fn gauges(&self) -> Gauges {
        let now = self.now();
        let sched = self.sched.lock().await;
        let mut queues: BTreeMap<(String, String, bool), QueueGauge> = BTreeMap::new();
        let mut running = Vec::new();
        for (name, q) in &sched.queues {
            running.push((name.clone(), u64::from(q.running)));
            for task in q.tasks.values() {
                let requires = requires_text(&task.requires);
                let pinned = task.pinned_agent.is_some();
                let wait = (now - task.queued_at).max(0) as f64 / 1000.0;
                let g = queues
                    .entry((name.clone(), requires.clone(), pinned))
                    .or_insert_with(|| QueueGauge {
                        queue: name.clone(),
                        requires,
                        pinned,
                        requirements: without_hostname(&task.requires),
                        depth: 0,
                        oldest_wait_seconds: 0.0,
                    });
                g.depth += 1;
                g.oldest_wait_seconds = g.oldest_wait_seconds.max(wait);
            }
        }
        let mut agents: BTreeMap<String, AgentGauge> = BTreeMap::new();
        for slot in sched.agents.values() {
            let labels = labels_text(&slot.labels);
            let g = agents.entry(labels.clone()).or_insert_with(|| AgentGauge {
                labels,
                label_set: labels_without_hostname(&slot.labels),
                ..AgentGauge::default()
            });
            if slot.running.is_some() {
                g.busy += 1;
            } else if slot.online() {
                g.idle += 1;
            } else {
                g.offline += 1;
            }
        }
        Gauges {
            queues: queues.into_values().collect(),
            running,
            agents: agents.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_and_labels_leave_the_hostname_out() {
        let r: Requirements = serde_json::from_value(serde_json::json!({
            "os": "linux", "pool": ["bench", "perf"], "cores": ">=8", "hostname": "bench-1"
        }))
        .expect("requirements");
        assert_eq!(requires_text(&r), "cores>=8,os=linux,pool=bench|perf");
        let mut labels = LabelSet::new();
        labels.insert("hostname".into(), "bench-1".into());
        labels.insert("pool".into(), "bench".into());
        labels.insert("os".into(), "linux".into());
        assert_eq!(labels_text(&labels), "os=linux,pool=bench");
    }
}
