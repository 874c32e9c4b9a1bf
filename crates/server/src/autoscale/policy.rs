//! How many agents each label set wants (pure): the busy ones, one per
//! waiting task it could run, and `min_idle` spare, at most `max_agents`.
//!
//! A waiting task's demand goes to one label set only: the first (by
//! name) whose labels meet its requirements among the sets that have idle
//! agents, else among all known sets; a task no set can run asks for a new
//! set made of its exact requirements (what a provisioner would start).
//! Tasks pinned to a host (fan-out, a retry on a given agent) ask for no
//! new agent: only that host can run them.

use std::collections::BTreeMap;

use testfleet_core::labels::Requirement;
use testfleet_core::{LabelSet, Requirements};
use testfleet_wire::scale::ScaleDecision;

use crate::coordinator::{Gauges, labels_text};

/// The scaling policy (`[server.autoscale]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Spare agents each label set keeps beyond its demand.
    pub min_idle: u64,
    /// The most agents a label set is asked to have.
    pub max_agents: u64,
}

/// The label set a task with these requirements would need, when only
/// exact values are asked for (a set of several or a minimum cannot be
/// provisioned blindly).
fn provisionable(r: &Requirements) -> Option<LabelSet> {
    r.0.iter()
        .map(|(k, v)| match v {
            Requirement::Exact(v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// Each label set's decision (without the hook's cool-down, which the
/// caller fills in).
pub fn decide(gauges: &Gauges, policy: Policy) -> Vec<ScaleDecision> {
    struct Set {
        labels: LabelSet,
        idle: u64,
        busy: u64,
        waiting: u64,
    }
    let mut sets: BTreeMap<String, Set> = gauges
        .agents
        .iter()
        .map(|a| {
            (
                a.labels.clone(),
                Set {
                    labels: a.label_set.clone(),
                    idle: a.idle,
                    busy: a.busy,
                    waiting: 0,
                },
            )
        })
        .collect();
    for q in gauges.queues.iter().filter(|q| !q.pinned) {
        let fits = |s: &Set| q.requirements.matches(&s.labels);
        let target = sets
            .iter()
            .find(|(_, s)| s.idle > 0 && fits(s))
            .or_else(|| sets.iter().find(|(_, s)| fits(s)))
            .map(|(name, _)| name.clone());
        match target {
            Some(name) => {
                if let Some(s) = sets.get_mut(&name) {
                    s.waiting += q.depth;
                }
            }
            None => {
                let Some(labels) = provisionable(&q.requirements) else {
                    tracing::debug!(
                        requires = %q.requires,
                        "autoscale: waiting tasks no label set can be made for"
                    );
                    continue;
                };
                let name = labels_text(&labels);
                sets.entry(name)
                    .or_insert(Set {
                        labels,
                        idle: 0,
                        busy: 0,
                        waiting: 0,
                    })
                    .waiting += q.depth;
            }
        }
    }
    sets.into_iter()
        .map(|(labels, s)| ScaleDecision {
            labels,
            current: s.idle + s.busy,
            idle: s.idle,
            busy: s.busy,
            waiting: s.waiting,
            wanted: (s.busy + s.waiting + policy.min_idle).min(policy.max_agents),
            call_hook: false,
            cooldown_left_seconds: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{AgentGauge, QueueGauge};

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn agents(pairs: &[(&str, &str)], idle: u64, busy: u64) -> AgentGauge {
        let set = labels(pairs);
        AgentGauge {
            labels: labels_text(&set),
            label_set: set,
            idle,
            busy,
            offline: 0,
        }
    }

    fn waiting(requires: serde_json::Value, depth: u64, pinned: bool) -> QueueGauge {
        let requirements: Requirements = serde_json::from_value(requires).expect("requirements");
        QueueGauge {
            queue: "default".into(),
            requires: String::new(),
            pinned,
            requirements,
            depth,
            oldest_wait_seconds: 0.0,
        }
    }

    #[test]
    fn demand_goes_to_one_set_and_new_sets_are_asked_for() {
        let gauges = Gauges {
            agents: vec![
                agents(&[("os", "linux"), ("pool", "bench")], 0, 2),
                agents(&[("os", "linux"), ("pool", "build")], 1, 1),
            ],
            queues: vec![
                // Both sets match; the one with an idle agent takes it.
                waiting(serde_json::json!({"os": "linux"}), 3, false),
                waiting(serde_json::json!({"pool": "bench"}), 2, false),
                // Only a new set can run it.
                waiting(serde_json::json!({"pool": "gpu", "os": "linux"}), 4, false),
                // Pinned: asks for nothing.
                waiting(serde_json::json!({"pool": "bench"}), 7, true),
                // Not provisionable blindly.
                waiting(serde_json::json!({"cores": ">=64"}), 1, false),
            ],
            running: Vec::new(),
        };
        let d = decide(
            &gauges,
            Policy {
                min_idle: 1,
                max_agents: 6,
            },
        );
        let by: BTreeMap<&str, (u64, u64, u64)> = d
            .iter()
            .map(|d| (d.labels.as_str(), (d.current, d.waiting, d.wanted)))
            .collect();
        assert_eq!(by["os=linux,pool=bench"], (2, 2, 5));
        assert_eq!(by["os=linux,pool=build"], (2, 3, 5));
        assert_eq!(by["os=linux,pool=gpu"], (0, 4, 5));
        assert_eq!(d.len(), 3, "{d:#?}");
        let capped = decide(
            &gauges,
            Policy {
                min_idle: 0,
                max_agents: 3,
            },
        );
        assert!(capped.iter().all(|d| d.wanted <= 3), "{capped:#?}");
    }
}
