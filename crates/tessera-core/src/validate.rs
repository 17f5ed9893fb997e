//! Input validation errors that name the offending field.

use std::fmt;

/// A request field that breaks a constraint; the message always names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// A whole number as received in JSON, of any size: kept as sent so that
/// validation names the field and the accepted range, rather than the JSON
/// reader refusing a number too large for 64 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Long {
    Int(i64),
    Big(u64),
    Float(f64),
}

impl<'de> serde::Deserialize<'de> for Long {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl serde::de::Visitor<'_> for Number {
            type Value = Long;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Long, E> {
                Ok(Long::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Long, E> {
                Ok(i64::try_from(v).map_or(Long::Big(v), Long::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Long, E> {
                Ok(Long::Float(v))
            }
        }
        d.deserialize_any(Number)
    }
}

impl Long {
    /// The number, if it is whole and within `lo..=hi`.
    pub fn within(self, field: &str, lo: i64, hi: i64) -> Result<i64, ValidationError> {
        match self {
            Long::Int(n) if (lo..=hi).contains(&n) => Ok(n),
            // A whole number written as 5.0; the bounds keep the cast exact.
            Long::Float(x) if x.fract() == 0.0 && x >= lo as f64 && x <= hi as f64 => Ok(x as i64),
            // Numbers past 64 bits arrive as floats too; only a fraction makes one not whole.
            Long::Float(x) if x.fract() != 0.0 || !x.is_finite() => Err(ValidationError::new(
                field,
                format!("{self} is not a whole number; it must be a whole number between {lo} and {hi}"),
            )),
            _ => Err(ValidationError::new(
                field,
                format!("{self} is out of range; it must be a whole number between {lo} and {hi}"),
            )),
        }
    }

    /// The number as a counted quantity (0 to [`crate::MAX_UNITS`]).
    pub fn units(self, field: &str) -> Result<crate::Units, ValidationError> {
        self.within(field, 0, crate::MAX_UNITS)
            .and_then(|n| crate::Units::of(field, n))
    }
}

impl From<i64> for Long {
    fn from(n: i64) -> Self {
        Long::Int(n)
    }
}

impl fmt::Display for Long {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Long::Int(n) => n.fmt(f),
            Long::Big(n) => n.fmt(f),
            Long::Float(x) => x.fmt(f),
        }
    }
}

/// A NUL character: no store can keep it in text (PostgreSQL refuses it).
fn has_nul(value: &str) -> bool {
    value.contains('\0')
}

fn nul_refused(field: &str) -> ValidationError {
    ValidationError::new(field, "must not contain a NUL character (U+0000)")
}

/// Checks a required, non-empty string of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    opt_text(field, Some(value), max)
}

/// Checks an optional string of at most `max` characters (empty is allowed).
pub fn opt_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ValidationError> {
    match value {
        Some(v) if v.chars().count() > max => {
            Err(ValidationError::new(field, format!("must be at most {max} characters")))
        }
        Some(v) if has_nul(v) => Err(nul_refused(field)),
        _ => Ok(()),
    }
}

/// ClientToken: 1 to 2048 characters without whitespace (the model's `\S+`).
pub fn client_token(field: &str, value: &str) -> Result<(), ValidationError> {
    if has_nul(value) {
        return Err(nul_refused(field));
    }
    if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(
            field,
            "must be 1 to 2048 characters with no whitespace",
        ));
    }
    Ok(())
}

/// MaxResults: 1 to 100.
pub fn max_results(value: Option<Long>) -> Result<usize, ValidationError> {
    match value {
        None => Ok(100),
        Some(n) => Ok(n.within("MaxResults", 1, 100)? as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_any_size_are_read_and_checked_against_their_range() {
        let read = |s: &str| serde_json::from_str::<Long>(s);
        assert_eq!(read("5").unwrap().within("F", 1, 10), Ok(5));
        let e = read("18446744073709551616").unwrap().within("F", 1, 10).unwrap_err();
        assert!(
            e.message.contains("out of range") && e.message.contains("between 1 and 10"),
            "{e}"
        );
        assert!(read("9223372036854775808").unwrap().within("F", 1, 10).is_err());
        assert_eq!(read("5.0").unwrap().within("F", 1, 10), Ok(5));
        let e = read("5.5").unwrap().within("F", 1, 10).unwrap_err();
        assert!(e.message.contains("not a whole number"), "{e}");
        let e = read("1e30").unwrap().within("F", 1, 10).unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = read("\"5\"").unwrap_err();
        assert!(e.to_string().contains("expected a number"), "{e}");
    }
}
