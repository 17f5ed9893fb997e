//! The API's error type and its AWS JSON rendering (`__type` + `Message`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_core::ValidationError;
use tessera_observe::access::Answered;
use tessera_store::StoreError;

/// Every error the AWS-compatible API can answer, named as AWS names it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoEntitlementsAllowed(String),
    #[error("{0}")]
    EntitlementNotAllowed(String),
    #[error("{0}")]
    UnsupportedDigitalSignatureMethod(String),
    #[error("{0}")]
    ResourceLimitExceeded(String),
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    MissingAuthenticationToken(String),
    #[error("{0}")]
    IncompleteSignature(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    UnrecognizedClient(String),
    #[error("{0}")]
    Internal(String),
    /// A store failure because the database is damaged; the detail is for the
    /// log and the readiness check, never for the client.
    #[error("An internal error occurred; the request was not applied. Retry it later.")]
    StoreDamaged(String),
    /// Any other store failure; the detail is for the log only.
    #[error("An internal error occurred; the request was not applied. Retry it.")]
    Unexpected(String),
}

impl ApiError {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Validation(_) => "ValidationException",
            Self::AccessDenied(_) => "AccessDeniedException",
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::InvalidParameterValue(_) => "InvalidParameterValueException",
            Self::Conflict(_) => "ConflictException",
            Self::NoEntitlementsAllowed(_) => "NoEntitlementsAllowedException",
            Self::EntitlementNotAllowed(_) => "EntitlementNotAllowedException",
            Self::UnsupportedDigitalSignatureMethod(_) => "UnsupportedDigitalSignatureMethodException",
            Self::ResourceLimitExceeded(_) => "ResourceLimitExceededException",
            Self::Serialization(_) => "SerializationException",
            Self::UnknownOperation(_) => "UnknownOperationException",
            Self::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            Self::IncompleteSignature(_) => "IncompleteSignatureException",
            Self::InvalidSignature(_) => "InvalidSignatureException",
            Self::UnrecognizedClient(_) => "UnrecognizedClientException",
            Self::Internal(_) | Self::StoreDamaged(_) | Self::Unexpected(_) => "ServerInternalException",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Internal(_) | Self::StoreDamaged(_) | Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// For an answer of 500: what really went wrong, for the log (never sent).
    pub fn cause(&self) -> Option<&str> {
        match self {
            Self::Internal(m) | Self::StoreDamaged(m) | Self::Unexpected(m) => Some(m),
            _ => None,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Validation(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::ResourceNotFound(m),
            StoreError::AccessDenied(m) => Self::AccessDenied(m),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Invalid(m) => Self::Validation(m),
            StoreError::NoEntitlements(m) => Self::NoEntitlementsAllowed(m),
            StoreError::EntitlementNotAllowed(m) => Self::EntitlementNotAllowed(m),
            StoreError::LimitExceeded(m) => Self::ResourceLimitExceeded(m),
            StoreError::UnknownKey(m) => Self::UnrecognizedClient(m),
            other if other.is_damage() => Self::StoreDamaged(other.to_string()),
            // Details stay in the log (the request's cause line); the client gets a generic message.
            other => Self::Unexpected(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let name = self.name();
        let body = serde_json::json!({"__type": name, "Message": self.to_string(), "message": self.to_string()});
        let mut resp = (self.status(), body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        h.insert("x-amzn-errortype", HeaderValue::from_static(name));
        resp.extensions_mut().insert(Answered(name));
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
