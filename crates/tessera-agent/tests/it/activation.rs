//! Update Product License: which keys are accepted, and why the others are not.

use reqwest::StatusCode;
use tessera_token::IssuerKey;

use crate::helpers::*;

#[tokio::test]
async fn a_valid_key_activates_and_allows_reservations_up_to_its_aku() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;
    let body = vendor.body(&install, ENV, 40, 30 * DAY);
    let (s, v) = agent.activate(&vendor.issue(&body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["licenseState"], "ACTIVE");
    assert_eq!(v["akuAllocated"], 40);
    assert_eq!(v["licenseArn"], body.license_arn.as_str());
    assert_eq!(v["licenseVersion"], "1");
    assert_eq!(v["expiresAt"], body.valid_until.as_str());
    assert_eq!(v["licenseSource"], "API");

    assert_eq!(agent.create("big-1", 30).await.0, StatusCode::CREATED);
    assert_eq!(agent.create("big-2", 10).await.0, StatusCode::CREATED);
    assert_no_capacity(&agent.create("big-3", 1).await, 1, 40, 40);
    // Activating the same key again changes nothing.
    assert_eq!(agent.activate(&vendor.issue(&body)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn keys_for_another_install_or_environment_are_refused_and_the_license_stays() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;

    let other_install = vendor.key("0123456789abcdef0123456789abcdef", 40, 30);
    let got = agent.activate(&other_install).await;
    assert_invalid_key(&got, "WRONG_INSTALL");
    let msg = got.1["message"].as_str().unwrap();
    assert!(
        msg.contains(&install) && msg.contains("0123456789abcdef0123456789abcdef"),
        "{msg}"
    );

    let other_env = vendor.issue(&vendor.body(&install, "env-other", 40, 30 * DAY));
    let got = agent.activate(&other_env).await;
    assert_invalid_key(&got, "WRONG_ENVIRONMENT");
    assert!(got.1["message"].as_str().unwrap().contains("env-other"), "{}", got.1);

    let s = agent.settings().await;
    assert_eq!(s["licenseState"], "TRIAL", "a refused key leaves the trial in force");

    // With a key in force, a refused key leaves that key in force.
    assert_eq!(agent.activate(&vendor.key(&install, 20, 30)).await.0, StatusCode::OK);
    assert_invalid_key(&agent.activate(&other_install).await, "WRONG_INSTALL");
    let s = agent.settings().await;
    assert_eq!(
        (s["licenseState"].as_str(), s["akuAllocated"].as_i64()),
        (Some("ACTIVE"), Some(20))
    );
}

#[tokio::test]
async fn tampered_malformed_expired_and_foreign_keys_are_refused_with_their_reason() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;
    let good = vendor.key(&install, 40, 30);

    assert_invalid_key(
        &agent.activate(&tamper(&good, "\"aku\":40", "\"aku\":400")).await,
        "BAD_SIGNATURE",
    );
    // A key moved to this install by editing it does not verify either.
    let foreign = vendor.key("0123456789abcdef0123456789abcdef", 40, 30);
    let moved = tamper(&foreign, "0123456789abcdef0123456789abcdef", &install);
    assert_invalid_key(&agent.activate(&moved).await, "BAD_SIGNATURE");

    for bad in ["", "not a key", "%%%", "eyJpbnN0YWxsSWQiOi", &good[..good.len() / 2]] {
        assert_invalid_key(&agent.activate(bad).await, "MALFORMED");
    }

    let expired = vendor.issue(&vendor.body(&install, ENV, 40, -60));
    let got = agent.activate(&expired).await;
    assert_invalid_key(&got, "EXPIRED");
    assert!(got.1["message"].as_str().unwrap().contains("expired"), "{}", got.1);

    let stranger = IssuerKey::generate("222222222222");
    let mut body = vendor.body(&install, ENV, 40, 30 * DAY);
    body.key_id = stranger.kid().into();
    assert_invalid_key(
        &agent
            .activate(&tessera_token::product_key::issue(&body, &stranger))
            .await,
        "UNTRUSTED_KEY",
    );
    // Signed by a stranger but naming the vendor's key: the signature fails.
    let body = vendor.body(&install, ENV, 40, 30 * DAY);
    let signed = tessera_token::product_key::issue(&body, &stranger);
    assert_invalid_key(&agent.activate(&signed).await, "BAD_SIGNATURE");

    assert_eq!(agent.settings().await["licenseState"], "TRIAL");
    // Surrounding whitespace, as pasted from an email, is fine.
    assert_eq!(agent.activate(&format!("  {good}\n")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_trusted_keys_every_key_is_untrusted() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let install = agent.install_id().await;
    let got = agent.activate(&vendor.key(&install, 40, 30)).await;
    assert_invalid_key(&got, "UNTRUSTED_KEY");
    assert!(
        got.1["message"].as_str().unwrap().contains("--trusted-jwks"),
        "{}",
        got.1
    );
}

#[tokio::test]
async fn an_unreadable_trusted_jwks_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.trusted_jwks = Some(dir.path().join("missing.json").display().to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tessera_agent::serve(cfg, listener, async {}).await.unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}
