//! SigV4 verification and the AWS error shapes of refused requests.

use serde_json::json;
use tessera_client::{Client, Credentials};

use crate::helpers::{kind, TestApp};

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let app = TestApp::spawn().await;
    let a = app.account("a").await;
    let forged = Client::new(
        &app.endpoint,
        Credentials {
            access_key_id: a.creds.access_key_id.clone(),
            secret_access_key: "not-the-secret".into(),
        },
    );
    assert_eq!(
        kind(forged.call("ListLicenses", &json!({})).await),
        "InvalidSignatureException"
    );
    a.client
        .call("ListLicenses", &json!({}))
        .await
        .expect("the right secret works");
}

#[tokio::test]
async fn unknown_and_revoked_keys_are_unrecognized() {
    let app = TestApp::spawn().await;
    let a = app.account("a").await;
    let stranger = Client::new(
        &app.endpoint,
        Credentials {
            access_key_id: "AKIAUNKNOWNUNKNOWN00".into(),
            secret_access_key: "x".into(),
        },
    );
    assert_eq!(
        kind(stranger.call("ListLicenses", &json!({})).await),
        "UnrecognizedClientException"
    );
    app.store
        .revoke_access_key(&a.creds.access_key_id, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        kind(a.client.call("ListLicenses", &json!({})).await),
        "UnrecognizedClientException"
    );
}

#[tokio::test]
async fn unsigned_malformed_and_unknown_requests_get_json_errors() {
    let app = TestApp::spawn().await;
    let a = app.account("a").await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/", app.endpoint))
        .header("x-amz-target", "AWSLicenseManager.ListLicenses")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["__type"], "MissingAuthenticationTokenException");
    assert!(v["Message"].as_str().unwrap().len() > 10);

    assert_eq!(
        kind(a.client.call("NoSuchOperation", &json!({})).await),
        "UnknownOperationException"
    );

    let r = http.get(format!("{}/nowhere", app.endpoint)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
}

#[tokio::test]
async fn malformed_json_is_a_serialization_error() {
    let app = TestApp::spawn().await;
    let a = app.account("a").await;
    assert_eq!(
        kind(a.client.call_raw("ListLicenses", "{not json".into()).await),
        "SerializationException"
    );
    assert_eq!(
        kind(a.client.call("ListLicenses", &json!({"MaxResults": "ten"})).await),
        "SerializationException"
    );
}
