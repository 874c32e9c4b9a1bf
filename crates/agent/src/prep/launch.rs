//! The unprivileged half of host preparation: how each step's process is
//! started (pinned with `taskset`, `nice`, `ionice`), and the wait for the
//! host's load to fall under `max_load`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testfleet_core::job::bench::{BenchSpec, CpuList, IoNice};
use testfleet_wire::protocol::{PrepAction, PrepStatus, PrepStep};
use tokio::sync::watch;

/// A prefix that starts a step's shell pinned, niced and ioniced:
/// `exec taskset -c 0 nice -n 5 ionice -c 3 sh -c '…'`. The step's own
/// shell `exec`s into it, so the step keeps its pid and process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepWrap {
    argv: Vec<String>,
}

impl StepWrap {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// The shell command that runs `command` under the wrap.
    pub fn wrap(&self, command: &str) -> String {
        if self.argv.is_empty() {
            return command.to_owned();
        }
        format!(
            "exec {} sh -c {}",
            self.argv.join(" "),
            shell_quote(command)
        )
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The wrap for `spec`'s `cpus`, `nice` and `ionice`, and a step record for
/// each. A tool that is missing or a CPU this process may not use is
/// recorded and left out; the steps still run.
pub fn step_wrap(
    spec: &BenchSpec,
    path_var: Option<&std::ffi::OsStr>,
) -> (StepWrap, Vec<PrepStep>) {
    let mut wrap = StepWrap::default();
    let mut steps = Vec::new();
    let have = |tool: &str| find_tool(tool, path_var);
    if let Some(cpus) = &spec.cpus {
        let target = format!("cpus {cpus}");
        let allowed = allowed_cpus();
        let (status, detail) = if !have("taskset") {
            (
                PrepStatus::Unsupported,
                "`taskset` (util-linux) is not installed".to_owned(),
            )
        } else if let Some(allowed) = allowed.filter(|a| !cpus.0.is_subset(&a.0)) {
            (
                PrepStatus::Unsupported,
                format!("the agent may only use CPUs {allowed}"),
            )
        } else {
            wrap.argv
                .extend(["taskset".into(), "-c".into(), cpus.to_string()]);
            (
                PrepStatus::Applied,
                format!("steps run under taskset -c {cpus}"),
            )
        };
        steps.push(PrepStep {
            step: PrepAction::Pin,
            target,
            status,
            detail,
        });
    }
    if let Some(nice) = spec.nice {
        let want = i32::from(nice.get());
        let now = own_nice().unwrap_or(0);
        let adjust = want - now;
        let (status, detail) = if adjust == 0 {
            (
                PrepStatus::AlreadySet,
                format!("the agent runs at nice {now}"),
            )
        } else if adjust < 0 && !is_root() {
            (
                PrepStatus::NotPermitted,
                format!("the agent runs at nice {now}; only root may lower it to {want}"),
            )
        } else {
            wrap.argv
                .extend(["nice".into(), "-n".into(), adjust.to_string()]);
            (PrepStatus::Applied, format!("steps run at nice {want}"))
        };
        steps.push(PrepStep {
            step: PrepAction::Nice,
            target: "steps".into(),
            status,
            detail,
        });
    }
    if let Some(ionice) = spec.ionice {
        let (status, detail) = if have("ionice") {
            wrap.argv.push("ionice".into());
            match ionice {
                IoNice::Idle => wrap.argv.extend(["-c".into(), "3".into()]),
                IoNice::BestEffort(n) => {
                    wrap.argv
                        .extend(["-c".into(), "2".into(), "-n".into(), n.to_string()]);
                }
            }
            (
                PrepStatus::Applied,
                format!("steps run at I/O class {ionice}"),
            )
        } else {
            (
                PrepStatus::Unsupported,
                "`ionice` (util-linux) is not installed".to_owned(),
            )
        };
        steps.push(PrepStep {
            step: PrepAction::Ionice,
            target: "steps".into(),
            status,
            detail,
        });
    }
    (wrap, steps)
}

/// Whether `tool` is an executable file in one of `path_var`'s directories.
fn find_tool(tool: &str, path_var: Option<&std::ffi::OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path_var) = path_var else {
        return false;
    };
    std::env::split_paths(path_var).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The CPUs this process may run on (`Cpus_allowed_list`).
fn allowed_cpus() -> Option<CpuList> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    CpuList::parse(list.trim()).ok()
}

/// Whether this process runs as root (effective uid 0, from `/proc`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// This process's niceness (field 19 of `/proc/self/stat`).
fn own_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// Why the load average could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadReadError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no load average", path.display())]
    Malformed { path: PathBuf },
}

/// How the wait for a quiet host ended.
#[derive(Debug)]
pub enum LoadWait {
    /// The load is at or under the limit (after waiting this long).
    Quiet { load: f64, waited: Duration },
    /// The load stayed above the limit for the whole wait.
    Busy { load: f64, waited: Duration },
    /// The load average cannot be read; the attempt goes on.
    Unknown(LoadReadError),
    /// The attempt was cancelled while it waited.
    Cancelled,
}

/// Waits until the 1-minute load average in `loadavg` (`/proc/loadavg`) is
/// at most `max`, polling every `poll`, for at most `limit`.
pub async fn wait_for_load(
    loadavg: &Path,
    max: f64,
    limit: Duration,
    poll: Duration,
    cancel: &mut watch::Receiver<bool>,
) -> LoadWait {
    let started = tokio::time::Instant::now();
    loop {
        let load = match read_load(loadavg) {
            Ok(load) => load,
            Err(e) => return LoadWait::Unknown(e),
        };
        let waited = started.elapsed();
        if load <= max {
            return LoadWait::Quiet { load, waited };
        }
        if waited >= limit {
            return LoadWait::Busy { load, waited };
        }
        let nap = poll.min(limit.saturating_sub(waited));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = cancel.wait_for(|c| *c) => return LoadWait::Cancelled,
        }
    }
}

fn read_load(loadavg: &Path) -> Result<f64, LoadReadError> {
    let text = std::fs::read_to_string(loadavg).map_err(|source| LoadReadError::Read {
        path: loadavg.to_owned(),
        source,
    })?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LoadReadError::Malformed {
            path: loadavg.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_command_keeps_its_quotes() {
        let wrap = StepWrap {
            argv: vec!["taskset".into(), "-c".into(), "0".into()],
        };
        assert_eq!(
            wrap.wrap("echo 'a b'"),
            r"exec taskset -c 0 sh -c 'echo '\''a b'\'''"
        );
        assert_eq!(StepWrap::default().wrap("true"), "true");
    }

    #[test]
    fn missing_tools_are_recorded_as_unsupported() {
        let spec: BenchSpec =
            serde_json::from_value(serde_json::json!({"cpus": "0", "ionice": "idle"})).unwrap();
        let (wrap, steps) = step_wrap(&spec, Some(std::ffi::OsStr::new("/nonexistent")));
        assert!(wrap.is_empty());
        assert!(
            steps.iter().all(|s| s.status == PrepStatus::Unsupported),
            "{steps:?}"
        );
    }
}
