//! The two backends' migrations stay in step: the same versions with the same names.

use std::path::Path;

fn listing(dir: &str) -> Vec<(i64, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
    let mut out: Vec<(i64, String)> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let stem = name.trim_end_matches(".sql");
            let (version, desc) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("{dir}/{name} is not VERSION_NAME.sql"));
            let version = version
                .parse()
                .unwrap_or_else(|_| panic!("{dir}/{name} does not start with a version number"));
            (version, desc.to_owned())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sqlite_and_postgres_migrations_have_the_same_versions_and_names() {
    let sqlite = listing("sqlite");
    let postgres = listing("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres differ");
    let versions: Vec<i64> = sqlite.iter().map(|(v, _)| *v).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, expected, "versions are numbered 1, 2, 3, ... without gaps");
}

/// A database made before version 4 keeps its counters through the move of
/// counts into `usage_counts`: same values, same limits, and checkouts then
/// count from them.
#[tokio::test]
async fn sqlite_counters_survive_the_move_to_usage_counts() {
    use crate::helpers::{checkout_cmd, fixture, now, seats_in_use};
    use sqlx::{Connection, Executor, SqliteConnection};

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tessera.db");
    let url = format!("sqlite://{}", db.display());
    // A license and a checkout made by the current schema...
    let (f, t) = {
        let store = tessera_store::open(&url).await.expect("open");
        let t = now();
        let f = fixture(store.as_ref(), 5).await;
        store
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, "before"), t)
            .await
            .expect("checkout");
        (f, t)
    };
    // ...turned back into the version 3 layout, with its count in place.
    {
        let mut conn = SqliteConnection::connect(&url).await.expect("connect");
        conn.execute(
            "CREATE TABLE old_usage AS SELECT u.license_arn, u.name, u.unit, u.max_count, u.overage, c.consumed \
             FROM entitlement_usage u JOIN usage_counts c USING (usage_id); \
             DROP TABLE usage_counts; DROP TABLE entitlement_usage; \
             CREATE TABLE entitlement_usage (license_arn TEXT NOT NULL, name TEXT NOT NULL, unit TEXT NOT NULL, \
               max_count INTEGER, overage INTEGER NOT NULL, consumed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (license_arn, name)); \
             INSERT INTO entitlement_usage SELECT * FROM old_usage; DROP TABLE old_usage; \
             DELETE FROM _sqlx_migrations WHERE version = 4;",
        )
        .await
        .expect("back to version 3");
    }
    let store = tessera_store::open(&url).await.expect("migrate again");
    assert_eq!(seats_in_use(store.as_ref(), &f.arn, t).await, 2);
    store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 3, "after"), t)
        .await
        .expect("the rest of the seats");
    let r = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "one more"), t)
        .await;
    assert!(r.is_err(), "the limit of 5 still holds: {r:?}");
    assert_eq!(seats_in_use(store.as_ref(), &f.arn, t).await, 5);
}
