//! Tessera's own operations (`X-Amz-Target: Tessera.<Operation>`), on the same
//! wire rules as the AWS API: SigV4, awsJson1_1, AWS error shapes.
//!
//! They serve the vendor's automation (environments, product keys) and the
//! environment agents (GetEnvironmentLicense, ReportEnvironmentUsage, StartTrial). The CLI
//! calls the same functions directly on a store.

pub mod environments;

use serde_json::Value;

use crate::aws::Caller;
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

pub const TARGET_PREFIX: &str = "Tessera.";

/// Every native operation's name.
pub const OPERATIONS: &[&str] = &[
    "RegisterEnvironment",
    "ListEnvironments",
    "GetEnvironment",
    "AllocateEnvironment",
    "IssueProductKey",
    "PublishProductKey",
    "GetEnvironmentLicense",
    "ReportEnvironmentUsage",
    "StartTrial",
];

pub async fn dispatch(state: &SharedState, caller: &Caller, op: &str, input: Value) -> ApiResult<Value> {
    let account = &caller.account;
    match op {
        "RegisterEnvironment" => environments::register(state, account, input).await,
        "ListEnvironments" => environments::list(state, account, input).await,
        "GetEnvironment" => environments::get(state, account, input).await,
        "AllocateEnvironment" => environments::allocate(state, account, input).await,
        "IssueProductKey" => environments::issue_product_key(state, account, input).await,
        "PublishProductKey" => environments::publish_product_key(state, account, input).await,
        "GetEnvironmentLicense" => environments::get_environment_license(state, account, input).await,
        "ReportEnvironmentUsage" => environments::report_usage(state, account, input).await,
        "StartTrial" => environments::start_trial(state, account, input).await,
        other => Err(ApiError::UnknownOperation(format!(
            "operation {other} is not a Tessera operation"
        ))),
    }
}
