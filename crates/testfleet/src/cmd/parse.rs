//! `testfleet parse`: a result file as a table or as the normalized model.

use std::path::Path;

use anyhow::{Context, Result};
use testfleet_formats::Format;

use crate::exit;

pub fn run(path: &Path, format: Option<&str>, json: bool) -> Result<u8> {
    let format = format
        .map(str::parse::<Format>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let results = testfleet_formats::parse_file(path, format)
        .with_context(|| format!("failed to parse {}", path.display()))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&results)?)?;
    } else {
        out!("{}", testfleet_formats::render_table(&results))?;
    }
    Ok(exit::OK)
}
