//! Identifiers that validate on construction: account IDs and license ARNs.

use std::fmt;

use crate::ValidationError;

/// A 12-digit account ID, the tenant boundary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "AccountId",
                format!("'{s}' is not a 12-digit account ID"),
            ))
        }
    }

    /// Reads a principal as the API writes it: `123456789012` or
    /// `arn:aws:iam::123456789012:root`. Anything else is not an account.
    pub fn from_principal(s: &str) -> Option<Self> {
        let id = s
            .strip_prefix("arn:aws:iam::")
            .and_then(|rest| rest.strip_suffix(":root"))
            .unwrap_or(s);
        Self::parse(id).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `arn:aws:license-manager::<account>:license:l-<32 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LicenseArn {
    arn: String,
    account: AccountId,
}

const LICENSE_PREFIX: &str = "arn:aws:license-manager::";

impl LicenseArn {
    /// A new ARN for a license issued by `account`, from 16 random bytes.
    pub fn new(account: &AccountId, random: [u8; 16]) -> Self {
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            arn: format!("{LICENSE_PREFIX}{account}:license:l-{hex}"),
            account: account.clone(),
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let account = parse_resource_arn(field, s, "license", "l-")?;
        Ok(Self {
            arn: s.to_owned(),
            account,
        })
    }

    /// The issuing account, which owns the license.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl fmt::Display for LicenseArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// `arn:aws:license-manager::<account>:grant:g-<32 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantArn {
    arn: String,
    account: AccountId,
}

impl GrantArn {
    /// A new ARN for a grant made by `account`, from 16 random bytes.
    pub fn new(account: &AccountId, random: [u8; 16]) -> Self {
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            arn: format!("{LICENSE_PREFIX}{account}:grant:g-{hex}"),
            account: account.clone(),
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let account = parse_resource_arn(field, s, "grant", "g-")?;
        Ok(Self {
            arn: s.to_owned(),
            account,
        })
    }

    /// The grantor: the account that made the grant.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl fmt::Display for GrantArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// Parses `arn:aws:license-manager::<account>:<kind>:<id prefix><32 hex>` and
/// returns the account, with an error that shows the expected form.
fn parse_resource_arn(field: &str, s: &str, kind: &str, id_prefix: &str) -> Result<AccountId, ValidationError> {
    let bad = || {
        ValidationError::new(
            field,
            format!(
                "'{}' is not a {kind} ARN of the form arn:aws:license-manager::<account-id>:{kind}:{id_prefix}<32 hex digits>",
                truncate(s)
            ),
        )
    };
    let rest = s.strip_prefix(LICENSE_PREFIX).ok_or_else(bad)?;
    let (account, id) = rest.split_once(&format!(":{kind}:")).ok_or_else(bad)?;
    let account = AccountId::parse(account).map_err(|_| bad())?;
    let hex = id.strip_prefix(id_prefix).ok_or_else(bad)?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(account)
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("123456789012").is_ok());
        assert!(AccountId::parse("12345678901").is_err());
        assert!(AccountId::parse("12345678901a").is_err());
        assert_eq!(
            AccountId::from_principal("arn:aws:iam::123456789012:root")
                .unwrap()
                .as_str(),
            "123456789012"
        );
        assert!(AccountId::from_principal("user@example.com").is_none());
    }

    #[test]
    fn license_arns_round_trip() {
        let acct = AccountId::parse("123456789012").unwrap();
        let arn = LicenseArn::new(&acct, [0xab; 16]);
        let parsed = LicenseArn::parse("LicenseArn", arn.as_str()).unwrap();
        assert_eq!(parsed, arn);
        assert_eq!(parsed.account(), &acct);
        assert!(LicenseArn::parse("LicenseArn", "arn:aws:license-manager::123456789012:license:l-xyz").is_err());
        let e = LicenseArn::parse("LicenseArn", "nope").unwrap_err();
        assert_eq!(e.field, "LicenseArn");
    }
}
