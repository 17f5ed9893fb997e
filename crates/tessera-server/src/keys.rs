//! Issuer signing keys: created on demand, cached in memory, published as a JWKS.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tessera_core::AccountId;
use tessera_store::{Store, StoredKey};
use tessera_token::{IssuerKey, Jwk, Jwks};
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};

pub const EDDSA: &str = "EdDSA";

pub struct KeyRing {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<AccountId, Arc<IssuerKey>>>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "issuer key failure");
    ApiError::Internal("the issuer's signing key could not be loaded".into())
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The account's Ed25519 key, created and stored the first time it is needed.
    pub async fn signing_key(
        &self,
        account: &AccountId,
        now: OffsetDateTime,
    ) -> ApiResult<Arc<IssuerKey>> {
        if let Some(k) = self.cache.read().map_err(internal)?.get(account) {
            return Ok(k.clone());
        }
        let stored = match self.store.issuer_key(account, EDDSA).await? {
            Some(k) => k,
            None => {
                let fresh = IssuerKey::generate(account.as_str());
                let key = StoredKey {
                    account_id: account.clone(),
                    kid: fresh.kid().to_owned(),
                    alg: EDDSA.into(),
                    private_der: fresh.to_pkcs8_der().map_err(internal)?,
                    public_jwk: serde_json::to_string(&fresh.public_jwk()).map_err(internal)?,
                };
                // Another request may have won the race; the store keeps one.
                self.store.put_issuer_key(key, now).await?
            }
        };
        let key = Arc::new(
            IssuerKey::from_pkcs8_der(account.as_str(), &stored.private_der).map_err(internal)?,
        );
        self.cache
            .write()
            .map_err(internal)?
            .insert(account.clone(), key.clone());
        Ok(key)
    }

    pub async fn jwks(&self) -> ApiResult<Jwks> {
        let keys = self.store.public_keys().await?;
        let keys = keys
            .iter()
            .map(|k| serde_json::from_str::<Jwk>(&k.public_jwk).map_err(internal))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Jwks { keys })
    }
}
