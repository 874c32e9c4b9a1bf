//! `GET /api/v1/autoscale`: how many agents each label set wants, and why
//! (`testfleet scale --dry-run`).

use serde::{Deserialize, Serialize};

/// The decision for one agent label set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// The label set, as sorted `key=value` pairs joined with `,` (the
    /// hostname left out). A set no agent has yet is the waiting tasks'
    /// exact requirements.
    pub labels: String,
    /// Agents of this set connected now (idle and busy).
    pub current: u64,
    pub idle: u64,
    pub busy: u64,
    /// Tasks waiting that this set would run (not pinned to a host).
    pub waiting: u64,
    /// `busy + waiting + min_idle`, at most `max_agents`.
    pub wanted: u64,
    /// Whether the hook would be called now (`wanted != current` and the
    /// set's cool-down has passed).
    pub call_hook: bool,
    /// Seconds until the set's cool-down ends (0: none).
    pub cooldown_left_seconds: u64,
}

/// Every label set's decision, and the policy behind them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalePlan {
    /// Whether a hook is configured (`[server.autoscale]`).
    pub hook_configured: bool,
    pub min_idle: u64,
    pub max_agents: u64,
    pub cooldown_seconds: u64,
    pub decisions: Vec<ScaleDecision>,
}
