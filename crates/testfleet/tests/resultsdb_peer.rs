//! The real Python ResultsDB client (`resultsdb-api`, tests/peers/resultsdb_client.py)
//! against a live `testfleet server`: testcases, groups and results created and
//! read back, listed with filters and paging, latest results.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use std::process::{Child, Command, Stdio};
use testfleet_testpeers::workspace_root;

/// The peers' Python with `resultsdb-api`, or `None` with a notice outside CI.
fn peer_python() -> Option<PathBuf> {
    let python = testfleet_testpeers::peer_python()?;
    let has_client = Command::new(&python)
        .args(["-c", "import resultsdb_api"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_client || std::env::var_os("CI").is_none(),
        "{} lacks resultsdb-api; `cargo xtask test` installs the Python peers",
        python.display()
    );
    has_client.then_some(python)
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_python_resultsdb_client_creates_lists_filters_and_pages_through_results() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_testfleet"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TESTFLEET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = ServerProcess(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
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
