//! BYOC environments: one install of the vendor's software in a customer's
//! cloud, with the AKU it is allocated from one license's counted entitlement.

use serde::{Deserialize, Serialize};

use crate::validate::{self, ValidationError};

/// The entitlement an allocation draws from unless another is named.
pub const DEFAULT_ENTITLEMENT: &str = "AKU";

/// Letters, digits and hyphens, starting with a letter, at most 32 characters.
pub fn validate_environment_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("'{id}' is not an environment ID: use letters, digits and hyphens, start with a letter, at most 32 characters"),
        ))
    }
}

/// An install ID as agents create them (hex), or any 8 to 128 letters, digits and hyphens.
pub fn validate_install_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let ok = (8..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "'{id}' is not an install ID: 8 to 128 letters, digits or hyphens, as `tessera agent info` shows it"
            ),
        ))
    }
}

/// An ops bucket URL: `file:///dir` or `s3://bucket[/prefix]`.
pub fn validate_ops_bucket(field: &str, url: &str) -> Result<(), ValidationError> {
    validate::text(field, url, 1024)?;
    let ok = url.strip_prefix("file://").is_some_and(|p| p.starts_with('/'))
        || url.strip_prefix("s3://").is_some_and(|b| !b.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("'{url}' is not an ops bucket URL; use file:///absolute/dir or s3://bucket[/prefix]"),
        ))
    }
}

/// The most AKU one environment may be allocated or report in use.
pub const MAX_ENVIRONMENT_AKU: i64 = 1_000_000;

pub fn validate_aku(field: &str, aku: validate::Long) -> Result<i64, ValidationError> {
    aku.within(field, 0, MAX_ENVIRONMENT_AKU)
}

/// An environment as the vendor's API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    pub environment_id: String,
    pub install_id: String,
    pub ops_bucket: String,
    pub cloud_provider: String,
    pub region: String,
    pub license_arn: String,
    pub entitlement: String,
    pub aku_allocated: i64,
    /// What the environment's agent last reported in use.
    pub aku_in_use: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_reported_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Why an allocation is refused, with the numbers.
pub fn allocation_refusal(
    entitlement: &str,
    license_arn: &str,
    max_count: i64,
    others: i64,
    requested: i64,
) -> Option<String> {
    // `others` sums every other environment: checked, though far from the bound.
    let total = others.checked_add(requested);
    total.is_none_or(|t| t > max_count).then(|| {
        format!(
            "allocating {requested} {entitlement} would exceed license {license_arn}: {others} of {max_count} are already allocated to other environments, so at most {} remain",
            max_count.saturating_sub(others).max(0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_ids_follow_the_terraform_rule() {
        assert!(validate_environment_id("EnvironmentId", "env-prod-1").is_ok());
        assert!(validate_environment_id("EnvironmentId", "1env").is_err());
        assert!(validate_environment_id("EnvironmentId", "env_prod").is_err());
        assert!(validate_environment_id("EnvironmentId", &"e".repeat(33)).is_err());
    }

    #[test]
    fn allocations_never_exceed_the_license() {
        assert!(allocation_refusal("AKU", "l", 300, 100, 200).is_none());
        let msg = allocation_refusal("AKU", "l", 300, 100, 201).unwrap();
        assert!(msg.contains("100 of 300") && msg.contains("at most 200"), "{msg}");
    }

    #[test]
    fn buckets_are_file_or_s3() {
        assert!(validate_ops_bucket("OpsBucket", "file:///var/ops").is_ok());
        assert!(validate_ops_bucket("OpsBucket", "s3://automq-ops-env1").is_ok());
        assert!(validate_ops_bucket("OpsBucket", "gs://x").is_err());
        assert!(validate_ops_bucket("OpsBucket", "file://relative").is_err());
    }
}
