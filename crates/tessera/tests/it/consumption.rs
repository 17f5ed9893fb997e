//! Checkout, check-in, extension and expiry: exact counts under concurrency.

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::{checkout_body, consumed, create, fingerprint, kind, seed_license, uuid, TestApp};

#[tokio::test]
async fn sixty_four_clients_race_for_five_seats() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("race", &customer.id)).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = tessera_client::Client::new(&app.endpoint, customer.creds.clone());
        let body = checkout_body("race", &vendor.id, 1);
        tasks.push(tokio::spawn(async move { client.call("CheckoutLicense", &body).await }));
    }
    let (mut granted, mut refused, mut tokens) = (0, 0, HashSet::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                granted += 1;
                tokens.insert(v["LicenseConsumptionToken"].as_str().unwrap().to_owned());
            }
            Err(e) => {
                assert_eq!(e.kind(), Some("NoEntitlementsAllowedException"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((granted, refused, tokens.len()), (5, 59, 5));
    assert_eq!(consumed(&customer.client, &arn).await, "5");
}

#[tokio::test]
async fn check_in_returns_the_seat_and_only_once() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("sku", &customer.id)).await;
    let r = customer
        .client
        .call("CheckoutLicense", &checkout_body("sku", &vendor.id, 5))
        .await
        .unwrap();
    assert_eq!(
        kind(
            customer
                .client
                .call("CheckoutLicense", &checkout_body("sku", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    let token = r["LicenseConsumptionToken"].as_str().unwrap();
    customer
        .client
        .call("CheckInLicense", &json!({"LicenseConsumptionToken": token}))
        .await
        .unwrap();
    assert_eq!(consumed(&customer.client, &arn).await, "0");
    assert_eq!(
        kind(
            customer
                .client
                .call("CheckInLicense", &json!({"LicenseConsumptionToken": token}))
                .await
        ),
        "ConflictException"
    );
    assert_eq!(
        kind(
            vendor
                .client
                .call("CheckInLicense", &json!({"LicenseConsumptionToken": token}))
                .await
        ),
        "AccessDeniedException"
    );
    assert_eq!(
        kind(
            customer
                .client
                .call("CheckInLicense", &json!({"LicenseConsumptionToken": "nope"}))
                .await
        ),
        "ResourceNotFoundException"
    );
}

#[tokio::test]
async fn client_tokens_make_checkout_idempotent() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("idem", &customer.id)).await;
    let body = checkout_body("idem", &vendor.id, 2);
    let first = customer.client.call("CheckoutLicense", &body).await.unwrap();
    let again = customer.client.call("CheckoutLicense", &body).await.unwrap();
    assert_eq!(
        first, again,
        "a retry returns the original answer, signed token included"
    );
    assert_eq!(consumed(&customer.client, &arn).await, "2");
    let mut changed = body.clone();
    changed["Entitlements"][0]["Value"] = json!("3");
    assert_eq!(
        kind(customer.client.call("CheckoutLicense", &changed).await),
        "ValidationException"
    );
    assert_eq!(consumed(&customer.client, &arn).await, "2");
}

#[tokio::test]
async fn provisional_consumption_expires_and_extension_moves_expiry() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("ttl", &customer.id)).await;
    let a = customer
        .client
        .call("CheckoutLicense", &checkout_body("ttl", &vendor.id, 2))
        .await
        .unwrap();
    let b = customer
        .client
        .call("CheckoutLicense", &checkout_body("ttl", &vendor.id, 3))
        .await
        .unwrap();
    assert_eq!(consumed(&customer.client, &arn).await, "5");
    app.advance(30 * 60);
    let ext = customer
        .client
        .call(
            "ExtendLicenseConsumption",
            &json!({"LicenseConsumptionToken": b["LicenseConsumptionToken"]}),
        )
        .await
        .unwrap();
    assert!(ext["Expiration"].as_str().unwrap() > b["Expiration"].as_str().unwrap());
    app.advance(31 * 60);
    // `a` is 61 minutes old: its 2 seats are back. `b` was extended 31 minutes ago.
    assert_eq!(consumed(&customer.client, &arn).await, "3");
    customer
        .client
        .call("CheckoutLicense", &checkout_body("ttl", &vendor.id, 2))
        .await
        .unwrap();
    assert_eq!(
        kind(
            customer
                .client
                .call(
                    "ExtendLicenseConsumption",
                    &json!({"LicenseConsumptionToken": a["LicenseConsumptionToken"]})
                )
                .await
        ),
        "ResourceNotFoundException"
    );
    assert_eq!(
        kind(
            customer
                .client
                .call(
                    "CheckInLicense",
                    &json!({"LicenseConsumptionToken": a["LicenseConsumptionToken"]})
                )
                .await
        ),
        "ConflictException"
    );
}

#[tokio::test]
async fn dry_run_extension_changes_nothing() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    create(&vendor, seed_license("dry", &customer.id)).await;
    let c = customer
        .client
        .call("CheckoutLicense", &checkout_body("dry", &vendor.id, 1))
        .await
        .unwrap();
    app.advance(600);
    let dry = customer
        .client
        .call(
            "ExtendLicenseConsumption",
            &json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"], "DryRun": true}),
        )
        .await
        .unwrap();
    assert_eq!(dry["Expiration"], c["Expiration"]);
}

#[tokio::test]
async fn acknowledged_checkouts_and_expiries_survive_a_restart() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("durable", &customer.id)).await;
    customer
        .client
        .call("CheckoutLicense", &checkout_body("durable", &vendor.id, 4))
        .await
        .unwrap();
    let app = app.restart().await;
    let client = tessera_client::Client::new(&app.endpoint, customer.creds.clone());
    assert_eq!(consumed(&client, &arn).await, "4");
    app.advance(61 * 60);
    assert_eq!(
        consumed(&client, &arn).await,
        "0",
        "expiry is stored, so it holds after a restart"
    );
}

#[tokio::test]
async fn perpetual_consumption_is_permanent_and_overage_is_reported() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let mut body = seed_license("over", &customer.id);
    body["Entitlements"][0]["Overage"] = json!(true);
    let arn = create(&vendor, body).await;
    let mut perpetual = checkout_body("over", &vendor.id, 7);
    perpetual["CheckoutType"] = json!("PERPETUAL");
    let c = customer.client.call("CheckoutLicense", &perpetual).await.unwrap();
    let usage = customer
        .client
        .call("GetLicenseUsage", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    let u = &usage["LicenseUsage"]["EntitlementUsages"][0];
    assert_eq!(
        (u["ConsumedValue"].as_str(), u["MaxCount"].as_str()),
        (Some("7"), Some("5"))
    );
    assert_eq!(
        kind(
            customer
                .client
                .call(
                    "CheckInLicense",
                    &json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"]})
                )
                .await
        ),
        "ValidationException"
    );
    app.advance(2 * 3600);
    assert_eq!(consumed(&customer.client, &arn).await, "7", "PERPETUAL never returns");
}

#[tokio::test]
async fn check_in_is_refused_when_the_license_forbids_it() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let mut body = seed_license("nocheckin", &customer.id);
    body["Entitlements"][0]["AllowCheckIn"] = json!(false);
    create(&vendor, body).await;
    let c = customer
        .client
        .call("CheckoutLicense", &checkout_body("nocheckin", &vendor.id, 1))
        .await
        .unwrap();
    let e = customer
        .client
        .call(
            "CheckInLicense",
            &json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("ValidationException"));
    assert!(e.to_string().contains("AllowCheckIn"), "{e}");
}

#[tokio::test]
async fn tiers_return_only_what_the_license_holds() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let mut body = seed_license("tier", &customer.id);
    body["Entitlements"] = json!([{"Name": "IntermediateTier", "Value": "Enabled", "Unit": "None"}]);
    create(&vendor, body).await;
    let r = customer
        .client
        .call(
            "CheckoutLicense",
            &json!({
                "ProductSKU": "tier", "CheckoutType": "PROVISIONAL", "KeyFingerprint": fingerprint(&vendor.id),
                "Entitlements": [
                    {"Name": "BasicTier", "Unit": "None"},
                    {"Name": "IntermediateTier", "Unit": "None"},
                    {"Name": "PremiumTier", "Unit": "None"}
                ],
                "ClientToken": uuid(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        r["EntitlementsAllowed"],
        json!([{"Name": "IntermediateTier", "Value": "Enabled", "Unit": "None"}])
    );
}

#[tokio::test]
async fn who_may_check_out() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let stranger = app.account("stranger").await;
    create(&vendor, seed_license("who", &customer.id)).await;
    assert_eq!(
        kind(
            stranger
                .client
                .call("CheckoutLicense", &checkout_body("who", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    let e = vendor
        .client
        .call("CheckoutLicense", &checkout_body("who", &vendor.id, 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Beneficiary"), "{e}");
    let mut on_behalf = checkout_body("who", &vendor.id, 1);
    on_behalf["Beneficiary"] = json!(customer.id.as_str());
    vendor
        .client
        .call("CheckoutLicense", &on_behalf)
        .await
        .expect("the issuer may check out naming the beneficiary");
    let mut wrong_fp = checkout_body("who", &vendor.id, 1);
    wrong_fp["KeyFingerprint"] = json!(format!("aws:{}:Other:issuer-fingerprint", vendor.id));
    assert_eq!(
        kind(customer.client.call("CheckoutLicense", &wrong_fp).await),
        "NoEntitlementsAllowedException"
    );
}

#[tokio::test]
async fn signed_tokens_verify_against_the_published_jwks() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    create(&vendor, seed_license("jwt", &customer.id)).await;
    let mut body = checkout_body("jwt", &vendor.id, 1);
    body["NodeId"] = json!("10.0.21.57");
    let r = customer.client.call("CheckoutLicense", &body).await.unwrap();
    let jwks: tessera_token::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", app.endpoint))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["SignedToken"].as_str().unwrap();
    let claims = tessera_token::verify(token, &jwks, time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    assert_eq!(claims["licenseConsumptionToken"], r["LicenseConsumptionToken"]);
    assert_eq!(claims["nodeId"], "10.0.21.57");
    assert_eq!(claims["keyFingerprint"], fingerprint(&vendor.id));
    assert_eq!(claims["productSKU"], "jwt");
    assert_eq!(claims["beneficiary"], customer.id.as_str());
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    // Change one character of the payload: the signature no longer holds.
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered_payload = parts[1].replacen('e', "f", 1);
    parts[1] = &tampered_payload;
    assert!(tessera_token::verify(&parts.join("."), &jwks, 0).is_err());
}
