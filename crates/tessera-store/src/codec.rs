//! Row decoding and value generation shared by both backends: everything about
//! storing the domain that does not depend on the SQL dialect.

use rand::Rng;
use time::OffsetDateTime;

use tessera_core::grant::{Grant, GrantStatus};
use tessera_core::license::{License, LicenseStatus};
use tessera_core::AccountId;

use crate::{AccessKey, GrantOutcome, Result, StoreError, VersionOutcome};

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn random_account_id() -> String {
    let mut rng = rand::thread_rng();
    let first = rng.gen_range(1..=9);
    let rest: String = (0..11).map(|_| char::from(b'0' + rng.gen_range(0..10))).collect();
    format!("{first}{rest}")
}

fn random_chars(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub(crate) fn new_access_key(account: &AccountId, now: OffsetDateTime) -> AccessKey {
    AccessKey {
        access_key_id: format!("AKIA{}", random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        account_id: account.clone(),
        secret: random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40),
        active: true,
        created_at: now,
    }
}

pub(crate) fn account_of(s: &str) -> Result<AccountId> {
    AccountId::parse(s).map_err(corrupt)
}

pub(crate) fn license_of(doc: &str) -> Result<License> {
    serde_json::from_str(doc).map_err(corrupt)
}

pub(crate) fn version_outcome(v: &serde_json::Value) -> Result<VersionOutcome> {
    Ok(VersionOutcome {
        license_arn: v["LicenseArn"].as_str().unwrap_or_default().to_owned(),
        status: LicenseStatus::parse("Status", v["Status"].as_str().unwrap_or_default()).map_err(corrupt)?,
        version: v["Version"].as_str().unwrap_or_default().to_owned(),
    })
}

pub(crate) fn version_json(out: &VersionOutcome) -> serde_json::Value {
    serde_json::json!({"LicenseArn": out.license_arn, "Status": out.status.as_str(), "Version": out.version})
}

pub(crate) fn grant_of(doc: &str) -> Result<Grant> {
    serde_json::from_str(doc).map_err(corrupt)
}

pub(crate) fn outcome(g: &Grant) -> GrantOutcome {
    GrantOutcome {
        grant_arn: g.grant_arn.clone(),
        status: g.grant_status,
        version: g.version.clone(),
    }
}

pub(crate) fn outcome_json(o: &GrantOutcome) -> serde_json::Value {
    serde_json::json!({"GrantArn": o.grant_arn, "Status": o.status.as_str(), "Version": o.version})
}

pub(crate) fn outcome_of(v: &serde_json::Value) -> Result<GrantOutcome> {
    Ok(GrantOutcome {
        grant_arn: v["GrantArn"].as_str().unwrap_or_default().to_owned(),
        status: GrantStatus::parse("Status", v["Status"].as_str().unwrap_or_default()).map_err(corrupt)?,
        version: v["Version"].as_str().unwrap_or_default().to_owned(),
    })
}

/// A row of [`crate::LIST_KEYS`], on either engine.
pub(crate) fn key_summary<R: sqlx::Row>(r: &R) -> Result<crate::KeySummary>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::KeySummary {
        access_key_id: r.try_get("access_key_id")?,
        active: r.try_get("active")?,
        created_at: tessera_core::timefmt::from_millis(r.try_get("created_at")?),
        revoked_at: r
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(tessera_core::timefmt::from_millis),
    })
}
