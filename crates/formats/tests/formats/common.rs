//! Fixture locations and helpers shared by the test modules.
//!
//! The fixtures live in `shared/` beside the repository and are read at test time,
//! never copied in: the QtTest ones are GPL-3.0, this project is MIT OR Apache-2.0.

use std::path::{Path, PathBuf};

use testfleet_formats::{Format, Results};

pub fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Every fixture file (not SOURCE.md), sorted, with a name for its snapshot.
pub fn fixture_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for sub in ["qtest", "qtest/upstream-0cd0d6e0", "tap"] {
        let dir = shared_fixtures().join(sub);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_dir() || name.ends_with(".md") {
                continue;
            }
            let snap = format!("{}__{}", sub.replace('/', "_"), name);
            out.push((snap, path));
        }
    }
    out.sort();
    assert!(
        out.len() > 100,
        "expected the full fixture set, got {}",
        out.len()
    );
    out
}

/// The format a fixture's extension names.
pub fn format_of(path: &Path) -> Format {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let is_data = path.starts_with(data_dir());
    match ext {
        "xml" if is_data => Format::Junit,
        "xml" => Format::QtXml,
        "lightxml" => Format::QtLightXml,
        "txt" => Format::QtTxt,
        "csv" => Format::QtCsv,
        "junitxml" => Format::QtJunitXml,
        "tap" if path.to_string_lossy().contains("/qtest/") => Format::QtTap,
        "tap" => Format::Tap,
        "teamcity" => Format::QtTeamcity,
        "json" => Format::GoogleBenchmark,
        other => panic!("no format for extension {other}"),
    }
}

pub fn parse_path(path: &Path) -> Results {
    testfleet_formats::parse_file(path, Some(format_of(path)))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
