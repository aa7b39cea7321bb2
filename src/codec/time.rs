//! Times as text and numbers, one way everywhere: requests, pushes,
//! request data, `wafer transform test`, the CLI and HTTP responses.
//!
//! - Text: RFC 3339 (any offset), or a naive `YYYY-MM-DD[T| ]HH:MM:SS[.f]`
//!   or `YYYY-MM-DD`, taken as UTC (as Feast does).
//! - An integer timestamp in JSON is **seconds** since the Unix epoch, UTC.
//! - Out (feature values and their event times, in responses, `wafer
//!   online` and `wafer transform test`): RFC 3339 in UTC with `Z` and only
//!   the fractional digits needed. Registry metadata (versions, runs)
//!   keeps chrono's RFC 3339 with `+00:00`.
//! - Inside Wafer a timestamp is `i64` nanoseconds since the epoch, UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Nanoseconds in a second: an integer JSON timestamp counts seconds.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Parses a timestamp as text.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    Some(
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?
            .and_utc(),
    )
}

/// Parses a timestamp as text into UTC nanoseconds; `None` outside the
/// range nanoseconds hold (about the years 1677 to 2262).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    parse_datetime(text)?.timestamp_nanos_opt()
}

/// An integer JSON timestamp (seconds since the epoch) in nanoseconds,
/// saturating at the ends of the representable range.
pub fn from_epoch_seconds(seconds: i64) -> i64 {
    seconds.saturating_mul(NANOS_PER_SECOND)
}

/// A point in time given as an argument (a window's start or end): `now`,
/// or any text [`parse_datetime`] reads, at any date (windows saturate at
/// the ends of the nanosecond range).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Some(Utc::now());
    }
    parse_datetime(text)
}

/// RFC 3339 in UTC with `Z` and only the fractional digits needed.
pub fn format_timestamp(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A time in nanoseconds, saturating outside the range `i64` holds (about
/// the years 1677 to 2262).
pub fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_form_reads_as_the_same_instant() {
        let expected = parse_timestamp("2024-01-02T03:04:05Z").unwrap();
        for text in [
            "2024-01-02T03:04:05+00:00",
            "2024-01-02T04:04:05+01:00",
            "2024-01-02T03:04:05",
            "2024-01-02 03:04:05",
            " 2024-01-02T03:04:05.000 ",
        ] {
            assert_eq!(parse_timestamp(text), Some(expected), "{text}");
        }
        assert_eq!(
            parse_timestamp("2024-01-02"),
            parse_timestamp("2024-01-02T00:00:00Z")
        );
        assert_eq!(from_epoch_seconds(1_704_164_645), expected);
        assert_eq!(format_timestamp(expected), "2024-01-02T03:04:05Z");
        assert_eq!(parse_timestamp("yesterday"), None);
        assert!(parse_instant("NOW").is_some());
        // Windows may end past the nanosecond range; values may not.
        assert!(parse_instant("3000-01-01").is_some());
        assert_eq!(parse_timestamp("3000-01-01"), None);
        assert_eq!(nanos(parse_instant("3000-01-01").unwrap()), i64::MAX);
    }
}
