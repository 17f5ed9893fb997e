//! Issuer signing keys: created on demand, cached in memory, published as a JWKS.
//!
//! Every issuing account has an Ed25519 key (checkout tokens, refresh and
//! access tokens) and, once it issues a borrowable license, an RSA key for
//! PS384 (borrow tokens).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tessera_core::AccountId;
use tessera_store::{Store, StoredKey};
use tessera_token::{IssuerKey, Jwk, Jwks, RsaIssuerKey};
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};

pub const EDDSA: &str = "EdDSA";
pub const PS384: &str = "PS384";

pub struct KeyRing {
    store: Arc<dyn Store>,
    ed: RwLock<HashMap<AccountId, Arc<IssuerKey>>>,
    rsa: RwLock<HashMap<AccountId, Arc<RsaIssuerKey>>>,
    /// The key set as last read, with the number of keys the store had then.
    jwks: RwLock<Option<(i64, Arc<Jwks>)>>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "issuer key failure");
    ApiError::Internal("the issuer's signing key could not be loaded".into())
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            ed: RwLock::new(HashMap::new()),
            rsa: RwLock::new(HashMap::new()),
            jwks: RwLock::new(None),
        }
    }

    /// Loads the account's key for `alg`, or makes one with `make` and stores it.
    /// Concurrent creators race in the store, which keeps exactly one.
    async fn load_or_create(
        &self,
        account: &AccountId,
        alg: &str,
        now: OffsetDateTime,
        make: impl FnOnce() -> ApiResult<(String, Vec<u8>, Jwk)> + Send + 'static,
    ) -> ApiResult<StoredKey> {
        if let Some(k) = self.store.issuer_key(account, alg).await? {
            return Ok(k);
        }
        // Key generation is CPU-bound (RSA takes about a second): off the async threads.
        let (kid, der, jwk) = tokio::task::spawn_blocking(make).await.map_err(internal)??;
        let key = StoredKey {
            account_id: account.clone(),
            kid,
            alg: alg.into(),
            private_der: der,
            public_jwk: serde_json::to_string(&jwk).map_err(internal)?,
        };
        Ok(self.store.put_issuer_key(key, now).await?)
    }

    /// The account's Ed25519 key, created and stored the first time it is needed.
    pub async fn signing_key(&self, account: &AccountId, now: OffsetDateTime) -> ApiResult<Arc<IssuerKey>> {
        if let Some(k) = self.ed.read().map_err(internal)?.get(account) {
            return Ok(k.clone());
        }
        let id = account.to_string();
        let stored = self
            .load_or_create(account, EDDSA, now, move || {
                let k = IssuerKey::generate(&id);
                Ok((k.kid().to_owned(), k.to_pkcs8_der().map_err(internal)?, k.public_jwk()))
            })
            .await?;
        let key = Arc::new(IssuerKey::from_pkcs8_der(account.as_str(), &stored.private_der).map_err(internal)?);
        self.ed.write().map_err(internal)?.insert(account.clone(), key.clone());
        Ok(key)
    }

    /// The account's RSA key for PS384 borrow tokens.
    pub async fn borrow_key(&self, account: &AccountId, now: OffsetDateTime) -> ApiResult<Arc<RsaIssuerKey>> {
        if let Some(k) = self.rsa.read().map_err(internal)?.get(account) {
            return Ok(k.clone());
        }
        let id = account.to_string();
        let stored = self
            .load_or_create(account, PS384, now, move || {
                let k = RsaIssuerKey::generate(&id).map_err(internal)?;
                Ok((k.kid().to_owned(), k.to_pkcs1_der().map_err(internal)?, k.public_jwk()))
            })
            .await?;
        let der = stored.private_der.clone();
        let id = account.to_string();
        let key = tokio::task::spawn_blocking(move || RsaIssuerKey::from_pkcs1_der(&id, &der))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let key = Arc::new(key);
        self.rsa.write().map_err(internal)?.insert(account.clone(), key.clone());
        Ok(key)
    }

    /// Every issuer's public keys, as the store has them now: the set is read
    /// again whenever the store's count of keys differs from the cached one
    /// (keys are never removed), so a key another replica or the CLI just
    /// made is published here at once.
    pub async fn jwks(&self) -> ApiResult<Arc<Jwks>> {
        let count = self.store.issuer_key_count().await?;
        if let Some((seen, set)) = self.jwks.read().map_err(internal)?.as_ref() {
            if *seen == count {
                return Ok(set.clone());
            }
        }
        self.reload_jwks(count).await
    }

    /// The cached key set, read if there is none, for verifying tokens (where
    /// an unknown key triggers a fresh read instead).
    async fn cached_jwks(&self) -> ApiResult<Arc<Jwks>> {
        if let Some((_, set)) = self.jwks.read().map_err(internal)?.as_ref() {
            return Ok(set.clone());
        }
        self.jwks().await
    }

    async fn reload_jwks(&self, count: i64) -> ApiResult<Arc<Jwks>> {
        let keys = self.store.public_keys().await?;
        let keys = keys
            .iter()
            .map(|k| serde_json::from_str::<Jwk>(&k.public_jwk).map_err(internal))
            .collect::<ApiResult<Vec<_>>>()?;
        // Read after the count: the set holds at least `count` keys, so a key
        // added between the two reads is read again next time, never missed.
        let set = Arc::new(Jwks { keys });
        *self.jwks.write().map_err(internal)? = Some((count, set.clone()));
        Ok(set)
    }

    /// Verifies a token signed by any issuer known to this server.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<serde_json::Value, tessera_token::TokenError> {
        let set = self
            .cached_jwks()
            .await
            .map_err(|_| tessera_token::TokenError::UnknownKey("?".into()))?;
        match tessera_token::verify(token, &set, now_unix) {
            // Another process (a replica, or the CLI) may have added the key since.
            Err(tessera_token::TokenError::UnknownKey(_)) => {
                let set = self
                    .jwks()
                    .await
                    .map_err(|_| tessera_token::TokenError::UnknownKey("?".into()))?;
                tessera_token::verify(token, &set, now_unix)
            }
            other => other,
        }
    }
}
