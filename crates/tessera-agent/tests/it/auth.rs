//! Beyond loopback, every request needs the bearer token from the data directory.

use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn a_non_loopback_listener_requires_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = TestAgent::start_on(config(dir.path(), None), "0.0.0.0:0".parse().unwrap()).await;

    let (s, v) = agent.request(Method::GET, "/v1/settings", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "Unauthorized");
    assert!(v["message"].as_str().unwrap().contains("api-token"), "{v}");
    assert_eq!(agent.create("a", 1).await.0, StatusCode::UNAUTHORIZED);

    agent.token = Some("0".repeat(64));
    assert_eq!(
        agent.request(Method::GET, "/v1/settings", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    let token = tessera_agent::client::read_api_token(dir.path())
        .unwrap()
        .expect("a token was made");
    assert_eq!(token.len(), 64);
    agent.token = Some(token);
    assert_eq!(agent.request(Method::GET, "/v1/settings", None).await.0, StatusCode::OK);
    assert_eq!(agent.create("a", 1).await.0, StatusCode::CREATED);
    assert_eq!(
        agent.request(Method::GET, "/v1/nothing", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn loopback_needs_no_token_and_health_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(dir.path(), None)).await;
    assert_eq!(agent.request(Method::GET, "/v1/settings", None).await.0, StatusCode::OK);

    let dir2 = tempfile::tempdir().unwrap();
    let open = TestAgent::start_on(config(dir2.path(), None), "0.0.0.0:0".parse().unwrap()).await;
    let (s, v) = open.request(Method::GET, "/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}
