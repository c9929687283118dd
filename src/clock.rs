//! Timestamps as the API shows and the store sorts them: RFC 3339, UTC, with
//! a fixed six-digit fraction so that text order is time order.

use time::OffsetDateTime;

pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

pub fn format(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// Milliseconds since the Unix epoch: the clock of delivery jobs.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A Unix time in seconds (as Meta's webhooks give it) in the API's format.
pub fn from_unix_seconds(seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(seconds).ok().filter(in_rfc3339).map(format)
}

/// Milliseconds since the Unix epoch in the API's format.
pub fn from_unix_ms(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().filter(in_rfc3339).map(format)
}

/// Whether RFC 3339 can write the time: years 0000 to 9999, none before.
fn in_rfc3339(at: &OffsetDateTime) -> bool {
    (0..=9999).contains(&at.year())
}

/// The timestamp `seconds` before now.
pub fn seconds_ago(seconds: i64) -> String {
    format(OffsetDateTime::now_utc() - time::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn formats_rfc3339_with_fixed_fraction() {
        assert_eq!(super::format(datetime!(2026-01-02 03:04:05.000007 UTC)), "2026-01-02T03:04:05.000007Z");
        assert_eq!(super::format(datetime!(2026-01-02 03:04:05 +02:00)), "2026-01-02T01:04:05.000000Z");
    }

    #[test]
    fn a_time_rfc3339_cannot_write_is_none() {
        assert_eq!(super::from_unix_seconds(0).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
        assert_eq!(super::from_unix_seconds(-99_999_999_999), None, "a negative year");
        assert_eq!(super::from_unix_ms(-99_999_999_999_000), None);
    }
}
