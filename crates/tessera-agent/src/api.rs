//! The JSON shapes of the agent's HTTP API, shared by the server and the client.

use serde::{Deserialize, Serialize};

pub use crate::license::LicenseState;
pub use crate::state::{CheckOutcome, CheckResult, KeySource};

/// `GET /v1/settings`: what the console's Settings page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub environment_id: String,
    pub ops_bucket: Option<String>,
    pub cloud_provider: Option<String>,
    pub region: Option<String>,
    pub aku_allocated: i64,
    pub aku_in_use: i64,
    pub install_id: String,
    pub license_state: LicenseState,
    pub expires_at: String,
    pub license_arn: Option<String>,
    pub license_version: Option<String>,
    /// Where the product key in force came from; null during the trial.
    pub license_source: Option<KeySource>,
    /// The agent's business time (it never runs backwards).
    pub now: String,
    pub last_bucket_check: Option<CheckResult>,
    pub last_server_check: Option<CheckResult>,
}

/// One instance's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub instance_id: String,
    pub aku: i64,
}

/// `GET /v1/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    pub aku_in_use: i64,
    pub aku_allocated: i64,
    pub license_state: LicenseState,
}

/// Every error body: `code` and `message`, plus details for some codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// `License.InvalidProductKey`: why the key was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `Instance.NoAvailableSubscription`: the AKU the request would add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
    /// `Instance.NoAvailableSubscription`: the AKU reserved before the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<i64>,
    /// `Instance.NoAvailableSubscription`: the environment's allocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_state: Option<LicenseState>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            reason: None,
            requested: None,
            used: None,
            allowed: None,
            license_state: None,
        }
    }
}

/// Error codes.
pub mod codes {
    pub const INVALID_PRODUCT_KEY: &str = "License.InvalidProductKey";
    pub const NO_AVAILABLE_SUBSCRIPTION: &str = "Instance.NoAvailableSubscription";
    pub const INSTANCE_NOT_FOUND: &str = "Instance.NotFound";
    pub const INSTANCE_EXISTS: &str = "Instance.AlreadyExists";
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const NOT_FOUND: &str = "NotFound";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const INTERNAL: &str = "InternalError";
}
