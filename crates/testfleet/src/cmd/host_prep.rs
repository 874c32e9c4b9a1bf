//! `testfleet host-prep apply|restore`: the small privileged helper a lab
//! installs once (a sudoers line or a systemd unit) so that the agent never
//! runs as root. It writes only the sysfs files whose paths it computes from
//! CPU numbers, journals each change before making it, and answers with the
//! steps it took as JSON on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use testfleet_agent::prep::helper::{self, HelperAnswer, HelperPlan};
use testfleet_agent::prep::sysfs::Sysfs;
use testfleet_core::job::bench::{CpuList, Governor};

use crate::exit;

/// `testfleet host-prep …`.
#[derive(Debug, Args)]
pub struct HostPrepArgs {
    #[command(subcommand)]
    pub action: HostPrepAction,
}

/// What the helper does.
#[derive(Debug, Subcommand)]
pub enum HostPrepAction {
    /// Prepare the host (journaling every change first); prints the steps as JSON.
    Apply(ApplyArgs),
    /// Undo a journal in reverse order and remove it; prints the steps as JSON.
    Restore(Where),
}

/// The journal and the sysfs tree.
#[derive(Debug, Args)]
pub struct Where {
    /// The journal file (its name must end in `.journal`).
    #[arg(long)]
    pub journal: PathBuf,
    /// The sysfs tree (a temporary tree in tests).
    #[arg(long, default_value = "/sys")]
    pub sysfs_root: PathBuf,
}

/// `host-prep apply`'s changes.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub at: Where,
    /// The pinned CPUs, such as `0` or `2-3`.
    #[arg(long, value_parser = CpuList::parse)]
    pub cpus: Option<CpuList>,
    /// The governor of the pinned CPUs (every CPU without --cpus).
    #[arg(long, value_parser = Governor::parse)]
    pub governor: Option<Governor>,
    /// Turbo / boost on or off.
    #[arg(long)]
    pub turbo: Option<OnOff>,
    /// Take the hyperthread siblings of the pinned CPUs offline.
    #[arg(long)]
    pub siblings_offline: bool,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Runs the helper. `sudo_uid`: `SUDO_UID` when run through sudo, in
/// which case the sysfs root must be `/sys` (a caller may not aim root's
/// writes at a tree of their own).
pub fn run(args: HostPrepArgs, sudo_uid: Option<String>) -> Result<u8> {
    let at = match &args.action {
        HostPrepAction::Apply(a) => &a.at,
        HostPrepAction::Restore(w) => w,
    };
    check_where(at, sudo_uid.is_some())?;
    let sysfs = Sysfs::new(&at.sysfs_root);
    let steps = match &args.action {
        HostPrepAction::Apply(a) => {
            let plan = HelperPlan {
                cpus: a.cpus.clone(),
                governor: a.governor.clone(),
                turbo: a.turbo.map(|t| matches!(t, OnOff::On)),
                siblings_offline: a.siblings_offline,
            };
            helper::apply(&sysfs, &a.at.journal, &plan)?
        }
        HostPrepAction::Restore(w) => helper::restore(&sysfs, &w.journal)?,
    };
    let answer = serde_json::to_string(&HelperAnswer { steps })?;
    outln!("{answer}")?;
    Ok(exit::OK)
}

fn check_where(at: &Where, via_sudo: bool) -> Result<()> {
    let name_ok = at
        .journal
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".journal"));
    if !name_ok {
        bail!(
            "--journal {}: the journal's file name must end in `.journal`",
            at.journal.display()
        );
    }
    if via_sudo && at.sysfs_root != Path::new("/sys") {
        bail!(
            "--sysfs-root {}: through sudo, only /sys may be prepared",
            at.sysfs_root.display()
        );
    }
    std::fs::metadata(&at.sysfs_root)
        .with_context(|| format!("--sysfs-root {}", at.sysfs_root.display()))?;
    Ok(())
}
