//! The hot path's decisions that do not depend on the database, shared by
//! SQLite's writer thread and PostgreSQL's batched and single writes: who may
//! act, what a checkout or borrow takes, the consumption it makes, and every
//! refusal's wording.

use time::OffsetDateTime;

use tessera_core::consumption::{
    self, check_in_refusal, draw_units, may_checkout, plan_borrow, plan_checkout, unavailable_reason, BorrowRefusal,
    CheckInRefusal, CheckoutPlan, Consumption, ConsumptionStatus, Draw, DrawRefusal, EntitlementData,
};
use tessera_core::grant::AllowedOperation;
use tessera_core::license::{CheckoutType, License};
use tessera_core::{AccountId, LicenseArn};
use tessera_core::{Units, MAX_UNITS};

use crate::{BorrowCommand, CheckoutCommand, Result, StoreError};

/// What a checkout would take from `license` now, or why it cannot.
pub(crate) fn checkout_plan(
    license: &License,
    wanted: &[EntitlementData],
    now: OffsetDateTime,
) -> std::result::Result<CheckoutPlan, String> {
    match unavailable_reason(license, now) {
        Some(r) => Err(r),
        None => plan_checkout(license, wanted),
    }
}

/// What a borrow would take from `license` now, or the error that refuses it.
pub(crate) fn borrow_plan(license: &License, wanted: &[EntitlementData], now: OffsetDateTime) -> Result<CheckoutPlan> {
    if let Some(r) = unavailable_reason(license, now) {
        return Err(StoreError::NoEntitlements(r));
    }
    plan_borrow(license, wanted).map_err(|r| match r {
        BorrowRefusal::NotBorrowable(m) => StoreError::Invalid(m),
        BorrowRefusal::NotHeld(m) => StoreError::EntitlementNotAllowed(m),
    })
}

/// How a checkout's caller stands toward a license.
pub(crate) enum Reach {
    /// The beneficiary, or the issuer checking out for a named beneficiary.
    Direct,
    /// Anyone else without a Beneficiary: only through an ACTIVE grant allowing CheckoutLicense.
    ThroughGrant,
    /// A Beneficiary named by a caller who may not check out for it; grants do not apply.
    Never,
}

pub(crate) fn checkout_reach(cmd: &CheckoutCommand, license: &License) -> Reach {
    if may_checkout(license, &cmd.caller, cmd.beneficiary.as_deref()) {
        Reach::Direct
    } else if cmd.beneficiary.is_some() {
        Reach::Never
    } else {
        Reach::ThroughGrant
    }
}

/// Whether `license`, out of the caller's reach, is the caller's own license
/// checked out without a Beneficiary (the refusal then says how to do it).
pub(crate) fn issuer_without_beneficiary(cmd: &CheckoutCommand, license: &License) -> bool {
    cmd.beneficiary.is_none() && issued_by(&license.license_arn, &cmd.caller)
}

/// The consumption a granted checkout makes.
pub(crate) fn checkout_consumption(
    cmd: &CheckoutCommand,
    license: &License,
    plan: CheckoutPlan,
    now: OffsetDateTime,
) -> Consumption {
    Consumption {
        checkout_type: cmd.checkout_type,
        beneficiary: cmd.beneficiary.clone(),
        ..granted(&cmd.token, &cmd.caller, &cmd.node_id, license, plan, now)
    }
}

/// The consumption a granted borrow makes.
pub(crate) fn borrow_consumption(
    cmd: &BorrowCommand,
    license: &License,
    plan: CheckoutPlan,
    now: OffsetDateTime,
) -> Consumption {
    Consumption {
        expires_at: consumption::borrow_expiry(license, now),
        borrowed: true,
        checkout_metadata: cmd.metadata.clone(),
        ..granted(&cmd.token, &cmd.caller, &cmd.node_id, license, plan, now)
    }
}

/// What every granted consumption holds: an ACTIVE PROVISIONAL checkout of the plan.
fn granted(
    token: &str,
    caller: &AccountId,
    node_id: &Option<String>,
    license: &License,
    plan: CheckoutPlan,
    now: OffsetDateTime,
) -> Consumption {
    Consumption {
        token: token.to_owned(),
        license_arn: license.license_arn.clone(),
        consumer: caller.clone(),
        checkout_type: CheckoutType::Provisional,
        allowed: plan.allowed,
        draws: plan.draws,
        node_id: node_id.clone(),
        beneficiary: None,
        issued_at: now,
        expires_at: consumption::expiry(license, now),
        status: ConsumptionStatus::Active,
        product_sku: license.product_sku.clone(),
        key_fingerprint: license.issuer.key_fingerprint.clone(),
        borrowed: false,
        checkout_metadata: Vec::new(),
    }
}

/// A ClientToken used before with a different request of operation `op`.
pub(crate) fn token_reused(client_token: &str, op: &str) -> StoreError {
    StoreError::Conflict(format!(
        "ClientToken '{client_token}' was already used with a different {op} request; use a new ClientToken for a new request"
    ))
}

/// A counted entitlement's counter as a store holds it while it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub consumed: Units,
    pub max_count: Option<i64>,
    pub overage: bool,
}

/// A counter's value read from the database, which only ever holds a count.
pub(crate) fn stored_units(v: i64) -> Result<Units> {
    Units::new(v).ok_or_else(|| StoreError::Corrupt(format!("a stored count ({v}) is not between 0 and {MAX_UNITS}")))
}

/// Decides a plan's draws against its counters, as `read` gives them: the
/// value each counter would hold after its draw (in draw order, a later draw
/// of the same entitlement counted after the earlier one), or why the plan is
/// refused. Nothing is changed; SQLite's writer and PostgreSQL's batch both
/// decide with this, and apply the values only when every draw fits.
pub(crate) fn decide_draws(
    arn: &str,
    draws: &[Draw],
    mut read: impl FnMut(&str) -> Result<Tally>,
) -> Result<std::result::Result<Vec<Units>, String>> {
    let mut after: Vec<(&str, Units)> = Vec::with_capacity(draws.len());
    for d in draws {
        let t = read(&d.name)?;
        let consumed = after
            .iter()
            .rev()
            .find(|(n, _)| *n == d.name)
            .map_or(t.consumed, |(_, v)| *v);
        match draw_units(consumed, d.amount, t.max_count, t.overage) {
            Ok(v) => after.push((&d.name, v)),
            Err(why) => return Ok(Err(refused_draw(d, arn, consumed, t.max_count, why))),
        }
    }
    Ok(Ok(after.into_iter().map(|(_, v)| v).collect()))
}

/// Why a draw of `d` from license `arn` is refused, given its counter.
pub(crate) fn refused_draw(d: &Draw, arn: &str, consumed: Units, max: Option<i64>, why: DrawRefusal) -> String {
    match why {
        DrawRefusal::Exhausted => format!(
            "entitlement '{}' of license {arn} is exhausted: {consumed} of {} in use, {} requested",
            d.name,
            max.unwrap_or(0),
            d.amount
        ),
        DrawRefusal::Uncountable => format!(
            "entitlement '{}' of license {arn} cannot count more: {consumed} in use and {} requested would pass \
             {MAX_UNITS}, the largest quantity Tessera counts",
            d.name, d.amount
        ),
    }
}

/// Why a draw that a conditional update did not take was refused, from its counter read afterwards.
pub(crate) fn refusal_of(d: &Draw, arn: &str, t: Tally) -> String {
    let why = draw_units(t.consumed, d.amount, t.max_count, t.overage)
        .err()
        .unwrap_or(DrawRefusal::Exhausted);
    refused_draw(d, arn, t.consumed, t.max_count, why)
}

/// A checkout's refusal when no license got as far as a reason of its own.
pub(crate) fn nothing_available(cmd: &CheckoutCommand, own_license_without_beneficiary: bool) -> StoreError {
    let mut msg = format!(
        "no license with ProductSKU '{}' and KeyFingerprint '{}' is available to account {}",
        cmd.product_sku, cmd.key_fingerprint, cmd.caller
    );
    if own_license_without_beneficiary {
        msg.push_str("; an issuer checking out its own license must name the beneficiary in Beneficiary");
    }
    if cmd.only_license.is_some() {
        msg.push_str(" through this access token");
    }
    StoreError::NoEntitlements(msg)
}

/// Whether `caller` issued license `arn`.
fn issued_by(arn: &str, caller: &AccountId) -> bool {
    LicenseArn::parse("LicenseArn", arn)
        .map(|a| a.account() == caller)
        .unwrap_or(false)
}

pub(crate) fn may_not_borrow(caller: &AccountId, arn: &str) -> StoreError {
    StoreError::AccessDenied(format!(
        "account {caller} may not borrow license {arn}: it is not the beneficiary and holds no ACTIVE grant allowing CheckoutBorrowLicense"
    ))
}

/// Refuses an action on consumption `c` by another account than its own, or
/// through an access token for another license.
pub(crate) fn check_consumer(caller: &AccountId, c: &Consumption, only_license: Option<&str>) -> Result<()> {
    if &c.consumer != caller {
        return Err(StoreError::AccessDenied(format!(
            "the license consumption '{}' belongs to another account",
            c.token
        )));
    }
    if only_license.is_some_and(|only| only != c.license_arn) {
        return Err(StoreError::AccessDenied(format!(
            "the access token is for another license than consumption '{}'",
            c.token
        )));
    }
    Ok(())
}

/// Whether `caller` acts on `license` as its issuer or beneficiary (rather than through a grant).
pub(crate) fn direct_user(caller: &AccountId, license: &License) -> bool {
    issued_by(&license.license_arn, caller) || license.beneficiary_account().as_ref() == Some(caller)
}

pub(crate) fn no_grant(caller: &AccountId, arn: &str, op: AllowedOperation) -> StoreError {
    StoreError::AccessDenied(format!(
        "account {caller} holds no ACTIVE grant on license {arn} that allows {op}"
    ))
}

/// The answer to a check-in of `c` that the rules refuse, if they do.
pub(crate) fn refuse_check_in(c: &Consumption, license: &License, now: OffsetDateTime) -> Result<()> {
    let token = &c.token;
    match check_in_refusal(c, license, now) {
        Some(CheckInRefusal::Perpetual) => Err(StoreError::Invalid(format!(
            "license consumption '{token}' is PERPETUAL: its units are consumed for good and cannot be checked in"
        ))),
        Some(CheckInRefusal::EarlyCheckIn(until)) => Err(StoreError::Invalid(format!(
            "license consumption '{token}' is borrowed until {until}, and license {} does not allow early check-in (BorrowConfiguration.AllowEarlyCheckIn is false)",
            c.license_arn
        ))),
        Some(CheckInRefusal::NotActive(why)) => Err(StoreError::Conflict(format!("license consumption '{token}' {why}"))),
        Some(CheckInRefusal::NotAllowed(name)) => Err(StoreError::Invalid(format!(
            "license {} does not allow check-in of entitlement '{name}' (AllowCheckIn is false)",
            c.license_arn
        ))),
        None => Ok(()),
    }
}

/// The answer to an extension of `c` that the rules refuse, if they do.
pub(crate) fn refuse_extension(c: &Consumption, license: &License, now: OffsetDateTime) -> Result<()> {
    let token = &c.token;
    if c.checkout_type == CheckoutType::Perpetual {
        return Err(StoreError::Invalid(format!(
            "license consumption '{token}' is PERPETUAL: it never returns to the pool, so there is nothing to extend"
        )));
    }
    if c.borrowed {
        return Err(StoreError::Invalid(format!(
            "license consumption '{token}' is borrowed until {}; a borrow's term cannot be extended",
            c.expiration_str()
        )));
    }
    match c.status {
        ConsumptionStatus::CheckedIn => {
            return Err(StoreError::NotFound(format!(
                "license consumption '{token}' is no longer active: it was checked in"
            )))
        }
        ConsumptionStatus::Expired => {
            return Err(StoreError::NotFound(format!(
                "license consumption '{token}' is no longer active: it expired at {}",
                c.expiration_str()
            )))
        }
        ConsumptionStatus::Active if c.expires_at <= now => {
            return Err(StoreError::NotFound(format!(
                "license consumption '{token}' is no longer active: it expired at {}",
                c.expiration_str()
            )))
        }
        ConsumptionStatus::Active => {}
    }
    if let Some(r) = unavailable_reason(license, now) {
        return Err(StoreError::Invalid(format!(
            "cannot extend license consumption '{token}': {r}"
        )));
    }
    Ok(())
}
