//! Autoscaling (SPEC §12, seed 004's "slave auto-bursting"): every
//! `interval` the coordinator works out how many agents each label set
//! wants ([`policy`]) and, where that differs from what is connected and
//! the set's cool-down has passed, runs the configured hook command — a
//! script of the lab's that starts or stops machines (cloud API, a VM
//! pool, `kubectl scale`). `GET /api/v1/autoscale` shows the same
//! decisions (`testfleet scale --dry-run`).
//!
//! The hook gets the decision as JSON on stdin (a `ScaleDecision`) and as
//! arguments and variables: `HOOK… <labels> <wanted>`,
//! `TESTFLEET_SCALE_LABELS`, `TESTFLEET_SCALE_WANTED`,
//! `TESTFLEET_SCALE_CURRENT`. It has `hook_timeout` to finish; its failure
//! is logged with its output and the set's cool-down still applies (a
//! broken hook is not hammered).

pub mod policy;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use testfleet_core::time_fmt::UnixMillis;
use testfleet_wire::scale::{ScaleDecision, ScalePlan};
use tokio::io::AsyncWriteExt;

pub use policy::Policy;

use crate::Coordinator;

/// `[server.autoscale]`, resolved.
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    /// The command and its first arguments; none: decisions are only shown.
    pub hook: Option<Vec<String>>,
    /// How often decisions are made.
    pub interval: Duration,
    /// The least time between two hook calls for one label set.
    pub cooldown: Duration,
    /// How long a hook call may take.
    pub hook_timeout: Duration,
    pub policy: Policy,
}

impl Default for AutoscaleConfig {
    fn default() -> AutoscaleConfig {
        AutoscaleConfig {
            hook: None,
            interval: Duration::from_secs(30),
            cooldown: Duration::from_secs(300),
            hook_timeout: Duration::from_secs(120),
            policy: Policy {
                min_idle: 0,
                max_agents: 100,
            },
        }
    }
}

/// When each label set's hook last ran (this process's memory: a restart
/// forgets the cool-downs, which at worst calls the hook once early).
#[derive(Debug, Default)]
pub struct Cooldowns(Mutex<HashMap<String, UnixMillis>>);

impl Cooldowns {
    fn left(&self, labels: &str, now: UnixMillis, cooldown: Duration) -> u64 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&at) = map.get(labels) else { return 0 };
        let ends = at + i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX);
        u64::try_from((ends - now).max(0))
            .unwrap_or(0)
            .div_ceil(1000)
    }

    fn called(&self, labels: &str, now: UnixMillis) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(labels.to_owned(), now);
    }
}

/// The decisions now, with the cool-downs.
pub async fn plan(c: &Coordinator, config: &AutoscaleConfig, cooldowns: &Cooldowns) -> ScalePlan {
    let gauges = c.gauges().await;
    let now = c.now();
    let mut decisions = policy::decide(&gauges, config.policy);
    for d in &mut decisions {
        d.cooldown_left_seconds = cooldowns.left(&d.labels, now, config.cooldown);
        d.call_hook =
            config.hook.is_some() && d.wanted != d.current && d.cooldown_left_seconds == 0;
    }
    ScalePlan {
        hook_configured: config.hook.is_some(),
        min_idle: config.policy.min_idle,
        max_agents: config.policy.max_agents,
        cooldown_seconds: config.cooldown.as_secs(),
        decisions,
    }
}

/// Runs the hook for one decision; errors are logged.
async fn call_hook(hook: &[String], d: &ScaleDecision, timeout: Duration) {
    let Some((program, args)) = hook.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg(&d.labels)
        .arg(d.wanted.to_string())
        .env("TESTFLEET_SCALE_LABELS", &d.labels)
        .env("TESTFLEET_SCALE_WANTED", d.wanted.to_string())
        .env("TESTFLEET_SCALE_CURRENT", d.current.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hook = %program, "autoscale: failed to start the hook: {e}");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(d).unwrap_or_default();
        if let Err(e) = stdin.write_all(&body).await {
            tracing::warn!(hook = %program, "autoscale: the hook did not read its input: {e}");
        }
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => tracing::info!(
            labels = %d.labels,
            wanted = d.wanted,
            current = d.current,
            "autoscale: hook called"
        ),
        Ok(Ok(out)) => tracing::error!(
            labels = %d.labels,
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "autoscale: the hook failed"
        ),
        Ok(Err(e)) => tracing::error!(labels = %d.labels, "autoscale: the hook failed: {e}"),
        Err(_) => tracing::error!(
            labels = %d.labels,
            "autoscale: the hook took longer than {} s and was killed",
            timeout.as_secs()
        ),
    }
}

/// The shared state of the route and the loop.
#[derive(Debug)]
pub struct Autoscaler {
    pub config: AutoscaleConfig,
    pub cooldowns: Cooldowns,
}

/// Starts the loop (when a hook is configured) and returns the route.
pub fn start(coordinator: Arc<Coordinator>, config: AutoscaleConfig) -> Router {
    let scaler = Arc::new(Autoscaler {
        config,
        cooldowns: Cooldowns::default(),
    });
    if let Some(hook) = scaler.config.hook.clone() {
        let (c, s) = (coordinator.clone(), scaler.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(s.config.interval).await;
                if c.is_closing() {
                    return;
                }
                let plan = plan(&c, &s.config, &s.cooldowns).await;
                for d in plan.decisions.iter().filter(|d| d.call_hook) {
                    s.cooldowns.called(&d.labels, c.now());
                    call_hook(&hook, d, s.config.hook_timeout).await;
                }
            }
        });
    }
    Router::new()
        .route("/api/v1/autoscale", get(show))
        .layer(axum::middleware::from_fn_with_state(
            coordinator.clone(),
            crate::auth::guard,
        ))
        .with_state((coordinator, scaler))
}

async fn show(State((c, s)): State<(Arc<Coordinator>, Arc<Autoscaler>)>) -> Json<ScalePlan> {
    Json(plan(&c, &s.config, &s.cooldowns).await)
}
