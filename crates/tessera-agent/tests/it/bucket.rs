//! Renewals through the ops bucket, applied without a restart.

use std::time::Duration;

use tessera_bucket::{OpsBucket, PRODUCT_KEY_OBJECT};

use crate::helpers::*;

async fn bucket_agent(vendor: &Vendor) -> (TestAgent, OpsBucket, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("ops").display());
    let mut cfg = config(&dir.path().join("agent"), Some(vendor));
    cfg.ops_bucket = Some(url.clone());
    let agent = TestAgent::start(cfg).await;
    (agent, OpsBucket::parse(&url).unwrap(), dir)
}

async fn check_outcome(agent: &TestAgent, outcome: &str) -> serde_json::Value {
    let limit = Duration::from_secs(5);
    eventually(limit, &format!("a bucket check with outcome {outcome}"), || async {
        let s = agent.settings().await;
        (s["lastBucketCheck"]["outcome"] == outcome).then_some(s)
    })
    .await
}

#[tokio::test]
async fn a_key_written_to_the_bucket_is_applied_within_the_poll_interval_without_restart() {
    let vendor = Vendor::new();
    let (agent, bucket, _dir) = bucket_agent(&vendor).await;
    check_outcome(&agent, "NO_KEY").await;
    let install = agent.install_id().await;

    let first = vendor.body(&install, ENV, 30, 30 * DAY);
    bucket
        .put(PRODUCT_KEY_OBJECT, vendor.issue(&first).into_bytes())
        .await
        .unwrap();
    let s = check_outcome(&agent, "APPLIED").await;
    assert_eq!(s["licenseState"], "ACTIVE");
    assert_eq!(s["akuAllocated"], 30);
    assert_eq!(s["licenseSource"], "OPS_BUCKET");

    // A renewal: more AKU, a later end, a new version.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut renewal = vendor.body(&install, ENV, 60, 365 * DAY);
    renewal.license_version = "2".into();
    bucket
        .put(PRODUCT_KEY_OBJECT, vendor.issue(&renewal).into_bytes())
        .await
        .unwrap();
    let s = eventually(Duration::from_secs(3), "the renewal", || async {
        let s = agent.settings().await;
        (s["akuAllocated"] == 60).then_some(s)
    })
    .await;
    assert_eq!(s["licenseVersion"], "2");
    assert_eq!(s["expiresAt"], renewal.valid_until.as_str());
    assert_eq!(agent.create("i-1", 60).await.0, reqwest::StatusCode::CREATED);
}

#[tokio::test]
async fn tampered_foreign_or_stale_objects_never_replace_a_good_key() {
    let vendor = Vendor::new();
    let (agent, bucket, _dir) = bucket_agent(&vendor).await;
    let install = agent.install_id().await;
    let older = vendor.body(&install, ENV, 30, 30 * DAY);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut good = vendor.body(&install, ENV, 50, 60 * DAY);
    good.license_version = "2".into();
    let good_key = vendor.issue(&good);
    assert_eq!(agent.activate(&good_key).await.0, reqwest::StatusCode::OK);

    let tampered = tamper(&good_key, "\"aku\":50", "\"aku\":5000");
    bucket.put(PRODUCT_KEY_OBJECT, tampered.into_bytes()).await.unwrap();
    let s = check_outcome(&agent, "REJECTED").await;
    assert!(
        s["lastBucketCheck"]["detail"]
            .as_str()
            .unwrap()
            .contains("BAD_SIGNATURE"),
        "{s}"
    );
    assert_eq!(s["akuAllocated"], 50);

    for (object, reason) in [
        (vendor.key("0123456789abcdef0123456789abcdef", 500, 30), "WRONG_INSTALL"),
        ("garbage".to_owned(), "MALFORMED"),
        (vendor.issue(&vendor.body(&install, ENV, 500, -10)), "EXPIRED"),
    ] {
        bucket.put(PRODUCT_KEY_OBJECT, object.into_bytes()).await.unwrap();
        let s = eventually(Duration::from_secs(5), reason, || async {
            let s = agent.settings().await;
            s["lastBucketCheck"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains(reason))
                .then_some(s)
        })
        .await;
        assert_eq!(s["akuAllocated"], 50, "{s}");
        assert_eq!(s["licenseVersion"], "2", "{s}");
    }

    // An older key left in the bucket does not undo the activation.
    bucket
        .put(PRODUCT_KEY_OBJECT, vendor.issue(&older).into_bytes())
        .await
        .unwrap();
    let s = check_outcome(&agent, "UNCHANGED").await;
    assert_eq!(
        (s["akuAllocated"].as_i64(), s["licenseVersion"].as_str()),
        (Some(50), Some("2"))
    );
    // The same key as in force: nothing to do.
    bucket.put(PRODUCT_KEY_OBJECT, good_key.into_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(agent.settings().await["lastBucketCheck"]["outcome"], "UNCHANGED");
}

#[tokio::test]
async fn an_unreadable_bucket_keeps_the_license_in_force() {
    let vendor = Vendor::new();
    let (agent, _bucket, dir) = bucket_agent(&vendor).await;
    let install = agent.install_id().await;
    assert_eq!(
        agent.activate(&vendor.key(&install, 20, 30)).await.0,
        reqwest::StatusCode::OK
    );
    // A file where the object's folder should be: reading the object fails.
    std::fs::remove_dir_all(dir.path().join("ops").join("tessera")).unwrap();
    std::fs::write(dir.path().join("ops").join("tessera"), b"x").unwrap();
    let s = check_outcome(&agent, "FAILED").await;
    assert_eq!(
        (s["licenseState"].as_str(), s["akuAllocated"].as_i64()),
        (Some("ACTIVE"), Some(20))
    );
}
