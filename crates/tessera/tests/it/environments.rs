//! BYOC environments: registration, allocation split across environments, product keys.

use serde_json::{json, Value};

use crate::helpers::{create, kind, seed_license, Account, TestApp};

fn aku_license(sku: &str, beneficiary: &tessera_core::AccountId, max: i64) -> Value {
    let mut l = seed_license(sku, beneficiary);
    l["Entitlements"] = json!([{"Name": "AKU", "MaxCount": max, "Unit": "Count"}]);
    l
}

async fn register(
    vendor: &Account,
    arn: &str,
    env: &str,
    install: &str,
    aku: i64,
    bucket: &str,
) -> Result<Value, tessera_client::ClientError> {
    vendor
        .client
        .call_tessera(
            "RegisterEnvironment",
            &json!({"LicenseArn": arn, "EnvironmentId": env, "InstallId": install, "OpsBucket": bucket,
                    "CloudProvider": "aws", "Region": "us-east-1", "Aku": aku}),
        )
        .await
}

#[tokio::test]
async fn a_license_splits_across_environments_and_never_overshoots() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, aku_license("byoc", &customer.id, 300)).await;
    let bucket = format!("file://{}", app.dir.path().join("ops").display());
    register(&vendor, &arn, "env-a", "0123456789abcdef", 100, &bucket)
        .await
        .unwrap();
    register(&vendor, &arn, "env-b", "fedcba9876543210", 200, &bucket)
        .await
        .unwrap();
    let e = register(&vendor, &arn, "env-c", "00000000aaaaaaaa", 1, &bucket)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("ResourceLimitExceededException"));
    assert!(e.to_string().contains("300 of 300"), "{e}");
    assert_eq!(
        kind(register(&vendor, &arn, "9bad", "0123456789abcdef", 1, &bucket).await),
        "ValidationException"
    );
    assert_eq!(
        kind(register(&customer, &arn, "env-z", "0123456789abcdef", 1, &bucket).await),
        "AccessDeniedException"
    );

    // Shrink one, grow the other, concurrently with a third party racing for the same room.
    vendor
        .client
        .call_tessera("AllocateEnvironment", &json!({"EnvironmentId": "env-a", "Aku": 50}))
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..20 {
        let c = vendor.client.clone();
        let arn = arn.clone();
        let bucket = bucket.clone();
        racers.push(tokio::spawn(async move {
            c.call_tessera(
                "RegisterEnvironment",
                &json!({"LicenseArn": arn, "EnvironmentId": format!("race-{i}"), "InstallId": format!("race-install-{i}"),
                        "OpsBucket": bucket, "CloudProvider": "aws", "Region": "us-east-1", "Aku": 10}),
            )
            .await
            .is_ok()
        }));
    }
    let mut won = 0;
    for r in racers {
        won += r.await.unwrap() as i64;
    }
    assert_eq!(won, 5, "50 AKU were free: exactly five 10-AKU environments fit");
    let listed = vendor
        .client
        .call_tessera("ListEnvironments", &json!({"LicenseArn": arn}))
        .await
        .unwrap();
    let total: i64 = listed["Environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["AkuAllocated"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 300);
}

#[tokio::test]
async fn allocations_cannot_shrink_below_reported_use() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, aku_license("use", &customer.id, 300)).await;
    register(&vendor, &arn, "env-a", "0123456789abcdef", 100, "file:///tmp/unused")
        .await
        .unwrap();
    // The customer's agent reports usage with the customer's keys.
    customer
        .client
        .call_tessera(
            "ReportEnvironmentUsage",
            &json!({"EnvironmentId": "env-a", "InstallId": "0123456789abcdef", "AkuInUse": 60}),
        )
        .await
        .unwrap();
    let e = vendor
        .client
        .call_tessera("AllocateEnvironment", &json!({"EnvironmentId": "env-a", "Aku": 59}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("ConflictException"));
    assert!(e.to_string().contains("60"), "{e}");
    vendor
        .client
        .call_tessera("AllocateEnvironment", &json!({"EnvironmentId": "env-a", "Aku": 60}))
        .await
        .unwrap();
    let stranger = app.account("stranger").await;
    assert_eq!(
        kind(
            stranger
                .client
                .call_tessera(
                    "GetEnvironmentLicense",
                    &json!({"EnvironmentId": "env-a", "InstallId": "0123456789abcdef"})
                )
                .await
        ),
        "ResourceNotFoundException"
    );
}

#[tokio::test]
async fn product_keys_are_signed_for_the_install_and_published_to_the_bucket() {
    let app = TestApp::spawn().await;
    let vendor = app.account("vendor").await;
    let customer = app.account("customer").await;
    let arn = create(&vendor, aku_license("keys", &customer.id, 300)).await;
    let ops = app.dir.path().join("ops-bucket");
    register(
        &vendor,
        &arn,
        "env-a",
        "0123456789abcdef",
        100,
        &format!("file://{}", ops.display()),
    )
    .await
    .unwrap();
    let issued = vendor
        .client
        .call_tessera("IssueProductKey", &json!({"EnvironmentId": "env-a"}))
        .await
        .unwrap();
    let key = issued["ProductKey"].as_str().unwrap();
    assert!(key.starts_with("eyJpbnN0YWxsSWQiOi"));
    let jwks: tessera_token::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", app.endpoint))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = tessera_token::product_key::verify(key, &jwks).unwrap();
    assert_eq!(
        (body.install_id.as_str(), body.environment_id.as_str(), body.aku),
        ("0123456789abcdef", "env-a", 100)
    );
    assert_eq!(body.license_arn, arn);

    vendor
        .client
        .call_tessera("AllocateEnvironment", &json!({"EnvironmentId": "env-a", "Aku": 150}))
        .await
        .unwrap();
    vendor
        .client
        .call_tessera("PublishProductKey", &json!({"EnvironmentId": "env-a"}))
        .await
        .unwrap();
    let written = std::fs::read_to_string(ops.join("tessera/product-key")).unwrap();
    assert_eq!(tessera_token::product_key::verify(&written, &jwks).unwrap().aku, 150);
    let pulled = customer
        .client
        .call_tessera(
            "GetEnvironmentLicense",
            &json!({"EnvironmentId": "env-a", "InstallId": "0123456789abcdef"}),
        )
        .await
        .unwrap();
    assert_eq!(
        tessera_token::product_key::verify(pulled["ProductKey"].as_str().unwrap(), &jwks)
            .unwrap()
            .aku,
        150
    );
}
