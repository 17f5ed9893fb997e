//! After the license expires: existing reservations stay and may shrink, nothing grows.

use reqwest::StatusCode;

use crate::helpers::*;

fn assert_expired_refusal(got: &(StatusCode, serde_json::Value)) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "Instance.NoAvailableSubscription", "{body}");
    assert_eq!(body["licenseState"], "EXPIRED", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("expired") || msg.contains("ended"), "{msg}");
    assert!(msg.contains("renew") || msg.contains("Renew"), "{msg}");
    assert!(msg.contains("activate"), "{msg}");
}

#[tokio::test]
async fn an_expired_trial_blocks_create_and_scale_up_but_allows_scale_down_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(agent.create("a", 6).await.0, StatusCode::CREATED);
    assert_eq!(agent.create("b", 4).await.0, StatusCode::CREATED);

    agent.advance(14 * DAY - 120).await;
    assert_eq!(agent.settings().await["licenseState"], "TRIAL");
    agent.advance(180).await;
    let s = agent.settings().await;
    assert_eq!(s["licenseState"], "EXPIRED");
    assert_eq!(s["akuInUse"], 10, "reservations survive expiry");

    assert_expired_refusal(&agent.create("c", 1).await);
    assert_expired_refusal(&agent.scale("a", 7).await);
    assert_eq!(agent.scale("a", 2).await.0, StatusCode::OK);
    assert_eq!(agent.delete("b").await.0, StatusCode::NO_CONTENT);
    // Capacity freed after expiry is not capacity to grow into.
    assert_expired_refusal(&agent.scale("a", 3).await);
    assert_eq!(agent.settings().await["akuInUse"], 2);
}

#[tokio::test]
async fn an_expired_key_blocks_growth_until_a_renewal_is_activated() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;
    assert_eq!(agent.activate(&vendor.key(&install, 40, 30)).await.0, StatusCode::OK);
    assert_eq!(agent.create("a", 20).await.0, StatusCode::CREATED);

    agent.advance(31 * DAY).await;
    let s = agent.settings().await;
    assert_eq!(s["licenseState"], "EXPIRED");
    assert_eq!(s["akuAllocated"], 40);
    let refused = agent.create("b", 1).await;
    assert_expired_refusal(&refused);
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("arn:aws:license-manager"),
        "{}",
        refused.1
    );
    assert_expired_refusal(&agent.scale("a", 21).await);
    assert_eq!(agent.scale("a", 10).await.0, StatusCode::OK);

    // A key that was valid when issued but ended before business time now: refused.
    assert_invalid_key(&agent.activate(&vendor.key(&install, 40, 30)).await, "EXPIRED");
    // The renewal is valid beyond business time.
    assert_eq!(agent.activate(&vendor.key(&install, 40, 400)).await.0, StatusCode::OK);
    assert_eq!(agent.settings().await["licenseState"], "ACTIVE");
    assert_eq!(agent.create("b", 30).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_smaller_renewal_keeps_existing_reservations_but_allows_no_growth_above_it() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;
    assert_eq!(agent.create("a", 12).await.0, StatusCode::CREATED);
    assert_eq!(agent.activate(&vendor.key(&install, 10, 30)).await.0, StatusCode::OK);
    let s = agent.settings().await;
    assert_eq!(
        (s["akuInUse"].as_i64(), s["akuAllocated"].as_i64()),
        (Some(12), Some(10))
    );
    assert_no_capacity(&agent.create("b", 1).await, 1, 12, 10);
    assert_eq!(agent.scale("a", 11).await.0, StatusCode::OK);
}
