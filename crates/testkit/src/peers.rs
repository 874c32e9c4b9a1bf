//! The peer rule. A test that needs something from outside the workspace (a
//! PostgreSQL server, the Python peers, `moto_server`, `influxd`, Qt 6) asks
//! for it through [`require_peer`] or [`skip`]:
//!
//! - under `CI=true` (what `.ci/run` and `cargo xtask test` set) a missing
//!   peer panics with how to install it, so a missing install step fails CI;
//! - outside CI the test returns early and is reported as skipped: the line
//!   `SKIPPED <test>: <peer> missing: <why> (<how to install>)` goes to the
//!   process's real stderr (not the test harness's capture, so a plain
//!   `cargo test` shows it), and is appended to the file named by
//!   `TESTFLEET_SKIP_REPORT` when that is set (`cargo xtask test` sets it and
//!   prints the skipped tests and their count at the end).
//!
//! Rust's test harness has no runtime skip: a skipped test still counts as
//! `ok` in the harness's summary; these lines are the record of what did not
//! run.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file (one line a skipped test) a skip is appended to, when set.
pub const SKIP_REPORT_ENV: &str = "TESTFLEET_SKIP_REPORT";

/// Something a test needs from outside the workspace, and how to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// What is missing, as a reader would name it.
    pub name: &'static str,
    /// How to install or start it.
    pub install: &'static str,
}

/// The test PostgreSQL server (trust authentication, user `postgres`).
pub const POSTGRES: Peer = Peer {
    name: "PostgreSQL on 127.0.0.1:5432",
    install: "install and start it with trust authentication for user postgres; `cargo xtask setup` starts an installed one",
};

/// The Python peers of tests/peers/requirements.txt in `.venv`.
pub const PYTHON_PEERS: Peer = Peer {
    name: "the Python peers",
    install: "`cargo xtask setup` installs tests/peers/requirements.txt into .venv (or set TESTFLEET_PYTHON)",
};

/// `moto_server`, the S3 fake, from `moto[server]` in `.venv`.
pub const MOTO: Peer = Peer {
    name: "moto_server",
    install: "`cargo xtask setup` installs moto[server] into .venv (or set TESTFLEET_MOTO_SERVER)",
};

/// Debian's `influxd` (InfluxDB 1.x).
pub const INFLUXD: Peer = Peer {
    name: "influxd",
    install: "`apt-get install influxdb`, or `cargo xtask setup` as root",
};

/// Qt 6 and CMake, to build the real QtTest benchmark.
pub const QT6: Peer = Peer {
    name: "Qt 6",
    install: "`apt-get install qt6-base-dev cmake g++`, or `cargo xtask setup` as root",
};

/// valgrind, for QtTest's `-callgrind` backend (instruction counts).
pub const VALGRIND: Peer = Peer {
    name: "valgrind",
    install: "`apt-get install valgrind`, or `cargo xtask setup` as root",
};

/// `valgrind` in `/usr/bin` or `/usr/local/bin`, or `None` under the peer
/// rule.
pub fn valgrind() -> Option<PathBuf> {
    let found = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no valgrind in /usr/bin or /usr/local/bin");
    require_peer(&VALGRIND, found)
}

/// Whether this run is CI: `CI` is set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `found`, or the peer rule applied to why it is missing: a panic under CI,
/// a reported skip (and `None`) outside.
pub fn require_peer<T, E: Display>(peer: &Peer, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            skip(peer, &why);
            None
        }
    }
}

/// Applies the peer rule to a missing `peer`: panics under CI; outside CI
/// reports the current test as skipped (the caller then returns).
pub fn skip(peer: &Peer, why: &dyn Display) {
    let line = skip_line(&current_test(), peer, why);
    assert!(
        !in_ci(),
        "{} is missing under CI=true: {why}; {}",
        peer.name,
        peer.install
    );
    // Straight to the process's stderr: `eprintln!` would be captured by the
    // test harness and shown only for failing tests.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(path) = std::env::var_os(SKIP_REPORT_ENV) {
        append_line(Path::new(&path), &line);
    }
}

/// The line that reports a skipped test.
fn skip_line(test: &str, peer: &Peer, why: &dyn Display) -> String {
    format!(
        "SKIPPED {test}: {} missing: {why} ({})",
        peer.name, peer.install
    )
}

/// The running test's name: the test harness names each test's thread after
/// it.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "a test".to_owned(),
    }
}

/// Appends `line` in one write (tests in several processes append at once).
fn append_line(path: &Path, line: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: failed to append to the skip report {}: {e}",
            path.display()
        );
    }
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A program from the peers' virtualenv (`.venv/bin/NAME`), or the path in
/// `env_var` when set; `None` (the peer rule for `peer`) when it is missing.
pub fn peer_program(peer: &Peer, env_var: &str, name: &str) -> Option<PathBuf> {
    let program = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin").join(name));
    let found = if program.exists() {
        Ok(program)
    } else {
        Err(format!("no {name} at {}", program.display()))
    };
    require_peer(peer, found)
}

/// The Python with the peers' requirements (`TESTFLEET_PYTHON` overrides).
pub fn peer_python() -> Option<PathBuf> {
    peer_program(&PYTHON_PEERS, "TESTFLEET_PYTHON", "python")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_line_names_the_test_the_peer_why_and_how_to_install() {
        let line = skip_line("e2e::spec_client", &MOTO, &"no moto_server at /x");
        assert_eq!(
            line,
            "SKIPPED e2e::spec_client: moto_server missing: no moto_server at /x \
             (`cargo xtask setup` installs moto[server] into .venv (or set TESTFLEET_MOTO_SERVER))"
        );
    }

    #[test]
    fn the_test_thread_is_named_after_the_test() {
        assert_eq!(
            current_test(),
            "peers::tests::the_test_thread_is_named_after_the_test"
        );
    }

    /// Run by `the_peer_rule_skips_outside_ci_and_fails_under_ci` in a
    /// child process of its own.
    #[test]
    #[ignore = "a probe: run in a child process by the test below"]
    fn probe_a_missing_peer() {
        skip(&MOTO, &"no moto_server at /nowhere");
    }

    #[test]
    fn the_peer_rule_skips_outside_ci_and_fails_under_ci() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = dir.path().join("skipped.txt");
        let probe = |ci: Option<&str>| {
            let mut cmd =
                std::process::Command::new(std::env::current_exe().expect("the test binary"));
            cmd.args(["--exact", "peers::tests::probe_a_missing_peer", "--ignored"])
                .env(SKIP_REPORT_ENV, &report)
                .env_remove("CI");
            if let Some(ci) = ci {
                cmd.env("CI", ci);
            }
            cmd.output().expect("the probe runs")
        };
        for ci in [None, Some("false")] {
            let out = probe(ci);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "CI={ci:?}: {stderr}");
            assert!(
                stderr.contains("SKIPPED peers::tests::probe_a_missing_peer: moto_server missing: no moto_server at /nowhere"),
                "CI={ci:?}: {stderr}"
            );
        }
        let lines = std::fs::read_to_string(&report).expect("the report");
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert!(
            lines
                .lines()
                .all(|l| l.starts_with("SKIPPED peers::tests::probe_a_missing_peer: ")),
            "{lines}"
        );

        let out = probe(Some("true"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "under CI a missing peer fails: {stdout}"
        );
        assert!(
            stdout.contains("moto_server is missing under CI=true: no moto_server at /nowhere; `cargo xtask setup` installs moto[server]"),
            "{stdout}"
        );
        assert_eq!(
            std::fs::read_to_string(&report)
                .expect("the report")
                .lines()
                .count(),
            2,
            "a failure is not reported as a skip"
        );
    }

    #[test]
    fn lines_are_appended_to_the_report() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = dir.path().join("skipped.txt");
        append_line(&report, "SKIPPED a: x missing: y (z)");
        append_line(&report, "SKIPPED b: x missing: y (z)");
        assert_eq!(
            std::fs::read_to_string(&report).expect("the report"),
            "SKIPPED a: x missing: y (z)\nSKIPPED b: x missing: y (z)\n"
        );
    }
}
