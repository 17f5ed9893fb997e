//! Grants between accounts, borrowing, and workload tokens.

use serde_json::{json, Value};

use crate::helpers::{checkout_body, consumed, create, kind, seed_license, uuid, Account, TestApp};

async fn grant(from: &Account, license: &str, to: &Account, ops: &[&str]) -> String {
    let r = from
        .client
        .call(
            "CreateGrant",
            &json!({
                "ClientToken": uuid(), "GrantName": "g", "LicenseArn": license,
                "Principals": [format!("arn:aws:iam::{}:root", to.id)], "HomeRegion": "us-east-1",
                "AllowedOperations": ops,
            }),
        )
        .await
        .expect("CreateGrant");
    assert_eq!(r["Status"], "PENDING_ACCEPT");
    r["GrantArn"].as_str().unwrap().to_owned()
}

async fn set_status(who: &Account, arn: &str, status: &str) -> Value {
    who.client
        .call(
            "CreateGrantVersion",
            &json!({"ClientToken": uuid(), "GrantArn": arn, "Status": status}),
        )
        .await
        .expect("CreateGrantVersion")
}

async fn accept_and_activate(who: &Account, arn: &str) {
    let a = who.client.call("AcceptGrant", &json!({"GrantArn": arn})).await.unwrap();
    assert_eq!(
        (a["Status"].as_str(), a["Version"].as_str()),
        (Some("DISABLED"), Some("2"))
    );
    let v = set_status(who, arn, "ACTIVE").await;
    assert_eq!(
        (v["Status"].as_str(), v["Version"].as_str()),
        (Some("ACTIVE"), Some("3"))
    );
}

#[tokio::test]
async fn grants_hand_a_license_on_and_take_it_back() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let team = app.account("team").await;
    let stranger = app.account("stranger").await;
    let arn = create(&vendor, seed_license("g", &customer.id)).await;
    let g1 = grant(
        &vendor,
        &arn,
        &team,
        &["CheckoutLicense", "CheckInLicense", "CreateGrant"],
    )
    .await;

    assert_eq!(
        kind(vendor.client.call("AcceptGrant", &json!({"GrantArn": g1})).await),
        "AccessDeniedException"
    );
    assert_eq!(
        kind(stranger.client.call("GetGrant", &json!({"GrantArn": g1})).await),
        "AccessDeniedException"
    );
    assert_eq!(
        kind(
            team.client
                .call("CheckoutLicense", &checkout_body("g", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    assert_eq!(
        kind(team.client.call("GetLicense", &json!({"LicenseArn": arn})).await),
        "AccessDeniedException"
    );
    accept_and_activate(&team, &g1).await;

    let c = team
        .client
        .call("CheckoutLicense", &checkout_body("g", &vendor.id, 2))
        .await
        .unwrap();
    assert_eq!(consumed(&vendor.client, &arn).await, "2");
    let received = team.client.call("ListReceivedLicenses", &json!({})).await.unwrap();
    let meta = &received["Licenses"][0]["ReceivedMetadata"];
    assert_eq!(meta["ReceivedStatus"], "ACTIVE");
    assert_eq!(
        meta["AllowedOperations"],
        json!(["CheckoutLicense", "CheckInLicense", "CreateGrant"])
    );
    // The grant does not allow ExtendConsumptionLicense.
    assert_eq!(
        kind(
            team.client
                .call(
                    "ExtendLicenseConsumption",
                    &json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"]})
                )
                .await
        ),
        "AccessDeniedException"
    );

    // Re-grant to a sub-account: never more than the parent holds.
    let sub = app.account("sub").await;
    let denied = team
        .client
        .call(
            "CreateGrant",
            &json!({"ClientToken": uuid(), "GrantName": "x", "LicenseArn": arn,
                    "Principals": [format!("arn:aws:iam::{}:root", sub.id)], "HomeRegion": "us-east-1",
                    "AllowedOperations": ["CheckoutLicense", "CreateToken"]}),
        )
        .await;
    assert_eq!(kind(denied), "AccessDeniedException");
    let g2 = grant(&team, &arn, &sub, &["CheckoutLicense"]).await;
    accept_and_activate(&sub, &g2).await;
    sub.client
        .call("CheckoutLicense", &checkout_body("g", &vendor.id, 1))
        .await
        .unwrap();

    // Deactivating the middle grant stops the whole chain at once; units out stay out.
    set_status(&team, &g1, "DISABLED").await;
    assert_eq!(
        kind(
            sub.client
                .call("CheckoutLicense", &checkout_body("g", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    assert_eq!(
        kind(
            team.client
                .call("CheckoutLicense", &checkout_body("g", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    assert_eq!(consumed(&vendor.client, &arn).await, "3");
    set_status(&team, &g1, "ACTIVE").await;
    team.client
        .call(
            "CheckInLicense",
            &json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"]}),
        )
        .await
        .unwrap();

    // Only the grantor deletes, naming the current version.
    let cur = vendor.client.call("GetGrant", &json!({"GrantArn": g1})).await.unwrap();
    let version = cur["Grant"]["Version"].as_str().unwrap().to_owned();
    assert_eq!(
        kind(
            team.client
                .call("DeleteGrant", &json!({"GrantArn": g1, "Version": version}))
                .await
        ),
        "AccessDeniedException"
    );
    assert_eq!(
        kind(
            vendor
                .client
                .call("DeleteGrant", &json!({"GrantArn": g1, "Version": "1"}))
                .await
        ),
        "ValidationException"
    );
    let d = vendor
        .client
        .call("DeleteGrant", &json!({"GrantArn": g1, "Version": version}))
        .await
        .unwrap();
    assert_eq!(d["Status"], "DELETED");
    assert_eq!(
        kind(
            team.client
                .call("CheckoutLicense", &checkout_body("g", &vendor.id, 1))
                .await
        ),
        "NoEntitlementsAllowedException"
    );
    let old = team
        .client
        .call("GetGrant", &json!({"GrantArn": g1, "Version": "2"}))
        .await
        .unwrap();
    assert_eq!(old["Grant"]["GrantStatus"], "DISABLED");
    let dist = vendor
        .client
        .call(
            "ListDistributedGrants",
            &json!({"Filters": [{"Name": "GrantStatus", "Values": ["DELETED"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(dist["Grants"].as_array().unwrap().len(), 1);
    let recv = sub.client.call("ListReceivedGrants", &json!({})).await.unwrap();
    assert_eq!(recv["Grants"][0]["ParentArn"], g1.as_str());
}

#[tokio::test]
async fn a_rejected_grant_is_rejected_for_good() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let team = app.account("team").await;
    let arn = create(&vendor, seed_license("r", &customer.id)).await;
    let g = grant(&vendor, &arn, &team, &["CheckoutLicense"]).await;
    assert_eq!(kind(set_status_raw(&team, &g, "ACTIVE").await), "ValidationException");
    let r = team.client.call("RejectGrant", &json!({"GrantArn": g})).await.unwrap();
    assert_eq!(r["Status"], "REJECTED");
    assert_eq!(
        kind(team.client.call("AcceptGrant", &json!({"GrantArn": g})).await),
        "ValidationException"
    );
    assert!(
        team.client.call("ListReceivedLicenses", &json!({})).await.unwrap()["Licenses"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn set_status_raw(who: &Account, arn: &str, status: &str) -> Result<Value, tessera_client::ClientError> {
    who.client
        .call(
            "CreateGrantVersion",
            &json!({"ClientToken": uuid(), "GrantArn": arn, "Status": status}),
        )
        .await
}

fn borrowable(sku: &str, beneficiary: &tessera_core::AccountId, early: bool) -> Value {
    let mut l = seed_license(sku, beneficiary);
    l["ConsumptionConfiguration"] =
        json!({"BorrowConfiguration": {"AllowEarlyCheckIn": early, "MaxTimeToLiveInMinutes": 1440}});
    l
}

fn borrow_body(arn: &str, method: &str) -> Value {
    json!({
        "LicenseArn": arn, "DigitalSignatureMethod": method, "ClientToken": uuid(), "NodeId": "laptop-7",
        "Entitlements": [{"Name": "ReadOnly", "Value": "2", "Unit": "Count"}],
        "CheckoutMetadata": [{"Name": "Mac", "Value": "ABCDEFGHI"}],
    })
}

#[tokio::test]
async fn borrowing_signs_ps384_and_holds_units_for_the_term() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let strict = create(&vendor, borrowable("b1", &customer.id, false)).await;
    let lenient = create(&vendor, borrowable("b2", &customer.id, true)).await;

    assert_eq!(
        kind(
            customer
                .client
                .call("CheckoutBorrowLicense", &borrow_body(&strict, "JWT_ES256"))
                .await
        ),
        "UnsupportedDigitalSignatureMethodException"
    );
    let mut partial = borrow_body(&strict, "JWT_PS384");
    partial["Entitlements"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Name": "Other", "Value": "1", "Unit": "Count"}));
    assert_eq!(
        kind(customer.client.call("CheckoutBorrowLicense", &partial).await),
        "EntitlementNotAllowedException"
    );
    assert_eq!(consumed(&customer.client, &strict).await, "0");

    let b = customer
        .client
        .call("CheckoutBorrowLicense", &borrow_body(&strict, "JWT_PS384"))
        .await
        .unwrap();
    assert_eq!(b["CheckoutMetadata"], json!([{"Name": "Mac", "Value": "ABCDEFGHI"}]));
    let jwks: tessera_token::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", app.endpoint))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = b["SignedToken"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().alg,
        jsonwebtoken::Algorithm::PS384
    );
    let claims = tessera_token::verify(token, &jwks, time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    assert_eq!(claims["checkoutMetadata"], json!({"Mac": "ABCDEFGHI"}));
    assert_eq!(claims["nodeId"], "laptop-7");

    let t = json!({"LicenseConsumptionToken": b["LicenseConsumptionToken"]});
    assert_eq!(
        kind(customer.client.call("CheckInLicense", &t).await),
        "ValidationException"
    );
    assert_eq!(
        kind(customer.client.call("ExtendLicenseConsumption", &t).await),
        "ValidationException"
    );
    assert_eq!(consumed(&customer.client, &strict).await, "2");
    app.advance(1441 * 60);
    assert_eq!(
        consumed(&customer.client, &strict).await,
        "0",
        "the borrow ends at its Expiration"
    );

    let e = customer
        .client
        .call("CheckoutBorrowLicense", &borrow_body(&lenient, "JWT_PS384"))
        .await
        .unwrap();
    customer
        .client
        .call(
            "CheckInLicense",
            &json!({"LicenseConsumptionToken": e["LicenseConsumptionToken"]}),
        )
        .await
        .unwrap();
    assert_eq!(consumed(&customer.client, &lenient).await, "0");

    let plain = create(&vendor, seed_license("b3", &customer.id)).await;
    assert_eq!(
        kind(
            customer
                .client
                .call("CheckoutBorrowLicense", &borrow_body(&plain, "JWT_PS384"))
                .await
        ),
        "ValidationException"
    );
}

async fn bearer(app: &TestApp, token: &str, op: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/", app.endpoint))
        .header("authorization", format!("Bearer {token}"))
        .header("x-amz-target", format!("AWSLicenseManager.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn workloads_check_out_with_an_access_token() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("w", &customer.id)).await;
    let other = create(&vendor, seed_license("w2", &customer.id)).await;
    let body = json!({"LicenseArn": arn, "TokenProperties": ["cluster-a", "prod"], "ClientToken": uuid()});
    let rt = customer.client.call("CreateToken", &body).await.unwrap();
    assert_eq!(
        rt,
        customer.client.call("CreateToken", &body).await.unwrap(),
        "ClientToken is idempotent"
    );
    assert_eq!(
        kind(
            vendor
                .client
                .call("CreateToken", &json!({"LicenseArn": arn, "ClientToken": uuid()}))
                .await
        ),
        "AccessDeniedException"
    );

    // No credentials at all: the refresh token is the credential.
    let unsigned = reqwest::Client::new()
        .post(format!("{}/", app.endpoint))
        .header("x-amz-target", "AWSLicenseManager.GetAccessToken")
        .body(json!({"Token": rt["Token"], "TokenProperties": ["prod"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 200);
    let access: Value = unsigned.json().await.unwrap();
    let access = access["AccessToken"].as_str().unwrap().to_owned();
    assert_eq!(
        kind(
            customer
                .client
                .call(
                    "GetAccessToken",
                    &json!({"Token": rt["Token"], "TokenProperties": ["staging"]})
                )
                .await
        ),
        "ValidationException"
    );

    let (status, c) = bearer(&app, &access, "CheckoutLicense", checkout_body("w", &vendor.id, 1)).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(consumed(&customer.client, &arn).await, "1");
    let (_, e) = bearer(&app, &access, "CheckoutLicense", checkout_body("w2", &vendor.id, 1)).await;
    assert_eq!(e["__type"], "NoEntitlementsAllowedException");
    let (_, e) = bearer(&app, &access, "GetLicense", json!({"LicenseArn": arn})).await;
    assert_eq!(e["__type"], "AccessDeniedException");
    let on_other = customer
        .client
        .call("CheckoutLicense", &checkout_body("w2", &vendor.id, 1))
        .await
        .unwrap();
    let (_, e) = bearer(
        &app,
        &access,
        "CheckInLicense",
        json!({"LicenseConsumptionToken": on_other["LicenseConsumptionToken"]}),
    )
    .await;
    assert_eq!(e["__type"], "AccessDeniedException");
    assert_eq!(consumed(&customer.client, &other).await, "1");
    let (status, _) = bearer(
        &app,
        &access,
        "CheckInLicense",
        json!({"LicenseConsumptionToken": c["LicenseConsumptionToken"]}),
    )
    .await;
    assert_eq!(status, 200);

    let listed = customer
        .client
        .call(
            "ListTokens",
            &json!({"Filters": [{"Name": "LicenseArns", "Values": [arn]}]}),
        )
        .await
        .unwrap();
    assert_eq!(listed["Tokens"][0]["TokenProperties"], json!(["cluster-a", "prod"]));
    customer
        .client
        .call("DeleteToken", &json!({"TokenId": rt["TokenId"]}))
        .await
        .unwrap();
    let (_, e) = bearer(&app, &access, "CheckoutLicense", checkout_body("w", &vendor.id, 1)).await;
    assert_eq!(
        e["__type"], "AccessDeniedException",
        "a deleted refresh token's access tokens stop working"
    );
    assert_eq!(
        kind(
            customer
                .client
                .call("GetAccessToken", &json!({"Token": rt["Token"]}))
                .await
        ),
        "AccessDeniedException"
    );
    let (_, e) = bearer(&app, "garbage", "CheckoutLicense", checkout_body("w", &vendor.id, 1)).await;
    assert_eq!(e["__type"], "AccessDeniedException");
}
