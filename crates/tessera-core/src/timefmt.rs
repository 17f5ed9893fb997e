//! ISO 8601 date-times as the License Manager API writes them: strings with a zone.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::ValidationError;

/// Parses `2026-11-22T01:02:03Z`, with optional fractional seconds and a `Z` or
/// `+HH:MM` zone, as the model's ISO8601DateTime pattern requires.
pub fn parse(field: &str, s: &str) -> Result<OffsetDateTime, ValidationError> {
    if s.len() > 50 {
        return Err(ValidationError::new(field, "must be at most 50 characters"));
    }
    let invalid = || {
        ValidationError::new(
            field,
            format!("'{s}' is not an ISO 8601 date-time with a zone, such as 2026-11-22T01:02:03Z"),
        )
    };
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| invalid())?;
    // Checked: 9999-12-31T23:30:00-01:00 is past the calendar in UTC.
    t.checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| ValidationError::new(field, format!("'{s}' is later than 9999-12-31T23:59:59Z")))
}

/// Formats in UTC with a `Z`, with milliseconds only when they are not zero.
pub fn format(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    let base = t
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .unwrap_or_default();
    let ms = t.millisecond();
    if ms == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{ms:03}Z")
    }
}

/// Milliseconds since the Unix epoch, the store's representation of an instant.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalizes_to_utc() {
        let t = parse("Begin", "2026-11-22T03:02:03+02:00").unwrap();
        assert_eq!(format(t), "2026-11-22T01:02:03Z");
        let t = parse("Begin", "2026-11-22T01:02:03.250Z").unwrap();
        assert_eq!(format(t), "2026-11-22T01:02:03.250Z");
        assert_eq!(from_millis(to_millis(t)), t);
        assert!(parse("Begin", "9999-12-31T23:30:00-01:00").is_err());
        assert!(parse("Begin", "9999-12-31T23:59:59Z").is_ok());
    }

    #[test]
    fn refuses_dates_without_a_zone() {
        let e = parse("Validity.Begin", "2020-12-01T00:47:35").unwrap_err();
        assert!(e.to_string().contains("Validity.Begin"), "{e}");
    }
}
