//! TagResource, UntagResource and ListTagsForResource, on licenses (their
//! issuer's) and grants (their grantor's).

use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::license::{limits, validate_tags, TagInput};
use tessera_core::{validate, AccountId};

use super::{owned_license, parse, required};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;
use tessera_core::GrantArn;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInputs {
    resource_arn: Option<String>,
    tags: Option<Vec<TagInput>>,
    tag_keys: Option<Vec<String>>,
}

/// Checks that `caller` owns the tagged resource.
async fn owned_resource(state: &SharedState, caller: &AccountId, arn: &str) -> ApiResult<()> {
    if arn.contains(":grant:") {
        let parsed = GrantArn::parse("ResourceArn", arn)?;
        state
            .store
            .get_grant(arn, None)
            .await?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("grant {arn} does not exist")))?;
        if parsed.account() != caller {
            return Err(ApiError::AccessDenied(format!(
                "account {caller} may not tag grant {arn}: only its grantor may"
            )));
        }
        return Ok(());
    }
    owned_license(state, caller, "ResourceArn", arn).await.map(|_| ())
}

pub async fn tag_resource(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: TagInputs = parse(v)?;
    let arn = required("ResourceArn", input.resource_arn)?;
    let tags = validate_tags("Tags", &required("Tags", input.tags)?)?;
    owned_resource(state, caller, &arn).await?;
    let existing = state.store.list_tags(&arn).await?;
    let added = tags.iter().filter(|t| !existing.iter().any(|e| e.key == t.key)).count();
    if existing.len() + added > limits::TAGS {
        return Err(ApiError::Validation(format!(
            "Tags: a resource may have at most {} tags; {arn} has {} and the request adds {added}",
            limits::TAGS,
            existing.len()
        )));
    }
    state.store.tag_resource(&arn, &tags).await?;
    Ok(json!({}))
}

pub async fn untag_resource(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: TagInputs = parse(v)?;
    let arn = required("ResourceArn", input.resource_arn)?;
    let keys = required("TagKeys", input.tag_keys)?;
    for (i, k) in keys.iter().enumerate() {
        validate::text(&format!("TagKeys[{i}]"), k, limits::TAG_KEY)?;
    }
    owned_resource(state, caller, &arn).await?;
    state.store.untag_resource(&arn, &keys).await?;
    Ok(json!({}))
}

pub async fn list_tags_for_resource(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: TagInputs = parse(v)?;
    let arn = required("ResourceArn", input.resource_arn)?;
    owned_resource(state, caller, &arn).await?;
    let tags = state.store.list_tags(&arn).await?;
    Ok(json!({ "Tags": tags }))
}
