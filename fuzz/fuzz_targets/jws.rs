//! Compact JWS verification (checkout, refresh and access tokens): any text
//! is refused or accepted without a panic, and only what the issuer signed is
//! accepted, with its claims unchanged.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_token::{verify, Jwks};

struct Fixture {
    jwks: Jwks,
    token: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (issuer, jwks) = tessera_fuzz::issuer();
        let token = issuer
            .sign(&serde_json::json!({"sub": "222222222222", "iat": 1_700_000_000i64, "exp": 4_000_000_000i64}))
            .expect("signed");
        Fixture { jwks, token }
    })
}

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = verify(&text, &f.jwks, NOW) {
        assert_eq!(claims["sub"], "222222222222", "a token that was not signed verified");
    }
    // The signed token with the input spliced in at a position it chooses.
    if let Some((&at, rest)) = data.split_first() {
        let mut changed = f.token.clone().into_bytes();
        let at = usize::from(at) % changed.len();
        let insert = &rest[..rest.len().min(8)];
        changed.splice(at..(at + insert.len()).min(changed.len()), insert.iter().copied());
        if changed != f.token.as_bytes() {
            if let Ok(claims) = verify(&String::from_utf8_lossy(&changed), &f.jwks, NOW) {
                assert_eq!(
                    claims["sub"], "222222222222",
                    "a changed token verified with other claims"
                );
            }
        }
    }
});
