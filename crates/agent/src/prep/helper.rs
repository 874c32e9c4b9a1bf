//! The privileged half of host preparation, run by `testfleet host-prep`
//! (under sudo or a systemd unit) or in the agent's own process when it may
//! write sysfs itself: governor, turbo and CPUs offline. Each change is
//! journaled before it is made; [`restore`] undoes a journal in reverse.

use std::path::Path;

use serde::{Deserialize, Serialize};
use testfleet_core::job::bench::{CpuList, Governor};
use testfleet_wire::protocol::{PrepAction, PrepStatus, PrepStep};

use super::journal::{self, Entry, Journal, JournalError};
use super::sysfs::{Knob, Sysfs, status_of};

/// What to change: the privileged part of a `[bench]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelperPlan {
    /// The pinned CPUs (their governors, their siblings).
    pub cpus: Option<CpuList>,
    pub governor: Option<Governor>,
    pub turbo: Option<bool>,
    pub siblings_offline: bool,
}

impl HelperPlan {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.governor.is_none() && self.turbo.is_none() && !self.siblings_offline
    }
}

/// What the helper prints on stdout: the steps it took, for the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperAnswer {
    pub steps: Vec<PrepStep>,
}

/// Makes the changes of `plan` under `sysfs`, journaling each at `journal`
/// before it is made. A step the machine cannot do is recorded and the rest
/// go on; only a journal that cannot be written stops it (no change is made
/// that could not be undone).
pub fn apply(
    sysfs: &Sysfs,
    journal_path: &Path,
    plan: &HelperPlan,
) -> Result<Vec<PrepStep>, JournalError> {
    let mut journal = Journal::create(journal_path)?;
    let mut steps = Vec::new();
    if let Some(turbo) = plan.turbo {
        turbo_step(sysfs, &mut journal, turbo, &mut steps)?;
    }
    if let Some(governor) = &plan.governor {
        let cpus: Vec<u32> = match &plan.cpus {
            Some(list) => list.0.iter().copied().collect(),
            None => sysfs.cpus(),
        };
        for cpu in cpus {
            governor_step(sysfs, &mut journal, cpu, governor, &mut steps)?;
        }
    }
    if plan.siblings_offline {
        match &plan.cpus {
            Some(pinned) => siblings_step(sysfs, &mut journal, pinned, &mut steps)?,
            None => steps.push(PrepStep {
                step: PrepAction::SiblingOffline,
                target: "siblings".into(),
                status: PrepStatus::Failed,
                detail: "siblings_offline needs `cpus`: the siblings of which CPUs?".into(),
            }),
        }
    }
    journal.close()?;
    Ok(steps)
}

/// Turbo off (or on) through `intel_pstate/no_turbo`, else `cpufreq/boost`.
fn turbo_step(
    sysfs: &Sysfs,
    journal: &mut Journal,
    turbo: bool,
    steps: &mut Vec<PrepStep>,
) -> Result<(), JournalError> {
    let no_turbo = if turbo { "0" } else { "1" };
    let boost = if turbo { "1" } else { "0" };
    if sysfs.read(Knob::NoTurbo).is_ok() {
        steps.push(change(sysfs, journal, Knob::NoTurbo, no_turbo)?);
    } else if sysfs.read(Knob::Boost).is_ok() {
        steps.push(change(sysfs, journal, Knob::Boost, boost)?);
    } else {
        steps.push(PrepStep {
            step: PrepAction::Turbo,
            target: "turbo".into(),
            status: PrepStatus::Unsupported,
            detail: "neither intel_pstate/no_turbo nor cpufreq/boost exists".into(),
        });
    }
    Ok(())
}

fn governor_step(
    sysfs: &Sysfs,
    journal: &mut Journal,
    cpu: u32,
    governor: &Governor,
    steps: &mut Vec<PrepStep>,
) -> Result<(), JournalError> {
    if let Some(offered) = sysfs.available_governors(cpu)
        && !offered.iter().any(|g| g == governor.as_str())
    {
        steps.push(PrepStep {
            step: PrepAction::Governor,
            target: format!("cpu{cpu}"),
            status: PrepStatus::Unsupported,
            detail: format!(
                "governor `{}` is not offered (available: {})",
                governor.as_str(),
                offered.join(" ")
            ),
        });
        return Ok(());
    }
    steps.push(change(
        sysfs,
        journal,
        Knob::Governor(cpu),
        governor.as_str(),
    )?);
    Ok(())
}

fn siblings_step(
    sysfs: &Sysfs,
    journal: &mut Journal,
    pinned: &CpuList,
    steps: &mut Vec<PrepStep>,
) -> Result<(), JournalError> {
    let mut offline = std::collections::BTreeSet::new();
    for cpu in pinned.0.iter().copied() {
        match sysfs.siblings(cpu) {
            Ok(list) => offline.extend(list.0.into_iter().filter(|c| !pinned.contains(*c))),
            Err(e) => steps.push(PrepStep {
                step: PrepAction::SiblingOffline,
                target: format!("cpu{cpu}"),
                status: status_of(&e),
                detail: format!("failed to read the siblings of cpu{cpu}: {e}"),
            }),
        }
    }
    if offline.is_empty() && steps.iter().all(|s| s.step != PrepAction::SiblingOffline) {
        steps.push(PrepStep {
            step: PrepAction::SiblingOffline,
            target: format!("cpus {pinned}"),
            status: PrepStatus::AlreadySet,
            detail: "the pinned CPUs have no other hyperthread siblings".into(),
        });
    }
    for cpu in offline {
        steps.push(change(sysfs, journal, Knob::Online(cpu), "0")?);
    }
    Ok(())
}

/// Sets `knob` to `new`: read the old value, journal, write.
fn change(
    sysfs: &Sysfs,
    journal: &mut Journal,
    knob: Knob,
    new: &str,
) -> Result<PrepStep, JournalError> {
    let step = |status: PrepStatus, detail: String| PrepStep {
        step: knob.action(),
        target: knob.target(),
        status,
        detail,
    };
    let old = match sysfs.read(knob) {
        Ok(old) => old,
        Err(e) => {
            return Ok(step(
                status_of(&e),
                format!("failed to read {}: {e}", knob.rel_path().display()),
            ));
        }
    };
    if old == new {
        return Ok(step(PrepStatus::AlreadySet, format!("already {new}")));
    }
    if !knob.valid_value(&old) {
        return Ok(step(
            PrepStatus::Unsupported,
            format!(
                "{} holds `{old}`, which could not be put back",
                knob.rel_path().display()
            ),
        ));
    }
    journal.record(&Entry {
        knob,
        old: old.clone(),
        new: new.to_owned(),
    })?;
    Ok(match sysfs.write(knob, new) {
        Ok(()) => step(PrepStatus::Applied, format!("{old} -> {new}")),
        Err(e) => step(
            status_of(&e),
            format!(
                "failed to write {new} to {}: {e}",
                knob.rel_path().display()
            ),
        ),
    })
}

/// Undoes the journal at `journal_path` in reverse order and removes it;
/// returns one step per change undone (`applied`: put back). No journal:
/// nothing to do.
pub fn restore(sysfs: &Sysfs, journal_path: &Path) -> Result<Vec<PrepStep>, JournalError> {
    let Some(entries) = journal::read(journal_path)? else {
        return Ok(Vec::new());
    };
    let mut steps = Vec::new();
    for entry in entries.iter().rev() {
        let knob = entry.knob;
        let (status, detail) = match sysfs.write(knob, &entry.old) {
            Ok(()) => (
                PrepStatus::Applied,
                format!("restored {} -> {}", entry.new, entry.old),
            ),
            Err(e) => (
                status_of(&e),
                format!(
                    "failed to restore {} to {}: {e}",
                    knob.rel_path().display(),
                    entry.old
                ),
            ),
        };
        steps.push(PrepStep {
            step: knob.action(),
            target: knob.target(),
            status,
            detail,
        });
    }
    journal::remove(journal_path)?;
    Ok(steps)
}
