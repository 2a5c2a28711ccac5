//! Timestamps as stored in read tables: RFC 3339 UTC with microseconds and a `Z`, fixed width,
//! so text order is time order on both backends.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats `t` as `2026-11-21T05:17:19.123456Z`.
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses any RFC 3339 timestamp (as written by [`fmt_ts`] or by the databases' defaults).
///
/// # Errors
/// The chrono parse error for text that is not RFC 3339.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        assert_eq!(fmt_ts(a), "2026-01-02T03:04:05.000000Z");
        assert_eq!(parse_ts(&fmt_ts(b)).unwrap(), b);
        assert!(fmt_ts(a) < fmt_ts(b));
    }
}
