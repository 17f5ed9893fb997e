//! Grants: handing a license to another account, and the lifecycle a grant goes through.
//!
//! PENDING_ACCEPT → (AcceptGrant) DISABLED ⇄ (CreateGrantVersion) ACTIVE;
//! the grantee may reject it (REJECTED, for good); the grantor may delete it
//! (DELETED). Every change is a new version.

use serde::{Deserialize, Serialize};

use crate::license::limits;
use crate::validate::{self, ValidationError};
use crate::{AccountId, GrantArn};

string_enum!(
    /// AllowedOperation. Note the AWS spelling `ExtendConsumptionLicense`.
    AllowedOperation, "allowed operation" {
        CreateGrant = "CreateGrant",
        CheckoutLicense = "CheckoutLicense",
        CheckoutBorrowLicense = "CheckoutBorrowLicense",
        CheckInLicense = "CheckInLicense",
        ExtendConsumptionLicense = "ExtendConsumptionLicense",
        ListPurchasedLicenses = "ListPurchasedLicenses",
        CreateToken = "CreateToken",
    }
);

string_enum!(
    /// GrantStatus (also ReceivedStatus).
    GrantStatus, "grant status" {
        PendingWorkflow = "PENDING_WORKFLOW",
        PendingAccept = "PENDING_ACCEPT",
        Rejected = "REJECTED",
        Active = "ACTIVE",
        FailedWorkflow = "FAILED_WORKFLOW",
        Deleted = "DELETED",
        PendingDelete = "PENDING_DELETE",
        Disabled = "DISABLED",
        WorkflowCompleted = "WORKFLOW_COMPLETED",
    }
);

/// At most this many grants per license (the AWS quota).
pub const MAX_GRANTS_PER_LICENSE: i64 = 2000;

/// A grant version, exactly as GetGrant returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Grant {
    pub grant_arn: String,
    pub grant_name: String,
    pub parent_arn: String,
    pub license_arn: String,
    pub grantee_principal_arn: String,
    pub home_region: String,
    pub grant_status: GrantStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub version: String,
    pub granted_operations: Vec<AllowedOperation>,
}

impl Grant {
    pub fn grantor(&self) -> Option<AccountId> {
        GrantArn::parse("GrantArn", &self.grant_arn)
            .ok()
            .map(|a| a.account().clone())
    }

    pub fn grantee(&self) -> Option<AccountId> {
        AccountId::from_principal(&self.grantee_principal_arn)
    }

    pub fn allows(&self, op: AllowedOperation) -> bool {
        self.granted_operations.contains(&op)
    }

    fn next(&self) -> Grant {
        let mut g = self.clone();
        g.version = (self.version.parse::<i64>().unwrap_or(0) + 1).to_string();
        g
    }
}

/// Whether a grant, together with the chain of grants it was re-granted from
/// (`chain[0]` is the caller's grant, then its parent, ...), permits `op` now:
/// every grant in the chain must be ACTIVE and allow it, so narrowing a grant
/// narrows every grant made from it.
pub fn chain_permits(chain: &[Grant], op: AllowedOperation) -> bool {
    !chain.is_empty()
        && chain
            .iter()
            .all(|g| g.grant_status == GrantStatus::Active && g.allows(op))
}

/// Whether every grant of a chain is ACTIVE: the grantee may read the license.
pub fn chain_active(chain: &[Grant]) -> bool {
    !chain.is_empty() && chain.iter().all(|g| g.grant_status == GrantStatus::Active)
}

/// Validates AllowedOperations: 1 to 8 distinct operations.
pub fn parse_operations(field: &str, ops: &[String]) -> Result<Vec<AllowedOperation>, ValidationError> {
    if ops.is_empty() || ops.len() > 8 {
        return Err(ValidationError::new(field, "must list 1 to 8 operations"));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, o) in ops.iter().enumerate() {
        let op = AllowedOperation::parse(&format!("{field}[{i}]"), o)?;
        if !out.contains(&op) {
            out.push(op);
        }
    }
    Ok(out)
}

/// Validates Principals: exactly one account, as `arn:aws:iam::<id>:root` (or a bare ID).
pub fn parse_principal(principals: &[String]) -> Result<AccountId, ValidationError> {
    match principals {
        [one] => AccountId::from_principal(one).ok_or_else(|| {
            ValidationError::new(
                "Principals[0]",
                format!("'{one}' is not an account principal such as arn:aws:iam::123456789012:root"),
            )
        }),
        _ => Err(ValidationError::new("Principals", "must list exactly one principal")),
    }
}

pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    validate::text(field, name, limits::NAME)
}

pub fn validate_reason(field: &str, reason: Option<&str>) -> Result<(), ValidationError> {
    match reason {
        Some(r) if r.is_empty() || r.chars().count() > 400 => {
            Err(ValidationError::new(field, "must be 1 to 400 characters"))
        }
        _ => Ok(()),
    }
}

/// A change to a grant requested by `caller`.
#[derive(Debug, Clone)]
pub enum GrantChange {
    Accept,
    Reject,
    /// CreateGrantVersion: any of a new name, new operations, a new status.
    Revise {
        name: Option<String>,
        operations: Option<Vec<AllowedOperation>>,
        status: Option<GrantStatus>,
        reason: Option<String>,
    },
    Delete {
        reason: Option<String>,
    },
}

/// Why a grant change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRefusal {
    AccessDenied(String),
    Conflict(String),
    Invalid(String),
}

/// Applies `change` by `caller`, returning the next version of the grant.
pub fn apply(grant: &Grant, caller: &AccountId, change: GrantChange) -> Result<Grant, GrantRefusal> {
    let is_grantor = grant.grantor().as_ref() == Some(caller);
    let is_grantee = grant.grantee().as_ref() == Some(caller);
    let arn = &grant.grant_arn;
    let status = grant.grant_status;
    let grantee_only = |what: &str| {
        GrantRefusal::AccessDenied(format!(
            "only the grantee ({}) may {what} grant {arn}",
            grant.grantee_principal_arn
        ))
    };
    let mut next = grant.next();
    match change {
        GrantChange::Accept => {
            if !is_grantee {
                return Err(grantee_only("accept"));
            }
            if status != GrantStatus::PendingAccept {
                return Err(GrantRefusal::Conflict(format!(
                    "grant {arn} is {status}; only a PENDING_ACCEPT grant can be accepted"
                )));
            }
            next.grant_status = GrantStatus::Disabled;
            next.status_reason = None;
        }
        GrantChange::Reject => {
            if !is_grantee {
                return Err(grantee_only("reject"));
            }
            if !matches!(
                status,
                GrantStatus::PendingAccept | GrantStatus::Disabled | GrantStatus::Active
            ) {
                return Err(GrantRefusal::Conflict(format!(
                    "grant {arn} is {status} and cannot be rejected"
                )));
            }
            next.grant_status = GrantStatus::Rejected;
        }
        GrantChange::Revise {
            name,
            operations,
            status: new_status,
            reason,
        } => {
            if name.is_none() && operations.is_none() && new_status.is_none() {
                return Err(GrantRefusal::Invalid(
                    "CreateGrantVersion needs at least one of GrantName, AllowedOperations or Status".into(),
                ));
            }
            if (name.is_some() || operations.is_some()) && !is_grantor {
                return Err(GrantRefusal::AccessDenied(format!(
                    "only the grantor may change the name or operations of grant {arn}"
                )));
            }
            if matches!(status, GrantStatus::Deleted | GrantStatus::Rejected) {
                return Err(GrantRefusal::Conflict(format!(
                    "grant {arn} is {status}; it can no longer change"
                )));
            }
            if let Some(s) = new_status {
                if !matches!(s, GrantStatus::Active | GrantStatus::Disabled) {
                    return Err(GrantRefusal::Invalid(format!(
                        "Status: CreateGrantVersion sets ACTIVE or DISABLED, not {s}; use AcceptGrant, RejectGrant or DeleteGrant"
                    )));
                }
                if !is_grantee {
                    return Err(grantee_only("activate or deactivate"));
                }
                if status == GrantStatus::PendingAccept {
                    return Err(GrantRefusal::Conflict(format!(
                        "grant {arn} is PENDING_ACCEPT; accept it with AcceptGrant before activating it"
                    )));
                }
                next.grant_status = s;
                next.status_reason = reason;
            }
            if let Some(n) = name {
                next.grant_name = n;
            }
            if let Some(ops) = operations {
                next.granted_operations = ops;
            }
        }
        GrantChange::Delete { reason } => {
            if !is_grantor {
                return Err(GrantRefusal::AccessDenied(format!(
                    "only the grantor may delete grant {arn}"
                )));
            }
            if status == GrantStatus::Deleted {
                return Err(GrantRefusal::Conflict(format!("grant {arn} is already deleted")));
            }
            next.grant_status = GrantStatus::Deleted;
            next.status_reason = reason;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        let grantor = AccountId::parse("111111111111").unwrap();
        Grant {
            grant_arn: GrantArn::new(&grantor, [7; 16]).to_string(),
            grant_name: "g".into(),
            parent_arn: "arn:aws:license-manager::111111111111:license:l-00000000000000000000000000000000".into(),
            license_arn: "arn:aws:license-manager::111111111111:license:l-00000000000000000000000000000000".into(),
            grantee_principal_arn: "arn:aws:iam::222222222222:root".into(),
            home_region: "us-east-1".into(),
            grant_status: GrantStatus::PendingAccept,
            status_reason: None,
            version: "1".into(),
            granted_operations: vec![AllowedOperation::CheckoutLicense],
        }
    }

    fn activate() -> GrantChange {
        GrantChange::Revise {
            name: None,
            operations: None,
            status: Some(GrantStatus::Active),
            reason: None,
        }
    }

    #[test]
    fn the_lifecycle_follows_aws() {
        let grantor = AccountId::parse("111111111111").unwrap();
        let grantee = AccountId::parse("222222222222").unwrap();
        let g = grant();
        assert!(matches!(
            apply(&g, &grantee, activate()),
            Err(GrantRefusal::Conflict(_))
        ));
        let g = apply(&g, &grantee, GrantChange::Accept).unwrap();
        assert_eq!((g.grant_status, g.version.as_str()), (GrantStatus::Disabled, "2"));
        let g = apply(&g, &grantee, activate()).unwrap();
        assert_eq!(g.grant_status, GrantStatus::Active);
        assert!(chain_permits(
            std::slice::from_ref(&g),
            AllowedOperation::CheckoutLicense
        ));
        assert!(!chain_permits(
            std::slice::from_ref(&g),
            AllowedOperation::CheckInLicense
        ));
        let deleted = apply(&g, &grantor, GrantChange::Delete { reason: None }).unwrap();
        assert_eq!(
            (deleted.grant_status, deleted.version.as_str()),
            (GrantStatus::Deleted, "4")
        );
        let rejected = apply(&g, &grantee, GrantChange::Reject).unwrap();
        assert!(matches!(
            apply(&rejected, &grantee, activate()),
            Err(GrantRefusal::Conflict(_))
        ));
    }

    #[test]
    fn only_the_right_party_may_act() {
        let grantor = AccountId::parse("111111111111").unwrap();
        let stranger = AccountId::parse("333333333333").unwrap();
        let g = grant();
        assert!(matches!(
            apply(&g, &grantor, GrantChange::Accept),
            Err(GrantRefusal::AccessDenied(_))
        ));
        assert!(matches!(
            apply(&g, &stranger, GrantChange::Reject),
            Err(GrantRefusal::AccessDenied(_))
        ));
        assert!(matches!(
            apply(
                &g,
                &AccountId::parse("222222222222").unwrap(),
                GrantChange::Delete { reason: None }
            ),
            Err(GrantRefusal::AccessDenied(_))
        ));
    }

    #[test]
    fn a_disabled_parent_disables_the_chain() {
        let mut child = grant();
        child.grant_status = GrantStatus::Active;
        let mut parent = grant();
        parent.grant_status = GrantStatus::Disabled;
        assert!(!chain_permits(
            &[child.clone(), parent.clone()],
            AllowedOperation::CheckoutLicense
        ));
        parent.grant_status = GrantStatus::Active;
        assert!(chain_permits(
            &[child.clone(), parent.clone()],
            AllowedOperation::CheckoutLicense
        ));
        parent.granted_operations = vec![AllowedOperation::CreateGrant];
        assert!(
            !chain_permits(&[child, parent], AllowedOperation::CheckoutLicense),
            "a narrowed parent narrows the child"
        );
    }
}
