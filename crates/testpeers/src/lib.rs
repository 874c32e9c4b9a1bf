//! Test support: finding the third-party peers (Python socket.io and
//! ResultsDB clients, `moto_server`) that `cargo xtask test` installs into
//! the workspace's `.venv`.
//!
//! Outside CI a missing peer is a notice and the caller skips; under
//! `CI=true` it is a failure, so a missing install step cannot hide.

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A program from the peers' virtualenv (`.venv/bin/NAME`), or the path in
/// `env_var` when set. `None` (with a notice) when it is missing outside CI.
pub fn peer_program(env_var: &str, name: &str) -> Option<PathBuf> {
    let program = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin").join(name));
    if program.exists() {
        return Some(program);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing; `cargo xtask test` installs the peers of tests/peers/requirements.txt",
        program.display()
    );
    eprintln!(
        "skipping: no {name} at {} (run `cargo xtask test`)",
        program.display()
    );
    None
}

/// The Python with the peers' requirements (`TESTFLEET_PYTHON` overrides).
pub fn peer_python() -> Option<PathBuf> {
    peer_program("TESTFLEET_PYTHON", "python")
}
