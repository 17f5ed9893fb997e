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

/// Checks a required, non-empty string of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ValidationError::new(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// Checks an optional string of at most `max` characters (empty is allowed).
pub fn opt_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ValidationError> {
    match value {
        Some(v) if v.chars().count() > max => {
            Err(ValidationError::new(field, format!("must be at most {max} characters")))
        }
        _ => Ok(()),
    }
}

/// ClientToken: 1 to 2048 characters without whitespace (the model's `\S+`).
pub fn client_token(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(
            field,
            "must be 1 to 2048 characters with no whitespace",
        ));
    }
    Ok(())
}

/// MaxResults: 1 to 100.
pub fn max_results(value: Option<i64>) -> Result<usize, ValidationError> {
    match value {
        None => Ok(100),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(ValidationError::new(
            "MaxResults",
            format!("{n} is out of range; it must be between 1 and 100"),
        )),
    }
}
