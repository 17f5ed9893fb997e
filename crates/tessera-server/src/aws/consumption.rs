//! CheckoutLicense, CheckInLicense, ExtendLicenseConsumption and GetLicenseUsage.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::consumption::{parse_requests, Consumption, EntitlementDataInput};
use tessera_core::license::{limits, CheckoutType, Metadata};
use tessera_core::{validate, AccountId, Clock, LicenseArn};
use tessera_store::{BorrowCommand, CheckoutCommand};

use sha2::Digest;

use super::{client_token, parse, readable_license, request_hash, required, Caller};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckoutInput {
    #[serde(rename = "ProductSKU")]
    product_sku: Option<String>,
    checkout_type: Option<String>,
    key_fingerprint: Option<String>,
    entitlements: Option<Vec<EntitlementDataInput>>,
    client_token: Option<String>,
    beneficiary: Option<String>,
    node_id: Option<String>,
}

/// The claims of a checkout's SignedToken: the documented camelCase payload,
/// plus the registered `iss`, `sub`, `iat` and `exp` so that any JWT library
/// checks expiry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckoutClaims<'a> {
    entitlements_allowed: Vec<AllowedClaim<'a>>,
    expiration: String,
    issued_at: String,
    license_arn: &'a str,
    license_consumption_token: &'a str,
    node_id: Option<&'a str>,
    key_fingerprint: &'a str,
    #[serde(rename = "productSKU")]
    product_sku: &'a str,
    beneficiary: String,
    checkout_type: &'a str,
    iss: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
}

/// One entitlement of `entitlementsAllowed`, in the token's camelCase.
#[derive(Serialize)]
struct AllowedClaim<'a> {
    name: &'a str,
    unit: tessera_core::license::EntitlementUnit,
    value: &'a Option<String>,
}

/// A fresh LicenseConsumptionToken. Time-ordered (UUIDv7, 74 random bits):
/// new tokens then land at the end of the consumptions key index instead of on
/// a random page, so a batch of checkouts dirties (and commits) fewer pages.
fn new_consumption_token() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn signed_token(state: &SharedState, c: &Consumption) -> ApiResult<String> {
    let issuer = LicenseArn::parse("LicenseArn", &c.license_arn)?;
    let key = state.keys.signing_key(issuer.account(), state.clock.now()).await?;
    let claims = CheckoutClaims {
        entitlements_allowed: c
            .allowed
            .iter()
            .map(|e| AllowedClaim {
                name: &e.name,
                unit: e.unit,
                value: &e.value,
            })
            .collect(),
        expiration: c.expiration_str(),
        issued_at: c.issued_at_str(),
        license_arn: &c.license_arn,
        license_consumption_token: &c.token,
        node_id: c.node_id.as_deref(),
        key_fingerprint: &c.key_fingerprint,
        product_sku: &c.product_sku,
        beneficiary: c.beneficiary.clone().unwrap_or_else(|| c.consumer.to_string()),
        checkout_type: c.checkout_type.as_str(),
        iss: &c.key_fingerprint,
        sub: c.consumer.as_str(),
        iat: c.issued_at.unix_timestamp(),
        exp: c.expires_at.unix_timestamp(),
    };
    key.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "signing a checkout token failed");
        ApiError::Internal("the checkout token could not be signed".into())
    })
}

/// What a retried CheckoutLicense must repeat to be the same request: every
/// field but ClientToken, keys in sorted order, absent fields left out. This
/// is the same text as the sorted JSON of the request without its ClientToken
/// (what other operations hash) for any request made of the documented fields.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckoutIdentity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    beneficiary: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkout_type: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlements: Option<Vec<EntitlementIdentity<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_fingerprint: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: &'a Option<String>,
    #[serde(rename = "ProductSKU", skip_serializing_if = "Option::is_none")]
    product_sku: &'a Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EntitlementIdentity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: &'a Option<String>,
}

fn checkout_hash(input: &CheckoutInput) -> String {
    let identity = CheckoutIdentity {
        beneficiary: &input.beneficiary,
        checkout_type: &input.checkout_type,
        entitlements: input.entitlements.as_ref().map(|es| {
            es.iter()
                .map(|e| EntitlementIdentity {
                    name: &e.name,
                    unit: &e.unit,
                    value: &e.value,
                })
                .collect()
        }),
        key_fingerprint: &input.key_fingerprint,
        node_id: &input.node_id,
        product_sku: &input.product_sku,
    };
    let text = serde_json::to_vec(&identity).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&text))
}

/// CheckoutLicense's answer, serialized as it is built.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckoutOutput<'a> {
    checkout_type: CheckoutType,
    license_consumption_token: &'a str,
    entitlements_allowed: &'a [tessera_core::consumption::EntitlementData],
    signed_token: &'a str,
    node_id: &'a Option<String>,
    issued_at: String,
    expiration: String,
    license_arn: &'a str,
}

/// CheckoutLicense, read straight from the request body (it runs on every
/// program's start-up and heartbeat, so it skips the generic JSON tree).
pub async fn checkout_license(state: &SharedState, caller: &Caller, body: &[u8]) -> ApiResult<String> {
    let input: CheckoutInput = super::parse_bytes(body)?;
    let hash = checkout_hash(&input);
    let product_sku = required("ProductSKU", input.product_sku)?;
    validate::text("ProductSKU", &product_sku, limits::NAME)?;
    let checkout_type = CheckoutType::parse("CheckoutType", &required("CheckoutType", input.checkout_type)?)?;
    let key_fingerprint = required("KeyFingerprint", input.key_fingerprint)?;
    validate::text("KeyFingerprint", &key_fingerprint, limits::BENEFICIARY)?;
    let entitlements = parse_requests(&required("Entitlements", input.entitlements)?)?;
    let token = client_token(input.client_token)?;
    validate::opt_text("Beneficiary", input.beneficiary.as_deref(), limits::BENEFICIARY)?;
    validate::opt_text("NodeId", input.node_id.as_deref(), limits::BENEFICIARY)?;
    let c = state
        .store
        .checkout(
            CheckoutCommand {
                caller: caller.account.clone(),
                product_sku,
                key_fingerprint,
                checkout_type,
                entitlements,
                beneficiary: input.beneficiary,
                node_id: input.node_id,
                client_token: token,
                request_hash: hash,
                token: new_consumption_token(),
                only_license: caller.license.clone(),
                key: caller.key.clone(),
            },
            state.clock.now(),
        )
        .await?;
    let signed = signed_token(state, &c).await?;
    let out = CheckoutOutput {
        checkout_type: c.checkout_type,
        license_consumption_token: &c.token,
        entitlements_allowed: &c.allowed,
        signed_token: &signed,
        node_id: &c.node_id,
        issued_at: c.issued_at_str(),
        expiration: c.expiration_str(),
        license_arn: &c.license_arn,
    };
    super::to_json(&out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckInInput {
    license_consumption_token: Option<String>,
    beneficiary: Option<String>,
}

fn consumption_token(v: Option<String>) -> ApiResult<String> {
    let t = required("LicenseConsumptionToken", v)?;
    validate::text("LicenseConsumptionToken", &t, 2048)?;
    Ok(t)
}

pub async fn check_in_license(state: &SharedState, caller: &Caller, body: &[u8]) -> ApiResult<String> {
    let input: CheckInInput = super::parse_bytes(body)?;
    let token = consumption_token(input.license_consumption_token)?;
    validate::opt_text("Beneficiary", input.beneficiary.as_deref(), limits::BENEFICIARY)?;
    state
        .store
        .check_in(
            &caller.account,
            &token,
            caller.license.as_deref(),
            caller.key.as_deref(),
            state.clock.now(),
        )
        .await?;
    Ok("{}".to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExtendInput {
    license_consumption_token: Option<String>,
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExtendOutput<'a> {
    license_consumption_token: &'a str,
    expiration: String,
}

pub async fn extend_license_consumption(state: &SharedState, caller: &Caller, body: &[u8]) -> ApiResult<String> {
    let input: ExtendInput = super::parse_bytes(body)?;
    let token = consumption_token(input.license_consumption_token)?;
    let c = state
        .store
        .extend(
            &caller.account,
            &token,
            caller.license.as_deref(),
            caller.key.as_deref(),
            input.dry_run.unwrap_or(false),
            state.clock.now(),
        )
        .await?;
    super::to_json(&ExtendOutput {
        license_consumption_token: &c.token,
        expiration: c.expiration_str(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UsageInput {
    license_arn: Option<String>,
}

pub async fn get_license_usage(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: UsageInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    readable_license(state, caller, "LicenseArn", &arn).await?;
    let usage = state.store.license_usage(&arn, state.clock.now()).await?;
    let usages: Vec<Value> = usage
        .iter()
        .map(|u| {
            let mut e = json!({"Name": u.name, "ConsumedValue": u.consumed.to_string(), "Unit": u.unit});
            if let Some(m) = u.max_count {
                e["MaxCount"] = json!(m.to_string());
            }
            e
        })
        .collect();
    Ok(json!({"LicenseUsage": {"EntitlementUsages": usages}}))
}

/// The one DigitalSignatureMethod: JWS PS384 (RSASSA-PSS with SHA-384).
pub const JWT_PS384: &str = "JWT_PS384";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BorrowInput {
    license_arn: Option<String>,
    entitlements: Option<Vec<EntitlementDataInput>>,
    digital_signature_method: Option<String>,
    node_id: Option<String>,
    checkout_metadata: Option<Vec<tessera_core::license::MetadataInput>>,
    client_token: Option<String>,
}

pub async fn checkout_borrow_license(state: &SharedState, caller: &Caller, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let input: BorrowInput = parse(v)?;
    let arn = required("LicenseArn", input.license_arn)?;
    let license_arn = LicenseArn::parse("LicenseArn", &arn)?;
    let method = required("DigitalSignatureMethod", input.digital_signature_method)?;
    if method != JWT_PS384 {
        return Err(ApiError::UnsupportedDigitalSignatureMethod(format!(
            "DigitalSignatureMethod '{method}' is not supported; the supported method is {JWT_PS384}"
        )));
    }
    let entitlements = parse_requests(&required("Entitlements", input.entitlements)?)?;
    let token = client_token(input.client_token)?;
    validate::opt_text("NodeId", input.node_id.as_deref(), limits::BENEFICIARY)?;
    let raw = input.checkout_metadata.unwrap_or_default();
    if raw.len() > limits::METADATA {
        return Err(ApiError::Validation(format!(
            "CheckoutMetadata: must list at most {} entries",
            limits::METADATA
        )));
    }
    let mut metadata = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let name = required(&format!("CheckoutMetadata[{i}].Name"), m.name)?;
        validate::text(&format!("CheckoutMetadata[{i}].Name"), &name, limits::NAME)?;
        let value = m.value.unwrap_or_default();
        validate::opt_text(&format!("CheckoutMetadata[{i}].Value"), Some(&value), limits::NAME)?;
        metadata.push(Metadata { name, value });
    }
    if caller.license.as_deref().is_some_and(|only| only != arn) {
        return Err(ApiError::AccessDenied(format!(
            "the access token is for another license than {arn}"
        )));
    }
    let now = state.clock.now();
    let c = state
        .store
        .checkout_borrow(
            BorrowCommand {
                caller: caller.account.clone(),
                license_arn: arn,
                entitlements,
                node_id: input.node_id,
                metadata,
                client_token: token,
                request_hash: hash,
                token: new_consumption_token(),
                key: caller.key.clone(),
            },
            now,
        )
        .await?;
    let key = state.keys.borrow_key(license_arn.account(), now).await?;
    let metadata_map: serde_json::Map<String, Value> = c
        .checkout_metadata
        .iter()
        .map(|m| (m.name.clone(), json!(m.value)))
        .collect();
    let claims = json!({
        "entitlementsAllowed": c.allowed.iter().map(|e| json!({"name": e.name, "unit": e.unit, "value": e.value})).collect::<Vec<_>>(),
        "expiration": c.expiration_str(),
        "issuedAt": c.issued_at_str(),
        "licenseArn": c.license_arn,
        "licenseConsumptionToken": c.token,
        "nodeId": c.node_id,
        "checkoutMetadata": metadata_map,
        "keyFingerprint": c.key_fingerprint,
        "productSKU": c.product_sku,
        "beneficiary": c.consumer.as_str(),
        "checkoutType": "BORROW",
        "iss": c.key_fingerprint,
        "sub": c.consumer.as_str(),
        "iat": c.issued_at.unix_timestamp(),
        "exp": c.expires_at.unix_timestamp(),
    });
    // RSA signing takes milliseconds: keep it off the async threads.
    let signed = tokio::task::spawn_blocking(move || key.sign(&claims))
        .await
        .map_err(|e| ApiError::Internal(format!("signing failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "signing a borrow token failed");
            ApiError::Internal("the borrow token could not be signed".into())
        })?;
    Ok(json!({
        "LicenseArn": c.license_arn,
        "LicenseConsumptionToken": c.token,
        "EntitlementsAllowed": c.allowed,
        "NodeId": c.node_id,
        "SignedToken": signed,
        "IssuedAt": c.issued_at_str(),
        "Expiration": c.expiration_str(),
        "CheckoutMetadata": c.checkout_metadata,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumption_tokens_are_unique_hex_and_ordered_by_time() {
        let tokens: Vec<String> = (0..1000)
            .map(|i| {
                if i % 100 == 0 {
                    // Cross a millisecond now and then, so the time prefix moves too.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                new_consumption_token()
            })
            .collect();
        assert!(tokens
            .iter()
            .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())));
        let mut sorted = tokens.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), tokens.len(), "tokens are unique");
        assert_eq!(sorted, tokens, "later tokens sort after earlier ones");
    }

    /// A retry after an upgrade is recognized: for requests made of the
    /// documented fields, the checkout's identity hashes like any other request.
    #[test]
    fn the_checkout_identity_is_the_sorted_request_without_its_client_token() {
        let bodies = [
            r#"{"ProductSKU":"p","CheckoutType":"PROVISIONAL","KeyFingerprint":"aws:1:Self:f","Entitlements":[{"Name":"Seats","Value":"1","Unit":"Count"}],"ClientToken":"c"}"#,
            r#"{"ClientToken":"d","NodeId":"n","Beneficiary":"b","Entitlements":[{"Unit":"None","Name":"Tier"},{"Name":"Seats","Value":"2","Unit":"Count"}],"KeyFingerprint":"k","CheckoutType":"PERPETUAL","ProductSKU":"p"}"#,
            r#"{}"#,
        ];
        for body in bodies {
            let input: CheckoutInput = serde_json::from_str(body).unwrap();
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(checkout_hash(&input), request_hash(&v), "{body}");
        }
    }
}
