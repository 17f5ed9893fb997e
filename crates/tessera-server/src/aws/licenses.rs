//! CreateLicense, CreateLicenseVersion, GetLicense, ListLicenses,
//! ListReceivedLicenses, ListLicenseVersions and DeleteLicense.

use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::grant::chain_active;
use tessera_core::license::{validate_tags, LicenseInput, LicenseStatus, TagInput};
use tessera_core::validate::{self, max_results};
use tessera_core::{timefmt, AccountId, Clock, LicenseArn};
use tessera_store::{LicenseQuery, NewLicense, NewVersion};

use super::{
    client_token, decode_next, encode_next, filters, owned_license, parse, readable_license, request_hash, required,
    single, FilterInput,
};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

const LICENSE_PAGE: &str = "lic";
const VERSION_PAGE: &str = "ver";

/// Every operation a beneficiary may perform on a license it received directly.
pub const ALL_OPERATIONS: [&str; 7] = [
    "CreateGrant",
    "CheckoutLicense",
    "CheckoutBorrowLicense",
    "CheckInLicense",
    "ExtendConsumptionLicense",
    "ListPurchasedLicenses",
    "CreateToken",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateLicenseInput {
    #[serde(flatten)]
    license: LicenseInput,
    client_token: Option<String>,
    tags: Option<Vec<TagInput>>,
}

pub async fn create_license(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let input: CreateLicenseInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let body = input.license.validate()?;
    let tags = validate_tags("Tags", &input.tags.unwrap_or_default())?;
    let now = state.clock.now();
    // The issuer's signing keys exist before any token names them.
    state.keys.signing_key(caller, now).await?;
    if body.consumption_configuration.borrow_configuration.is_some() {
        state.keys.borrow_key(caller, now).await?;
    }
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let out = state
        .store
        .create_license(
            NewLicense {
                arn: LicenseArn::new(caller, id),
                body,
                tags,
                client_token: token,
                request_hash: hash,
            },
            now,
        )
        .await?;
    Ok(json!({"LicenseArn": out.license_arn, "Status": out.status, "Version": out.version}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateLicenseVersionInput {
    #[serde(flatten)]
    license: LicenseInput,
    license_arn: Option<String>,
    status: Option<String>,
    client_token: Option<String>,
    source_version: Option<String>,
    reset_usage: Option<bool>,
}

pub async fn create_license_version(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let mut input: CreateLicenseVersionInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let arn_s = required("LicenseArn", input.license_arn)?;
    let status_s = required("Status", input.status)?;
    let status = LicenseStatus::parse("Status", &status_s)?;
    if matches!(status, LicenseStatus::Deleted | LicenseStatus::PendingDelete) {
        return Err(ApiError::Validation(format!(
            "Status: {status} cannot be set by CreateLicenseVersion; use DeleteLicense"
        )));
    }
    let (arn, current) = owned_license(state, caller, "LicenseArn", &arn_s).await?;
    // The request carries no ProductSKU or Beneficiary: they stay as they are.
    input.license.product_sku = Some(current.product_sku.clone());
    input.license.beneficiary = Some(current.beneficiary.clone());
    let body = input.license.validate()?;
    if body.consumption_configuration.borrow_configuration.is_some() {
        state.keys.borrow_key(caller, state.clock.now()).await?;
    }
    if body.home_region != current.home_region {
        return Err(ApiError::Validation(format!(
            "HomeRegion: the home region of license {arn} is {} and cannot change",
            current.home_region
        )));
    }
    let out = state
        .store
        .create_license_version(
            NewVersion {
                arn,
                caller: caller.clone(),
                body,
                status,
                source_version: input.source_version,
                reset_usage: input.reset_usage.unwrap_or(false),
                client_token: token,
                request_hash: hash,
            },
            state.clock.now(),
        )
        .await?;
    Ok(json!({"LicenseArn": out.license_arn, "Version": out.version, "Status": out.status}))
}

fn version_number(field: &str, v: &str) -> ApiResult<i64> {
    match v.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::Validation(format!(
            "{field}: '{v}' is not a license version such as \"1\""
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetLicenseInput {
    license_arn: Option<String>,
    version: Option<String>,
}

pub async fn get_license(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: GetLicenseInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    let (_, current) = readable_license(state, caller, "LicenseArn", &arn).await?;
    let license = match input.version {
        None => current,
        Some(ver) => {
            let n = version_number("Version", &ver)?;
            state
                .store
                .get_license(&arn, Some(n))
                .await?
                .ok_or_else(|| ApiError::ResourceNotFound(format!("license {arn} has no version {ver}")))?
        }
    };
    Ok(json!({ "License": license }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    license_arns: Option<Vec<String>>,
    filters: Option<Vec<FilterInput>>,
    next_token: Option<String>,
    max_results: Option<tessera_core::validate::Long>,
}

/// Applies the documented filters; `allowed` lists the names this operation takes.
fn apply_filters(q: &mut LicenseQuery, input: &[FilterInput], allowed: &[&str]) -> ApiResult<()> {
    for (name, values) in filters(input, allowed)? {
        let value = single(name, values)?.clone();
        match name {
            "ProductSKU" => q.product_sku = Some(value),
            "Fingerprint" => q.fingerprint = Some(value),
            "Status" => q.status = Some(LicenseStatus::parse("Filters.Status", &value)?),
            "IssuerName" => q.issuer_name = Some(value),
            "Beneficiary" => q.beneficiary = Some(value),
            _ => unreachable!("names are checked against `allowed`"),
        }
    }
    Ok(())
}

fn list_query(input: &ListInput, allowed: &[&str]) -> ApiResult<LicenseQuery> {
    let mut q = LicenseQuery {
        limit: max_results(input.max_results)?,
        after: decode_next(LICENSE_PAGE, input.next_token.as_deref())?,
        ..Default::default()
    };
    for (i, arn) in input.license_arns.iter().flatten().enumerate() {
        LicenseArn::parse(&format!("LicenseArns[{i}]"), arn)?;
        q.arns.push(arn.clone());
    }
    apply_filters(&mut q, input.filters.as_deref().unwrap_or(&[]), allowed)?;
    Ok(q)
}

pub async fn list_licenses(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListInput = parse(v)?;
    let mut q = list_query(&input, &["Beneficiary", "ProductSKU", "Fingerprint", "Status"])?;
    q.issuer = Some(caller.clone());
    let page = state.store.list_licenses(&q).await?;
    Ok(json!({"Licenses": page.items, "NextToken": encode_next(LICENSE_PAGE, page.next)}))
}

pub async fn list_received_licenses(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListInput = parse(v)?;
    let mut q = list_query(
        &input,
        &["ProductSKU", "Status", "Fingerprint", "IssuerName", "Beneficiary"],
    )?;
    q.received_by = Some(caller.clone());
    let page = state.store.list_licenses(&q).await?;
    let mut licenses = Vec::with_capacity(page.items.len());
    for l in page.items {
        let metadata = if l.beneficiary_account().as_ref() == Some(caller) {
            // The beneficiary received the license directly, as a marketplace buyer does.
            let status = if l.status == LicenseStatus::Deleted {
                "DELETED"
            } else {
                "ACTIVE"
            };
            json!({"ReceivedStatus": status, "AllowedOperations": ALL_OPERATIONS})
        } else {
            received_through_grant(state, caller, &l.license_arn).await?
        };
        let mut v = serde_json::to_value(&l).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["ReceivedMetadata"] = metadata;
        licenses.push(v);
    }
    Ok(json!({"Licenses": licenses, "NextToken": encode_next(LICENSE_PAGE, page.next)}))
}

/// ReceivedMetadata from the caller's grant: an active one if it has one.
async fn received_through_grant(state: &SharedState, caller: &AccountId, license_arn: &str) -> ApiResult<Value> {
    let chains = state.store.grant_chains(caller, license_arn).await?;
    let best = chains
        .iter()
        .find(|c| chain_active(c))
        .or(chains.first())
        .and_then(|c| c.first());
    Ok(match best {
        Some(g) => {
            let mut m = json!({"ReceivedStatus": g.grant_status, "AllowedOperations": g.granted_operations});
            if let Some(r) = &g.status_reason {
                m["ReceivedStatusReason"] = json!(r);
            }
            m
        }
        None => json!({"ReceivedStatus": "DELETED"}),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsInput {
    license_arn: Option<String>,
    next_token: Option<String>,
    max_results: Option<tessera_core::validate::Long>,
}

pub async fn list_license_versions(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListVersionsInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    readable_license(state, caller, "LicenseArn", &arn).await?;
    let limit = max_results(input.max_results)?;
    let after = decode_next(VERSION_PAGE, input.next_token.as_deref())?;
    let page = state.store.list_license_versions(&arn, after, limit).await?;
    Ok(json!({"Licenses": page.items, "NextToken": encode_next(VERSION_PAGE, page.next)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteLicenseInput {
    license_arn: Option<String>,
    source_version: Option<String>,
}

pub async fn delete_license(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: DeleteLicenseInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    let source = required("SourceVersion", input.source_version)?;
    validate::text("SourceVersion", &source, 32)?;
    let (arn, _) = owned_license(state, caller, "LicenseArn", &arn).await?;
    let now = state.clock.now();
    let license = state.store.delete_license(&arn, &source, now).await?;
    Ok(json!({"Status": license.status, "DeletionDate": timefmt::format(now)}))
}
