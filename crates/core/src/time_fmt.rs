//! Timestamp parsing and formatting in the shapes the agent protocol needs.
//!
//! Qt's agent parses `integrationTimestamp` with `%Y-%m-%dT%H:%M:%S.%fZ`, so the
//! coordinator always writes UTC with exactly three fractional digits.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, the unit testfleet stores times in.
pub type UnixMillis = i64;

/// Formats as `YYYY-MM-DDTHH:MM:SS.fffZ` (UTC, milliseconds).
pub fn format_millis(ms: UnixMillis) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parses an RFC 3339 timestamp (`2023-02-10T13:11:13Z`, with or without
/// fraction or offset) into milliseconds since the epoch.
pub fn parse_rfc3339_millis(s: &str) -> Option<UnixMillis> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_three_fraction_digits() {
        assert_eq!(format_millis(1_676_034_673_000), "2023-02-10T13:11:13.000Z");
        assert_eq!(format_millis(1_676_034_673_042), "2023-02-10T13:11:13.042Z");
    }

    #[test]
    fn parses_rfc3339_variants() {
        assert_eq!(
            parse_rfc3339_millis("2023-02-10T13:11:13Z"),
            Some(1_676_034_673_000)
        );
        assert_eq!(
            parse_rfc3339_millis("2023-02-10T13:11:13.5+00:00"),
            Some(1_676_034_673_500)
        );
        assert_eq!(parse_rfc3339_millis("Fri Feb 10 2023"), None);
    }
}
