//! The License Manager operations this server answers, parsed once from
//! `X-Amz-Target`: the one list of them, of who may call them with an access
//! token, and of the exceptions the service model lists for each.
//!
//! The AWS SDKs build one error type per operation from the model, so an
//! exception that the model does not list for an operation reaches a program
//! as an untyped error. Every answer is therefore fitted to its operation's
//! list here ([`ApiError::fit`]), keeping its message. The errors AWS's own
//! front end sends before any operation runs (a signature, a key or a body
//! that cannot be read; an unknown operation) stay as they are, as AWS sends them.

use crate::error::ApiError;

/// An exception of the License Manager model, as far as the server answers with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    AccessDenied,
    Conflict,
    EntitlementNotAllowed,
    InvalidParameterValue,
    NoEntitlementsAllowed,
    ResourceLimitExceeded,
    ResourceNotFound,
    UnsupportedDigitalSignatureMethod,
    Validation,
}

use Exception as E;

impl Exception {
    /// The exception's name on the wire (`__type`).
    pub fn name(self) -> &'static str {
        match self {
            E::AccessDenied => "AccessDeniedException",
            E::Conflict => "ConflictException",
            E::EntitlementNotAllowed => "EntitlementNotAllowedException",
            E::InvalidParameterValue => "InvalidParameterValueException",
            E::NoEntitlementsAllowed => "NoEntitlementsAllowedException",
            E::ResourceLimitExceeded => "ResourceLimitExceededException",
            E::ResourceNotFound => "ResourceNotFoundException",
            E::UnsupportedDigitalSignatureMethod => "UnsupportedDigitalSignatureMethodException",
            E::Validation => "ValidationException",
        }
    }
}

/// What AWS's front end answers for any operation before it runs (and
/// ServerInternalException, which every operation lists).
pub const FRONT_END: &[&str] = &[
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
    "SerializationException",
    "UnknownOperationException",
    "ServerInternalException",
];

macro_rules! operations {
    ($($op:ident { bearer: $bearer:literal, errors: [$($e:ident),*] },)*) => {
        /// An operation of the AWS License Manager API that this server offers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Operation {
            $($op,)*
        }

        impl Operation {
            /// Every operation offered.
            pub const ALL: &'static [Operation] = &[$(Operation::$op,)*];

            /// The operation an `X-Amz-Target` names after `AWSLicenseManager.`.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $(stringify!($op) => Some(Operation::$op),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(Operation::$op => stringify!($op),)*
                }
            }

            /// Whether a workload may call it with an access token (`Authorization: Bearer`).
            pub fn bearer(self) -> bool {
                match self {
                    $(Operation::$op => $bearer,)*
                }
            }

            /// The exceptions the service model lists for it, besides
            /// AuthorizationException, RateLimitExceededException,
            /// RedirectException and ServerInternalException.
            pub fn errors(self) -> &'static [Exception] {
                match self {
                    $(Operation::$op => &[$(E::$e),*],)*
                }
            }
        }
    };
}

operations! {
    CreateLicense { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    CreateLicenseVersion { bearer: false, errors: [AccessDenied, Conflict, ResourceNotFound, Validation] },
    GetLicense { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    ListLicenses { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    ListReceivedLicenses { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    ListLicenseVersions { bearer: false, errors: [AccessDenied, InvalidParameterValue] },
    DeleteLicense { bearer: false, errors: [AccessDenied, Conflict, InvalidParameterValue, Validation] },
    CheckoutLicense { bearer: true, errors: [AccessDenied, InvalidParameterValue, NoEntitlementsAllowed, ResourceNotFound, UnsupportedDigitalSignatureMethod, Validation] },
    CheckInLicense { bearer: true, errors: [AccessDenied, Conflict, InvalidParameterValue, ResourceNotFound, Validation] },
    ExtendLicenseConsumption { bearer: true, errors: [AccessDenied, InvalidParameterValue, ResourceNotFound, Validation] },
    GetLicenseUsage { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    CheckoutBorrowLicense { bearer: true, errors: [AccessDenied, EntitlementNotAllowed, InvalidParameterValue, NoEntitlementsAllowed, ResourceNotFound, UnsupportedDigitalSignatureMethod, Validation] },
    CreateGrant { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    AcceptGrant { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    RejectGrant { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    CreateGrantVersion { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    DeleteGrant { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    GetGrant { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    ListDistributedGrants { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    ListReceivedGrants { bearer: false, errors: [AccessDenied, InvalidParameterValue, ResourceLimitExceeded, Validation] },
    CreateToken { bearer: false, errors: [AccessDenied, ResourceLimitExceeded, ResourceNotFound, Validation] },
    GetAccessToken { bearer: false, errors: [AccessDenied, Validation] },
    ListTokens { bearer: false, errors: [AccessDenied, Validation] },
    DeleteToken { bearer: false, errors: [AccessDenied, ResourceNotFound, Validation] },
    TagResource { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    UntagResource { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
    ListTagsForResource { bearer: false, errors: [AccessDenied, InvalidParameterValue, Validation] },
}

/// Operations of the AWS API that this server does not offer.
pub const NOT_OFFERED: &[&str] = &[
    "ListReceivedGrantsForOrganization",
    "ListReceivedLicensesForOrganization",
];

impl Operation {
    /// The operations an access token may call, for messages.
    pub fn bearer_names() -> String {
        let names: Vec<&str> = Self::ALL.iter().filter(|o| o.bearer()).map(|o| o.name()).collect();
        names.join(", ")
    }
}

/// What to answer instead of an exception the operation does not list, in
/// order of preference: the nearest in meaning among those it does. Every
/// operation lists AccessDeniedException, so the last choice always fits.
fn nearest(e: Exception) -> &'static [Exception] {
    match e {
        // A name that names nothing is a bad parameter value.
        E::ResourceNotFound => &[E::InvalidParameterValue, E::Validation, E::AccessDenied],
        // A request that cannot apply in the resource's current state.
        E::Conflict => &[E::Validation, E::InvalidParameterValue, E::AccessDenied],
        E::EntitlementNotAllowed => &[
            E::NoEntitlementsAllowed,
            E::Validation,
            E::InvalidParameterValue,
            E::AccessDenied,
        ],
        E::Validation => &[E::InvalidParameterValue, E::AccessDenied],
        E::InvalidParameterValue => &[E::Validation, E::AccessDenied],
        E::ResourceLimitExceeded | E::NoEntitlementsAllowed | E::UnsupportedDigitalSignatureMethod => {
            &[E::Validation, E::InvalidParameterValue, E::AccessDenied]
        }
        E::AccessDenied => &[],
    }
}

impl ApiError {
    /// The model's exception this error is, if it is one an operation may list.
    fn exception(&self) -> Option<Exception> {
        Some(match self {
            ApiError::AccessDenied(_) => E::AccessDenied,
            ApiError::Conflict(_) => E::Conflict,
            ApiError::EntitlementNotAllowed(_) => E::EntitlementNotAllowed,
            ApiError::InvalidParameterValue(_) => E::InvalidParameterValue,
            ApiError::NoEntitlementsAllowed(_) => E::NoEntitlementsAllowed,
            ApiError::ResourceLimitExceeded(_) => E::ResourceLimitExceeded,
            ApiError::ResourceNotFound(_) => E::ResourceNotFound,
            ApiError::UnsupportedDigitalSignatureMethod(_) => E::UnsupportedDigitalSignatureMethod,
            ApiError::Validation(_) => E::Validation,
            _ => return None,
        })
    }

    /// This error as one of the exceptions `op` lists, keeping its message.
    pub fn fit(self, op: Operation) -> ApiError {
        let Some(kind) = self.exception() else {
            return self;
        };
        let listed = op.errors();
        if listed.contains(&kind) {
            return self;
        }
        let Some(to) = nearest(kind).iter().find(|e| listed.contains(e)) else {
            return self;
        };
        let message = self.to_string();
        match to {
            E::AccessDenied => ApiError::AccessDenied(message),
            E::Conflict => ApiError::Conflict(message),
            E::EntitlementNotAllowed => ApiError::EntitlementNotAllowed(message),
            E::InvalidParameterValue => ApiError::InvalidParameterValue(message),
            E::NoEntitlementsAllowed => ApiError::NoEntitlementsAllowed(message),
            E::ResourceLimitExceeded => ApiError::ResourceLimitExceeded(message),
            E::ResourceNotFound => ApiError::ResourceNotFound(message),
            E::UnsupportedDigitalSignatureMethod => ApiError::UnsupportedDigitalSignatureMethod(message),
            E::Validation => ApiError::Validation(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.name()), Some(*op));
        }
        assert_eq!(Operation::parse("ListReceivedLicensesForOrganization"), None);
    }

    #[test]
    fn every_exception_fits_every_operation() {
        let all = || {
            [
                ApiError::AccessDenied("m".into()),
                ApiError::Conflict("m".into()),
                ApiError::EntitlementNotAllowed("m".into()),
                ApiError::InvalidParameterValue("m".into()),
                ApiError::NoEntitlementsAllowed("m".into()),
                ApiError::ResourceLimitExceeded("m".into()),
                ApiError::ResourceNotFound("m".into()),
                ApiError::UnsupportedDigitalSignatureMethod("m".into()),
                ApiError::Validation("m".into()),
            ]
        };
        for op in Operation::ALL {
            for e in all() {
                let name = e.name();
                let fitted = e.fit(*op);
                let kind = fitted.exception().expect("a model exception");
                assert!(op.errors().contains(&kind), "{name} on {op:?} became {fitted:?}");
                assert_eq!(fitted.to_string(), "m");
            }
        }
    }

    #[test]
    fn listed_exceptions_are_kept_and_others_mapped_to_the_nearest() {
        let e = ApiError::ResourceNotFound("license l does not exist".into());
        assert!(matches!(
            e.fit(Operation::GetLicense),
            ApiError::InvalidParameterValue(_)
        ));
        let e = ApiError::ResourceNotFound("x".into());
        assert!(matches!(
            e.fit(Operation::CheckInLicense),
            ApiError::ResourceNotFound(_)
        ));
        let e = ApiError::Conflict("x".into());
        assert!(matches!(e.fit(Operation::CreateGrantVersion), ApiError::Validation(_)));
        let e = ApiError::Validation("x".into());
        assert!(matches!(
            e.fit(Operation::ListLicenseVersions),
            ApiError::InvalidParameterValue(_)
        ));
        let e = ApiError::UnrecognizedClient("x".into());
        assert!(matches!(e.fit(Operation::GetLicense), ApiError::UnrecognizedClient(_)));
    }
}
