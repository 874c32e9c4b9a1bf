//! Benchmark host preparation (`[task.bench]`, `[agent.bench]`), as Qt's
//! corebenchrunner does it: wait for a quiet host, turbo off, the pinned
//! CPUs' governor, their hyperthread siblings offline, and the steps pinned,
//! niced and ioniced. Everything done and not done becomes the attempt's
//! machine fingerprint (`MachineInfo::prep`); everything is undone after the
//! attempt, and at the agent's next start when it died mid-attempt.
//!
//! `sysfs` names the only files that may be written, `journal` records each
//! change before it is made, `helper` makes and undoes the changes (the
//! privileged part, also run as `testfleet host-prep`), `launch` wraps the
//! steps and waits for the load, `invoke` runs the helper through the
//! configured command (sudo, a systemd unit) or in this process.

pub mod helper;
mod invoke;
pub mod journal;
pub mod launch;
pub mod sysfs;

use std::path::PathBuf;
use std::time::Duration;

use testfleet_core::AttemptOutcome;
use testfleet_core::job::BenchSpec;
use testfleet_wire::protocol::{MachineInfo, PrepAction, PrepStatus, PrepStep};
use testfleet_wire::reason::ReasonData;

use crate::outcome::Verdict;
use tokio::sync::watch;

pub use helper::HelperPlan;
pub use launch::StepWrap;

/// How this agent prepares its host: the agent's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepSettings {
    /// The sysfs tree (`/sys`; a temporary tree in tests).
    pub sysfs_root: PathBuf,
    /// Where the privileged changes are journaled until they are undone.
    pub journal: PathBuf,
    /// The helper command, such as `["sudo", "-n", "/usr/bin/testfleet",
    /// "host-prep"]`; empty: the agent makes the changes itself (as root, or
    /// when the sysfs files are writable; otherwise each is `not_permitted`).
    pub command: Vec<String>,
    /// The agent's `[agent.bench]`: what a task's `[task.bench]` leaves out.
    pub defaults: BenchSpec,
    /// The longest an attempt waits for the load to fall under `max_load`.
    pub max_load_wait: Duration,
    /// How often the load is looked at while waiting.
    pub load_poll: Duration,
    /// The load average file (`/proc/loadavg`).
    pub loadavg: PathBuf,
}

impl PrepSettings {
    /// `/sys`, no helper command, no defaults, up to 10 minutes of waiting
    /// for the load; the journal at `journal`.
    pub fn new(journal: PathBuf) -> PrepSettings {
        PrepSettings {
            sysfs_root: PathBuf::from("/sys"),
            journal,
            command: Vec::new(),
            defaults: BenchSpec::default(),
            max_load_wait: Duration::from_secs(600),
            load_poll: Duration::from_secs(5),
            loadavg: PathBuf::from("/proc/loadavg"),
        }
    }
}

/// A host prepared for an attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// Every step, done or not, for the fingerprint and the log.
    pub steps: Vec<PrepStep>,
    /// How each step's process is started.
    pub wrap: StepWrap,
    /// Whether privileged changes may have been made (and must be undone).
    pub changed_host: bool,
}

/// Why an attempt does not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrepRefusal {
    #[error(
        "the host's 1-minute load average stayed above max_load {max} for {waited_s} s (last {load:.2}); try again when it is quieter"
    )]
    Busy { load: f64, max: f64, waited_s: u64 },
    #[error("cancelled while waiting for the host's load to fall")]
    Cancelled,
}

impl PrepRefusal {
    /// The verdict of an attempt that does not start: an infrastructure
    /// error for a busy host (retried, perhaps elsewhere), `cancelled` for
    /// a cancel. A busy host's reason data is
    /// `{"kind": "host_load", "load", "max_load", "waited_s"}`.
    pub fn verdict(&self) -> Verdict {
        let (outcome, data) = match self {
            PrepRefusal::Cancelled => (AttemptOutcome::Cancelled, None),
            PrepRefusal::Busy {
                load,
                max,
                waited_s,
            } => {
                let mut data = serde_json::Map::new();
                data.insert("kind".into(), "host_load".into());
                data.insert("load".into(), (*load).into());
                data.insert("max_load".into(), (*max).into());
                data.insert("waited_s".into(), (*waited_s).into());
                (AttemptOutcome::InfraError, Some(ReasonData::Other(data)))
            }
        };
        Verdict {
            outcome,
            reason: Some(self.to_string()),
            reason_data: data,
            log: None,
        }
    }
}

/// The attempt's machine fingerprint: `base` (the one the agent reported)
/// with the preparation's `steps`; `None` when nothing was prepared (the
/// agent's fingerprint stands).
pub fn attempt_machine(
    base: Option<&MachineInfo>,
    steps: Vec<PrepStep>,
) -> Option<Box<MachineInfo>> {
    if steps.is_empty() {
        return None;
    }
    let mut machine = base.cloned().unwrap_or_default();
    machine.prep = steps;
    Some(Box::new(machine))
}

/// Why undoing a preparation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("the host-prep helper `{command}` failed: {detail}")]
    Helper { command: String, detail: String },
}

/// Prepares the host for an attempt whose task asks `task` (over the
/// agent's defaults). `Ok` with no steps: nothing was asked.
pub async fn prepare(
    settings: &PrepSettings,
    task: Option<&BenchSpec>,
    mut cancel: watch::Receiver<bool>,
) -> Result<Prepared, PrepRefusal> {
    let spec = match task {
        Some(task) => task.over(&settings.defaults),
        None => settings.defaults.clone(),
    };
    if spec.is_empty() {
        return Ok(Prepared::default());
    }
    let mut prepared = Prepared::default();
    if let Some(max) = spec.max_load {
        let wait = launch::wait_for_load(
            &settings.loadavg,
            max.get(),
            settings.max_load_wait,
            settings.load_poll,
            &mut cancel,
        )
        .await;
        let (status, detail) = match wait {
            launch::LoadWait::Quiet { load, waited } => (
                PrepStatus::Applied,
                format!(
                    "load {load:.2} <= {} after {} s",
                    max.get(),
                    waited.as_secs()
                ),
            ),
            launch::LoadWait::Busy { load, waited } => {
                return Err(PrepRefusal::Busy {
                    load,
                    max: max.get(),
                    waited_s: waited.as_secs(),
                });
            }
            launch::LoadWait::Cancelled => return Err(PrepRefusal::Cancelled),
            launch::LoadWait::Unknown(e) => {
                let why = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ");
                (PrepStatus::Unsupported, why)
            }
        };
        prepared.steps.push(PrepStep {
            step: PrepAction::Load,
            target: "loadavg".into(),
            status,
            detail,
        });
    }
    let plan = HelperPlan {
        cpus: spec.cpus.clone(),
        governor: spec.governor.clone(),
        turbo: spec.turbo,
        siblings_offline: spec.siblings_offline.unwrap_or(false),
    };
    if !plan.is_empty() {
        // A journal left by an attempt that was not restored is undone
        // first: the new one must start from the host's own values.
        if settings.journal.exists()
            && let Err(e) = restore(settings).await
        {
            tracing::warn!("failed to undo an earlier host preparation: {e}");
        }
        prepared.steps.extend(invoke::apply(settings, &plan).await);
        prepared.changed_host = true;
    }
    let path = std::env::var_os("PATH");
    let (wrap, steps) = launch::step_wrap(&spec, path.as_deref());
    prepared.wrap = wrap;
    prepared.steps.extend(steps);
    Ok(prepared)
}

/// Undoes the journaled changes (after an attempt, or at start after a
/// crash); returns a step per change undone. No journal: nothing to do.
pub async fn restore(settings: &PrepSettings) -> Result<Vec<PrepStep>, PrepError> {
    if !settings.journal.exists() {
        return Ok(Vec::new());
    }
    invoke::restore(settings).await
}

/// At the agent's start: undoes what an agent that died mid-attempt left
/// prepared, and logs it.
pub async fn recover(settings: &PrepSettings) {
    if !settings.journal.exists() {
        return;
    }
    tracing::warn!(
        journal = %settings.journal.display(),
        "the host is still prepared from an attempt that did not finish; restoring it"
    );
    match restore(settings).await {
        Ok(steps) => {
            for s in steps {
                tracing::info!(target = %s.target, status = ?s.status, "{}", s.detail);
            }
        }
        Err(e) => tracing::error!("failed to restore the host: {e}"),
    }
}

/// A one-line account of a step for the attempt's log.
pub fn describe(step: &PrepStep) -> String {
    let status = serde_json::to_value(step.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let action = serde_json::to_value(step.step)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "host prep: {action} {}: {status}: {}",
        step.target, step.detail
    )
}
