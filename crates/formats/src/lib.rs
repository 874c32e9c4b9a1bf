//! Result-file parsers and writers: turns QtTest (every logger), TAP 13/14, JUnit XML
//! and Google Benchmark JSON into the normalized model of `testfleet_wire::results`,
//! and writes that model back out as merged JUnit XML, Taskotron-style TAP 13 and
//! InfluxDB line protocol.
//!
//! Parsers stream (quick-xml's pull reader for XML, line by line for text formats) and
//! cap what they keep per case, so a huge result file needs bounded memory. Truncated or
//! malformed input is not an error: it gives a partial [`Results`] with
//! `complete: false` and a warning. [`parse`] fails only when the format is unknown or
//! the input is not that format at all.

mod detect;
mod gbench;
mod junit;
mod qt;
mod table;
mod tap;
mod util;
pub mod write;

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use detect::detect;
pub use table::render_table;
pub use testfleet_wire::results::{
    Case, CaseFlags, CaseOutcome, CrashedTest, Metric, OutcomeCounts, Property, Rerun, Results,
    Suite,
};
pub use write::influx::{InfluxContext, influx_lines};
pub use write::junit::junit_xml;
pub use write::tap::{TapItem, tap13};

/// A result-file format that [`parse`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// QtTest `-o file,xml`.
    QtXml,
    /// QtTest `-o file,lightxml`: the XML logger without the root element.
    QtLightXml,
    /// QtTest `-o file,txt` (the default console output).
    QtTxt,
    /// QtTest `-o file,csv`: benchmark results only.
    QtCsv,
    /// QtTest `-o file,junitxml`.
    QtJunitXml,
    /// QtTest `-o file,tap`.
    QtTap,
    /// QtTest `-o file,teamcity`.
    QtTeamcity,
    /// TAP 13 or 14.
    Tap,
    /// JUnit XML (Ant, Surefire, pytest, cargo-nextest, …).
    Junit,
    /// Google Benchmark `--benchmark_format=json`.
    GoogleBenchmark,
}

impl Format {
    /// Every format, in the order listed to users.
    pub const ALL: [Format; 10] = [
        Format::QtXml,
        Format::QtLightXml,
        Format::QtTxt,
        Format::QtCsv,
        Format::QtJunitXml,
        Format::QtTap,
        Format::QtTeamcity,
        Format::Tap,
        Format::Junit,
        Format::GoogleBenchmark,
    ];

    /// The canonical name, as accepted by `--format` and stored in `Results::format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::QtXml => "qtest-xml",
            Format::QtLightXml => "qtest-lightxml",
            Format::QtTxt => "qtest-txt",
            Format::QtCsv => "qtest-csv",
            Format::QtJunitXml => "qtest-junitxml",
            Format::QtTap => "qtest-tap",
            Format::QtTeamcity => "qtest-teamcity",
            Format::Tap => "tap",
            Format::Junit => "junit",
            Format::GoogleBenchmark => "gbench",
        }
    }

    /// True for formats read with the XML reader.
    fn is_xml(self) -> bool {
        matches!(
            self,
            Format::QtXml | Format::QtLightXml | Format::QtJunitXml | Format::Junit
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Format, ParseError> {
        let lower = s.trim().to_ascii_lowercase();
        let format = match lower.as_str() {
            "qtest-xml" | "qt-xml" | "qtxml" => Format::QtXml,
            "qtest-lightxml" | "qt-lightxml" | "lightxml" => Format::QtLightXml,
            "qtest-txt" | "qt-txt" | "qtest" | "qtest-text" => Format::QtTxt,
            "qtest-csv" | "qt-csv" => Format::QtCsv,
            "qtest-junitxml" | "qtest-junit" | "qt-junitxml" => Format::QtJunitXml,
            "qtest-tap" | "qt-tap" => Format::QtTap,
            "qtest-teamcity" | "qt-teamcity" | "teamcity" => Format::QtTeamcity,
            "tap" | "tap13" | "tap14" => Format::Tap,
            "junit" | "junitxml" | "junit-xml" | "xunit" => Format::Junit,
            "gbench" | "google-benchmark" | "googlebenchmark" | "gbench-json" => {
                Format::GoogleBenchmark
            }
            _ => {
                return Err(ParseError::UnknownFormatName {
                    name: s.to_string(),
                });
            }
        };
        Ok(format)
    }
}

/// Why a result file could not be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// `--format` named no known format.
    #[error("unknown result format `{name}` (valid: {})", valid_names())]
    UnknownFormatName { name: String },
    /// No format was given and the content matched none.
    #[error(
        "detect the result format from the content (give one of: {})",
        valid_names()
    )]
    Undetected,
    /// The input does not look like the given format at all.
    #[error("read the input as {format}: {reason}")]
    NotThisFormat {
        format: Format,
        reason: &'static str,
    },
    /// The input is Google Benchmark JSON that could not be read as JSON at all.
    #[error("read the input as gbench")]
    Json(#[source] serde_json::Error),
    /// Reading the file failed.
    #[error("read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn valid_names() -> String {
    Format::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Guesses the format from the first bytes when `format` is `None`.
fn resolve_format(head: &[u8], format: Option<Format>) -> Result<Format, ParseError> {
    match format {
        Some(f) => Ok(f),
        None => detect(head).ok_or(ParseError::Undetected),
    }
}

/// Parses a whole result file held in memory.
///
/// With `format: None` the format is detected from the content. Returns an error only
/// when the format cannot be determined or the input is not that format at all;
/// truncated or malformed input gives `Ok` with `complete: false` and a warning.
pub fn parse(bytes: &[u8], format: Option<Format>) -> Result<Results, ParseError> {
    let format = resolve_format(&bytes[..bytes.len().min(detect::HEAD_LEN)], format)?;
    parse_reader(Cursor::new(bytes), format, Path::new("<memory>"))
}

/// Parses a result file from disk, streaming: memory stays bounded by the number of
/// cases and the per-case log cap, not by the file size (Google Benchmark JSON, which
/// is small by nature, is the exception and is read whole).
pub fn parse_file(path: impl AsRef<Path>, format: Option<Format>) -> Result<Results, ParseError> {
    let path = path.as_ref();
    let io_err = |source| ParseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let format = match format {
        Some(f) => f,
        None => {
            // fill_buf gives at least the start of the file without consuming it.
            let head = reader.fill_buf().map_err(io_err)?;
            resolve_format(&head[..head.len().min(detect::HEAD_LEN)], None)?
        }
    };
    parse_reader(reader, format, path)
}

/// Parses from any buffered reader in the given format.
pub fn parse_reader<R: BufRead>(
    mut reader: R,
    format: Format,
    path: &Path,
) -> Result<Results, ParseError> {
    if format.is_xml() {
        let head = reader.fill_buf().map_err(|source| ParseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !detect::looks_like_xml(head) {
            return Err(ParseError::NotThisFormat {
                format,
                reason: "it does not start with an XML element",
            });
        }
    }
    let results = match format {
        Format::QtXml | Format::QtLightXml => qt::xml::parse(reader, format),
        Format::QtTxt => qt::txt::parse(reader),
        Format::QtCsv => qt::csv::parse(reader),
        Format::QtTeamcity => qt::teamcity::parse(reader),
        Format::QtJunitXml => {
            let mut results = junit::parse(reader);
            qt::from_junit(&mut results);
            results.format = format.name().to_string();
            results
        }
        Format::QtTap => {
            let mut results = tap::parse_qt(reader);
            qt::from_tap(&mut results);
            results.format = format.name().to_string();
            results
        }
        Format::Tap => tap::parse(reader),
        Format::Junit => junit::parse(reader),
        Format::GoogleBenchmark => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).map_err(|source| {
                ParseError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            gbench::parse(&bytes)?
        }
    };
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().expect("parse name"), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!(
            "google-benchmark".parse::<Format>().expect("alias"),
            Format::GoogleBenchmark
        );
    }

    #[test]
    fn unknown_format_name_lists_valid_ones() {
        let err = "nope".parse::<Format>().expect_err("unknown");
        let msg = err.to_string();
        assert!(msg.contains("`nope`"), "{msg}");
        assert!(
            msg.contains("qtest-lightxml") && msg.contains("gbench"),
            "{msg}"
        );
    }

    #[test]
    fn undetectable_input_is_an_error() {
        assert!(matches!(
            parse(b"hello world\n", None),
            Err(ParseError::Undetected)
        ));
    }

    #[test]
    fn xml_format_on_text_is_an_error() {
        assert!(matches!(
            parse(b"ok 1 - foo\n", Some(Format::Junit)),
            Err(ParseError::NotThisFormat { .. })
        ));
    }
}
