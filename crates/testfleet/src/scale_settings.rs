//! `[server.autoscale]`: the hook a lab's provisioner runs and the scaling
//! policy; `[server.cluster]`: coordinators sharing a PostgreSQL database.
//! Part of `settings`: defaults → file.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_server::ClusterConfig;
use testfleet_server::ServerConfig;
use testfleet_server::autoscale::{AutoscaleConfig, Policy};

/// `[server.autoscale]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSection {
    /// The command and its first arguments (`["/usr/local/bin/scale", "--pool"]`);
    /// it gets the label set and the wanted count as its last two arguments
    /// and the decision as JSON on stdin.
    pub hook: Option<Vec<String>>,
    /// How often decisions are made (default `30s`).
    pub interval: Option<String>,
    /// The least time between two hook calls for one label set (default `5m`).
    pub cooldown: Option<String>,
    /// How long a hook call may take (default `2m`).
    pub hook_timeout: Option<String>,
    /// Spare agents per label set (default 0).
    pub min_idle: Option<u64>,
    /// The most agents a label set is asked to have (default 100).
    pub max_agents: Option<u64>,
}

/// `[server.cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Share the database with other coordinators (default: yes on
    /// PostgreSQL; SQLite cannot be shared).
    pub enabled: Option<bool>,
    /// How often the shared queue and the other coordinators' agents are
    /// read back from the database (default `2s`).
    pub poll_interval: Option<String>,
    /// This coordinator's name among the others (default: host name and
    /// process id).
    pub name: Option<String>,
    /// Listen for the other coordinators' notices (default yes; `false`
    /// behind PgBouncer in transaction mode, where only the poll works).
    pub listen: Option<bool>,
}

fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v).with_context(|| {
        format!("config `server.{field}`: `{v}` is not a duration like \"30s\"")
    })?;
    if d.is_zero() {
        bail!("config `server.{field}`: must be more than 0");
    }
    Ok(d)
}

/// Resolves `[server.cluster]` into `config.cluster` (after the database).
pub fn apply_cluster(s: &ClusterSection, config: &mut ServerConfig) -> Result<()> {
    let defaults = ClusterConfig::default();
    let postgres = config.database_url().backend() == testfleet_store::Backend::Postgres;
    if s.enabled == Some(true) && !postgres {
        bail!(
            "config `server.cluster.enabled`: coordinators share a PostgreSQL database; give one with --database postgres://…"
        );
    }
    if let Some(name) = &s.name
        && (name.trim().is_empty() || name.len() > 200)
    {
        bail!("config `server.cluster.name`: give a name of 1 to 200 characters");
    }
    config.cluster = ClusterConfig {
        enabled: s.enabled,
        poll_interval: duration(
            "cluster.poll_interval",
            s.poll_interval.as_deref(),
            defaults.poll_interval,
        )?,
        name: s.name.clone(),
        listen: s.listen.unwrap_or(defaults.listen),
    };
    Ok(())
}

/// Resolves `[server.autoscale]` into `config.autoscale`.
pub fn apply(s: &AutoscaleSection, config: &mut ServerConfig) -> Result<()> {
    let defaults = AutoscaleConfig::default();
    if let Some(hook) = &s.hook
        && hook.first().is_none_or(|p| p.trim().is_empty())
    {
        bail!(
            "config `server.autoscale.hook`: give the command, such as [\"/usr/local/bin/scale-agents\"]"
        );
    }
    let max_agents = s.max_agents.unwrap_or(defaults.policy.max_agents);
    if max_agents == 0 {
        bail!("config `server.autoscale.max_agents`: must be at least 1");
    }
    config.autoscale = AutoscaleConfig {
        hook: s.hook.clone(),
        interval: duration(
            "autoscale.interval",
            s.interval.as_deref(),
            defaults.interval,
        )?,
        cooldown: duration(
            "autoscale.cooldown",
            s.cooldown.as_deref(),
            defaults.cooldown,
        )?,
        hook_timeout: duration(
            "autoscale.hook_timeout",
            s.hook_timeout.as_deref(),
            defaults.hook_timeout,
        )?,
        policy: Policy {
            min_idle: s.min_idle.unwrap_or(defaults.policy.min_idle),
            max_agents,
        },
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig::new(
            "127.0.0.1:8080".parse().expect("address"),
            std::path::PathBuf::from("/tmp/unused"),
        )
    }

    #[test]
    fn a_section_resolves_and_bad_values_are_refused_by_field() {
        let mut c = config();
        let s = AutoscaleSection {
            hook: Some(vec!["/usr/local/bin/scale".into()]),
            cooldown: Some("90s".into()),
            min_idle: Some(2),
            ..AutoscaleSection::default()
        };
        apply(&s, &mut c).expect("valid");
        assert_eq!(c.autoscale.cooldown, Duration::from_secs(90));
        assert_eq!(c.autoscale.interval, Duration::from_secs(30));
        assert_eq!(c.autoscale.policy.min_idle, 2);
        for (bad, expected) in [
            (
                AutoscaleSection {
                    hook: Some(Vec::new()),
                    ..AutoscaleSection::default()
                },
                "server.autoscale.hook",
            ),
            (
                AutoscaleSection {
                    interval: Some("often".into()),
                    ..AutoscaleSection::default()
                },
                "server.autoscale.interval`: `often`",
            ),
            (
                AutoscaleSection {
                    max_agents: Some(0),
                    ..AutoscaleSection::default()
                },
                "server.autoscale.max_agents",
            ),
        ] {
            let err = apply(&bad, &mut config()).expect_err("refused");
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }
}
