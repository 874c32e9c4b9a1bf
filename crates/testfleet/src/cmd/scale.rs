//! `testfleet scale --dry-run [--json]`: how many agents each label set
//! wants now, as the coordinator's `[server.autoscale]` decides, and
//! whether its hook would be called.

use anyhow::{Result, bail};
use testfleet_client::ApiClient;

use crate::exit;

pub async fn run(api: &ApiClient, dry_run: bool, json: bool) -> Result<u8> {
    if !dry_run {
        bail!(
            "`testfleet scale` only shows decisions: add --dry-run. The coordinator calls the hook itself when `[server.autoscale] hook` is configured (docs/scale-out.md)"
        );
    }
    let plan = api.autoscale().await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&plan)?)?;
        return Ok(exit::OK);
    }
    let hook = if plan.hook_configured {
        "hook configured"
    } else {
        "no hook configured: decisions only"
    };
    outln!(
        "policy: min_idle {}, max_agents {}, cool-down {} s; {hook}",
        plan.min_idle,
        plan.max_agents,
        plan.cooldown_seconds
    )?;
    if plan.decisions.is_empty() {
        outln!("no agents and nothing waiting")?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<40}  {:>7}  {:>4}  {:>4}  {:>7}  {:>6}  ACTION",
        "LABELS",
        "CURRENT",
        "IDLE",
        "BUSY",
        "WAITING",
        "WANTED"
    )?;
    for d in &plan.decisions {
        let action = if d.wanted == d.current {
            "none".to_owned()
        } else if d.call_hook {
            format!("call the hook: {} → {}", d.current, d.wanted)
        } else if !plan.hook_configured {
            format!("would want {} → {}", d.current, d.wanted)
        } else {
            format!("cool-down, {} s left", d.cooldown_left_seconds)
        };
        let labels = if d.labels.is_empty() {
            "(no labels)"
        } else {
            d.labels.as_str()
        };
        outln!(
            "{labels:<40}  {:>7}  {:>4}  {:>4}  {:>7}  {:>6}  {action}",
            d.current,
            d.idle,
            d.busy,
            d.waiting,
            d.wanted
        )?;
    }
    Ok(exit::OK)
}
