//! Counted quantities (entitlement units, AKU): a type that cannot wrap.
//!
//! Every amount Tessera adds or compares is at most [`MAX_UNITS`], the largest
//! integer every JSON client reads exactly (2^53 - 1, JavaScript's
//! `Number.MAX_SAFE_INTEGER`). Two such amounts add without overflowing an
//! `i64`, so a sum is checked against the bound instead of wrapping, and a
//! value beyond it is refused where it enters, naming the largest accepted one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// The largest quantity Tessera counts: 2^53 - 1.
pub const MAX_UNITS: i64 = 9_007_199_254_740_991;

/// A whole number of units from 0 to [`MAX_UNITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Units(i64);

impl Units {
    pub const ZERO: Units = Units(0);
    pub const MAX: Units = Units(MAX_UNITS);

    /// `v` as units, if it is within 0..=MAX_UNITS.
    pub const fn new(v: i64) -> Option<Self> {
        if v >= 0 && v <= MAX_UNITS {
            Some(Self(v))
        } else {
            None
        }
    }

    /// A number given in field `field`, refused with the accepted range when outside it.
    pub fn of(field: &str, v: i64) -> Result<Self, ValidationError> {
        Self::new(v).ok_or_else(|| out_of_range(field, &v.to_string()))
    }

    /// Parses a decimal count as sent in a string field (CheckoutLicense's
    /// `Value`): optional surrounding whitespace and one leading `+`, then
    /// digits. Leading zeros are allowed; the value keeps no trace of them.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let t = text.trim();
        let digits = t.strip_prefix('+').unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::new(
                field,
                format!("'{text}' is not a whole number of units (digits only, at most {MAX_UNITS})"),
            ));
        }
        let significant = digits.trim_start_matches('0');
        // More digits than MAX_UNITS has cannot be in range; no parse needed.
        if significant.len() > 16 {
            return Err(out_of_range(field, text));
        }
        let v: i64 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| out_of_range(field, text))?
        };
        Self::of(field, v).map_err(|_| out_of_range(field, text))
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The sum, or None when it would pass [`MAX_UNITS`].
    pub fn checked_add(self, other: Units) -> Option<Units> {
        // Both are at most 2^53 - 1, so the i64 sum cannot overflow.
        Units::new(self.0 + other.0)
    }

    /// The difference, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Units) -> Units {
        Units((self.0 - other.0).max(0))
    }
}

fn out_of_range(field: &str, text: &str) -> ValidationError {
    ValidationError::new(
        field,
        format!("'{text}' is out of range; it must be between 0 and {MAX_UNITS}, the largest quantity Tessera counts"),
    )
}

impl TryFrom<i64> for Units {
    type Error = String;

    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Units::new(v).ok_or_else(|| format!("{v} is not a quantity between 0 and {MAX_UNITS}"))
    }
}

impl From<Units> for i64 {
    fn from(u: Units) -> i64 {
        u.0
    }
}

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_decimal_counts() {
        assert_eq!(Units::parse("V", "1").unwrap().get(), 1);
        assert_eq!(Units::parse("V", "+1").unwrap().get(), 1);
        assert_eq!(Units::parse("V", "01").unwrap().get(), 1);
        assert_eq!(Units::parse("V", " 0007 ").unwrap().get(), 7);
        assert_eq!(Units::parse("V", "000").unwrap().get(), 0);
        assert_eq!(Units::parse("V", "9007199254740991").unwrap(), Units::MAX);
        assert_eq!(
            Units::parse("V", "0000000000000000000009007199254740991").unwrap(),
            Units::MAX
        );
    }

    #[test]
    fn refuses_what_cannot_be_counted_naming_the_field_and_the_bound() {
        for bad in [
            "9007199254740992",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            let e = Units::parse("Entitlements[0].Value", bad).unwrap_err();
            assert_eq!(e.field, "Entitlements[0].Value");
            assert!(e.message.contains("9007199254740991"), "{e}");
        }
        for bad in ["", " ", "-1", "+", "++1", "1.0", "1e3", "0x10", "１", "1 2"] {
            assert!(Units::parse("V", bad).is_err(), "{bad:?} parsed");
        }
        assert!(Units::of("MaxCount", -1).is_err());
        assert!(Units::of("MaxCount", i64::MAX).is_err());
    }

    #[test]
    fn sums_never_wrap() {
        assert_eq!(Units::MAX.checked_add(Units::ZERO), Some(Units::MAX));
        assert_eq!(Units::MAX.checked_add(Units::new(1).unwrap()), None);
        assert_eq!(Units::MAX.checked_add(Units::MAX), None);
        assert_eq!(Units::ZERO.saturating_sub(Units::MAX), Units::ZERO);
    }

    #[test]
    fn serde_refuses_values_out_of_range() {
        assert!(serde_json::from_str::<Units>("9007199254740992").is_err());
        assert!(serde_json::from_str::<Units>("-1").is_err());
        assert_eq!(serde_json::from_str::<Units>("5").unwrap().get(), 5);
        assert_eq!(serde_json::to_string(&Units::new(5).unwrap()).unwrap(), "5");
    }
}
