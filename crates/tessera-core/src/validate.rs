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
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum Long {
    Int(i64),
    Big(u64),
    Float(f64),
}

impl Long {
    /// The number, if it is whole and within `lo..=hi`.
    pub fn within(self, field: &str, lo: i64, hi: i64) -> Result<i64, ValidationError> {
        match self {
            Long::Int(n) if (lo..=hi).contains(&n) => Ok(n),
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
