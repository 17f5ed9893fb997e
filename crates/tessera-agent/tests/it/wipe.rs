//! A wiped data directory does not grant a new trial where the agent can see
//! a trace of its earlier install: the ops bucket's install record, the
//! vendor's product key in the bucket, or the vendor's server.

use std::time::Duration;

use reqwest::StatusCode;
use tessera_bucket::{OpsBucket, PRODUCT_KEY_OBJECT};

use crate::helpers::*;

fn bucket_config(root: &std::path::Path, vendor: &Vendor) -> tessera_agent::AgentConfig {
    let mut cfg = config(&root.join("agent"), Some(vendor));
    cfg.ops_bucket = Some(format!("file://{}", root.join("ops").display()));
    cfg
}

fn wipe(dir: &std::path::Path) {
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_wiped_agent_continues_its_install_and_trial_from_the_ops_bucket() {
    let vendor = Vendor::new();
    let root = tempfile::tempdir().unwrap();
    let cfg = bucket_config(root.path(), &vendor);
    let mut agent = TestAgent::start(cfg.clone()).await;
    let first = agent.settings().await;
    let install = first["installId"].as_str().unwrap().to_owned();
    // Fifteen days on, the trial is over.
    agent.advance(15 * DAY).await;
    assert_eq!(agent.settings().await["licenseState"], "EXPIRED");
    agent.stop().await.unwrap();

    let record = OpsBucket::parse(cfg.ops_bucket.as_deref().unwrap())
        .unwrap()
        .get(&tessera_agent::recall::record_object(ENV))
        .await
        .unwrap()
        .expect("the install record in the bucket");
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["installId"], install.as_str());

    // The customer deletes the state file, then the whole data directory.
    std::fs::remove_file(cfg.data_dir.join(tessera_agent::STATE_FILE)).unwrap();
    let mut again = TestAgent::start(cfg.clone()).await;
    let s = again.settings().await;
    assert_eq!(s["installId"], install.as_str(), "the install ID is kept");
    assert_eq!(s["expiresAt"], first["expiresAt"], "the trial is the same trial");
    again.advance(15 * DAY).await;
    assert_eq!(again.settings().await["licenseState"], "EXPIRED");
    assert_eq!(again.create("after-wipe", 1).await.0, StatusCode::FORBIDDEN);
    again.stop().await.unwrap();

    wipe(&cfg.data_dir);
    let mut third = TestAgent::start(cfg.clone()).await;
    assert_eq!(third.settings().await["installId"], install.as_str());
    assert_eq!(third.settings().await["expiresAt"], first["expiresAt"]);
    third.stop().await.unwrap();
}

#[tokio::test]
async fn a_wiped_agent_takes_back_the_install_its_product_key_names() {
    let vendor = Vendor::new();
    let root = tempfile::tempdir().unwrap();
    let cfg = bucket_config(root.path(), &vendor);
    let mut agent = TestAgent::start(cfg.clone()).await;
    let install = agent.install_id().await;
    agent.stop().await.unwrap();
    let bucket = OpsBucket::parse(cfg.ops_bucket.as_deref().unwrap()).unwrap();
    // The vendor published a key; the install record is gone (deleted by hand).
    bucket
        .put(PRODUCT_KEY_OBJECT, vendor.key(&install, 40, 30).into_bytes())
        .await
        .unwrap();
    std::fs::remove_file(root.path().join("ops/tessera/installs").join(format!("{ENV}.json"))).unwrap();
    wipe(&cfg.data_dir);

    let again = TestAgent::start(cfg.clone()).await;
    assert_eq!(again.install_id().await, install);
    let s = eventually(Duration::from_secs(5), "the key from the bucket", || async {
        let s = again.settings().await;
        (s["licenseState"] == "ACTIVE").then_some(s)
    })
    .await;
    assert_eq!(s["akuAllocated"], 40);
}

/// A new install whose bucket cannot be read starts its trial, and looks
/// again: once the bucket answers, an earlier trial found there applies.
#[tokio::test]
async fn a_new_install_looks_again_when_its_bucket_answers() {
    let vendor = Vendor::new();
    let root = tempfile::tempdir().unwrap();
    let cfg = bucket_config(root.path(), &vendor);
    let mut agent = TestAgent::start(cfg.clone()).await;
    let first = agent.settings().await;
    agent.stop().await.unwrap();
    wipe(&cfg.data_dir);
    // The bucket cannot be read: a file where its folder should be.
    let ops = root.path().join("ops");
    let kept = root.path().join("ops-kept");
    std::fs::rename(&ops, &kept).unwrap();
    std::fs::create_dir_all(&ops).unwrap();
    std::fs::write(ops.join("tessera"), b"x").unwrap();
    // An hour later.
    let mut later = cfg.clone();
    later.clock_offset_seconds = 3600;
    let again = TestAgent::start(later).await;
    let provisional = again.settings().await;
    assert_eq!(provisional["licenseState"], "TRIAL");
    assert_ne!(provisional["expiresAt"], first["expiresAt"]);
    // The bucket answers again, with the earlier install's record.
    std::fs::remove_file(ops.join("tessera")).unwrap();
    std::fs::remove_dir(&ops).unwrap();
    std::fs::rename(&kept, &ops).unwrap();
    eventually(Duration::from_secs(5), "the earlier trial", || async {
        let s = again.settings().await;
        (s["expiresAt"] == first["expiresAt"]).then_some(s)
    })
    .await;
}

#[tokio::test]
async fn without_a_bucket_or_server_a_wipe_is_a_new_install() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(&root.path().join("agent"), None);
    let mut agent = TestAgent::start(cfg.clone()).await;
    let install = agent.install_id().await;
    agent.stop().await.unwrap();
    wipe(&cfg.data_dir);
    let mut again = TestAgent::start(cfg).await;
    assert_ne!(
        again.install_id().await,
        install,
        "nothing outside the directory remembers it"
    );
    assert_eq!(again.settings().await["licenseState"], "TRIAL");
    again.stop().await.unwrap();
}
