//! Issuer keys, signed tokens and their offline verification.
//!
//! Each issuing account has an Ed25519 key. Tokens are compact JWS (`alg`
//! EdDSA, `kid` naming the key); public keys are published as a JWKS, so any
//! JWT library can verify a token without calling the server.

pub mod product_key;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the issuer key could not be read: {0}")]
    BadKey(String),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("no key with kid '{0}' in the JWKS")]
    UnknownKey(String),
    #[error("the signature does not verify: the token was altered or signed by another key")]
    BadSignature,
    #[error("the token expired at {0}")]
    Expired(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// An issuing account's private signing key.
pub struct IssuerKey {
    kid: String,
    signing: SigningKey,
    /// The same key in aws-lc, which signs in about half the time of the
    /// portable implementation (hand-written field arithmetic); Ed25519 is
    /// deterministic, so both give the same bytes.
    fast: aws_lc_rs::signature::Ed25519KeyPair,
    /// The compact JWS header, base64url, the same for every token of this key.
    header_b64: String,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl IssuerKey {
    /// A fresh key for `account_id`.
    pub fn generate(account_id: &str) -> Self {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing(account_id, signing).expect("a fresh key encodes")
    }

    fn from_signing(account_id: &str, signing: SigningKey) -> Result<Self, TokenError> {
        let digest = Sha256::digest(signing.verifying_key().as_bytes());
        let kid = format!("{account_id}-{}", hex::encode(&digest[..8]));
        let fast = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            signing.as_bytes(),
            signing.verifying_key().as_bytes(),
        )
        .map_err(|e| TokenError::BadKey(e.to_string()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header = serde_json::to_vec(&header).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(Self {
            header_b64: URL_SAFE_NO_PAD.encode(header),
            kid,
            signing,
            fast,
        })
    }

    /// Reads a key stored as PKCS#8 DER.
    pub fn from_pkcs8_der(account_id: &str, der: &[u8]) -> Result<Self, TokenError> {
        let signing = SigningKey::from_pkcs8_der(der).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Self::from_signing(account_id, signing)
    }

    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, TokenError> {
        self.signing
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| TokenError::BadKey(e.to_string()))
    }

    /// `<account-id>-<16 hex of the public key's SHA-256>`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes())),
            kid: self.kid.clone(),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            n: None,
            e: None,
        }
    }

    /// Signs `claims` as a compact JWS. Ed25519 is deterministic, so the same
    /// claims always give the same token: an idempotent retry gets identical bytes.
    ///
    /// The compact serialization is done here, with the same header and
    /// encoding as `jsonwebtoken::encode`, because that would rebuild the key
    /// pair from its DER (a scalar multiplication) on every call, doubling the
    /// cost of a checkout's signature.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let claims = serde_json::to_vec(claims).map_err(|e| TokenError::Signing(e.to_string()))?;
        let mut jws = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 92);
        jws.push_str(&self.header_b64);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = self.fast.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }

    /// The same signature through `jsonwebtoken`, to show that both agree.
    #[cfg(test)]
    fn sign_with_jsonwebtoken<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let encoding = EncodingKey::from_ed_der(&self.to_pkcs8_der()?);
        jsonwebtoken::encode(&header, claims, &encoding).map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Signs raw bytes (for documents that are not JWTs, such as product keys).
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.fast.sign(msg).as_ref());
        out
    }
}

/// An issuing account's RSA key for PS384 (RSASSA-PSS with SHA-384), the one
/// signature method of CheckoutBorrowLicense.
pub struct RsaIssuerKey {
    kid: String,
    private: rsa::RsaPrivateKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for RsaIssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaIssuerKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Bits of a new RSA key.
pub const RSA_BITS: usize = 3072;

impl RsaIssuerKey {
    /// A fresh key for `account_id`. Takes a noticeable fraction of a second.
    pub fn generate(account_id: &str) -> Result<Self, TokenError> {
        let private =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Self::from_private(account_id, private)
    }

    fn from_private(account_id: &str, private: rsa::RsaPrivateKey) -> Result<Self, TokenError> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let der = private.to_pkcs1_der().map_err(|e| TokenError::BadKey(e.to_string()))?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let digest = Sha256::digest(private.n().to_bytes_be());
        let kid = format!("{account_id}-ps384-{}", hex::encode(&digest[..8]));
        Ok(Self { kid, private, encoding })
    }

    pub fn from_pkcs1_der(account_id: &str, der: &[u8]) -> Result<Self, TokenError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Self::from_private(account_id, private)
    }

    pub fn to_pkcs1_der(&self) -> Result<Vec<u8>, TokenError> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        self.private
            .to_pkcs1_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| TokenError::BadKey(e.to_string()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> Jwk {
        use rsa::traits::PublicKeyParts;
        Jwk {
            kty: "RSA".into(),
            crv: None,
            x: None,
            kid: self.kid.clone(),
            alg: Some("PS384".into()),
            use_: Some("sig".into()),
            n: Some(URL_SAFE_NO_PAD.encode(self.private.n().to_bytes_be())),
            e: Some(URL_SAFE_NO_PAD.encode(self.private.e().to_bytes_be())),
        }
    }

    /// Signs `claims` as a compact JWS with PS384 (PSS is randomized: tokens differ each time).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::PS384);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// One public key in a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// Verifies a compact JWS against a JWKS and returns its claims.
///
/// `now_unix` is checked against the registered `exp` claim when present.
pub fn verify(token: &str, jwks: &Jwks, now_unix: i64) -> Result<serde_json::Value, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let kid = header
        .kid
        .ok_or_else(|| TokenError::Malformed("the header has no kid".into()))?;
    let jwk = jwks.find(&kid).ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    let key = match (header.alg, jwk.kty.as_str()) {
        (Algorithm::EdDSA, "OKP") => {
            let x = jwk
                .x
                .as_deref()
                .ok_or_else(|| TokenError::BadKey(format!("JWK {kid} has no x")))?;
            DecodingKey::from_ed_components(x).map_err(|e| TokenError::BadKey(e.to_string()))?
        }
        (Algorithm::PS384, "RSA") => {
            let (n, e) = jwk
                .n
                .as_deref()
                .zip(jwk.e.as_deref())
                .ok_or_else(|| TokenError::BadKey(format!("JWK {kid} has no n or e")))?;
            DecodingKey::from_rsa_components(n, e).map_err(|e| TokenError::BadKey(e.to_string()))?
        }
        (alg, kty) => {
            return Err(TokenError::Malformed(format!(
                "algorithm {alg:?} does not match key type {kty}"
            )))
        }
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => TokenError::Malformed(e.to_string()),
    })?;
    if let Some(exp) = data.claims.get("exp").and_then(|v| v.as_i64()) {
        if now_unix >= exp {
            let when = data
                .claims
                .get("expiration")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("unix time {exp}"));
            return Err(TokenError::Expired(when));
        }
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signs_deterministically_and_verifies() {
        let key = IssuerKey::generate("123456789012");
        let claims = json!({"licenseArn": "arn", "exp": 4_000_000_000i64});
        let t1 = key.sign(&claims).unwrap();
        assert_eq!(t1, key.sign(&claims).unwrap());
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let got = verify(&t1, &jwks, 1_700_000_000).unwrap();
        assert_eq!(got["licenseArn"], "arn");
    }

    #[test]
    fn raw_signatures_are_ed25519_dalek_s() {
        use ed25519_dalek::Signer;
        let key = IssuerKey::generate("123456789012");
        for msg in [&b""[..], b"product key", &[7u8; 1000]] {
            assert_eq!(key.sign_bytes(msg), key.signing.sign(msg).to_bytes());
        }
    }

    #[test]
    fn compact_signature_is_byte_for_byte_what_jsonwebtoken_makes() {
        let key = IssuerKey::generate("123456789012");
        let claims = json!({"licenseArn": "arn:aws:license-manager::123456789012:license:l-1", "exp": 4_000_000_000i64, "entitlements": [{"name": "Seats", "value": "1"}]});
        assert_eq!(key.sign(&claims).unwrap(), key.sign_with_jsonwebtoken(&claims).unwrap());
    }

    #[test]
    fn reloaded_key_keeps_its_kid() {
        let key = IssuerKey::generate("123456789012");
        let again = IssuerKey::from_pkcs8_der("123456789012", &key.to_pkcs8_der().unwrap()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
    }

    #[test]
    fn ps384_tokens_verify_with_the_rsa_jwk() {
        let key = RsaIssuerKey::generate("123456789012").unwrap();
        let again = RsaIssuerKey::from_pkcs1_der("123456789012", &key.to_pkcs1_der().unwrap()).unwrap();
        assert_eq!(key.kid(), again.kid());
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let t = key.sign(&json!({"borrowed": true, "exp": 4_000_000_000i64})).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&t).unwrap().alg, Algorithm::PS384);
        assert_eq!(verify(&t, &jwks, 0).unwrap()["borrowed"], true);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"borrowed":false,"exp":4000000000}"#);
        assert!(matches!(
            verify(&parts.join("."), &jwks, 0),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn tampering_expiry_and_strangers_are_refused() {
        let key = IssuerKey::generate("123456789012");
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let t = key.sign(&json!({"units": 1, "exp": 2_000_000_000i64})).unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"units":9,"exp":2000000000}"#);
        assert!(matches!(
            verify(&parts.join("."), &jwks, 0),
            Err(TokenError::BadSignature)
        ));
        assert!(matches!(verify(&t, &jwks, 2_000_000_001), Err(TokenError::Expired(_))));
        let other = Jwks {
            keys: vec![IssuerKey::generate("210987654321").public_jwk()],
        };
        assert!(matches!(verify(&t, &other, 0), Err(TokenError::UnknownKey(_))));
        assert!(matches!(verify("not-a-token", &jwks, 0), Err(TokenError::Malformed(_))));
    }
}
