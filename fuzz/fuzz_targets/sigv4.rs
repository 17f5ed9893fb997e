//! SigV4: any Authorization header and any set of headers is parsed and
//! checked without a panic; a request signed with a key verifies with that
//! key whatever its method, path, query, headers and body, and no longer
//! verifies once its body (hash) or signature changes.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_sigv4::{check_request, parse_authorization, sha256_hex, verify_signature, RequestParts, Signer};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    authorization: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    extra: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    flip: u8,
}

fuzz_target!(|input: Input<'_>| {
    let now = OffsetDateTime::now_utc();
    let _ = parse_authorization(input.authorization);
    let _ = check_request(&input.headers, now);

    // A signed request of arbitrary parts: names as HTTP allows them.
    let extra: Vec<(String, &str)> = input
        .extra
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("x-amz-date"))
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    let mut headers: Vec<(&str, &str)> = vec![("host", "license-manager.example")];
    headers.extend(extra.iter().map(|(k, v)| (k.as_str(), *v)));
    let hash = sha256_hex(input.body);
    let parts = RequestParts {
        method: input.method,
        path: input.path,
        query: input.query,
        headers: &headers,
        payload_hash: &hash,
    };
    let (amz_date, authorization) = Signer::new("AKIDFUZZ", "fuzz-secret", "us-east-1").sign(&parts, now);
    let mut signed = headers.clone();
    signed.push(("x-amz-date", &amz_date));
    signed.push(("authorization", &authorization));
    let parts = RequestParts {
        headers: &signed,
        ..parts
    };
    let (auth, date) = check_request(&signed, now).expect("a request just signed passes the checks");
    verify_signature(&auth, &date, &parts, "fuzz-secret").expect("a request verifies with its own key");
    assert!(verify_signature(&auth, &date, &parts, "another-secret").is_err());

    // Another body: the signature no longer matches.
    let mut other = input.body.to_vec();
    other.push(input.flip);
    let other_hash = sha256_hex(&other);
    let changed = RequestParts {
        payload_hash: &other_hash,
        ..parts
    };
    assert!(verify_signature(&auth, &date, &changed, "fuzz-secret").is_err());
});
