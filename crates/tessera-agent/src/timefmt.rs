//! Times as the API writes them: RFC 3339 in UTC, whole seconds, `Z`.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

pub fn format(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Parses RFC 3339 into UTC; None for what is not a date-time or lies past the calendar in UTC.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()?
        .checked_to_offset(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_with_a_z() {
        let t = super::parse("2026-11-22T01:02:03+02:00").unwrap();
        assert_eq!(super::format(t), "2026-11-21T23:02:03Z");
        assert!(super::parse("2026-11-22").is_none());
        assert!(super::parse("9999-12-31T23:30:00-01:00").is_none());
    }
}
