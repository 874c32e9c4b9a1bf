//! The real Python ResultsDB client (`resultsdb-api`, tests/peers/resultsdb_client.py)
//! against a live `testfleet server`: testcases, groups and results created and
//! read back, listed with filters and paging, latest results.

use std::path::PathBuf;
use std::process::Command;

use testfleet_testkit::peers::{PYTHON_PEERS, require_peer};
use testfleet_testkit::process::ServerProcess;
use testfleet_testkit::workspace_root;

/// The peers' Python with `resultsdb-api`, or `None` under the peer rule.
fn peer_python() -> Option<PathBuf> {
    let python = testfleet_testkit::peer_python()?;
    let has_client = Command::new(&python)
        .args(["-c", "import resultsdb_api"])
        .status()
        .is_ok_and(|s| s.success());
    let found = if has_client {
        Ok(python)
    } else {
        Err(format!("{} lacks resultsdb-api", python.display()))
    };
    require_peer(&PYTHON_PEERS, found)
}

#[test]
fn the_python_resultsdb_client_creates_lists_filters_and_pages_through_results() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        Command::new(env!("CARGO_BIN_EXE_testfleet"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--agent-secret", "resultsdb-peer-secret"])
            .env("TESTFLEET_LOG", "warn"),
    );
    let url = server.url().to_owned();
    let out = Command::new(python)
        .arg(workspace_root().join("tests/peers/resultsdb_client.py"))
        .arg(format!("{url}/api/v2.0"))
        .output()
        .unwrap();
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "resultsdb_client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
