//! CreateLicense, CreateLicenseVersion, GetLicense, ListLicenses,
//! ListReceivedLicenses, ListLicenseVersions and DeleteLicense.

use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::license::{validate_tags, LicenseInput, LicenseStatus, TagInput};
use tessera_core::validate::{self, max_results};
use tessera_core::{timefmt, AccountId, Clock, LicenseArn};
use tessera_store::{LicenseQuery, NewLicense, NewVersion};

use super::{
    client_token, decode_next, encode_next, owned_license, parse, readable_license, request_hash,
    required,
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
    // The issuer's signing key exists before any token names it.
    state.keys.signing_key(caller, now).await?;
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

pub async fn create_license_version(
    state: &SharedState,
    caller: &AccountId,
    v: Value,
) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let mut input: CreateLicenseVersionInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let arn_s = required("LicenseArn", input.license_arn)?;
    let status_s = required("Status", input.status)?;
    let status = LicenseStatus::parse("Status", &status_s)?;
    if matches!(
        status,
        LicenseStatus::Deleted | LicenseStatus::PendingDelete
    ) {
        return Err(ApiError::Validation(format!(
            "Status: {status} cannot be set by CreateLicenseVersion; use DeleteLicense"
        )));
    }
    let (arn, current) = owned_license(state, caller, "LicenseArn", &arn_s).await?;
    // The request carries no ProductSKU or Beneficiary: they stay as they are.
    input.license.product_sku = Some(current.product_sku.clone());
    input.license.beneficiary = Some(current.beneficiary.clone());
    let body = input.license.validate()?;
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
                .ok_or_else(|| {
                    ApiError::ResourceNotFound(format!("license {arn} has no version {ver}"))
                })?
        }
    };
    Ok(json!({ "License": license }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FilterInput {
    name: Option<String>,
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    license_arns: Option<Vec<String>>,
    filters: Option<Vec<FilterInput>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// Applies the documented filters; `allowed` lists the names this operation takes.
fn apply_filters(q: &mut LicenseQuery, filters: &[FilterInput], allowed: &[&str]) -> ApiResult<()> {
    for (i, f) in filters.iter().enumerate() {
        let name = f.name.as_deref().unwrap_or("");
        if !allowed.contains(&name) {
            return Err(ApiError::Validation(format!(
                "Filters[{i}].Name: '{name}' is not a supported filter; use one of: {}",
                allowed.join(", ")
            )));
        }
        let value = match f.values.as_deref() {
            Some([one]) => one.clone(),
            _ => {
                return Err(ApiError::Validation(format!(
                    "Filters[{i}].Values: filter {name} takes exactly one value"
                )))
            }
        };
        match name {
            "ProductSKU" => q.product_sku = Some(value),
            "Fingerprint" => q.fingerprint = Some(value),
            "Status" => {
                q.status = Some(LicenseStatus::parse(
                    &format!("Filters[{i}].Values[0]"),
                    &value,
                )?)
            }
            "IssuerName" => q.issuer_name = Some(value),
            "Beneficiary" => q.beneficiary = Some(value),
            _ => unreachable!("names are checked against `allowed` above"),
        }
    }
    Ok(())
}

fn list_query(input: &ListInput, filters: &[&str]) -> ApiResult<LicenseQuery> {
    let mut q = LicenseQuery {
        limit: max_results(input.max_results)?,
        after: decode_next(LICENSE_PAGE, input.next_token.as_deref())?,
        ..Default::default()
    };
    for (i, arn) in input.license_arns.iter().flatten().enumerate() {
        LicenseArn::parse(&format!("LicenseArns[{i}]"), arn)?;
        q.arns.push(arn.clone());
    }
    apply_filters(&mut q, input.filters.as_deref().unwrap_or(&[]), filters)?;
    Ok(q)
}

pub async fn list_licenses(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListInput = parse(v)?;
    let mut q = list_query(
        &input,
        &["Beneficiary", "ProductSKU", "Fingerprint", "Status"],
    )?;
    q.issuer = Some(caller.clone());
    let page = state.store.list_licenses(&q).await?;
    Ok(json!({"Licenses": page.items, "NextToken": encode_next(LICENSE_PAGE, page.next)}))
}

pub async fn list_received_licenses(
    state: &SharedState,
    caller: &AccountId,
    v: Value,
) -> ApiResult<Value> {
    let input: ListInput = parse(v)?;
    let mut q = list_query(
        &input,
        &[
            "ProductSKU",
            "Status",
            "Fingerprint",
            "IssuerName",
            "Beneficiary",
        ],
    )?;
    q.beneficiary_account = Some(caller.clone());
    let page = state.store.list_licenses(&q).await?;
    let licenses: Vec<Value> = page
        .items
        .into_iter()
        .map(|l| {
            let received = if l.status == LicenseStatus::Deleted {
                "DELETED"
            } else {
                "ACTIVE"
            };
            let mut v = serde_json::to_value(&l).unwrap_or(Value::Null);
            v["ReceivedMetadata"] =
                json!({"ReceivedStatus": received, "AllowedOperations": ALL_OPERATIONS});
            v
        })
        .collect();
    Ok(json!({"Licenses": licenses, "NextToken": encode_next(LICENSE_PAGE, page.next)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsInput {
    license_arn: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub async fn list_license_versions(
    state: &SharedState,
    caller: &AccountId,
    v: Value,
) -> ApiResult<Value> {
    let input: ListVersionsInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    readable_license(state, caller, "LicenseArn", &arn).await?;
    let limit = max_results(input.max_results)?;
    let after = decode_next(VERSION_PAGE, input.next_token.as_deref())?;
    let page = state
        .store
        .list_license_versions(&arn, after, limit)
        .await?;
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
