//! Licenses: creation, validation, versions, deletion, listing, tags and isolation.

use serde_json::json;

use crate::helpers::{checkout_body, consumed, create, kind, seed_license, uuid, TestApp};

#[tokio::test]
async fn create_license_is_idempotent_per_client_token() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let body = seed_license("sku", &customer.id);
    let a = vendor.client.call("CreateLicense", &body).await.unwrap();
    let b = vendor.client.call("CreateLicense", &body).await.unwrap();
    assert_eq!(a, b);
    assert!(a["LicenseArn"]
        .as_str()
        .unwrap()
        .starts_with(&format!("arn:aws:license-manager::{}:license:l-", vendor.id)));
    assert_eq!(
        (a["Status"].as_str(), a["Version"].as_str()),
        (Some("AVAILABLE"), Some("1"))
    );
    let mut other = body.clone();
    other["LicenseName"] = json!("another");
    assert_eq!(
        kind(vendor.client.call("CreateLicense", &other).await),
        "ValidationException"
    );
    let listed = vendor.client.call("ListLicenses", &json!({})).await.unwrap();
    assert_eq!(listed["Licenses"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_licenses_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let cases = [
        ("/Validity/End", json!("2025-01-01T00:00:00Z"), "Validity.End"),
        ("/Validity/Begin", json!("2026-01-01T00:00:00"), "Validity.Begin"),
        ("/Entitlements/0/Unit", json!("Apples"), "Entitlements[0].Unit"),
        ("/LicenseName", json!("x".repeat(256)), "LicenseName"),
        (
            "/ConsumptionConfiguration/RenewType",
            json!("Daily"),
            "ConsumptionConfiguration.RenewType",
        ),
    ];
    for (pointer, value, field) in cases {
        let mut body = seed_license("bad", &customer.id);
        *body.pointer_mut(pointer).unwrap() = value;
        let e = vendor.client.call("CreateLicense", &body).await.unwrap_err();
        assert_eq!(e.kind(), Some("ValidationException"), "{pointer}: {e}");
        assert!(e.to_string().contains(field), "{pointer}: {e}");
    }
    let mut tier_with_count = seed_license("bad", &customer.id);
    tier_with_count["Entitlements"] = json!([{"Name": "T", "Unit": "None", "MaxCount": 3}]);
    let e = vendor.client.call("CreateLicense", &tier_with_count).await.unwrap_err();
    assert!(e.to_string().contains("Entitlements[0].MaxCount"), "{e}");
    assert!(
        vendor.client.call("ListLicenses", &json!({})).await.unwrap()["Licenses"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn version_body(arn: &str, status: &str, source: Option<&str>, max: i64) -> serde_json::Value {
    let mut v = json!({
        "LicenseArn": arn,
        "LicenseName": "AWSMP Test License",
        "ProductName": "Test Product",
        "Issuer": {"Name": "Self"},
        "HomeRegion": "us-east-1",
        "Validity": {"Begin": "2026-01-01T00:00:00Z", "End": "2099-01-01T00:00:00Z"},
        "Entitlements": [{"Name": "ReadOnly", "MaxCount": max, "Unit": "Count", "AllowCheckIn": true}],
        "ConsumptionConfiguration": {"ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}},
        "Status": status,
        "ClientToken": uuid(),
    });
    if let Some(s) = source {
        v["SourceVersion"] = json!(s);
    }
    v
}

#[tokio::test]
async fn versions_are_immutable_and_conflicts_are_detected() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("ver", &customer.id)).await;
    customer
        .client
        .call("CheckoutLicense", &checkout_body("ver", &vendor.id, 5))
        .await
        .unwrap();

    let v2 = vendor
        .client
        .call("CreateLicenseVersion", &version_body(&arn, "AVAILABLE", Some("1"), 10))
        .await
        .unwrap();
    assert_eq!(v2["Version"], "2");
    assert_eq!(
        consumed(&customer.client, &arn).await,
        "5",
        "usage carries over to the new version"
    );
    customer
        .client
        .call("CheckoutLicense", &checkout_body("ver", &vendor.id, 5))
        .await
        .unwrap();
    assert_eq!(
        kind(
            vendor
                .client
                .call("CreateLicenseVersion", &version_body(&arn, "AVAILABLE", Some("1"), 10))
                .await
        ),
        "ConflictException"
    );

    let mut reset = version_body(&arn, "AVAILABLE", Some("2"), 10);
    reset["ResetUsage"] = json!(true);
    vendor.client.call("CreateLicenseVersion", &reset).await.unwrap();
    assert_eq!(consumed(&customer.client, &arn).await, "0");

    vendor
        .client
        .call("CreateLicenseVersion", &version_body(&arn, "SUSPENDED", Some("3"), 10))
        .await
        .unwrap();
    let e = customer
        .client
        .call("CheckoutLicense", &checkout_body("ver", &vendor.id, 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("NoEntitlementsAllowedException"));
    assert!(e.to_string().contains("SUSPENDED"), "{e}");

    let old = customer
        .client
        .call("GetLicense", &json!({"LicenseArn": arn, "Version": "1"}))
        .await
        .unwrap();
    assert_eq!(old["License"]["Entitlements"][0]["MaxCount"], 5);
    assert_eq!(old["License"]["Status"], "AVAILABLE");
    let cur = customer
        .client
        .call("GetLicense", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    assert_eq!(
        (cur["License"]["Version"].as_str(), cur["License"]["Status"].as_str()),
        (Some("4"), Some("SUSPENDED"))
    );
    let all = vendor
        .client
        .call("ListLicenseVersions", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    let versions: Vec<&str> = all["Licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn deleted_licenses_stop_checkouts_and_stay_readable() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, seed_license("del", &customer.id)).await;
    assert_eq!(
        kind(
            vendor
                .client
                .call("DeleteLicense", &json!({"LicenseArn": arn, "SourceVersion": "7"}))
                .await
        ),
        "ConflictException"
    );
    let d = vendor
        .client
        .call("DeleteLicense", &json!({"LicenseArn": arn, "SourceVersion": "1"}))
        .await
        .unwrap();
    assert_eq!(d["Status"], "DELETED");
    assert!(d["DeletionDate"].as_str().unwrap().ends_with('Z'));
    let e = customer
        .client
        .call("CheckoutLicense", &checkout_body("del", &vendor.id, 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("DELETED"), "{e}");
    let got = customer
        .client
        .call("GetLicense", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    assert_eq!(got["License"]["Status"], "DELETED");
}

#[tokio::test]
async fn strangers_are_refused_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let stranger = app.account("stranger").await;
    let arn = create(&vendor, seed_license("iso", &customer.id)).await;
    for (op, body) in [
        ("GetLicense", json!({"LicenseArn": arn})),
        ("GetLicenseUsage", json!({"LicenseArn": arn})),
        ("ListLicenseVersions", json!({"LicenseArn": arn})),
        ("DeleteLicense", json!({"LicenseArn": arn, "SourceVersion": "1"})),
        ("CreateLicenseVersion", version_body(&arn, "SUSPENDED", None, 1)),
        (
            "TagResource",
            json!({"ResourceArn": arn, "Tags": [{"Key": "k", "Value": "v"}]}),
        ),
        ("ListTagsForResource", json!({"ResourceArn": arn})),
    ] {
        assert_eq!(
            kind(stranger.client.call(op, &body).await),
            "AccessDeniedException",
            "{op}"
        );
    }
    // The beneficiary reads but may not change.
    assert_eq!(
        kind(
            customer
                .client
                .call("DeleteLicense", &json!({"LicenseArn": arn, "SourceVersion": "1"}))
                .await
        ),
        "AccessDeniedException"
    );
    let cur = vendor
        .client
        .call("GetLicense", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    assert_eq!(
        (cur["License"]["Version"].as_str(), cur["License"]["Status"].as_str()),
        (Some("1"), Some("AVAILABLE"))
    );
    assert!(
        stranger.client.call("ListLicenses", &json!({})).await.unwrap()["Licenses"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        stranger.client.call("ListReceivedLicenses", &json!({})).await.unwrap()["Licenses"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let missing = format!("arn:aws:license-manager::{}:license:l-{}", vendor.id, "0".repeat(32));
    assert_eq!(
        kind(vendor.client.call("GetLicense", &json!({"LicenseArn": missing})).await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        kind(
            vendor
                .client
                .call("GetLicense", &json!({"LicenseArn": "arn:nope"}))
                .await
        ),
        "ValidationException"
    );
}

#[tokio::test]
async fn lists_page_and_filter() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    for i in 0..7 {
        create(&vendor, seed_license(&format!("page-{}", i % 2), &customer.id)).await;
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut body = json!({"MaxResults": 3});
        if let Some(t) = &next {
            body["NextToken"] = json!(t);
        }
        let r = customer.client.call("ListReceivedLicenses", &body).await.unwrap();
        let page = r["Licenses"].as_array().unwrap();
        seen.push(page.len());
        assert_eq!(page[0]["ReceivedMetadata"]["ReceivedStatus"], "ACTIVE");
        match r["NextToken"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [3, 3, 1]);
    let filtered = vendor
        .client
        .call(
            "ListLicenses",
            &json!({"Filters": [{"Name": "ProductSKU", "Values": ["page-1"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(filtered["Licenses"].as_array().unwrap().len(), 3);
    assert_eq!(
        kind(
            vendor
                .client
                .call(
                    "ListLicenses",
                    &json!({"Filters": [{"Name": "Color", "Values": ["red"]}]})
                )
                .await
        ),
        "ValidationException"
    );
    assert_eq!(
        kind(vendor.client.call("ListLicenses", &json!({"MaxResults": 101})).await),
        "ValidationException"
    );
    assert_eq!(
        kind(
            vendor
                .client
                .call("ListLicenses", &json!({"NextToken": "forged"}))
                .await
        ),
        "ValidationException"
    );
}

#[tokio::test]
async fn tags_round_trip() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let mut body = seed_license("tags", &customer.id);
    body["Tags"] = json!([{"Key": "team", "Value": "a"}]);
    let arn = create(&vendor, body).await;
    vendor
        .client
        .call(
            "TagResource",
            &json!({"ResourceArn": arn, "Tags": [{"Key": "env", "Value": "prod"}]}),
        )
        .await
        .unwrap();
    vendor
        .client
        .call("UntagResource", &json!({"ResourceArn": arn, "TagKeys": ["team"]}))
        .await
        .unwrap();
    let t = vendor
        .client
        .call("ListTagsForResource", &json!({"ResourceArn": arn}))
        .await
        .unwrap();
    assert_eq!(t["Tags"], json!([{"Key": "env", "Value": "prod"}]));
}
