//! Configuration of benchmark host preparation for agents: `[agent.bench]`
//! (the default `[bench]` table of every task this agent runs) and
//! `[agent.host_prep]` (the helper command, the sysfs tree, the journal, the
//! longest wait for a quiet host), then the `--sysfs-root` and
//! `--prep-journal` flags. Part of `settings`: defaults → file → flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use testfleet_agent::AgentConfig;
use testfleet_core::job::BenchSpec;

/// `[agent.host_prep]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPrepSection {
    /// The privileged helper, such as `["sudo", "-n", "/usr/bin/testfleet",
    /// "host-prep"]`; without it the agent writes sysfs itself (as root).
    pub command: Option<Vec<String>>,
    /// The sysfs tree (`/sys`).
    pub sysfs_root: Option<PathBuf>,
    /// The journal of changes not yet undone
    /// (`<work_dir>/host-prep.journal`); its name must end in `.journal`.
    pub journal: Option<PathBuf>,
    /// The longest an attempt waits for the load to fall under `max_load`
    /// (`10m`).
    pub max_load_wait: Option<String>,
    /// How often the load is looked at while waiting (`5s`).
    pub load_poll: Option<String>,
}

/// The flags that override `[agent.host_prep]`.
#[derive(Debug, Default)]
pub struct PrepFlags<'a> {
    pub sysfs_root: Option<&'a std::path::Path>,
    pub journal: Option<&'a std::path::Path>,
}

/// Applies `[agent.bench]`, `[agent.host_prep]` and the flags.
pub fn apply_agent(
    bench: Option<&BenchSpec>,
    section: Option<&HostPrepSection>,
    flags: &PrepFlags<'_>,
    config: &mut AgentConfig,
) -> Result<()> {
    let default = HostPrepSection::default();
    let s = section.unwrap_or(&default);
    let p = &mut config.prep;
    if let Some(bench) = bench {
        p.defaults = bench.clone();
    }
    if let Some(command) = &s.command {
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            bail!(
                "config `agent.host_prep.command`: must name a program, such as [\"sudo\", \"-n\", \"/usr/bin/testfleet\", \"host-prep\"]"
            );
        }
        p.command = command.clone();
    }
    if let Some(root) = flags
        .sysfs_root
        .map(PathBuf::from)
        .or_else(|| s.sysfs_root.clone())
    {
        p.sysfs_root = root;
    }
    if let Some(journal) = flags
        .journal
        .map(PathBuf::from)
        .or_else(|| s.journal.clone())
    {
        p.journal = journal;
    }
    let named_ok = p
        .journal
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".journal"));
    if !named_ok {
        bail!(
            "host-prep journal {}: its file name must end in `.journal`",
            p.journal.display()
        );
    }
    if let Some(t) = &s.max_load_wait {
        p.max_load_wait = duration("agent.host_prep.max_load_wait", t)?;
    }
    if let Some(t) = &s.load_poll {
        p.load_poll = duration("agent.host_prep.load_poll", t)?;
        if p.load_poll.is_zero() {
            bail!("config `agent.host_prep.load_poll`: must be longer than zero");
        }
    }
    Ok(())
}

fn duration(field: &str, text: &str) -> Result<std::time::Duration> {
    humantime::parse_duration(text.trim()).with_context(|| {
        format!("config `{field}`: `{text}` is not a duration (write it like \"10m\" or \"30s\")")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new("http://127.0.0.1:1", "b1", PathBuf::from("/var/lib/tf"))
    }

    #[test]
    fn the_file_sets_defaults_and_the_helper_and_flags_win_over_it() {
        let bench: BenchSpec = toml::from_str("cpus = \"2-3\"\nturbo = false").unwrap();
        let section: HostPrepSection = toml::from_str(
            "command = [\"sudo\", \"-n\", \"/usr/bin/testfleet\", \"host-prep\"]\n\
             sysfs_root = \"/sys\"\nmax_load_wait = \"2m\"",
        )
        .unwrap();
        let mut c = config();
        assert_eq!(
            c.prep.journal,
            PathBuf::from("/var/lib/tf/host-prep.journal")
        );
        let root = PathBuf::from("/tmp/fake-sys");
        let flags = PrepFlags {
            sysfs_root: Some(&root),
            journal: None,
        };
        apply_agent(Some(&bench), Some(&section), &flags, &mut c).unwrap();
        assert_eq!(c.prep.defaults, bench);
        assert_eq!(c.prep.command[0], "sudo");
        assert_eq!(c.prep.sysfs_root, root);
        assert_eq!(c.prep.max_load_wait, std::time::Duration::from_secs(120));
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let journal = PathBuf::from("/etc/passwd");
        let flags = PrepFlags {
            sysfs_root: None,
            journal: Some(&journal),
        };
        let e = apply_agent(None, None, &flags, &mut config()).unwrap_err();
        assert!(e.to_string().contains("must end in `.journal`"), "{e}");
        let section: HostPrepSection = toml::from_str("command = []").unwrap();
        let e =
            apply_agent(None, Some(&section), &PrepFlags::default(), &mut config()).unwrap_err();
        assert!(e.to_string().contains("agent.host_prep.command"), "{e}");
        let section: HostPrepSection = toml::from_str("max_load_wait = \"soon\"").unwrap();
        let e =
            apply_agent(None, Some(&section), &PrepFlags::default(), &mut config()).unwrap_err();
        assert!(e.to_string().contains("max_load_wait"), "{e}");
    }
}
