//! Restarts keep the install, the trial and the reservations; a clock set back revives nothing.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_restart_keeps_install_id_trial_start_token_and_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(agent.create("a", 5).await.0, StatusCode::CREATED);
    assert_eq!(agent.create("b", 4).await.0, StatusCode::CREATED);
    let before = agent.settings().await;
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap();

    let agent = agent.restart(|_| {}).await;
    let after = agent.settings().await;
    for field in ["installId", "expiresAt", "akuInUse", "licenseState", "environmentId"] {
        assert_eq!(before[field], after[field], "{field}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("api-token")).unwrap(), token);
    assert_no_capacity(&agent.create("c", 6).await, 6, 9, 14);
}

#[tokio::test]
async fn a_restart_never_restarts_the_trial() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    let install = agent.install_id().await;
    agent.advance(15 * DAY).await;
    assert_eq!(agent.settings().await["licenseState"], "EXPIRED");
    let agent = agent.restart(|_| {}).await;
    let s = agent.settings().await;
    assert_eq!(s["installId"], install.as_str());
    assert_eq!(s["licenseState"], "EXPIRED");
}

#[tokio::test]
async fn a_clock_moved_back_does_not_revive_an_expired_trial() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = agent_with_offset(dir.path(), 0).await;
    assert_eq!(agent.create("a", 4).await.0, StatusCode::CREATED);
    agent.stop().await.unwrap();

    // The trial runs out while the clock says 15 days later.
    let mut agent = agent_with_offset(dir.path(), 15 * DAY).await;
    let s = agent.settings().await;
    assert_eq!(s["licenseState"], "EXPIRED", "{s}");
    agent.stop().await.unwrap();

    // Then the clock is set back: to real time, and further back still.
    for offset in [0, -30 * DAY] {
        let mut agent = agent_with_offset(dir.path(), offset).await;
        let s = agent.settings().await;
        assert_eq!(s["licenseState"], "EXPIRED", "offset {offset}: {s}");
        assert_eq!(agent.create("b", 1).await.0, StatusCode::FORBIDDEN);
        assert_eq!(agent.scale("a", 1).await.0, StatusCode::OK);
        assert_eq!(agent.scale("a", 4).await.0, StatusCode::FORBIDDEN);
        agent.stop().await.unwrap();
    }
}

async fn agent_with_offset(dir: &std::path::Path, offset: i64) -> TestAgent {
    let mut cfg = config(dir, None);
    cfg.clock_offset_seconds = offset;
    TestAgent::start(cfg).await
}

#[tokio::test]
async fn a_clock_moved_back_does_not_revive_an_expired_key() {
    let vendor = Vendor::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), Some(&vendor))).await;
    let install = agent.install_id().await;
    assert_eq!(agent.activate(&vendor.key(&install, 40, 30)).await.0, StatusCode::OK);
    agent.advance(31 * DAY).await;
    assert_eq!(agent.settings().await["licenseState"], "EXPIRED");
    // The test clock's offset is gone after a restart: the system clock is 31 days "back".
    let agent = agent.restart(|_| {}).await;
    let s = agent.settings().await;
    assert_eq!(s["licenseState"], "EXPIRED", "{s}");
    assert_eq!(agent.create("b", 1).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_state_file_is_valid_json_owned_by_the_agent_only() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(agent.create("a", 5).await.0, StatusCode::CREATED);
    // Acknowledged means written: the file already has the reservation.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(tessera_agent::STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["instances"]["a"], 5);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [tessera_agent::STATE_FILE, tessera_agent::API_TOKEN_FILE] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[tokio::test]
async fn another_environment_id_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = TestAgent::start(config(dir.path(), None)).await;
    agent.stop().await.unwrap();
    let mut cfg = config(dir.path(), None);
    cfg.environment_id = tessera_agent::EnvironmentId::parse("env-other").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tessera_agent::serve(cfg, listener, async {}).await.unwrap_err();
    assert!(err.to_string().contains(ENV), "{err}");
}

/// Two agents on one data directory would each reserve the whole allocation:
/// the second refuses to start and names the first one's process.
#[tokio::test]
async fn a_second_agent_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = TestAgent::start(config(dir.path(), None)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tessera_agent::serve(config(dir.path(), None), listener, async {})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("process {}", std::process::id())) && msg.contains("already running"),
        "{msg}"
    );
    // The first agent is untouched, and once it stops the directory is free again.
    assert_eq!(first.create("big-a", 10).await.0, StatusCode::CREATED);
    first.stop().await.unwrap();
    let mut again = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(again.settings().await["akuInUse"], 10);
    again.stop().await.unwrap();
}
