//! Runs the privileged helper: through the configured command
//! (`sudo -n testfleet host-prep …`, which answers with JSON on stdout), or
//! in this process when no command is configured.

use std::time::Duration;

use testfleet_wire::protocol::{PrepAction, PrepStatus, PrepStep};

use super::helper::{self, HelperAnswer, HelperPlan};
use super::sysfs::Sysfs;
use super::{PrepError, PrepSettings};

/// How long the helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// The helper's arguments for `plan` (after the configured command).
pub(super) fn apply_args(settings: &PrepSettings, plan: &HelperPlan) -> Vec<String> {
    let mut args = common_args("apply", settings);
    if let Some(cpus) = &plan.cpus {
        args.extend(["--cpus".into(), cpus.to_string()]);
    }
    if let Some(governor) = &plan.governor {
        args.extend(["--governor".into(), governor.as_str().to_owned()]);
    }
    if let Some(turbo) = plan.turbo {
        args.extend(["--turbo".into(), if turbo { "on" } else { "off" }.into()]);
    }
    if plan.siblings_offline {
        args.push("--siblings-offline".into());
    }
    args
}

fn common_args(action: &str, settings: &PrepSettings) -> Vec<String> {
    vec![
        action.to_owned(),
        "--journal".into(),
        settings.journal.display().to_string(),
        "--sysfs-root".into(),
        settings.sysfs_root.display().to_string(),
    ]
}

/// Makes the privileged changes of `plan`; a helper that fails turns every
/// change it was asked for into a `failed` (or `not_permitted`) step.
pub(super) async fn apply(settings: &PrepSettings, plan: &HelperPlan) -> Vec<PrepStep> {
    let result = if settings.command.is_empty() {
        let sysfs = Sysfs::new(&settings.sysfs_root);
        let journal = settings.journal.clone();
        let plan = plan.clone();
        match tokio::task::spawn_blocking(move || helper::apply(&sysfs, &journal, &plan)).await {
            Ok(Ok(steps)) => Ok(steps),
            Ok(Err(e)) => Err((PrepStatus::Failed, e.to_string())),
            Err(e) => Err((PrepStatus::Failed, format!("the helper panicked: {e}"))),
        }
    } else {
        run_helper(settings, apply_args(settings, plan))
            .await
            .map_err(|e| (PrepStatus::NotPermitted, e.to_string()))
    };
    match result {
        Ok(steps) => steps,
        Err((status, detail)) => {
            let mut asked = Vec::new();
            if plan.turbo.is_some() {
                asked.push(PrepAction::Turbo);
            }
            if plan.governor.is_some() {
                asked.push(PrepAction::Governor);
            }
            if plan.siblings_offline {
                asked.push(PrepAction::SiblingOffline);
            }
            asked
                .into_iter()
                .map(|step| PrepStep {
                    step,
                    target: "host".into(),
                    status,
                    detail: detail.clone(),
                })
                .collect()
        }
    }
}

/// Undoes the journal, through the helper command or in this process.
pub(super) async fn restore(settings: &PrepSettings) -> Result<Vec<PrepStep>, PrepError> {
    if settings.command.is_empty() {
        let sysfs = Sysfs::new(&settings.sysfs_root);
        let journal = settings.journal.clone();
        return match tokio::task::spawn_blocking(move || helper::restore(&sysfs, &journal)).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(PrepError::Helper {
                command: "in-process restore".into(),
                detail: e.to_string(),
            }),
        };
    }
    run_helper(settings, common_args("restore", settings)).await
}

/// Runs the configured command with `args`; its stdout is a [`HelperAnswer`].
async fn run_helper(
    settings: &PrepSettings,
    args: Vec<String>,
) -> Result<Vec<PrepStep>, PrepError> {
    let shown = format!("{} {}", settings.command.join(" "), args.join(" "));
    let failed = |detail: String| PrepError::Helper {
        command: shown.clone(),
        detail,
    };
    let (program, prefix) = settings
        .command
        .split_first()
        .ok_or_else(|| failed("no command configured".into()))?;
    let output = tokio::process::Command::new(program)
        .args(prefix)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(HELPER_TIMEOUT, output).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(failed(format!("failed to start it: {e}"))),
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                HELPER_TIMEOUT.as_secs()
            )));
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{}: {}", output.status, stderr.trim())));
    }
    serde_json::from_slice::<HelperAnswer>(&output.stdout)
        .map(|a| a.steps)
        .map_err(|e| failed(format!("its answer is not JSON steps: {e}")))
}
