//! The license rules: what is in force (trial or product key), how much AKU it
//! allows, whether a product key may be accepted, and why not.

use serde::{Deserialize, Serialize};
use tessera_token::product_key::{ProductKeyBody, ProductKeyError};
use time::OffsetDateTime;

use crate::state::{ActiveKey, State};
use crate::timefmt;

pub const TRIAL_DAYS: i64 = 14;
pub const TRIAL_AKU: i64 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseState {
    Trial,
    Active,
    Expired,
}

impl LicenseState {
    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trial => "TRIAL",
            Self::Active => "ACTIVE",
            Self::Expired => "EXPIRED",
        }
    }
}

/// The license in force at one instant.
#[derive(Debug, Clone)]
pub struct LicenseView {
    pub state: LicenseState,
    pub aku_allocated: i64,
    pub expires_at: OffsetDateTime,
    /// The product key in force, if the environment was ever activated.
    pub key: Option<ProductKeyBody>,
}

impl LicenseView {
    pub fn of(state: &State, now: OffsetDateTime) -> Self {
        match &state.product_key {
            Some(ActiveKey { body, .. }) => {
                // A stored key was checked when accepted; an unreadable date counts as expired.
                let expires_at = timefmt::parse(&body.valid_until).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                Self {
                    state: if now < expires_at {
                        LicenseState::Active
                    } else {
                        LicenseState::Expired
                    },
                    aku_allocated: body.aku,
                    expires_at,
                    key: Some(body.clone()),
                }
            }
            None => {
                let expires_at = trial_end(state);
                Self {
                    state: if now < expires_at {
                        LicenseState::Trial
                    } else {
                        LicenseState::Expired
                    },
                    aku_allocated: TRIAL_AKU,
                    expires_at,
                    key: None,
                }
            }
        }
    }

    pub fn expired(&self) -> bool {
        self.state == LicenseState::Expired
    }

    /// Says what expired, for refusals.
    pub fn expiry_text(&self) -> String {
        let at = timefmt::format(self.expires_at);
        match &self.key {
            Some(k) => format!(
                "the license {} (version {}) expired at {at}",
                k.license_arn, k.license_version
            ),
            None => format!("the {TRIAL_DAYS}-day trial ended at {at}"),
        }
    }
}

pub fn trial_end(state: &State) -> OffsetDateTime {
    // Checked: the state file may have been edited to the end of the calendar.
    state
        .trial_started_at
        .checked_add(time::Duration::days(TRIAL_DAYS))
        .unwrap_or(state.trial_started_at)
}

/// Why a product key is refused, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    WrongInstall,
    WrongEnvironment,
    BadSignature,
    Malformed,
    Expired,
    UntrustedKey,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongInstall => "WRONG_INSTALL",
            Self::WrongEnvironment => "WRONG_ENVIRONMENT",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::Malformed => "MALFORMED",
            Self::Expired => "EXPIRED",
            Self::UntrustedKey => "UNTRUSTED_KEY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRejection {
    pub reason: RejectReason,
    pub message: String,
}

impl std::fmt::Display for KeyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl KeyRejection {
    fn new(reason: RejectReason, message: String) -> Self {
        Self { reason, message }
    }

    /// Maps a failed signature check. `no_trusted_keys` tells a misconfigured agent from a foreign key.
    pub fn from_verify(e: ProductKeyError, no_trusted_keys: bool) -> Self {
        match e {
            ProductKeyError::Malformed(detail) => Self::new(
                RejectReason::Malformed,
                format!(
                    "the product key is malformed ({detail}): paste the whole key exactly as the vendor sent it, \
                     one line of base64 that starts with eyJpbnN0YWxsSWQiOi"
                ),
            ),
            ProductKeyError::UntrustedKey(kid) if no_trusted_keys => Self::new(
                RejectReason::UntrustedKey,
                format!(
                    "the product key is signed by issuer key '{kid}', but this agent has no trusted issuer keys: \
                     start it with --trusted-jwks (the vendor's JWKS file or URL) or --server-url"
                ),
            ),
            ProductKeyError::UntrustedKey(kid) => Self::new(
                RejectReason::UntrustedKey,
                format!(
                    "the product key is signed by issuer key '{kid}', which is not one of this agent's trusted \
                     issuer keys: check that --trusted-jwks (or --server-url) names the vendor that issued the key"
                ),
            ),
            ProductKeyError::BadSignature => Self::new(
                RejectReason::BadSignature,
                "the product key's signature does not verify: the key was altered or truncated; \
                 paste it exactly as the vendor sent it, or ask the vendor to issue it again"
                    .into(),
            ),
        }
    }
}

/// The checks after the signature: this install, this environment, not expired.
pub fn check_binding(
    body: &ProductKeyBody,
    install_id: &str,
    environment_id: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, KeyRejection> {
    if body.install_id != install_id {
        return Err(KeyRejection::new(
            RejectReason::WrongInstall,
            format!(
                "the product key was issued for install ID {}, but this environment's install ID is {install_id}: \
                 ask the vendor for a key issued for install ID {install_id} (shown by `tessera agent info`)",
                body.install_id
            ),
        ));
    }
    if body.environment_id != environment_id {
        return Err(KeyRejection::new(
            RejectReason::WrongEnvironment,
            format!(
                "the product key was issued for environment {}, but this is environment {environment_id}: \
                 ask the vendor for a key issued for environment {environment_id}",
                body.environment_id
            ),
        ));
    }
    if body.aku < 0 {
        return Err(KeyRejection::new(
            RejectReason::Malformed,
            format!(
                "the product key allocates {} AKU, which is not a valid amount",
                body.aku
            ),
        ));
    }
    let until = timefmt::parse(&body.valid_until).ok_or_else(|| {
        KeyRejection::new(
            RejectReason::Malformed,
            format!(
                "the product key's validUntil '{}' is not an ISO 8601 date-time",
                body.valid_until
            ),
        )
    })?;
    if until <= now {
        return Err(KeyRejection::new(
            RejectReason::Expired,
            format!(
                "the product key expired at {} (it is now {}): renew the license and ask the vendor for a new key",
                timefmt::format(until),
                timefmt::format(now)
            ),
        ));
    }
    Ok(until)
}

/// Whether `candidate` (found by polling) says anything the key in force does not.
/// Keys are re-signed with a new `issuedAt`; only the rest is news. An older key
/// never replaces a newer one, so a stale bucket object cannot undo an activation.
pub fn is_newer(candidate: &ProductKeyBody, current: Option<&ProductKeyBody>) -> bool {
    let Some(current) = current else {
        return true;
    };
    let same_grant = ProductKeyBody {
        issued_at: current.issued_at.clone(),
        ..candidate.clone()
    } == *current;
    if same_grant {
        return false;
    }
    match (timefmt::parse(&candidate.issued_at), timefmt::parse(&current.issued_at)) {
        (Some(c), Some(k)) => c >= k,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> ProductKeyBody {
        ProductKeyBody {
            install_id: "0123456789abcdef0123456789abcdef".into(),
            environment_id: "env-1".into(),
            license_arn: "arn:aws:license-manager::111111111111:license:l-0".into(),
            license_version: "1".into(),
            product_sku: "sku".into(),
            entitlement: "AKU".into(),
            aku: 40,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2027-01-01T00:00:00Z".into(),
            issued_at: "2026-02-01T00:00:00Z".into(),
            key_fingerprint: "fp".into(),
            key_id: "kid".into(),
        }
    }

    #[test]
    fn reissued_keys_are_not_news_but_changes_are() {
        let cur = body();
        let reissued = ProductKeyBody {
            issued_at: "2026-03-01T00:00:00Z".into(),
            ..body()
        };
        assert!(!is_newer(&reissued, Some(&cur)));
        let renewed = ProductKeyBody {
            valid_until: "2028-01-01T00:00:00Z".into(),
            license_version: "2".into(),
            ..reissued.clone()
        };
        assert!(is_newer(&renewed, Some(&cur)));
        assert!(
            !is_newer(&cur, Some(&renewed)),
            "an older key never replaces a newer one"
        );
        assert!(is_newer(&cur, None));
    }

    #[test]
    fn binding_checks_name_the_reason() {
        let now = timefmt::parse("2026-06-01T00:00:00Z").unwrap();
        let b = body();
        assert!(check_binding(&b, &b.install_id, "env-1", now).is_ok());
        let r = |res: Result<OffsetDateTime, KeyRejection>| res.unwrap_err().reason;
        assert_eq!(r(check_binding(&b, "ffff", "env-1", now)), RejectReason::WrongInstall);
        assert_eq!(
            r(check_binding(&b, &b.install_id, "env-2", now)),
            RejectReason::WrongEnvironment
        );
        let later = timefmt::parse("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(
            r(check_binding(&b, &b.install_id, "env-1", later)),
            RejectReason::Expired
        );
    }
}
