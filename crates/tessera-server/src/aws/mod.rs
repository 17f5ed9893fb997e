//! The AWS License Manager JSON protocol: authentication, routing by
//! `X-Amz-Target`, and the shared request helpers of the operations.

mod auth;
mod consumption;
mod grants;
mod licenses;
pub mod operation;
mod tags;
mod tokens;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_core::license::License;
use tessera_core::{AccountId, LicenseArn};
use tracing::Instrument;

use crate::edge::RequestId;
use crate::error::{ApiError, ApiResult};
use crate::SharedState;
use tessera_observe::Outcome;

pub use operation::Operation;

pub const TARGET_PREFIX: &str = "AWSLicenseManager.";

/// Who is calling: an account, possibly confined to one license by an access token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountId,
    /// Set when the request carried an access token: the one license it names.
    pub license: Option<String>,
    /// Set when the access key's status was not read for this request: the
    /// write confirms it in its own transaction (see `auth`).
    pub key: Option<String>,
}

pub use auth::AccessKeys;

/// The single entry point: `POST /`.
pub async fn handle(
    State(state): State<SharedState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // At debug level: a span costs a formatted copy of its fields on every
    // request even when nothing is logged in it. Failures name the request themselves.
    let span = tracing::debug_span!("request", id = %request_id, target = %target, account = tracing::field::Empty);
    // Parsed once: the request runs it, the access line and metrics name it.
    let parsed = target.strip_prefix(TARGET_PREFIX).and_then(Operation::parse);
    // Who called, once authenticated: for the access line.
    let caller_account = std::sync::OnceLock::<String>::new();
    let result = async {
        let body = body.map_err(|e| ApiError::Serialization(format!("the request body could not be read: {e}")))?;
        // A workload exchanges its refresh token for an access token without
        // any other credential: the refresh token is the credential.
        if target == "AWSLicenseManager.GetAccessToken" && !headers.contains_key("authorization") {
            return tokens::get_access_token(&state, parse_body(&body)?)
                .await
                .map(|v| v.to_string())
                .map_err(|e| e.fit(Operation::GetAccessToken));
        }
        let op = target.strip_prefix(TARGET_PREFIX).map(|name| {
            parsed.ok_or_else(|| {
                ApiError::UnknownOperation(if operation::NOT_OFFERED.contains(&name) {
                    format!("operation {name} is not offered by this Tessera server (it has no organizations)")
                } else {
                    format!("operation {name} is not a License Manager operation offered by Tessera")
                })
            })
        });
        let caller = authenticate(
            &state,
            &method,
            &uri,
            &headers,
            &body,
            op.as_ref().and_then(|o| o.as_ref().ok()),
        )
        .await?;
        tracing::Span::current().record("account", caller.account.as_str());
        let _ = caller_account.set(caller.account.as_str().to_owned());
        if let Some(name) = target.strip_prefix(crate::native::TARGET_PREFIX) {
            if caller.license.is_some() {
                return Err(ApiError::AccessDenied(format!(
                    "an access token may call only {}; sign {name} with an access key",
                    Operation::bearer_names()
                )));
            }
            return crate::native::dispatch(&state, &caller, name, parse_body(&body)?)
                .await
                .map(|v| v.to_string());
        }
        let op = op.ok_or_else(|| {
            ApiError::UnknownOperation(format!(
                "X-Amz-Target '{target}' does not name an operation; expected {TARGET_PREFIX}<Operation>"
            ))
        })??;
        if caller.license.is_some() && !op.bearer() {
            return Err(ApiError::AccessDenied(format!(
                "an access token may call only {}; sign {} with an access key",
                Operation::bearer_names(),
                op.name()
            )));
        }
        let answer = dispatch(&state, &caller, op, &body).await;
        if let (Err(ApiError::UnrecognizedClient(_)), Some(key)) = (&answer, &caller.key) {
            // Revoked since it was cached: its next request reads the store.
            state.keys_seen.forget(key);
        }
        answer.map_err(|e| e.fit(op))
    }
    .instrument(span.clone())
    .await;
    let operation = match parsed {
        Some(op) => op.name(),
        None => native_label(&target),
    };
    let mut outcome = Outcome {
        operation,
        error: None,
        account_id: None,
        access_key_id: access_key_id(&headers),
        quiet: false,
    };
    outcome.account_id = caller_account.into_inner();
    if matches!(
        parsed,
        Some(Operation::CheckoutLicense | Operation::CheckoutBorrowLicense)
    ) {
        let (result, reason) = match &result {
            Ok(_) => ("granted", "none"),
            Err(e) => ("refused", e.name()),
        };
        metrics::counter!(tessera_observe::metrics::CHECKOUTS, "result" => result, "reason" => reason).increment(1);
    }
    let mut response = match result {
        Ok(text) => ([("content-type", "application/x-amz-json-1.1")], text).into_response(),
        Err(e) => {
            if let ApiError::StoreDamaged(detail) = &e {
                state.store.report_damage(detail);
            }
            if let Some(cause) = e.cause() {
                tessera_observe::throttle::failure(&request_id, operation, cause);
            }
            outcome.error = Some(e.name());
            e.into_response()
        }
    };
    response.extensions_mut().insert(outcome);
    response
}

/// The native operation `target` names, from the fixed list (a label and a log field), or `unknown`.
fn native_label(target: &str) -> &'static str {
    target
        .strip_prefix(crate::native::TARGET_PREFIX)
        .and_then(|name| crate::native::OPERATIONS.iter().find(|o| **o == name))
        .copied()
        .unwrap_or("unknown")
}

/// The access key ID a SigV4 request names (`Credential=<id>/...`), for the access line.
fn access_key_id(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let rest = &auth[auth.find("Credential=")? + "Credential=".len()..];
    let id = rest.split(['/', ',', ' ']).next()?;
    (!id.is_empty()).then(|| id.chars().take(128).collect())
}

/// Reads an operation's input straight from the body into its shape: an
/// empty body reads as `{}`; anything but a JSON object is refused.
pub(crate) fn parse_bytes<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let body: &[u8] = match start {
        None => b"{}",
        Some(i) if body[i] == b'{' => body,
        Some(_) => return Err(ApiError::Serialization("the request body must be a JSON object".into())),
    };
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::Serialization(format!("the request does not match the operation's shape: {e}"))
        }
        _ => ApiError::Serialization(format!("the request body is not valid JSON: {e}")),
    })
}

/// An answer's JSON text.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v).map_err(|e| ApiError::Internal(format!("the answer could not be written: {e}")))
}

/// The request body as a JSON object (empty: `{}`), for operations that take it as a tree.
fn parse_body(body: &[u8]) -> ApiResult<Value> {
    parse_bytes(body)
}

async fn authenticate(
    state: &SharedState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    op: Option<&Operation>,
) -> ApiResult<Caller> {
    if let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return tokens::authenticate_bearer(state, token.trim()).await;
    }
    // The writes that confirm the key themselves are the ones a workload calls.
    let hot = op.is_some_and(|o| o.bearer());
    auth::sigv4(state, method, uri, headers, body, hot).await
}

/// Runs `op` on the request body; the answer is the response's JSON text.
/// CheckoutLicense, CheckInLicense and ExtendLicenseConsumption run on every
/// program's start-up and heartbeat: they read and write typed JSON directly;
/// the others take the body as a JSON tree.
async fn dispatch(state: &SharedState, caller: &Caller, op: Operation, body: &[u8]) -> ApiResult<String> {
    use Operation as O;
    let account = &caller.account;
    let tree = || parse_body(body);
    let text = |v: Value| v.to_string();
    match op {
        O::CheckoutLicense => consumption::checkout_license(state, caller, body).await,
        O::CheckInLicense => consumption::check_in_license(state, caller, body).await,
        O::ExtendLicenseConsumption => consumption::extend_license_consumption(state, caller, body).await,
        O::CreateLicense => licenses::create_license(state, account, tree()?).await.map(text),
        O::CreateLicenseVersion => licenses::create_license_version(state, account, tree()?)
            .await
            .map(text),
        O::GetLicense => licenses::get_license(state, account, tree()?).await.map(text),
        O::ListLicenses => licenses::list_licenses(state, account, tree()?).await.map(text),
        O::ListReceivedLicenses => licenses::list_received_licenses(state, account, tree()?)
            .await
            .map(text),
        O::ListLicenseVersions => licenses::list_license_versions(state, account, tree()?).await.map(text),
        O::DeleteLicense => licenses::delete_license(state, account, tree()?).await.map(text),
        O::CheckoutBorrowLicense => consumption::checkout_borrow_license(state, caller, tree()?)
            .await
            .map(text),
        O::GetLicenseUsage => consumption::get_license_usage(state, account, tree()?).await.map(text),
        O::CreateGrant => grants::create_grant(state, account, tree()?).await.map(text),
        O::AcceptGrant => grants::accept_grant(state, account, tree()?).await.map(text),
        O::RejectGrant => grants::reject_grant(state, account, tree()?).await.map(text),
        O::CreateGrantVersion => grants::create_grant_version(state, account, tree()?).await.map(text),
        O::DeleteGrant => grants::delete_grant(state, account, tree()?).await.map(text),
        O::GetGrant => grants::get_grant(state, account, tree()?).await.map(text),
        O::ListDistributedGrants => grants::list_distributed_grants(state, account, tree()?).await.map(text),
        O::ListReceivedGrants => grants::list_received_grants(state, account, tree()?).await.map(text),
        O::CreateToken => tokens::create_token(state, account, tree()?).await.map(text),
        O::GetAccessToken => tokens::get_access_token(state, tree()?).await.map(text),
        O::ListTokens => tokens::list_tokens(state, account, tree()?).await.map(text),
        O::DeleteToken => tokens::delete_token(state, account, tree()?).await.map(text),
        O::TagResource => tags::tag_resource(state, account, tree()?).await.map(text),
        O::UntagResource => tags::untag_resource(state, account, tree()?).await.map(text),
        O::ListTagsForResource => tags::list_tags_for_resource(state, account, tree()?).await.map(text),
    }
}

/// Deserializes an operation's input; type mismatches are SerializationException, as in AWS.
pub(crate) fn parse<T: DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::Serialization(format!("the request does not match the operation's shape: {e}")))
}

/// A digest of the request without its ClientToken, to recognise retries.
fn request_hash(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("ClientToken");
    }
    // serde_json's map is ordered by key, so equal requests serialize equally.
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

pub(crate) fn required<T>(field: &str, v: Option<T>) -> ApiResult<T> {
    v.ok_or_else(|| ApiError::Validation(format!("{field}: is required")))
}

fn client_token(v: Option<String>) -> ApiResult<String> {
    let t = required("ClientToken", v)?;
    tessera_core::validate::client_token("ClientToken", &t)?;
    Ok(t)
}

/// NextToken is opaque to clients: a tagged position, base64url-encoded.
fn encode_next(kind: &str, pos: Option<i64>) -> Option<String> {
    pos.map(|p| URL_SAFE_NO_PAD.encode(format!("{kind}:{p}")))
}

fn decode_next(kind: &str, token: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(t) = token else { return Ok(None) };
    let bad = || ApiError::Validation(format!("NextToken: '{t}' is not a token this operation returned"));
    let raw = URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let pos = raw
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)?;
    Ok(Some(pos))
}

/// A license the caller may read: its issuer or its beneficiary.
async fn readable_license(
    state: &SharedState,
    caller: &AccountId,
    field: &str,
    arn: &str,
) -> ApiResult<(LicenseArn, License)> {
    let parsed = LicenseArn::parse(field, arn)?;
    let license = state
        .store
        .get_license(arn, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("license {arn} does not exist")))?;
    let issuer = parsed.account() == caller;
    let beneficiary = license.beneficiary_account().as_ref() == Some(caller);
    if !issuer && !beneficiary && !active_grant(state, caller, arn).await? {
        return Err(ApiError::AccessDenied(format!(
            "account {caller} may not access license {arn}: it is not its issuer or beneficiary and holds no ACTIVE grant on it"
        )));
    }
    Ok((parsed, license))
}

/// Whether `caller` holds an ACTIVE grant chain on the license (for any operation).
async fn active_grant(state: &SharedState, caller: &AccountId, license_arn: &str) -> ApiResult<bool> {
    let chains = state.store.grant_chains(caller, license_arn).await?;
    Ok(chains.iter().any(|c| tessera_core::grant::chain_active(c)))
}

/// Parses the Filters of a List operation into (name, values), refusing unknown names.
fn filters<'a>(filters: &'a [FilterInput], allowed: &[&str]) -> ApiResult<Vec<(&'a str, &'a [String])>> {
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f.name.as_deref().unwrap_or("");
            if !allowed.contains(&name) {
                return Err(ApiError::Validation(format!(
                    "Filters[{i}].Name: '{name}' is not a supported filter; use one of: {}",
                    allowed.join(", ")
                )));
            }
            match f.values.as_deref() {
                Some(v) if !v.is_empty() => Ok((name, v)),
                _ => Err(ApiError::Validation(format!(
                    "Filters[{i}].Values: filter {name} needs a value"
                ))),
            }
        })
        .collect()
}

/// The one value of a single-valued filter.
fn single<'a>(name: &str, values: &'a [String]) -> ApiResult<&'a String> {
    match values {
        [one] => Ok(one),
        _ => Err(ApiError::Validation(format!(
            "Filters: filter {name} takes exactly one value"
        ))),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FilterInput {
    name: Option<String>,
    values: Option<Vec<String>>,
}

/// A license the caller issued, and so may change.
async fn owned_license(
    state: &SharedState,
    caller: &AccountId,
    field: &str,
    arn: &str,
) -> ApiResult<(LicenseArn, License)> {
    let (parsed, license) = readable_license(state, caller, field, arn).await?;
    if parsed.account() != caller {
        return Err(ApiError::AccessDenied(format!(
            "account {caller} may not change license {arn}: only its issuer, account {}, may",
            parsed.account()
        )));
    }
    Ok((parsed, license))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tokens_round_trip_and_reject_foreign_tokens() {
        let t = encode_next("lic", Some(42)).unwrap();
        assert_eq!(decode_next("lic", Some(&t)).unwrap(), Some(42));
        assert!(decode_next("ver", Some(&t)).is_err());
        assert!(decode_next("lic", Some("garbage!")).is_err());
    }

    #[test]
    fn request_hash_ignores_the_client_token_and_key_order() {
        let a: Value = serde_json::from_str(r#"{"A":1,"B":2,"ClientToken":"x"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"B":2,"A":1,"ClientToken":"y"}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"B":3,"A":1,"ClientToken":"x"}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
