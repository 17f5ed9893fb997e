//! CreateGrant, AcceptGrant, RejectGrant, CreateGrantVersion, DeleteGrant,
//! GetGrant, ListDistributedGrants and ListReceivedGrants.

use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::grant::{
    self, chain_permits, parse_operations, parse_principal, AllowedOperation, Grant, GrantChange, GrantRefusal,
    GrantStatus,
};
use tessera_core::license::{limits, validate_tags, TagInput};
use tessera_core::validate::{self, max_results};
use tessera_core::{AccountId, Clock, GrantArn, LicenseArn};
use tessera_store::{GrantOutcome, GrantQuery, Idempotency, NewGrant};

use super::{client_token, decode_next, encode_next, filters, parse, request_hash, required, single, FilterInput};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

const GRANT_PAGE: &str = "grant";

fn answer(o: GrantOutcome) -> Value {
    json!({"GrantArn": o.grant_arn, "Status": o.status, "Version": o.version})
}

fn refusal(r: GrantRefusal) -> ApiError {
    match r {
        GrantRefusal::AccessDenied(m) => ApiError::AccessDenied(m),
        GrantRefusal::Conflict(m) => ApiError::Conflict(m),
        GrantRefusal::Invalid(m) => ApiError::Validation(m),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateGrantInput {
    client_token: Option<String>,
    grant_name: Option<String>,
    license_arn: Option<String>,
    principals: Option<Vec<String>>,
    home_region: Option<String>,
    allowed_operations: Option<Vec<String>>,
    tags: Option<Vec<TagInput>>,
}

pub async fn create_grant(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let input: CreateGrantInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let name = required("GrantName", input.grant_name)?;
    grant::validate_name("GrantName", &name)?;
    let arn_s = required("LicenseArn", input.license_arn)?;
    let license_arn = LicenseArn::parse("LicenseArn", &arn_s)?;
    let grantee = parse_principal(&required("Principals", input.principals)?)?;
    let region = required("HomeRegion", input.home_region)?;
    validate::text("HomeRegion", &region, limits::REGION)?;
    let ops = parse_operations(
        "AllowedOperations",
        &required("AllowedOperations", input.allowed_operations)?,
    )?;
    let tags = validate_tags("Tags", &input.tags.unwrap_or_default())?;
    if &grantee == caller {
        return Err(ApiError::Validation(
            "Principals[0]: an account cannot grant a license to itself".into(),
        ));
    }
    let license = state
        .store
        .get_license(&arn_s, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("license {arn_s} does not exist")))?;
    if license.status == tessera_core::license::LicenseStatus::Deleted {
        return Err(ApiError::Conflict(format!(
            "license {arn_s} is deleted; it can no longer be granted"
        )));
    }
    if region != license.home_region {
        return Err(ApiError::Validation(format!(
            "HomeRegion: grants of license {arn_s} are made in its home region, {}",
            license.home_region
        )));
    }
    // The issuer and the beneficiary (a buyer distributing what it bought) grant
    // from the license itself; a grantee re-grants from an ACTIVE grant that
    // allows CreateGrant, and cannot hand on more than it holds.
    let parent_arn = if license_arn.account() == caller || license.beneficiary_account().as_ref() == Some(caller) {
        arn_s.clone()
    } else {
        let chains = state.store.grant_chains(caller, &arn_s).await?;
        let parent = chains
            .iter()
            .find(|c| chain_permits(c, AllowedOperation::CreateGrant))
            .and_then(|c| c.first())
            .ok_or_else(|| {
                ApiError::AccessDenied(format!(
                    "account {caller} may not grant license {arn_s}: it is not the issuer and holds no ACTIVE grant allowing CreateGrant"
                ))
            })?;
        if let Some(extra) = ops.iter().find(|o| !parent.allows(**o)) {
            return Err(ApiError::AccessDenied(format!(
                "AllowedOperations: {extra} is not allowed by grant {}, from which this grant is made",
                parent.grant_arn
            )));
        }
        parent.grant_arn.clone()
    };
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let grant = Grant {
        grant_arn: GrantArn::new(caller, id).to_string(),
        grant_name: name,
        parent_arn,
        license_arn: arn_s,
        grantee_principal_arn: grantee.root_arn(),
        home_region: region,
        grant_status: GrantStatus::PendingAccept,
        status_reason: None,
        version: "1".into(),
        granted_operations: ops,
    };
    let out = state
        .store
        .create_grant(
            NewGrant {
                grant,
                grantor: caller.clone(),
                grantee,
                tags,
                idempotency: Idempotency {
                    account: caller.clone(),
                    operation: "CreateGrant",
                    client_token: token,
                    request_hash: hash,
                },
            },
            state.clock.now(),
        )
        .await?;
    Ok(answer(out))
}

/// Loads a grant that `caller` is a party to (grantor or grantee).
async fn party_grant(state: &SharedState, caller: &AccountId, arn: &str, version: Option<i64>) -> ApiResult<Grant> {
    GrantArn::parse("GrantArn", arn)?;
    let current = state
        .store
        .get_grant(arn, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("grant {arn} does not exist")))?;
    if current.grantor().as_ref() != Some(caller) && current.grantee().as_ref() != Some(caller) {
        return Err(ApiError::AccessDenied(format!(
            "account {caller} is neither the grantor nor the grantee of grant {arn}"
        )));
    }
    match version {
        None => Ok(current),
        Some(v) => state
            .store
            .get_grant(arn, Some(v))
            .await?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("grant {arn} has no version {v}"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GrantArnInput {
    grant_arn: Option<String>,
}

async fn change(
    state: &SharedState,
    caller: &AccountId,
    arn: &str,
    change: GrantChange,
    expected: Option<String>,
    idempotency: Option<Idempotency>,
) -> ApiResult<Value> {
    let current = party_grant(state, caller, arn, None).await?;
    let next = grant::apply(&current, caller, change).map_err(refusal)?;
    let expected = expected.unwrap_or_else(|| current.version.clone());
    let out = state
        .store
        .update_grant(next, &expected, idempotency, state.clock.now())
        .await?;
    Ok(answer(out))
}

pub async fn accept_grant(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: GrantArnInput = parse(v)?;
    let arn = required("GrantArn", input.grant_arn)?;
    change(state, caller, &arn, GrantChange::Accept, None, None).await
}

pub async fn reject_grant(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: GrantArnInput = parse(v)?;
    let arn = required("GrantArn", input.grant_arn)?;
    change(state, caller, &arn, GrantChange::Reject, None, None).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateGrantVersionInput {
    client_token: Option<String>,
    grant_arn: Option<String>,
    grant_name: Option<String>,
    allowed_operations: Option<Vec<String>>,
    status: Option<String>,
    status_reason: Option<String>,
    source_version: Option<String>,
}

pub async fn create_grant_version(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let input: CreateGrantVersionInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let arn = required("GrantArn", input.grant_arn)?;
    if let Some(n) = &input.grant_name {
        grant::validate_name("GrantName", n)?;
    }
    let operations = input
        .allowed_operations
        .as_deref()
        .map(|o| parse_operations("AllowedOperations", o))
        .transpose()?;
    let status = input
        .status
        .as_deref()
        .map(|s| GrantStatus::parse("Status", s))
        .transpose()?;
    grant::validate_reason("StatusReason", input.status_reason.as_deref())?;
    let revise = GrantChange::Revise {
        name: input.grant_name,
        operations,
        status,
        reason: input.status_reason,
    };
    let key = Idempotency {
        account: caller.clone(),
        operation: "CreateGrantVersion",
        client_token: token,
        request_hash: hash,
    };
    change(state, caller, &arn, revise, input.source_version, Some(key)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteGrantInput {
    grant_arn: Option<String>,
    status_reason: Option<String>,
    version: Option<String>,
}

pub async fn delete_grant(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: DeleteGrantInput = parse(v)?;
    let arn = required("GrantArn", input.grant_arn)?;
    let version = required("Version", input.version)?;
    grant::validate_reason("StatusReason", input.status_reason.as_deref())?;
    change(
        state,
        caller,
        &arn,
        GrantChange::Delete {
            reason: input.status_reason,
        },
        Some(version),
        None,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetGrantInput {
    grant_arn: Option<String>,
    version: Option<String>,
}

pub async fn get_grant(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: GetGrantInput = parse(v)?;
    let arn = required("GrantArn", input.grant_arn)?;
    let version = input
        .version
        .as_deref()
        .map(|s| match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ApiError::Validation(format!(
                "Version: '{s}' is not a grant version such as \"1\""
            ))),
        })
        .transpose()?;
    let g = party_grant(state, caller, &arn, version).await?;
    Ok(json!({ "Grant": g }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListGrantsInput {
    grant_arns: Option<Vec<String>>,
    filters: Option<Vec<FilterInput>>,
    next_token: Option<String>,
    max_results: Option<tessera_core::validate::Long>,
}

fn grant_query(input: &ListGrantsInput, allowed: &[&str]) -> ApiResult<GrantQuery> {
    let mut q = GrantQuery {
        limit: max_results(input.max_results)?,
        after: decode_next(GRANT_PAGE, input.next_token.as_deref())?,
        ..Default::default()
    };
    for (i, arn) in input.grant_arns.iter().flatten().enumerate() {
        GrantArn::parse(&format!("GrantArns[{i}]"), arn)?;
        q.arns.push(arn.clone());
    }
    for (name, values) in filters(input.filters.as_deref().unwrap_or(&[]), allowed)? {
        let value = single(name, values)?;
        let account = |field: &str| {
            AccountId::from_principal(value)
                .ok_or_else(|| ApiError::Validation(format!("Filters.{field}: '{value}' is not an account")))
        };
        match name {
            "LicenseArn" => q.license_arn = Some(value.clone()),
            "GrantStatus" => q.status = Some(GrantStatus::parse("Filters.GrantStatus", value)?),
            "GranteePrincipalARN" => q.grantee_account = Some(account("GranteePrincipalARN")?),
            "ProductSKU" => q.product_sku = Some(value.clone()),
            "LicenseIssuerName" => q.issuer_name = Some(value.clone()),
            "GranterAccountId" => q.granter_account = Some(account("GranterAccountId")?),
            _ => unreachable!("names are checked against `allowed`"),
        }
    }
    Ok(q)
}

pub async fn list_distributed_grants(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListGrantsInput = parse(v)?;
    let mut q = grant_query(
        &input,
        &[
            "LicenseArn",
            "GrantStatus",
            "GranteePrincipalARN",
            "ProductSKU",
            "LicenseIssuerName",
        ],
    )?;
    q.grantor = Some(caller.clone());
    let page = state.store.list_grants(&q).await?;
    Ok(json!({"Grants": page.items, "NextToken": encode_next(GRANT_PAGE, page.next)}))
}

pub async fn list_received_grants(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListGrantsInput = parse(v)?;
    let mut q = grant_query(
        &input,
        &[
            "ProductSKU",
            "LicenseIssuerName",
            "LicenseArn",
            "GrantStatus",
            "GranterAccountId",
        ],
    )?;
    q.grantee = Some(caller.clone());
    let page = state.store.list_grants(&q).await?;
    Ok(json!({"Grants": page.items, "NextToken": encode_next(GRANT_PAGE, page.next)}))
}
