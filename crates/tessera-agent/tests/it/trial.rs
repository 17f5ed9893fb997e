//! The built-in trial: 14 AKU for 14 days, and the reservation API around it.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera_agent::client::AgentClient;

use crate::helpers::*;

#[tokio::test]
async fn a_new_install_starts_the_trial_and_shows_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let s = agent.settings().await;
    assert_eq!(s["environmentId"], ENV);
    assert_eq!(s["licenseState"], "TRIAL");
    assert_eq!(s["akuAllocated"], 14);
    assert_eq!(s["akuInUse"], 0);
    assert_eq!(s["cloudProvider"], "aws");
    assert_eq!(s["region"], "us-east-1");
    assert!(s["licenseArn"].is_null() && s["licenseVersion"].is_null(), "{s}");
    let install = s["installId"].as_str().unwrap();
    assert_eq!(install.len(), 32);
    assert!(install.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{install}");
    let expires = time::OffsetDateTime::parse(
        s["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(s["expiresAt"].as_str().unwrap().ends_with('Z'), "{s}");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!((left.whole_seconds() - 14 * DAY).abs() < 60, "{left}");
}

#[tokio::test]
async fn the_trial_reserves_up_to_14_aku_and_refuses_the_15th_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let (s, v) = agent.create("kafka-1", 6).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v, json!({"instanceId": "kafka-1", "aku": 6}));
    assert_eq!(agent.create("kafka-2", 8).await.0, StatusCode::CREATED);
    assert_eq!(agent.settings().await["akuInUse"], 14);

    let refused = agent.create("kafka-3", 1).await;
    assert_no_capacity(&refused, 1, 14, 14);
    assert!(refused.1["message"].as_str().unwrap().contains("14"), "{}", refused.1);
    // Scaling up is refused the same way; the request names the extra AKU.
    assert_no_capacity(&agent.scale("kafka-1", 7).await, 1, 14, 14);

    // Freeing capacity makes room again.
    let (s, v) = agent.scale("kafka-2", 4).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"instanceId": "kafka-2", "aku": 4})));
    assert_eq!(agent.create("kafka-3", 4).await.0, StatusCode::CREATED);
    assert_no_capacity(&agent.create("kafka-4", 1).await, 1, 14, 14);
    assert_eq!(agent.delete("kafka-1").await.0, StatusCode::NO_CONTENT);
    assert_eq!(agent.create("kafka-4", 6).await.0, StatusCode::CREATED);

    let (s, list) = agent.request(Method::GET, "/v1/instances", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["akuInUse"], 14);
    assert_eq!(list["akuAllocated"], 14);
    assert_eq!(list["licenseState"], "TRIAL");
    let ids: Vec<_> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("kafka-2"), json!("kafka-3"), json!("kafka-4")]);
}

#[tokio::test]
async fn creating_is_idempotent_for_the_same_reservation_only() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(agent.create("a", 5).await.0, StatusCode::CREATED);
    // A retried request gets the same answer without taking more.
    assert_eq!(agent.create("a", 5).await.0, StatusCode::OK);
    assert_eq!(agent.settings().await["akuInUse"], 5);
    let (s, v) = agent.create("a", 6).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "Instance.AlreadyExists");
}

#[tokio::test]
async fn bad_input_and_unknown_instances_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let cases = [
        (json!({"aku": 1}), "instanceId"),
        (json!({"instanceId": "x"}), "aku"),
        (json!({"instanceId": "x", "aku": "3"}), "aku"),
        (json!({"instanceId": "x", "aku": 1.5}), "aku"),
        (json!({"instanceId": "x", "aku": 0}), "aku"),
        (json!({"instanceId": "x", "aku": -2}), "aku"),
        (json!({"instanceId": "", "aku": 1}), "instanceId"),
        (json!({"instanceId": "has space", "aku": 1}), "instanceId"),
        (json!({"instanceId": 7, "aku": 1}), "instanceId"),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, field) in cases {
        let (s, v) = agent.request(Method::POST, "/v1/instances", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "InvalidParameter", "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(field), "{body}: {v}");
    }
    let (s, v) = agent.request(Method::POST, "/v1/license", Some(json!({}))).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("InvalidParameter"))
    );
    assert!(v["message"].as_str().unwrap().contains("productKey"), "{v}");

    // Not JSON at all.
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/instances", agent.url))
        .body("instanceId=x")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        raw.json::<serde_json::Value>().await.unwrap()["code"],
        "InvalidParameter"
    );

    for (method, path) in [
        (Method::PATCH, "/v1/instances/nope"),
        (Method::DELETE, "/v1/instances/nope"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"aku": 1}));
        let (s, v) = agent.request(method, path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["code"], "Instance.NotFound");
    }
    let (s, v) = agent.request(Method::GET, "/v1/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["code"].is_string());
    let (s, v) = agent.request(Method::PUT, "/v1/settings", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["code"].is_string());
    // An instance ID that is not UTF-8 once decoded (found by the agent_request fuzz target).
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let (s, v) = agent
            .request(method, "/v1/instances/%ff%00", Some(json!({"aku": 1})))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "InvalidParameter", "{v}");
    }
}

#[tokio::test]
async fn the_client_decodes_answers_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let client = AgentClient::new(&agent.url, None);
    let s = client.settings().await.unwrap();
    assert_eq!(s.aku_allocated, 14);
    client.create_instance("i-1", 14).await.unwrap();
    let err = client.create_instance("i-2", 1).await.unwrap_err();
    let body = err.body().expect("an API error");
    assert_eq!(body.code, "Instance.NoAvailableSubscription");
    assert_eq!((body.requested, body.used, body.allowed), (Some(1), Some(14), Some(14)));
    assert_eq!(client.scale_instance("i-1", 3).await.unwrap().aku, 3);
    client.delete_instance("i-1").await.unwrap();
    assert!(client.instances().await.unwrap().instances.is_empty());
}

#[tokio::test]
async fn the_test_clock_is_off_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.test_clock = false;
    let agent = TestAgent::start(cfg).await;
    let (s, v) = agent
        .request(
            Method::POST,
            "/_tessera/test/clock",
            Some(json!({"AdvanceSeconds": 100})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}
