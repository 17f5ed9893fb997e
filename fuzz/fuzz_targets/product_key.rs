//! Product keys: any text is decoded and verified without a panic, and is
//! accepted only if it is a key the trusted issuer signed, unchanged.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_token::product_key::{self, ProductKeyBody};
use tessera_token::Jwks;

struct Fixture {
    jwks: Jwks,
    key: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (issuer, jwks) = tessera_fuzz::issuer();
        let body = ProductKeyBody {
            install_id: "0123456789abcdef0123456789abcdef".into(),
            environment_id: "env-fuzz".into(),
            license_arn: "arn:aws:license-manager::111111111111:license:l-0123456789abcdef0123456789abcdef".into(),
            license_version: "1".into(),
            product_sku: "sku".into(),
            entitlement: "AKU".into(),
            aku: 40,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2027-01-01T00:00:00Z".into(),
            issued_at: "2026-01-01T00:00:00Z".into(),
            key_fingerprint: "aws:111111111111:Self:issuer-fingerprint".into(),
            key_id: issuer.kid().to_owned(),
        };
        Fixture {
            jwks,
            key: product_key::issue(&body, &issuer),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    let _ = product_key::decode(&text);
    if let Ok(body) = product_key::verify(&text, &f.jwks) {
        // Only the issued key verifies (base64 may be written with other padding).
        let issued = product_key::verify(&f.key, &f.jwks).expect("the issued key verifies");
        assert_eq!(body, issued, "a key that was not issued verified");
    }
    // The issued key with one byte changed by the input.
    if let Some((&b, rest)) = data.split_first() {
        let mut changed = f.key.clone().into_bytes();
        let at = usize::from(b) % changed.len();
        let with = rest.first().copied().unwrap_or(b'A');
        if changed[at] != with {
            changed[at] = with;
            let changed = String::from_utf8_lossy(&changed);
            if let Ok(body) = product_key::verify(&changed, &f.jwks) {
                let issued = product_key::verify(&f.key, &f.jwks).expect("the issued key verifies");
                assert_eq!(body, issued, "a changed key verified with other contents");
            }
        }
    }
});
