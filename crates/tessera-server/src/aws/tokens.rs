//! CreateToken, GetAccessToken, ListTokens, DeleteToken, and the access
//! tokens that let a workload check out without access keys.
//!
//! A refresh token is a JWT signed with the creating account's Ed25519 key
//! (`aud` the license ARN, `amr` the TokenProperties). GetAccessToken trades it
//! for an access token valid one hour, which `Authorization: Bearer` accepts
//! for checkout, check-in, extension and borrow on that one license.

use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::grant::{chain_permits, AllowedOperation};
use tessera_core::validate::max_results;
use tessera_core::{timefmt, AccountId, Clock, LicenseArn};
use tessera_store::{Idempotency, TokenRecord};
use time::Duration;

use super::{client_token, decode_next, encode_next, filters, parse, request_hash, required, Caller, FilterInput};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

const TOKEN_PAGE: &str = "tok";
const ISSUER: &str = "tessera";
/// Access tokens are valid for one hour, as in AWS.
const ACCESS_TTL: Duration = Duration::hours(1);
const DEFAULT_EXPIRATION_DAYS: i64 = 365;
const MAX_EXPIRATION_DAYS: i64 = 3650;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateTokenInput {
    license_arn: Option<String>,
    role_arns: Option<Vec<String>>,
    expiration_in_days: Option<tessera_core::validate::Long>,
    token_properties: Option<Vec<String>>,
    client_token: Option<String>,
}

fn properties(field: &str, v: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let v = v.unwrap_or_default();
    if v.len() > 3 {
        return Err(ApiError::Validation(format!("{field}: at most 3 properties")));
    }
    for (i, p) in v.iter().enumerate() {
        tessera_core::validate::text(&format!("{field}[{i}]"), p, 255)?;
    }
    Ok(v)
}

fn refresh_claims(r: &TokenRecord) -> Value {
    json!({
        "jti": r.token_id,
        "iss": ISSUER,
        "sub": r.account.as_str(),
        "aud": r.license_arn,
        "amr": r.token_properties,
        "roles": r.role_arns,
        "token_use": "refresh",
        "iat": r.created_at.unix_timestamp(),
        "exp": r.expires_at.unix_timestamp(),
    })
}

pub async fn create_token(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let hash = request_hash(&v);
    let input: CreateTokenInput = parse(v)?;
    let token = client_token(input.client_token)?;
    let arn = required("LicenseArn", input.license_arn)?;
    LicenseArn::parse("LicenseArn", &arn)?;
    let days = input
        .expiration_in_days
        .unwrap_or(DEFAULT_EXPIRATION_DAYS.into())
        .within("ExpirationInDays", 1, MAX_EXPIRATION_DAYS)?;
    let props = properties("TokenProperties", input.token_properties)?;
    let roles = input.role_arns.unwrap_or_default();
    if roles.len() > 10 {
        return Err(ApiError::Validation("RoleArns: at most 10 role ARNs".into()));
    }
    for (i, r) in roles.iter().enumerate() {
        if !r.starts_with("arn:") || r.len() > 2048 {
            return Err(ApiError::Validation(format!("RoleArns[{i}]: '{r}' is not an ARN")));
        }
    }
    let license = state
        .store
        .get_license(&arn, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("license {arn} does not exist")))?;
    if license.status == tessera_core::license::LicenseStatus::Deleted {
        return Err(ApiError::Conflict(format!(
            "license {arn} is deleted; no token can be created for it"
        )));
    }
    let direct = license.beneficiary_account().as_ref() == Some(caller);
    if !direct {
        let chains = state.store.grant_chains(caller, &arn).await?;
        if !chains.iter().any(|c| chain_permits(c, AllowedOperation::CreateToken)) {
            return Err(ApiError::AccessDenied(format!(
                "account {caller} may not create tokens for license {arn}: it is not the beneficiary and holds no ACTIVE grant allowing CreateToken"
            )));
        }
    }
    let now = state.clock.now();
    let record = TokenRecord {
        token_id: uuid::Uuid::new_v4().simple().to_string(),
        account: caller.clone(),
        license_arn: arn,
        role_arns: roles,
        token_properties: props,
        expires_at: now + Duration::days(days),
        deleted: false,
        created_at: now,
    };
    let key = Idempotency {
        account: caller.clone(),
        operation: "CreateToken",
        client_token: token,
        request_hash: hash,
    };
    let record = state.store.create_token(record, key, now).await?;
    let signer = state.keys.signing_key(caller, now).await?;
    let jwt = signer
        .sign(&refresh_claims(&record))
        .map_err(|e| ApiError::Internal(format!("the token could not be signed: {e}")))?;
    Ok(json!({"TokenId": record.token_id, "TokenType": "REFRESH_TOKEN", "Token": jwt}))
}

/// Verifies a token this server issued for the account in its `sub`.
async fn verified(state: &SharedState, token: &str, use_: &str) -> ApiResult<(Value, AccountId)> {
    let claims = state
        .keys
        .verify(token, state.clock.now().unix_timestamp())
        .await
        .map_err(|e| ApiError::AccessDenied(format!("the {use_} token is not valid: {e}")))?;
    if claims["token_use"] != use_ || claims["iss"] != ISSUER {
        return Err(ApiError::AccessDenied(format!("the token is not a {use_} token")));
    }
    let sub = claims["sub"]
        .as_str()
        .and_then(AccountId::from_principal)
        .ok_or_else(|| ApiError::AccessDenied(format!("the {use_} token names no account")))?;
    // It must be signed by its own account's key, not by another issuer's.
    let kid = jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .unwrap_or_default();
    if !kid.starts_with(&format!("{sub}-")) {
        return Err(ApiError::AccessDenied(format!(
            "the {use_} token is not signed by account {sub}"
        )));
    }
    Ok((claims, sub))
}

/// The refresh token behind a token must still exist and not be deleted.
async fn live_refresh(state: &SharedState, token_id: &str, account: &AccountId) -> ApiResult<TokenRecord> {
    let record = state
        .store
        .get_token(token_id)
        .await?
        .filter(|r| &r.account == account)
        .ok_or_else(|| ApiError::AccessDenied(format!("refresh token {token_id} does not exist")))?;
    if record.deleted {
        return Err(ApiError::AccessDenied(format!("refresh token {token_id} was deleted")));
    }
    if record.expires_at <= state.clock.now() {
        return Err(ApiError::AccessDenied(format!(
            "refresh token {token_id} expired at {}",
            timefmt::format(record.expires_at)
        )));
    }
    Ok(record)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAccessTokenInput {
    token: Option<String>,
    token_properties: Option<Vec<String>>,
}

pub async fn get_access_token(state: &SharedState, v: Value) -> ApiResult<Value> {
    let input: GetAccessTokenInput = parse(v)?;
    let token = required("Token", input.token)?;
    if token.len() > 4096 || token.chars().any(char::is_whitespace) {
        return Err(ApiError::Validation(
            "Token: must be at most 4096 characters without whitespace".into(),
        ));
    }
    let wanted = properties("TokenProperties", input.token_properties)?;
    let (claims, account) = verified(state, &token, "refresh").await?;
    let token_id = claims["jti"].as_str().unwrap_or_default().to_owned();
    let record = live_refresh(state, &token_id, &account).await?;
    if let Some(extra) = wanted.iter().find(|p| !record.token_properties.contains(p)) {
        return Err(ApiError::Validation(format!(
            "TokenProperties: '{extra}' is not among the refresh token's properties"
        )));
    }
    let now = state.clock.now();
    let amr = if wanted.is_empty() {
        record.token_properties.clone()
    } else {
        wanted
    };
    let access = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string(),
        "iss": ISSUER,
        "sub": account.as_str(),
        "aud": record.license_arn,
        "amr": amr,
        "rt": record.token_id,
        "token_use": "access",
        "iat": now.unix_timestamp(),
        "exp": (now + ACCESS_TTL).unix_timestamp(),
    });
    let signer = state.keys.signing_key(&account, now).await?;
    let jwt = signer
        .sign(&access)
        .map_err(|e| ApiError::Internal(format!("the token could not be signed: {e}")))?;
    Ok(json!({ "AccessToken": jwt }))
}

/// `Authorization: Bearer <access token>`: the account in `sub`, confined to the license in `aud`.
pub async fn authenticate_bearer(state: &SharedState, token: &str) -> ApiResult<Caller> {
    let (claims, account) = verified(state, token, "access").await?;
    let rt = claims["rt"].as_str().unwrap_or_default();
    live_refresh(state, rt, &account).await?;
    let license = claims["aud"]
        .as_str()
        .ok_or_else(|| ApiError::AccessDenied("the access token names no license".into()))?;
    Ok(Caller {
        account,
        license: Some(license.to_owned()),
        key: None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTokensInput {
    token_ids: Option<Vec<String>>,
    filters: Option<Vec<FilterInput>>,
    next_token: Option<String>,
    max_results: Option<tessera_core::validate::Long>,
}

pub async fn list_tokens(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListTokensInput = parse(v)?;
    let limit = max_results(input.max_results)?;
    let after = decode_next(TOKEN_PAGE, input.next_token.as_deref())?;
    let mut arns = Vec::new();
    for (_, values) in filters(input.filters.as_deref().unwrap_or(&[]), &["LicenseArns"])? {
        for (i, a) in values.iter().enumerate() {
            LicenseArn::parse(&format!("Filters.LicenseArns[{i}]"), a)?;
            arns.push(a.clone());
        }
    }
    let ids = input.token_ids.unwrap_or_default();
    let page = state.store.list_tokens(caller, &ids, &arns, after, limit).await?;
    let tokens: Vec<Value> = page
        .items
        .iter()
        .map(|r| {
            json!({
                "TokenId": r.token_id,
                "TokenType": "REFRESH_TOKEN",
                "LicenseArn": r.license_arn,
                "ExpirationTime": timefmt::format(r.expires_at),
                "TokenProperties": r.token_properties,
                "RoleArns": r.role_arns,
                "Status": if r.deleted { "DELETED" } else { "AVAILABLE" },
            })
        })
        .collect();
    Ok(json!({"Tokens": tokens, "NextToken": encode_next(TOKEN_PAGE, page.next)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteTokenInput {
    token_id: Option<String>,
}

pub async fn delete_token(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: DeleteTokenInput = parse(v)?;
    let id = required("TokenId", input.token_id)?;
    tessera_core::validate::text("TokenId", &id, 64)?;
    state.store.delete_token(caller, &id, state.clock.now()).await?;
    Ok(json!({}))
}
