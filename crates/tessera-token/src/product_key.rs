//! Product keys: the signed document that activates one BYOC install.
//!
//! A key is standard base64 of one JSON object whose first member is
//! `installId` (so every key starts `eyJpbnN0YWxsSWQiOi`), followed by the
//! rest of [`ProductKeyBody`] and a `signature`: Ed25519 over the JSON of the
//! body (every member but the signature, in the order below), base64url.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{IssuerKey, Jwks};

/// What a product key says. Field order is part of the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductKeyBody {
    pub install_id: String,
    pub environment_id: String,
    pub license_arn: String,
    pub license_version: String,
    pub product_sku: String,
    /// The counted entitlement the allocation draws from (`AKU` by default).
    pub entitlement: String,
    pub aku: i64,
    pub valid_from: String,
    pub valid_until: String,
    pub issued_at: String,
    pub key_fingerprint: String,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductKeyError {
    #[error("the product key is malformed: {0}")]
    Malformed(String),
    #[error("the product key is signed by key '{0}', which is not a trusted issuer key")]
    UntrustedKey(String),
    #[error("the product key's signature does not verify: it was altered or not issued by the trusted issuer")]
    BadSignature,
}

/// Signs `body` (whose `key_id` must be `key`'s) into a product key.
pub fn issue(body: &ProductKeyBody, key: &IssuerKey) -> String {
    let json = serde_json::to_string(body).expect("a product key body serializes");
    let sig = URL_SAFE_NO_PAD.encode(key.sign_bytes(json.as_bytes()));
    // Append the signature as the last member, keeping installId first.
    let signed = format!("{},\"signature\":\"{sig}\"}}", &json[..json.len() - 1]);
    STANDARD.encode(signed)
}

/// Decodes a key without checking its signature (for inspection).
pub fn decode(key: &str) -> Result<(ProductKeyBody, String), ProductKeyError> {
    let raw = STANDARD
        .decode(key.trim())
        .map_err(|_| ProductKeyError::Malformed("it is not standard base64".into()))?;
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw)
        .map_err(|_| ProductKeyError::Malformed("it does not decode to a JSON object".into()))?;
    let sig = match v.remove("signature") {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(ProductKeyError::Malformed("it has no signature".into())),
    };
    let body: ProductKeyBody =
        serde_json::from_value(serde_json::Value::Object(v)).map_err(|e| ProductKeyError::Malformed(e.to_string()))?;
    Ok((body, sig))
}

/// Decodes a key and verifies its signature against the trusted issuer keys.
pub fn verify(key: &str, trusted: &Jwks) -> Result<ProductKeyBody, ProductKeyError> {
    let (body, sig) = decode(key)?;
    let jwk = trusted
        .find(&body.key_id)
        .filter(|k| k.kty == "OKP")
        .ok_or_else(|| ProductKeyError::UntrustedKey(body.key_id.clone()))?;
    let x = jwk
        .x
        .as_deref()
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ProductKeyError::UntrustedKey(body.key_id.clone()))?;
    let vk = VerifyingKey::from_bytes(&x).map_err(|_| ProductKeyError::UntrustedKey(body.key_id.clone()))?;
    let sig = URL_SAFE_NO_PAD
        .decode(&sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(ProductKeyError::BadSignature)?;
    let msg = serde_json::to_string(&body).map_err(|e| ProductKeyError::Malformed(e.to_string()))?;
    vk.verify(msg.as_bytes(), &sig)
        .map_err(|_| ProductKeyError::BadSignature)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kid: &str) -> ProductKeyBody {
        ProductKeyBody {
            install_id: "f0d3d4e6bf28c50c4c73dc77de53a6b9".into(),
            environment_id: "env-prod-1".into(),
            license_arn: "arn:aws:license-manager::111111111111:license:l-00000000000000000000000000000000".into(),
            license_version: "1".into(),
            product_sku: "automq-byoc".into(),
            entitlement: "AKU".into(),
            aku: 100,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2027-01-01T00:00:00Z".into(),
            issued_at: "2026-11-22T00:00:00Z".into(),
            key_fingerprint: "aws:111111111111:Self:issuer-fingerprint".into(),
            key_id: kid.into(),
        }
    }

    #[test]
    fn keys_start_like_the_seed_and_verify() {
        let key = IssuerKey::generate("111111111111");
        let pk = issue(&body(key.kid()), &key);
        assert!(pk.starts_with("eyJpbnN0YWxsSWQiOi"), "{pk}");
        let trusted = Jwks {
            keys: vec![key.public_jwk()],
        };
        assert_eq!(verify(&pk, &trusted).unwrap(), body(key.kid()));
    }

    #[test]
    fn any_change_is_detected() {
        let key = IssuerKey::generate("111111111111");
        let pk = issue(&body(key.kid()), &key);
        let trusted = Jwks {
            keys: vec![key.public_jwk()],
        };
        let text = String::from_utf8(STANDARD.decode(&pk).unwrap()).unwrap();
        let tampered = STANDARD.encode(text.replace("\"aku\":100", "\"aku\":900"));
        assert_eq!(verify(&tampered, &trusted), Err(ProductKeyError::BadSignature));
        let extra = STANDARD.encode(text.replacen('{', "{\"bonus\":1,", 1));
        assert!(matches!(verify(&extra, &trusted), Err(ProductKeyError::Malformed(_))));
        assert!(matches!(verify("%%%", &trusted), Err(ProductKeyError::Malformed(_))));
        let stranger = Jwks {
            keys: vec![IssuerKey::generate("222222222222").public_jwk()],
        };
        assert!(matches!(verify(&pk, &stranger), Err(ProductKeyError::UntrustedKey(_))));
    }
}
