//! Running one step: a shell command in its own process group, its output
//! streamed, its whole process tree killed on timeout or cancel.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// The time limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// The step is killed when it runs longer than this.
    pub timeout: Duration,
    /// The step is killed when it prints nothing for this long.
    pub silence: Option<Duration>,
    /// How long the tree may outlive SIGTERM before SIGKILL.
    pub kill_grace: Duration,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    /// No output for longer than the silence limit.
    Silent,
    Cancelled,
    SpawnFailed(String),
}

/// Runs `sh -c command` in `cwd`, sending output bytes to `output`. The step
/// is killed (with every process it started) when `timeout` passes or
/// `cancel` turns true.
pub async fn run_step(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    limits: StepLimits,
    cancel: watch::Receiver<bool>,
    output: mpsc::Sender<Vec<u8>>,
) -> StepEnd {
    run_step_tee(command, cwd, env, limits, cancel, output, None).await
}

/// As [`run_step`], also appending stdout and stderr, each whole and
/// apart, to the files of `tee` (kept for a failed attempt).
pub async fn run_step_tee(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    limits: StepLimits,
    mut cancel: watch::Receiver<bool>,
    output: mpsc::Sender<Vec<u8>>,
    tee: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> StepEnd {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the whole tree can be signalled at once.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return StepEnd::SpawnFailed(e.to_string()),
    };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return StepEnd::SpawnFailed("the step exited before it could be tracked".into());
    };
    // Milliseconds since the start at which the step last printed.
    let started = tokio::time::Instant::now();
    let last_output = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            out,
            output.clone(),
            started,
            last_output.clone(),
            tee.map(|t| t.0.clone()),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(
            err,
            output.clone(),
            started,
            last_output.clone(),
            tee.map(|t| t.1.clone()),
        )));
    }
    drop(output);
    let silent = async {
        let Some(limit) = limits.silence else {
            return std::future::pending::<()>().await;
        };
        loop {
            let last =
                Duration::from_millis(last_output.load(std::sync::atomic::Ordering::Relaxed));
            let quiet_until = started + last + limit;
            if tokio::time::Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };

    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(code), _) => StepEnd::Exited(code),
                (None, Some(sig)) => StepEnd::Signalled(sig),
                (None, None) => StepEnd::Exited(-1),
            },
            Err(e) => StepEnd::SpawnFailed(e.to_string()),
        },
        _ = tokio::time::sleep(limits.timeout) => StepEnd::TimedOut,
        () = silent => StepEnd::Silent,
        _ = wait_cancelled(&mut cancel) => StepEnd::Cancelled,
    };
    // Whatever the step left behind (background jobs, or the whole tree on
    // timeout and cancel) goes with it. After a normal exit the shell is
    // already reaped, so only its group is signalled (its pid may be reused).
    let root_alive = !matches!(end, StepEnd::Exited(_) | StepEnd::Signalled(_));
    kill_tree(pid, limits.kill_grace, root_alive).await;
    let _ = child.wait().await;
    for r in readers {
        // A grandchild that escaped the group may hold the pipe open; don't
        // wait for it forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    end
}

async fn wait_cancelled(cancel: &mut watch::Receiver<bool>) {
    loop {
        if *cancel.borrow() {
            return;
        }
        if cancel.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

async fn pump(
    mut reader: impl AsyncReadExt + Unpin,
    output: mpsc::Sender<Vec<u8>>,
    started: tokio::time::Instant,
    last_output: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tee: Option<std::path::PathBuf>,
) {
    use tokio::io::AsyncWriteExt;
    let mut tee = match tee {
        Some(path) => tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .ok(),
        None => None,
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                last_output.store(at, std::sync::atomic::Ordering::Relaxed);
                if let Some(f) = &mut tee {
                    let _ = f.write_all(&buf[..n]).await;
                }
                if output.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Every process whose parent chain leads to `root`, found through /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = read_ppid(pid) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found: HashSet<i32> = HashSet::from([root]);
    let mut changed = true;
    while changed {
        changed = false;
        for (pid, ppid) in &parent_of {
            if found.contains(ppid) && found.insert(*pid) {
                changed = true;
            }
        }
    }
    found.remove(&root);
    found.into_iter().collect()
}

fn read_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields after the
    // last ')' are fixed: state, ppid, ...
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
}

/// SIGTERM to the group and every descendant, a grace period, then SIGKILL.
/// `root_alive` says whether `root` itself is still unreaped.
pub async fn kill_tree(root: i32, grace: Duration, root_alive: bool) {
    let mut targets = if root_alive {
        descendants(root)
    } else {
        Vec::new()
    };
    if root_alive {
        targets.push(root);
    }
    let group = Pid::from_raw(root);
    let _ = killpg(group, Signal::SIGTERM);
    for pid in &targets {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        let group_gone = killpg(group, None).is_err();
        if group_gone && !targets.iter().any(|p| alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Children may have forked meanwhile; look again before the hard kill.
    if root_alive {
        targets.extend(descendants(root));
    }
    let _ = killpg(group, Signal::SIGKILL);
    for pid in &targets {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// The 1-minute load average, for the reason of a stopped attempt.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
