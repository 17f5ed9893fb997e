//! Times as the API writes them: RFC 3339 in UTC, whole seconds, `Z`.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_with_a_z() {
        let t = super::parse("2026-11-22T01:02:03+02:00").unwrap();
        assert_eq!(super::format(t), "2026-11-21T23:02:03Z");
        assert!(super::parse("2026-11-22").is_none());
    }
}
