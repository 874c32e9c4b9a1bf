//! A series as CSV text: what `testfleet changes FILE.csv` and
//! `POST /api/v1/analysis/changes` read.
//!
//! The first non-blank line is a header naming the columns: `index,value`,
//! `time,value`, or `value` alone. Every following line is one point, oldest
//! first. An `index` is an integer; a `time` is RFC 3339, or unix seconds
//! (fractions allowed) or milliseconds (an integer of 12 or more digits), and
//! becomes unix milliseconds. Blank lines and lines starting with `#` are
//! skipped; `\r\n` line ends and a byte-order mark are accepted.

use crate::time_fmt::{UnixMillis, parse_rfc3339_millis};

/// Most points a CSV series may hold.
pub const MAX_POINTS: usize = 1_000_000;

/// Unix times at or above this are milliseconds, below it seconds
/// (`1e11` seconds is the year 5138; `1e11` milliseconds is 1973).
const MILLIS_FROM: f64 = 1e11;

/// Why a CSV series was refused; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("the CSV is empty: expected a header line `index,value`, `time,value` or `value`")]
    Empty,
    #[error("line {line}: the header `{header}` is not `index,value`, `time,value` or `value`")]
    Header { line: usize, header: String },
    #[error("line {line}: expected {expected} column(s), found {found}")]
    Columns {
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("line {line}: `{text}` is not a finite number")]
    Value { line: usize, text: String },
    #[error("line {line}: `{text}` is not an integer index")]
    Index { line: usize, text: String },
    #[error("line {line}: `{text}` is not a time (RFC 3339, or unix seconds or milliseconds)")]
    Time { line: usize, text: String },
    #[error("the CSV has no points after its header")]
    NoPoints,
    #[error("line {line}: more than {max} points", max = MAX_POINTS)]
    TooMany { line: usize },
}

impl CsvError {
    /// The line the error is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            CsvError::Empty | CsvError::NoPoints => None,
            CsvError::Header { line, .. }
            | CsvError::Columns { line, .. }
            | CsvError::Value { line, .. }
            | CsvError::Index { line, .. }
            | CsvError::Time { line, .. }
            | CsvError::TooMany { line } => Some(*line),
        }
    }
}

/// What the first column of a CSV series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKey {
    /// `index,value`: an integer per point.
    Index,
    /// `time,value`: unix milliseconds per point.
    Time,
    /// `value` alone.
    None,
}

/// A parsed CSV series: what its keys are, and its points in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSeries {
    pub key: CsvKey,
    pub points: Vec<(Option<i64>, f64)>,
}

/// Parses a series: `(index or unix milliseconds, value)` per point, in the
/// file's order; the first element is `None` for a `value`-only CSV.
pub fn parse_series_csv(text: &str) -> Result<Vec<(Option<i64>, f64)>, CsvError> {
    parse_csv_series(text).map(|s| s.points)
}

/// As [`parse_series_csv`], saying whether the keys are indexes or times.
pub fn parse_csv_series(text: &str) -> Result<CsvSeries, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines.next().ok_or(CsvError::Empty)?;
    let key = parse_header(header_line, header)?;
    let expected = if key == CsvKey::None { 1 } else { 2 };
    let mut points = Vec::new();
    for (line, content) in lines {
        if points.len() >= MAX_POINTS {
            return Err(CsvError::TooMany { line });
        }
        let cells: Vec<&str> = content.split(',').map(str::trim).collect();
        if cells.len() != expected {
            return Err(CsvError::Columns {
                line,
                expected,
                found: cells.len(),
            });
        }
        let value_text = cells[expected - 1];
        let value = value_text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| CsvError::Value {
                line,
                text: value_text.to_owned(),
            })?;
        let key = match key {
            CsvKey::None => None,
            CsvKey::Index => Some(cells[0].parse::<i64>().map_err(|_| CsvError::Index {
                line,
                text: cells[0].to_owned(),
            })?),
            CsvKey::Time => Some(parse_time(cells[0]).ok_or_else(|| CsvError::Time {
                line,
                text: cells[0].to_owned(),
            })?),
        };
        points.push((key, value));
    }
    if points.is_empty() {
        return Err(CsvError::NoPoints);
    }
    Ok(CsvSeries { key, points })
}

fn parse_header(line: usize, header: &str) -> Result<CsvKey, CsvError> {
    let cells: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let names: Vec<&str> = cells.iter().map(String::as_str).collect();
    match names.as_slice() {
        ["index", "value"] => Ok(CsvKey::Index),
        ["time" | "timestamp", "value"] => Ok(CsvKey::Time),
        ["value"] => Ok(CsvKey::None),
        _ => Err(CsvError::Header {
            line,
            header: header.to_owned(),
        }),
    }
}

/// RFC 3339, or a unix time in seconds or milliseconds, as unix milliseconds.
fn parse_time(text: &str) -> Option<UnixMillis> {
    if let Some(ms) = parse_rfc3339_millis(text) {
        return Some(ms);
    }
    if let Ok(n) = text.parse::<i64>() {
        return if n.unsigned_abs() as f64 >= MILLIS_FROM {
            Some(n)
        } else {
            n.checked_mul(1000)
        };
    }
    let seconds = text.parse::<f64>().ok().filter(|s| s.is_finite())?;
    if seconds.abs() >= MILLIS_FROM {
        return None;
    }
    Some((seconds * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_value() {
        let points = parse_series_csv("index,value\n0,1.5\n1, 2\n\n# note\n2,3e0\n").unwrap();
        assert_eq!(points, vec![(Some(0), 1.5), (Some(1), 2.0), (Some(2), 3.0)]);
    }

    #[test]
    fn times_in_three_forms() {
        let text = "\u{feff}Time,Value\r\n2024-01-02T03:04:05Z,1\r\n1704164645,2\r\n1704164645500,3\r\n1704164645.25,4\r\n";
        let points = parse_series_csv(text).unwrap();
        assert_eq!(
            points,
            vec![
                (Some(1_704_164_645_000), 1.0),
                (Some(1_704_164_645_000), 2.0),
                (Some(1_704_164_645_500), 3.0),
                (Some(1_704_164_645_250), 4.0),
            ]
        );
    }

    #[test]
    fn values_alone() {
        assert_eq!(parse_csv_series("value\n1\n").unwrap().key, CsvKey::None);
        assert_eq!(
            parse_csv_series("time,value\n5,1\n").unwrap().key,
            CsvKey::Time
        );
        assert_eq!(
            parse_csv_series("index,value\n5,1\n").unwrap().key,
            CsvKey::Index
        );
        assert_eq!(
            parse_series_csv("value\n1\n2\n").unwrap(),
            vec![(None, 1.0), (None, 2.0)]
        );
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("", None, "empty"),
            ("# only a comment\n", None, "empty"),
            ("a,b\n1,2\n", Some(1), "header"),
            ("index,value\n", None, "no points"),
            ("index,value\n0,1\n1,x\n", Some(3), "not a finite number"),
            ("index,value\n0,1\n1,NaN\n", Some(3), "not a finite number"),
            ("index,value\n0,1\n\n1.5,2\n", Some(4), "integer index"),
            ("time,value\nyesterday,1\n", Some(2), "not a time"),
            (
                "index,value\n0,1,2\n",
                Some(2),
                "expected 2 column(s), found 3",
            ),
            ("value\n1,2\n", Some(2), "expected 1 column(s), found 2"),
        ];
        for (text, line, needle) in cases {
            let e = parse_series_csv(text).expect_err(text);
            assert_eq!(e.line(), line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            if let Some(line) = line {
                assert!(e.to_string().starts_with(&format!("line {line}:")), "{e}");
            }
        }
    }
}
