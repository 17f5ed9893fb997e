//! SigV4 authentication of a request against the stored access keys, with a
//! cache of what never changes about a key (its account and secret) and of
//! the signing keys derived from it.
//!
//! What does change, whether a key is still active, is read from the store
//! on every request, except for the hot-path writes (checkout, borrow,
//! check-in, extension) on a store that confirms keys itself: those carry the
//! key into their own transaction, which refuses it if a revocation committed
//! first. A revoked key is thus refused by every request that starts after the
//! revocation, without a read of its own on the path that runs most often.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{HeaderMap, Method, Uri};
use tessera_core::AccountId;
use tessera_sigv4::{self as sigv4, AuthError, RequestParts, SigningKey};
use tessera_store::StoreError;

use super::Caller;
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

/// Keys kept; past this the cache starts afresh (keys are few: one or two per account).
const KEYS: usize = 10_000;

/// An access key as far as it never changes.
struct KnownKey {
    account: AccountId,
    secret: String,
    /// The last signing key derived, for (date, region): clients sign with the
    /// same scope all day, so one suffices. (The service was checked before.)
    derived: Mutex<Option<(String, String, SigningKey)>>,
}

impl KnownKey {
    fn signing_key(&self, date: &str, region: &str) -> SigningKey {
        if let Ok(derived) = self.derived.lock() {
            if let Some((_, _, k)) = derived.as_ref().filter(|(d, r, _)| d == date && r == region) {
                return *k;
            }
        }
        let k = sigv4::signing_key(&self.secret, date, region, sigv4::SERVICE);
        if let Ok(mut derived) = self.derived.lock() {
            *derived = Some((date.to_owned(), region.to_owned(), k));
        }
        k
    }
}

#[derive(Default)]
pub struct AccessKeys {
    known: RwLock<HashMap<String, Arc<KnownKey>>>,
}

impl AccessKeys {
    fn get(&self, id: &str) -> Option<Arc<KnownKey>> {
        self.known.read().ok()?.get(id).cloned()
    }

    fn put(&self, id: &str, key: Arc<KnownKey>) {
        if let Ok(mut known) = self.known.write() {
            if known.len() >= KEYS {
                known.clear();
            }
            known.insert(id.to_owned(), key);
        }
    }

    /// Forgets a key a write refused, so that its next request reads the store.
    pub fn forget(&self, id: &str) {
        if let Ok(mut known) = self.known.write() {
            known.remove(id);
        }
    }
}

pub(super) fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Missing(m) => ApiError::MissingAuthenticationToken(m),
        AuthError::Incomplete(m) => ApiError::IncompleteSignature(m),
        AuthError::Invalid(m) => ApiError::InvalidSignature(m),
    }
}

/// Verifies a SigV4-signed request. `deferred`: the operation is a hot-path
/// write that may confirm the key in its own transaction (see the module notes).
pub(super) async fn sigv4(
    state: &SharedState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    deferred: bool,
) -> ApiResult<Caller> {
    // Header values that are not UTF-8 cannot have been signed as sent; they
    // are compared as their lossy decoding, which then fails verification.
    let lossy: Vec<(&str, std::borrow::Cow<'_, str>)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let pairs: Vec<(&str, &str)> = lossy.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let (auth, amz_date) = sigv4::check_request(&pairs, state.clock.wall()).map_err(auth_error)?;
    if headers.contains_key("x-amz-security-token") {
        return Err(ApiError::UnrecognizedClient(
            "The security token included in the request is invalid: Tessera issues no temporary credentials".into(),
        ));
    }
    let payload_hash = sigv4::sha256_hex(body);
    if let Some(claimed) = headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        if claimed != payload_hash && claimed != "UNSIGNED-PAYLOAD" {
            return Err(ApiError::InvalidSignature(
                "The provided x-amz-content-sha256 header does not match what was computed.".into(),
            ));
        }
    }
    let id = &auth.scope.access_key_id;
    let deferred = deferred && state.store.confirms_keys();
    let known = match state.keys_seen.get(id).filter(|_| deferred) {
        Some(k) => k,
        None => {
            let key = state
                .store
                .access_key(id)
                .await?
                .filter(|k| k.active)
                .ok_or_else(|| ApiError::from(StoreError::unknown_key(id)))?;
            let known = Arc::new(KnownKey {
                account: key.account_id,
                secret: key.secret,
                derived: Mutex::new(None),
            });
            state.keys_seen.put(id, known.clone());
            known
        }
    };
    let req = RequestParts {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        payload_hash: &payload_hash,
    };
    let signing = known.signing_key(&auth.scope.date, &auth.scope.region);
    sigv4::verify_signature_with_key(&auth, &amz_date, &req, &signing).map_err(auth_error)?;
    Ok(Caller {
        account: known.account.clone(),
        license: None,
        key: deferred.then(|| id.clone()),
    })
}
