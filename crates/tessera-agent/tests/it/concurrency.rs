//! Concurrent reservations never take more than the allocation.

use std::sync::Arc;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_of_one_aku_get_exactly_fourteen() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(TestAgent::start(config(dir.path(), None)).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let agent = agent.clone();
            tokio::spawn(async move { agent.create(&format!("i-{i}"), 1).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {
                assert_eq!(body["code"], "Instance.NoAvailableSubscription");
                assert_eq!(body["used"], 14, "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, refused), (14, 36));
    assert_eq!(agent.settings().await["akuInUse"], 14);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(tessera_agent::STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["instances"].as_object().unwrap().len(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_scale_ups_never_overshoot() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(TestAgent::start(config(dir.path(), None)).await);
    for i in 0..7 {
        assert_eq!(agent.create(&format!("i-{i}"), 1).await.0, StatusCode::CREATED);
    }
    // Seven instances each try to grow by 2; only 7 AKU are free.
    let tasks: Vec<_> = (0..7)
        .map(|i| {
            let agent = agent.clone();
            tokio::spawn(async move { agent.scale(&format!("i-{i}"), 3).await.0 })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(agent.settings().await["akuInUse"], 13);
}
