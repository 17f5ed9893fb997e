//! file:// buckets against real directories; s3:// is covered by the conformance suite.

use super::*;

fn file_url(dir: &std::path::Path) -> String {
    url::Url::from_directory_path(dir).expect("absolute dir").to_string()
}

#[tokio::test]
async fn file_bucket_round_trips_and_reports_absent_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ops").join("nested");
    let bucket = OpsBucket::parse(&file_url(&dir)).unwrap();
    assert!(dir.is_dir(), "the directory is created when missing");

    assert_eq!(bucket.get(PRODUCT_KEY_OBJECT).await.unwrap(), None);
    bucket.put(PRODUCT_KEY_OBJECT, b"key-1".to_vec()).await.unwrap();
    assert_eq!(
        bucket.get(PRODUCT_KEY_OBJECT).await.unwrap().as_deref(),
        Some(&b"key-1"[..])
    );
    assert_eq!(
        std::fs::read(dir.join("tessera").join("product-key")).unwrap(),
        b"key-1",
        "the object is a plain file under the directory"
    );
    bucket.put(PRODUCT_KEY_OBJECT, b"key-2".to_vec()).await.unwrap();
    assert_eq!(
        bucket.get(PRODUCT_KEY_OBJECT).await.unwrap().as_deref(),
        Some(&b"key-2"[..])
    );
}

#[tokio::test]
async fn file_url_without_trailing_slash_works() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("b").display());
    let bucket = OpsBucket::parse(&url).unwrap();
    bucket.put("x", b"1".to_vec()).await.unwrap();
    assert_eq!(bucket.url(), url);
    assert!(tmp.path().join("b").join("x").is_file());
}

#[tokio::test]
async fn bounded_reads_refuse_large_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = OpsBucket::parse(&file_url(tmp.path())).unwrap();
    bucket.put("big", vec![b'a'; 100]).await.unwrap();
    assert!(matches!(
        bucket.get_bounded("big", 10).await,
        Err(BucketError::TooLarge { size: 100, max: 10, .. })
    ));
    assert_eq!(
        bucket.get_bounded("big", 100).await.unwrap().map(|b| b.len()),
        Some(100)
    );
}

#[test]
fn unsupported_urls_name_the_supported_schemes() {
    for url in [
        "http://example.invalid/b",
        "gs://bucket",
        "not a url",
        "file://otherhost/dir",
        "s3:///prefix",
    ] {
        let err = OpsBucket::parse(url).expect_err(url).to_string();
        assert!(err.contains("file:///") && err.contains("s3://"), "{url}: {err}");
    }
}

#[test]
fn s3_urls_parse_with_and_without_a_prefix() {
    let a = OpsBucket::parse("s3://automq-ops-env1").unwrap();
    assert!(a.prefix.is_none());
    let b = OpsBucket::parse("s3://automq-ops-env1/some/prefix/").unwrap();
    assert_eq!(
        b.path(PRODUCT_KEY_OBJECT).unwrap().as_ref(),
        "some/prefix/tessera/product-key"
    );
}

#[test]
fn bad_object_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = OpsBucket::parse(&file_url(tmp.path())).unwrap();
    for name in ["", "a/../b", "/abs"] {
        assert!(
            matches!(bucket.path(name), Err(BucketError::InvalidName(_))),
            "{name:?}"
        );
    }
}
