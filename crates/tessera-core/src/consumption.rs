//! The rules of checkout, check-in and extension, decided without IO.
//!
//! The store runs these inside its write transaction and then applies the
//! resulting draws with conditional updates, so the count check and the
//! increment are one atomic step.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::license::{limits, CheckoutType, EntitlementUnit, License, LicenseStatus, Metadata};
use crate::units::{Units, MAX_UNITS};
use crate::validate::{self, ValidationError};
use crate::{timefmt, AccountId};

/// How far a license's Validity may be off by clocks: a checkout this long
/// before Begin, or this long after End, is still inside the window. Clocks of
/// the issuer's script, the server's replicas and the client disagree by
/// fractions of a second to seconds; one minute covers that (and is the
/// leeway JWT libraries apply to `nbf` and `exp` by default).
pub const VALIDITY_LEEWAY: Duration = Duration::seconds(60);

/// EntitlementData as received in CheckoutLicense.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntitlementDataInput {
    pub name: Option<String>,
    pub value: Option<String>,
    pub unit: Option<String>,
}

/// EntitlementData: what a checkout asked for, and what it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntitlementData {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub unit: EntitlementUnit,
}

/// Units of one counted entitlement taken by a consumption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    pub name: String,
    pub amount: Units,
}

/// Why units cannot be drawn from a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawRefusal {
    /// MaxCount would be passed and the entitlement has no Overage.
    Exhausted,
    /// The counter would pass [`MAX_UNITS`], Overage or not.
    Uncountable,
}

/// A counted entitlement's counter after drawing `amount` from it: within
/// `max_count` unless `overage`, and never past [`MAX_UNITS`]. Every store
/// decides a draw with this one rule.
pub fn draw_units(consumed: Units, amount: Units, max_count: Option<i64>, overage: bool) -> Result<Units, DrawRefusal> {
    let limit = max_count.filter(|_| !overage);
    match (consumed.checked_add(amount), limit) {
        (Some(after), Some(max)) if after.get() > max => Err(DrawRefusal::Exhausted),
        (Some(after), _) => Ok(after),
        // Past the countable range is past any limit too; that limit is the reason given.
        (None, Some(_)) => Err(DrawRefusal::Exhausted),
        (None, None) => Err(DrawRefusal::Uncountable),
    }
}

/// Validates CheckoutLicense's Entitlements into requests. A counted
/// entitlement's Value is a whole number from 1 to [`MAX_UNITS`], answered
/// (and signed into the token) in its plain decimal form: `+1` and `01` are `1`.
/// A Value of 0 is refused: a checkout takes units, and GetLicense or
/// ListReceivedLicenses tell what a license holds without taking any.
pub fn parse_requests(raw: &[EntitlementDataInput]) -> Result<Vec<EntitlementData>, ValidationError> {
    if raw.is_empty() || raw.len() > limits::ENTITLEMENTS {
        return Err(ValidationError::new(
            "Entitlements",
            format!("must list 1 to {} entitlements", limits::ENTITLEMENTS),
        ));
    }
    let mut out: Vec<EntitlementData> = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let at = format!("Entitlements[{i}]");
        let name = e
            .name
            .as_deref()
            .ok_or_else(|| ValidationError::new(format!("{at}.Name"), "is required"))?;
        validate::text(&format!("{at}.Name"), name, limits::NAME)?;
        let unit_s = e
            .unit
            .as_deref()
            .ok_or_else(|| ValidationError::new(format!("{at}.Unit"), "is required"))?;
        let unit = EntitlementUnit::parse(&format!("{at}.Unit"), unit_s)?;
        let value = if unit != EntitlementUnit::None {
            let field = format!("{at}.Value");
            let v = e.value.as_deref().ok_or_else(|| {
                ValidationError::new(
                    &field,
                    format!("is required for a {unit} entitlement: the number of units to check out"),
                )
            })?;
            let n = Units::parse(&field, v)?;
            if n == Units::ZERO {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "must be at least 1 (and at most {MAX_UNITS}): a checkout takes units; \
                         GetLicense or ListReceivedLicenses show what a license holds without taking any"
                    ),
                ));
            }
            Some(n.to_string())
        } else {
            validate::opt_text(&format!("{at}.Value"), e.value.as_deref(), limits::NAME)?;
            e.value.as_ref().map(|v| v.trim().to_owned())
        };
        if out.iter().any(|x| x.name == name) {
            return Err(ValidationError::new(
                format!("{at}.Name"),
                format!("'{name}' appears more than once"),
            ));
        }
        out.push(EntitlementData {
            name: name.to_owned(),
            value,
            unit,
        });
    }
    Ok(out)
}

/// Why a license cannot be used right now, or None when it can.
pub fn unavailable_reason(license: &License, now: OffsetDateTime) -> Option<String> {
    if license.status != LicenseStatus::Available {
        return Some(format!(
            "license {} is {}, not AVAILABLE",
            license.license_arn, license.status
        ));
    }
    let (begin, end) = license.validity_window();
    // Checked: a window may run to the end of the calendar (9999-12-31T23:59:59Z).
    if let Some(b) = begin {
        if now.checked_add(VALIDITY_LEEWAY).is_some_and(|t| t < b) {
            return Some(format!(
                "license {} is not valid until {}",
                license.license_arn, license.validity.begin
            ));
        }
    }
    if let Some(e) = end {
        if e.checked_add(VALIDITY_LEEWAY).is_some_and(|end| now >= end) {
            return Some(format!(
                "license {} expired at {}",
                license.license_arn,
                license.validity.end.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// What a checkout against one license would be allowed and would draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutPlan {
    pub allowed: Vec<EntitlementData>,
    pub draws: Vec<Draw>,
}

/// Matches the requested entitlements against a license. Tiers (Unit None) come
/// back only when the license holds them; counted entitlements must match by
/// name and unit and are returned with the requested amount. Nothing held: Err.
pub fn plan_checkout(license: &License, requests: &[EntitlementData]) -> Result<CheckoutPlan, String> {
    let mut allowed = Vec::new();
    let mut draws = Vec::new();
    let mut mismatched = Vec::new();
    for r in requests {
        let Some(e) = license.entitlement(&r.name) else {
            continue;
        };
        if e.unit != r.unit {
            mismatched.push(format!("'{}' is measured in {}, not {}", r.name, e.unit, r.unit));
            continue;
        }
        if e.is_counted() {
            // parse_requests made every counted Value a valid count.
            let Some(amount) = r.value.as_deref().and_then(|v| Units::parse("Value", v).ok()) else {
                mismatched.push(format!("'{}' needs a whole number of units as its Value", r.name));
                continue;
            };
            draws.push(Draw {
                name: r.name.clone(),
                amount,
            });
            allowed.push(r.clone());
        } else {
            allowed.push(EntitlementData {
                name: e.name.clone(),
                value: e.value.clone(),
                unit: e.unit,
            });
        }
    }
    if allowed.is_empty() {
        let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
        let mut msg = format!(
            "license {} holds none of the requested entitlements ({})",
            license.license_arn,
            names.join(", ")
        );
        if !mismatched.is_empty() {
            msg.push_str(&format!(": {}", mismatched.join("; ")));
        }
        return Err(msg);
    }
    Ok(CheckoutPlan { allowed, draws })
}

/// Whether `caller` may check out `license`, given the request's Beneficiary.
///
/// The license's beneficiary account may use it. The issuer may use it too, but
/// (as AWS requires) only by naming the beneficiary in the request, which also
/// covers a SaaS vendor checking out on behalf of a customer identifier.
pub fn may_checkout(license: &License, caller: &AccountId, beneficiary: Option<&str>) -> bool {
    let issuer = crate::LicenseArn::parse("LicenseArn", &license.license_arn)
        .map(|a| a.account().clone())
        .ok();
    let is_issuer = issuer.as_ref() == Some(caller);
    let is_beneficiary = license.beneficiary_account().as_ref() == Some(caller);
    match beneficiary {
        None => is_beneficiary && !is_issuer,
        Some(b) => {
            let named = AccountId::from_principal(b)
                .map(|a| license.beneficiary_account().as_ref() == Some(&a))
                .unwrap_or(false)
                || license.beneficiary == b;
            named && (is_issuer || is_beneficiary)
        }
    }
}

/// Plans a borrow: every requested entitlement must be held (no partial
/// checkout). Err names what is missing or why the license cannot be borrowed.
pub fn plan_borrow(license: &License, requests: &[EntitlementData]) -> Result<CheckoutPlan, BorrowRefusal> {
    if license.consumption_configuration.borrow_configuration.is_none() {
        return Err(BorrowRefusal::NotBorrowable(format!(
            "license {} has no BorrowConfiguration, so it cannot be borrowed",
            license.license_arn
        )));
    }
    let missing: Vec<String> = requests
        .iter()
        .filter(|r| license.entitlement(&r.name).is_none_or(|e| e.unit != r.unit))
        .map(|r| format!("{} ({})", r.name, r.unit))
        .collect();
    if !missing.is_empty() {
        return Err(BorrowRefusal::NotHeld(format!(
            "license {} does not hold {}; partial checkouts are not allowed",
            license.license_arn,
            missing.join(", ")
        )));
    }
    plan_checkout(license, requests).map_err(BorrowRefusal::NotHeld)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BorrowRefusal {
    NotBorrowable(String),
    NotHeld(String),
}

/// When a borrow made at `now` expires: the BorrowConfiguration's TTL.
pub fn borrow_expiry(license: &License, now: OffsetDateTime) -> OffsetDateTime {
    let minutes = license
        .consumption_configuration
        .borrow_configuration
        .as_ref()
        .map(|b| b.max_time_to_live_in_minutes)
        .unwrap_or(crate::license::DEFAULT_PROVISIONAL_TTL_MINUTES);
    now + Duration::minutes(minutes)
}

/// When a consumption made or extended at `now` expires.
pub fn expiry(license: &License, now: OffsetDateTime) -> OffsetDateTime {
    now + Duration::minutes(license.provisional_ttl_minutes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumptionStatus {
    Active,
    CheckedIn,
    Expired,
}

impl ConsumptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::CheckedIn => "CHECKED_IN",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Self::Active),
            "CHECKED_IN" => Some(Self::CheckedIn),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// One checkout, as recorded and as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    pub token: String,
    pub license_arn: String,
    pub consumer: AccountId,
    pub checkout_type: CheckoutType,
    pub allowed: Vec<EntitlementData>,
    pub draws: Vec<Draw>,
    pub node_id: Option<String>,
    pub beneficiary: Option<String>,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub status: ConsumptionStatus,
    pub product_sku: String,
    pub key_fingerprint: String,
    /// Taken with CheckoutBorrowLicense: fixed term, not extendable.
    pub borrowed: bool,
    pub checkout_metadata: Vec<Metadata>,
}

impl Consumption {
    pub fn issued_at_str(&self) -> String {
        timefmt::format(self.issued_at)
    }

    pub fn expiration_str(&self) -> String {
        timefmt::format(self.expires_at)
    }
}

/// Why a check-in is refused, decided from the consumption and its license.
pub fn check_in_refusal(c: &Consumption, license: &License, now: OffsetDateTime) -> Option<CheckInRefusal> {
    if c.checkout_type == CheckoutType::Perpetual {
        return Some(CheckInRefusal::Perpetual);
    }
    match c.status {
        ConsumptionStatus::CheckedIn => return Some(CheckInRefusal::NotActive("was already checked in".into())),
        ConsumptionStatus::Expired => {
            return Some(CheckInRefusal::NotActive(format!("expired at {}", c.expiration_str())))
        }
        ConsumptionStatus::Active if c.expires_at <= now => {
            return Some(CheckInRefusal::NotActive(format!("expired at {}", c.expiration_str())))
        }
        ConsumptionStatus::Active => {}
    }
    if c.borrowed {
        let early_ok = license
            .consumption_configuration
            .borrow_configuration
            .as_ref()
            .is_some_and(|b| b.allow_early_check_in);
        if !early_ok {
            return Some(CheckInRefusal::EarlyCheckIn(c.expiration_str()));
        }
    }
    for d in &c.draws {
        if let Some(e) = license.entitlement(&d.name) {
            if !e.allow_check_in() {
                return Some(CheckInRefusal::NotAllowed(d.name.clone()));
            }
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckInRefusal {
    Perpetual,
    /// A borrowed consumption before its expiry, on a license without AllowEarlyCheckIn.
    EarlyCheckIn(String),
    NotActive(String),
    NotAllowed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::LicenseInput;
    use crate::LicenseArn;
    use serde_json::json;
    use time::macros::datetime;

    fn license(beneficiary: &str) -> License {
        let input: LicenseInput = serde_json::from_value(json!({
            "LicenseName": "n", "ProductName": "p", "ProductSKU": "sku", "Issuer": {"Name": "Self"},
            "HomeRegion": "us-east-1",
            "Validity": {"Begin": "2026-01-01T00:00:00Z", "End": "2027-01-01T00:00:00Z"},
            "Entitlements": [
                {"Name": "Seats", "MaxCount": 5, "Unit": "Count", "AllowCheckIn": true},
                {"Name": "Premium", "Value": "Enabled", "Unit": "None"}
            ],
            "Beneficiary": beneficiary,
            "ConsumptionConfiguration": {"ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}}
        }))
        .unwrap();
        let issuer = AccountId::parse("111111111111").unwrap();
        input.validate().unwrap().into_license(
            &LicenseArn::new(&issuer, [1; 16]),
            LicenseStatus::Available,
            1,
            datetime!(2026-01-01 0:00 UTC),
        )
    }

    fn req(v: serde_json::Value) -> Vec<EntitlementData> {
        let raw: Vec<EntitlementDataInput> = serde_json::from_value(v).unwrap();
        parse_requests(&raw).unwrap()
    }

    #[test]
    fn tiers_come_back_only_when_held() {
        let l = license("222222222222");
        let p = plan_checkout(
            &l,
            &req(json!([{"Name": "Basic", "Unit": "None"}, {"Name": "Premium", "Unit": "None"}])),
        )
        .unwrap();
        assert_eq!(p.allowed.len(), 1);
        assert_eq!(p.allowed[0].name, "Premium");
        assert_eq!(p.allowed[0].value.as_deref(), Some("Enabled"));
        assert!(p.draws.is_empty());
        assert!(plan_checkout(&l, &req(json!([{"Name": "Basic", "Unit": "None"}]))).is_err());
    }

    #[test]
    fn counted_entitlements_draw_the_requested_amount() {
        let l = license("222222222222");
        let p = plan_checkout(&l, &req(json!([{"Name": "Seats", "Value": "3", "Unit": "Count"}]))).unwrap();
        assert_eq!(
            p.draws,
            vec![Draw {
                name: "Seats".into(),
                amount: Units::new(3).unwrap()
            }]
        );
        let e = plan_checkout(&l, &req(json!([{"Name": "Seats", "Value": "3", "Unit": "Bytes"}]))).unwrap_err();
        assert!(e.contains("measured in Count"), "{e}");
    }

    #[test]
    fn counted_requests_need_a_whole_number() {
        for bad in ["-1", "0", "00", "9007199254740992", "9223372036854775807", "1.5", ""] {
            let raw: Vec<EntitlementDataInput> =
                serde_json::from_value(json!([{"Name": "Seats", "Value": bad, "Unit": "Count"}])).unwrap();
            let e = parse_requests(&raw).unwrap_err();
            assert_eq!(e.field, "Entitlements[0].Value", "{bad}");
            assert!(e.message.contains("9007199254740991"), "{bad}: {e}");
        }
    }

    #[test]
    fn counted_values_are_normalised() {
        for (given, echoed) in [
            ("+1", "1"),
            ("01", "1"),
            (" 7 ", "7"),
            ("9007199254740991", "9007199254740991"),
        ] {
            let r = req(json!([{"Name": "Seats", "Value": given, "Unit": "Count"}]));
            assert_eq!(r[0].value.as_deref(), Some(echoed), "{given}");
        }
    }

    #[test]
    fn draws_never_pass_the_limit_or_the_countable_range() {
        let u = |n| Units::new(n).unwrap();
        assert_eq!(draw_units(u(9), u(1), Some(10), false), Ok(u(10)));
        assert_eq!(draw_units(u(10), u(1), Some(10), false), Err(DrawRefusal::Exhausted));
        assert_eq!(draw_units(u(10), u(1), Some(10), true), Ok(u(11)));
        assert_eq!(
            draw_units(u(0), Units::MAX, Some(10), false),
            Err(DrawRefusal::Exhausted)
        );
        assert_eq!(
            draw_units(u(10), Units::MAX, Some(10), true),
            Err(DrawRefusal::Uncountable)
        );
        assert_eq!(draw_units(u(1), Units::MAX, None, false), Err(DrawRefusal::Uncountable));
        assert_eq!(
            draw_units(u(10), Units::MAX, Some(10), false),
            Err(DrawRefusal::Exhausted)
        );
        assert_eq!(draw_units(u(0), Units::MAX, None, false), Ok(Units::MAX));
    }

    #[test]
    fn issuer_must_name_the_beneficiary() {
        let issuer = AccountId::parse("111111111111").unwrap();
        let customer = AccountId::parse("222222222222").unwrap();
        let stranger = AccountId::parse("333333333333").unwrap();
        let l = license("arn:aws:iam::222222222222:root");
        assert!(may_checkout(&l, &customer, None));
        assert!(may_checkout(&l, &customer, Some("222222222222")));
        assert!(!may_checkout(&l, &stranger, None));
        assert!(!may_checkout(&l, &issuer, None));
        assert!(may_checkout(&l, &issuer, Some("222222222222")));
        let own = license("111111111111");
        assert!(!may_checkout(&own, &issuer, None));
        assert!(may_checkout(&own, &issuer, Some("111111111111")));
    }

    #[test]
    fn validity_and_status_gate_use() {
        let mut l = license("222222222222");
        assert!(unavailable_reason(&l, datetime!(2026-06-01 0:00 UTC)).is_none());
        assert!(unavailable_reason(&l, datetime!(2025-06-01 0:00 UTC))
            .unwrap()
            .contains("not valid until"));
        assert!(unavailable_reason(&l, datetime!(2027-06-01 0:00 UTC))
            .unwrap()
            .contains("expired"));
        // A window to the end of the calendar is open, not a panic.
        let mut forever = l.clone();
        forever.validity.end = Some("9999-12-31T23:59:59Z".into());
        assert!(unavailable_reason(&forever, datetime!(2026-06-01 0:00 UTC)).is_none());
        // Within a minute of the window's edges a checkout is still inside it.
        assert!(unavailable_reason(&l, datetime!(2025-12-31 23:59:30 UTC)).is_none());
        assert!(unavailable_reason(&l, datetime!(2025-12-31 23:58:59 UTC)).is_some());
        assert!(unavailable_reason(&l, datetime!(2027-01-01 00:00:59 UTC)).is_none());
        assert!(unavailable_reason(&l, datetime!(2027-01-01 00:01:00 UTC)).is_some());
        l.status = LicenseStatus::Suspended;
        assert!(unavailable_reason(&l, datetime!(2026-06-01 0:00 UTC))
            .unwrap()
            .contains("SUSPENDED"));
    }
}
