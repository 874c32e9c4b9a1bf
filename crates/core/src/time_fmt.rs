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

/// A point in time given as RFC 3339 or as an age before `now` (`30s`,
/// `30m`, `12h`, `7d`, `2w`). `None` for anything else, a negative age or
/// one that overflows.
pub fn parse_time_or_age(raw: &str, now: UnixMillis) -> Option<UnixMillis> {
    if let Some(t) = parse_rfc3339_millis(raw) {
        return Some(t);
    }
    let raw = raw.trim();
    let unit = raw.chars().last()?;
    let unit_ms: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    // The unit is one ASCII letter, so this slice is on a char boundary.
    let digits = &raw[..raw.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    now.checked_sub(n.checked_mul(unit_ms)?)
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

    #[test]
    fn a_time_or_an_age() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_time_or_age("2023-02-10T13:11:13Z", now),
            Some(1_676_034_673_000)
        );
        assert_eq!(parse_time_or_age("7d", now), Some(now - 7 * 86_400_000));
        assert_eq!(parse_time_or_age(" 2w ", now), Some(now - 14 * 86_400_000));
        assert_eq!(parse_time_or_age("90m", now), Some(now - 90 * 60_000));
        assert_eq!(parse_time_or_age("30s", now), Some(now - 30_000));
        for bad in [
            "",
            "d",
            "7",
            "7x",
            "-7d",
            "+7d",
            "7é",
            "\u{18}°",
            "7.5d",
            "yesterday",
            "99999999999999999999d",
            "9999999999999999d",
        ] {
            assert_eq!(parse_time_or_age(bad, now), None, "{bad:?}");
        }
    }
}
