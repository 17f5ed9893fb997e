//! Licenses and entitlements, in the AWS License Manager JSON shapes.
//!
//! `LicenseInput` is what CreateLicense and CreateLicenseVersion receive, with
//! every field optional and every enum a string, so that `LicenseInput::validate`
//! can name exactly what is wrong instead of failing deserialization.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::validate::{self, ValidationError};
use crate::{timefmt, AccountId, LicenseArn};

string_enum!(
    /// LicenseStatus.
    LicenseStatus, "license status" {
        Available = "AVAILABLE",
        PendingAvailable = "PENDING_AVAILABLE",
        Deactivated = "DEACTIVATED",
        Suspended = "SUSPENDED",
        Expired = "EXPIRED",
        PendingDelete = "PENDING_DELETE",
        Deleted = "DELETED",
    }
);

string_enum!(
    /// EntitlementUnit (and EntitlementDataUnit, which has the same values).
    EntitlementUnit, "entitlement unit" {
        Count = "Count",
        None = "None",
        Seconds = "Seconds",
        Microseconds = "Microseconds",
        Milliseconds = "Milliseconds",
        Bytes = "Bytes",
        Kilobytes = "Kilobytes",
        Megabytes = "Megabytes",
        Gigabytes = "Gigabytes",
        Terabytes = "Terabytes",
        Bits = "Bits",
        Kilobits = "Kilobits",
        Megabits = "Megabits",
        Gigabits = "Gigabits",
        Terabits = "Terabits",
        Percent = "Percent",
        BytesPerSecond = "Bytes/Second",
        KilobytesPerSecond = "Kilobytes/Second",
        MegabytesPerSecond = "Megabytes/Second",
        GigabytesPerSecond = "Gigabytes/Second",
        TerabytesPerSecond = "Terabytes/Second",
        BitsPerSecond = "Bits/Second",
        KilobitsPerSecond = "Kilobits/Second",
        MegabitsPerSecond = "Megabits/Second",
        GigabitsPerSecond = "Gigabits/Second",
        TerabitsPerSecond = "Terabits/Second",
        CountPerSecond = "Count/Second",
    }
);

string_enum!(
    /// CheckoutType.
    CheckoutType, "checkout type" {
        Provisional = "PROVISIONAL",
        Perpetual = "PERPETUAL",
    }
);

string_enum!(
    /// RenewType.
    RenewType, "renew type" {
        None = "None",
        Weekly = "Weekly",
        Monthly = "Monthly",
    }
);

/// Limits that the model leaves open; chosen so that documents stay small.
pub mod limits {
    pub const NAME: usize = 255;
    pub const BENEFICIARY: usize = 1024;
    pub const SIGN_KEY: usize = 2048;
    pub const ENTITLEMENTS: usize = 100;
    pub const METADATA: usize = 50;
    pub const TAGS: usize = 50;
    pub const TAG_KEY: usize = 128;
    pub const TAG_VALUE: usize = 256;
    pub const REGION: usize = 64;
    /// One year, in minutes.
    pub const MAX_TTL_MINUTES: i64 = 525_600;
}

/// Minutes a PROVISIONAL consumption lives when the license sets no ProvisionalConfiguration.
pub const DEFAULT_PROVISIONAL_TTL_MINUTES: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entitlement {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overage: Option<bool>,
    pub unit: EntitlementUnit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_check_in: Option<bool>,
}

impl Entitlement {
    /// Counted entitlements draw from MaxCount; Unit None is a tier or feature flag.
    pub fn is_counted(&self) -> bool {
        self.unit != EntitlementUnit::None
    }

    pub fn overage(&self) -> bool {
        self.overage.unwrap_or(false)
    }

    pub fn allow_check_in(&self) -> bool {
        self.allow_check_in.unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IssuerDetails {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_key: Option<String>,
    pub key_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DatetimeRange {
    pub begin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionalConfiguration {
    pub max_time_to_live_in_minutes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BorrowConfiguration {
    pub allow_early_check_in: bool,
    pub max_time_to_live_in_minutes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumptionConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_type: Option<RenewType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisional_configuration: Option<ProvisionalConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrow_configuration: Option<BorrowConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// One immutable version of a license, exactly as GetLicense returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct License {
    pub license_arn: String,
    pub license_name: String,
    pub product_name: String,
    #[serde(rename = "ProductSKU")]
    pub product_sku: String,
    pub issuer: IssuerDetails,
    pub home_region: String,
    pub status: LicenseStatus,
    pub validity: DatetimeRange,
    pub beneficiary: String,
    pub entitlements: Vec<Entitlement>,
    pub consumption_configuration: ConsumptionConfiguration,
    #[serde(default)]
    pub license_metadata: Vec<Metadata>,
    pub create_time: String,
    pub version: String,
}

impl License {
    pub fn version_number(&self) -> i64 {
        self.version.parse().unwrap_or(0)
    }

    /// The account the license was issued to, when the beneficiary names one.
    pub fn beneficiary_account(&self) -> Option<AccountId> {
        AccountId::from_principal(&self.beneficiary)
    }

    pub fn entitlement(&self, name: &str) -> Option<&Entitlement> {
        self.entitlements.iter().find(|e| e.name == name)
    }

    /// Validity as instants; the strings were validated when the version was made.
    pub fn validity_window(&self) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let begin = timefmt::parse("Validity.Begin", &self.validity.begin).ok();
        let end = self
            .validity
            .end
            .as_deref()
            .and_then(|e| timefmt::parse("Validity.End", e).ok());
        (begin, end)
    }

    /// Minutes a PROVISIONAL consumption lives from checkout or extension.
    pub fn provisional_ttl_minutes(&self) -> i64 {
        self.consumption_configuration
            .provisional_configuration
            .as_ref()
            .map(|p| p.max_time_to_live_in_minutes)
            .unwrap_or(DEFAULT_PROVISIONAL_TTL_MINUTES)
    }
}

/// `aws:<issuer-account-id>:<issuer-name>:issuer-fingerprint`, the trusted-issuer name
/// that CheckoutLicense selects on.
pub fn key_fingerprint(issuer_account: &AccountId, issuer_name: &str) -> String {
    format!("aws:{issuer_account}:{issuer_name}:issuer-fingerprint")
}

// ---------------------------------------------------------------------------
// Input as received, validated into a License.

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntitlementInput {
    pub name: Option<String>,
    pub value: Option<String>,
    pub max_count: Option<validate::Long>,
    pub overage: Option<bool>,
    pub unit: Option<String>,
    pub allow_check_in: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IssuerInput {
    pub name: Option<String>,
    pub sign_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DatetimeRangeInput {
    pub begin: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionalInput {
    pub max_time_to_live_in_minutes: Option<validate::Long>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BorrowInput {
    pub allow_early_check_in: Option<bool>,
    pub max_time_to_live_in_minutes: Option<validate::Long>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumptionInput {
    pub renew_type: Option<String>,
    pub provisional_configuration: Option<ProvisionalInput>,
    pub borrow_configuration: Option<BorrowInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetadataInput {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagInput {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// The license body shared by CreateLicense and CreateLicenseVersion.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LicenseInput {
    pub license_name: Option<String>,
    pub product_name: Option<String>,
    #[serde(rename = "ProductSKU")]
    pub product_sku: Option<String>,
    pub issuer: Option<IssuerInput>,
    pub home_region: Option<String>,
    pub validity: Option<DatetimeRangeInput>,
    pub entitlements: Option<Vec<EntitlementInput>>,
    pub beneficiary: Option<String>,
    pub consumption_configuration: Option<ConsumptionInput>,
    pub license_metadata: Option<Vec<MetadataInput>>,
}

/// The validated body of a license, before it gets an ARN, status and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseBody {
    pub license_name: String,
    pub product_name: String,
    pub product_sku: String,
    pub issuer_name: String,
    pub sign_key: Option<String>,
    pub home_region: String,
    pub validity: DatetimeRange,
    pub beneficiary: String,
    pub entitlements: Vec<Entitlement>,
    pub consumption_configuration: ConsumptionConfiguration,
    pub license_metadata: Vec<Metadata>,
}

fn required<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T, ValidationError> {
    v.as_ref().ok_or_else(|| ValidationError::new(field, "is required"))
}

fn required_text(field: &str, v: &Option<String>, max: usize) -> Result<String, ValidationError> {
    let s = required(field, v)?;
    validate::text(field, s, max)?;
    Ok(s.clone())
}

fn ttl(field: &str, v: Option<validate::Long>) -> Result<i64, ValidationError> {
    let m = v.ok_or_else(|| ValidationError::new(field, "is required"))?;
    m.within(field, 1, limits::MAX_TTL_MINUTES)
}

impl EntitlementInput {
    fn validate(&self, at: &str) -> Result<Entitlement, ValidationError> {
        let name = required_text(&format!("{at}.Name"), &self.name, limits::NAME)?;
        let unit_s = required(&format!("{at}.Unit"), &self.unit)?;
        let unit = EntitlementUnit::parse(&format!("{at}.Unit"), unit_s)?;
        let mut max_count = None;
        if unit == EntitlementUnit::None {
            if self.max_count.is_some() {
                return Err(ValidationError::new(
                    format!("{at}.MaxCount"),
                    "is only for counted entitlements; an entitlement with Unit None is a tier or feature and takes Value",
                ));
            }
            if self.overage == Some(true) {
                return Err(ValidationError::new(
                    format!("{at}.Overage"),
                    "is only for counted entitlements, not for Unit None",
                ));
            }
            validate::opt_text(&format!("{at}.Value"), self.value.as_deref(), limits::NAME)?;
        } else {
            if self.value.is_some() {
                return Err(ValidationError::new(
                    format!("{at}.Value"),
                    format!("is only for entitlements with Unit None; a {unit} entitlement takes MaxCount"),
                ));
            }
            max_count = match self.max_count {
                Some(n) => Some(n.units(&format!("{at}.MaxCount"))?.get()),
                None if self.overage != Some(true) => {
                    return Err(ValidationError::new(
                        format!("{at}.MaxCount"),
                        format!("is required for a {unit} entitlement unless Overage is true"),
                    ))
                }
                None => None,
            };
        }
        Ok(Entitlement {
            name,
            value: self.value.clone(),
            max_count,
            overage: self.overage,
            unit,
            allow_check_in: self.allow_check_in,
        })
    }
}

impl ConsumptionInput {
    fn validate(&self) -> Result<ConsumptionConfiguration, ValidationError> {
        const AT: &str = "ConsumptionConfiguration";
        let renew_type = self
            .renew_type
            .as_deref()
            .map(|s| RenewType::parse(&format!("{AT}.RenewType"), s))
            .transpose()?;
        let provisional_configuration = self
            .provisional_configuration
            .as_ref()
            .map(|p| {
                ttl(
                    &format!("{AT}.ProvisionalConfiguration.MaxTimeToLiveInMinutes"),
                    p.max_time_to_live_in_minutes,
                )
                .map(|m| ProvisionalConfiguration {
                    max_time_to_live_in_minutes: m,
                })
            })
            .transpose()?;
        let borrow_configuration = self
            .borrow_configuration
            .as_ref()
            .map(|b| {
                let f = format!("{AT}.BorrowConfiguration.AllowEarlyCheckIn");
                let allow = b
                    .allow_early_check_in
                    .ok_or_else(|| ValidationError::new(f, "is required"))?;
                let m = ttl(
                    &format!("{AT}.BorrowConfiguration.MaxTimeToLiveInMinutes"),
                    b.max_time_to_live_in_minutes,
                )?;
                Ok(BorrowConfiguration {
                    allow_early_check_in: allow,
                    max_time_to_live_in_minutes: m,
                })
            })
            .transpose()?;
        Ok(ConsumptionConfiguration {
            renew_type,
            provisional_configuration,
            borrow_configuration,
        })
    }
}

impl LicenseInput {
    pub fn validate(&self) -> Result<LicenseBody, ValidationError> {
        let license_name = required_text("LicenseName", &self.license_name, limits::NAME)?;
        let product_name = required_text("ProductName", &self.product_name, limits::NAME)?;
        let product_sku = required_text("ProductSKU", &self.product_sku, limits::NAME)?;
        let issuer = required("Issuer", &self.issuer)?;
        let issuer_name = required_text("Issuer.Name", &issuer.name, limits::NAME)?;
        if issuer_name.contains(':') {
            return Err(ValidationError::new(
                "Issuer.Name",
                "must not contain ':' (it is part of the key fingerprint)",
            ));
        }
        validate::opt_text("Issuer.SignKey", issuer.sign_key.as_deref(), limits::SIGN_KEY)?;
        let home_region = required_text("HomeRegion", &self.home_region, limits::REGION)?;
        if !home_region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ValidationError::new(
                "HomeRegion",
                format!("'{home_region}' is not a region name such as us-east-1"),
            ));
        }
        let validity = required("Validity", &self.validity)?;
        let begin_s = required("Validity.Begin", &validity.begin)?;
        let begin = timefmt::parse("Validity.Begin", begin_s)?;
        let end = validity
            .end
            .as_deref()
            .map(|e| timefmt::parse("Validity.End", e))
            .transpose()?;
        if let Some(end) = end {
            if end <= begin {
                return Err(ValidationError::new(
                    "Validity.End",
                    format!(
                        "{} is not after Validity.Begin {}",
                        timefmt::format(end),
                        timefmt::format(begin)
                    ),
                ));
            }
        }
        let beneficiary = required_text("Beneficiary", &self.beneficiary, limits::BENEFICIARY)?;
        let ents = required("Entitlements", &self.entitlements)?;
        if ents.is_empty() || ents.len() > limits::ENTITLEMENTS {
            return Err(ValidationError::new(
                "Entitlements",
                format!("must list 1 to {} entitlements", limits::ENTITLEMENTS),
            ));
        }
        let mut entitlements = Vec::with_capacity(ents.len());
        for (i, e) in ents.iter().enumerate() {
            let e = e.validate(&format!("Entitlements[{i}]"))?;
            if entitlements.iter().any(|x: &Entitlement| x.name == e.name) {
                return Err(ValidationError::new(
                    format!("Entitlements[{i}].Name"),
                    format!("'{}' appears more than once", e.name),
                ));
            }
            entitlements.push(e);
        }
        let consumption_configuration =
            required("ConsumptionConfiguration", &self.consumption_configuration)?.validate()?;
        let mut license_metadata = Vec::new();
        if let Some(md) = &self.license_metadata {
            if md.len() > limits::METADATA {
                return Err(ValidationError::new(
                    "LicenseMetadata",
                    format!("must list at most {} entries", limits::METADATA),
                ));
            }
            for (i, m) in md.iter().enumerate() {
                let name = required_text(&format!("LicenseMetadata[{i}].Name"), &m.name, limits::NAME)?;
                let value = m.value.clone().unwrap_or_default();
                validate::opt_text(&format!("LicenseMetadata[{i}].Value"), Some(&value), limits::NAME)?;
                license_metadata.push(Metadata { name, value });
            }
        }
        Ok(LicenseBody {
            license_name,
            product_name,
            product_sku,
            issuer_name,
            sign_key: issuer.sign_key.clone(),
            home_region,
            validity: DatetimeRange {
                begin: timefmt::format(begin),
                end: end.map(timefmt::format),
            },
            beneficiary,
            entitlements,
            consumption_configuration,
            license_metadata,
        })
    }
}

impl LicenseBody {
    /// Makes the license version document.
    pub fn into_license(
        self,
        arn: &LicenseArn,
        status: LicenseStatus,
        version: i64,
        create_time: OffsetDateTime,
    ) -> License {
        License {
            license_arn: arn.to_string(),
            license_name: self.license_name,
            product_name: self.product_name,
            product_sku: self.product_sku,
            issuer: IssuerDetails {
                key_fingerprint: key_fingerprint(arn.account(), &self.issuer_name),
                name: self.issuer_name,
                sign_key: self.sign_key,
            },
            home_region: self.home_region,
            status,
            validity: self.validity,
            beneficiary: self.beneficiary,
            entitlements: self.entitlements,
            consumption_configuration: self.consumption_configuration,
            license_metadata: self.license_metadata,
            create_time: timefmt::format(create_time),
            version: version.to_string(),
        }
    }
}

/// Validates tags (TagResource, CreateLicense).
pub fn validate_tags(field: &str, tags: &[TagInput]) -> Result<Vec<Tag>, ValidationError> {
    if tags.len() > limits::TAGS {
        return Err(ValidationError::new(
            field,
            format!("must list at most {} tags", limits::TAGS),
        ));
    }
    tags.iter()
        .enumerate()
        .map(|(i, t)| {
            let key = required_text(&format!("{field}[{i}].Key"), &t.key, limits::TAG_KEY)?;
            let value = t.value.clone().unwrap_or_default();
            validate::opt_text(&format!("{field}[{i}].Value"), Some(&value), limits::TAG_VALUE)?;
            Ok(Tag { key, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: serde_json::Value) -> LicenseInput {
        serde_json::from_value(v).unwrap()
    }

    fn seed() -> serde_json::Value {
        json!({
            "LicenseName": "AWSMP Test License",
            "ProductName": "Test Product",
            "ProductSKU": "sku-1",
            "Issuer": {"Name": "Self"},
            "HomeRegion": "us-east-1",
            "Validity": {"Begin": "2026-11-22T00:00:00Z", "End": "2026-12-02T00:00:00Z"},
            "Entitlements": [{"Name": "ReadOnly", "MaxCount": 5, "Overage": false, "Unit": "Count", "AllowCheckIn": true}],
            "Beneficiary": "210987654321",
            "ConsumptionConfiguration": {"RenewType": "None", "ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}}
        })
    }

    #[test]
    fn the_seed_license_validates() {
        let body = input(seed()).validate().unwrap();
        assert_eq!(body.entitlements[0].max_count, Some(5));
        assert_eq!(body.issuer_name, "Self");
    }

    fn field_of(mut v: serde_json::Value, path: &[&str], new: serde_json::Value) -> String {
        let mut cur = &mut v;
        for p in &path[..path.len() - 1] {
            cur = if let Ok(i) = p.parse::<usize>() {
                &mut cur[i]
            } else {
                &mut cur[*p]
            };
        }
        cur[path[path.len() - 1]] = new;
        input(v).validate().unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(seed(), &["Validity", "End"], json!("2026-11-01T00:00:00Z")),
            "Validity.End"
        );
        assert_eq!(
            field_of(seed(), &["Entitlements", "0", "Unit"], json!("Apples")),
            "Entitlements[0].Unit"
        );
        let mut tier = seed();
        tier["Entitlements"] = json!([{"Name": "Tier", "Unit": "None", "MaxCount": 3}]);
        assert_eq!(input(tier).validate().unwrap_err().field, "Entitlements[0].MaxCount");
        assert_eq!(
            field_of(seed(), &["LicenseName"], json!("x".repeat(300))),
            "LicenseName"
        );
        assert_eq!(
            field_of(
                seed(),
                &[
                    "ConsumptionConfiguration",
                    "ProvisionalConfiguration",
                    "MaxTimeToLiveInMinutes"
                ],
                json!(0)
            ),
            "ConsumptionConfiguration.ProvisionalConfiguration.MaxTimeToLiveInMinutes"
        );
        assert_eq!(
            field_of(seed(), &["ConsumptionConfiguration", "RenewType"], json!("Daily")),
            "ConsumptionConfiguration.RenewType"
        );
    }

    #[test]
    fn fingerprint_names_the_issuer() {
        let a = AccountId::parse("123456789012").unwrap();
        assert_eq!(key_fingerprint(&a, "Self"), "aws:123456789012:Self:issuer-fingerprint");
    }
}
