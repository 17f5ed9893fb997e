//! One hot license on PostgreSQL, hammered through two stores on one database
//! (two servers): checkouts, check-ins and retried ClientTokens all at once.
//!
//! PostgreSQL is expected at `postgres://root@127.0.0.1:5432/test` (override
//! with `TESSERA_TEST_POSTGRES_URL`); `TESSERA_SKIP_POSTGRES=1` leaves these
//! tests out. `throughput` (ignored) prints the rate of checkouts on one
//! license next to the rate of the bare counter update, each committed alone:
//! `cargo test --release -p tessera-store --test pg_hot_license -- --ignored --nocapture`.

#[path = "store/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_store::baseline::RawCounter;
use tessera_store::{Store, StoreError};

use helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_license_on_two_servers_never_overshoots_and_ends_consistent() {
    if skip_postgres() {
        return;
    }
    const MAX: i64 = 12;
    const CLIENTS: usize = 48;
    let db = PgDatabase::create().await;
    let stores = [open(&db, 8).await, open(&db, 8).await];
    let f = Arc::new(fixture(stores[0].as_ref(), MAX).await);
    let t = now();
    let deadline = Instant::now() + Duration::from_secs(4);
    let stop = Arc::new(AtomicBool::new(false));
    // Every acknowledged checkout, by ClientToken: (consumption token, seats).
    let granted: Arc<Mutex<HashMap<String, (String, i64)>>> = Arc::default();
    let checked_in: Arc<Mutex<HashSet<String>>> = Arc::default();
    let refusals = Arc::new(AtomicU64::new(0));

    // Watches the counter the whole time, through both stores.
    let watcher = {
        let stores = stores.clone();
        let f = f.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let used = seats_in_use(stores[(reads % 2) as usize].as_ref(), &f.arn, t).await;
                assert!((0..=MAX).contains(&used), "{used} of {MAX} seats in use");
                reads += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            reads
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let stores = stores.clone();
        let f = f.clone();
        let granted = granted.clone();
        let checked_in = checked_in.clone();
        let refusals = refusals.clone();
        tasks.spawn(async move {
            let mut round = 0i64;
            while Instant::now() < deadline {
                round += 1;
                let turn = i + round as usize;
                let seats = 1 + turn as i64 % 2;
                // Some ClientTokens with quotes and backslashes, which the batch quotes itself.
                let ct = match round % 3 {
                    0 => format!("{}'); SELECT 1; --\\'", token()),
                    _ => token(),
                };
                let first = &stores[turn % 2];
                let other = &stores[(turn + 1) % 2];
                // The first attempt and a retry of it on the other server, at once.
                let (a, b) = tokio::join!(
                    first.checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, seats, &ct), t),
                    other.checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, seats, &ct), t),
                );
                // A refusal writes nothing, so the other attempt may still get
                // seats freed in between; two grants must be one consumption.
                let c = match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.token, b.token, "a retried ClientToken made two consumptions");
                        assert_eq!(a.draws, b.draws);
                        a
                    }
                    (Ok(c), Err(StoreError::NoEntitlements(m))) | (Err(StoreError::NoEntitlements(m)), Ok(c)) => {
                        assert!(m.contains("is exhausted"), "{m}");
                        refusals.fetch_add(1, Ordering::Relaxed);
                        c
                    }
                    (Err(StoreError::NoEntitlements(m)), Err(StoreError::NoEntitlements(_))) => {
                        assert!(m.contains("is exhausted"), "{m}");
                        refusals.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                        continue;
                    }
                    (a, b) => panic!("one ClientToken, answers {:?} and {:?}", outcome(&a), outcome(&b)),
                };
                assert_eq!(c.draws[0].amount.get(), seats);
                granted.lock().unwrap().insert(ct.clone(), (c.token.clone(), seats));
                // A late retry, after the answer, replays it too.
                if round % 5 == 0 {
                    let again = other
                        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, seats, &ct), t)
                        .await
                        .expect("replay");
                    assert_eq!(again.token, c.token);
                }
                if i % 8 == 0 && round % 7 == 0 {
                    // Keep this one.
                    continue;
                }
                // Check in, twice at once on both servers: exactly one succeeds.
                let (a, b) = tokio::join!(
                    first.check_in(&f.customer, &c.token, None, None, t),
                    other.check_in(&f.customer, &c.token, None, None, t),
                );
                match (&a, &b) {
                    (Ok(()), Err(StoreError::Conflict(m))) | (Err(StoreError::Conflict(m)), Ok(())) => {
                        assert!(m.ends_with("was already checked in"), "{m}")
                    }
                    _ => panic!("one check-in, answers {:?} and {:?}", outcome(&a), outcome(&b)),
                }
                checked_in.lock().unwrap().insert(c.token);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = watcher.await.expect("watcher");

    let granted = granted.lock().unwrap().clone();
    let checked_in = checked_in.lock().unwrap().clone();
    let held: i64 = granted
        .values()
        .filter(|(token, _)| !checked_in.contains(token))
        .map(|(_, seats)| seats)
        .sum();
    assert!(held <= MAX, "{held} seats held");
    for store in &stores {
        assert_eq!(seats_in_use(store.as_ref(), &f.arn, t).await, held);
    }
    // What the database holds agrees with what was acknowledged.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connect");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT client_token, token, status FROM consumptions WHERE license_arn = $1")
            .bind(&f.arn)
            .fetch_all(&mut conn)
            .await
            .expect("consumptions");
    assert_eq!(rows.len(), granted.len(), "one consumption per granted ClientToken");
    for (ct, token, status) in rows {
        let (acked, _) = granted.get(&ct).expect("every consumption was acknowledged");
        assert_eq!(acked, &token);
        let expected = if checked_in.contains(&token) {
            "CHECKED_IN"
        } else {
            "ACTIVE"
        };
        assert_eq!(status, expected, "consumption {token}");
    }
    println!(
        "{} checkouts granted, {} checked in, {} refused, {reads} usage reads",
        granted.len(),
        checked_in.len(),
        refusals.load(Ordering::Relaxed)
    );
    assert!(
        !granted.is_empty() && refusals.load(Ordering::Relaxed) > 0 && reads > 0,
        "the test exercised nothing: {} granted, {} refused",
        granted.len(),
        refusals.load(Ordering::Relaxed)
    );
}

/// Writes that share a batch: one of them fails in the database (a ClientToken
/// PostgreSQL text cannot hold); the others are answered as if alone, and the
/// failing one as it always was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_fails_in_the_database_fails_alone() {
    if skip_postgres() {
        return;
    }
    let db = PgDatabase::create().await;
    let store = open(&db, 8).await;
    let f = Arc::new(fixture(store.as_ref(), 1000).await);
    let t = now();
    let mut held = Vec::new();
    for _ in 0..10 {
        let c = store
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t)
            .await
            .expect("checkout");
        held.push(c.token);
    }
    for round in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (store, f) = (store.clone(), f.clone());
            let to_check_in = if i % 4 == 0 { held.pop() } else { None };
            tasks.spawn(async move {
                match (i, to_check_in) {
                    (7, _) => {
                        let r = store
                            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "bad\0token"), t)
                            .await;
                        assert!(
                            matches!(r, Err(StoreError::Database(_))),
                            "a NUL in a ClientToken: {:?}",
                            outcome(&r)
                        );
                        None
                    }
                    (_, Some(token)) => {
                        store
                            .check_in(&f.customer, &token, None, None, t)
                            .await
                            .expect("check in");
                        None
                    }
                    _ => {
                        let c = store
                            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t)
                            .await
                            .expect("checkout");
                        Some(c.token)
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            held.extend(r.expect("task"));
        }
        assert_eq!(
            seats_in_use(store.as_ref(), &f.arn, t).await,
            held.len() as i64,
            "round {round}"
        );
    }
}

/// A store on `db` with `pool` connections: one server.
async fn open(db: &PgDatabase, pool: u32) -> Arc<dyn Store> {
    tessera_store::open(&format!("{}?pool_max_connections={pool}", db.url))
        .await
        .expect("open the store")
}

/// Checkouts per second on one license with 64 clients, through the store and
/// as the bare conditional counter update, each committed alone
/// (`tessera_store::baseline::RawCounter`, the benchmark's raw baseline), in
/// two shapes: checkouts alone on ample seats, and the benchmark's hot loop
/// (32 seats; check in, or give back, whatever was granted). `HOT_SECONDS`
/// sets each run's length (default 5), `HOT_SHAPE` picks one shape.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check: run it by name"]
async fn throughput() {
    const CLIENTS: usize = 64;
    let secs: u64 = std::env::var("HOT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let db = PgDatabase::create().await;
    let store = open(&db, 16).await;
    let raw = Arc::new(RawCounter::open(&db.url, CLIENTS as u32).await.expect("raw counter"));
    let t = now();
    let mut report = Vec::new();
    for (shape, seats, give_back) in [("checkouts alone", 1_000_000_000, false), ("hot loop", 32, true)] {
        if std::env::var("HOT_SHAPE").is_ok_and(|v| v != shape) {
            continue;
        }
        let f = Arc::new(fixture(store.as_ref(), seats).await);
        let raw_rate = run_for(secs, {
            let (raw, f) = (raw.clone(), f.clone());
            move || {
                let (raw, f) = (raw.clone(), f.clone());
                async move {
                    if raw.take(&f.arn, "Seats").await.expect("take") && give_back {
                        raw.give(&f.arn, "Seats").await.expect("give");
                    }
                }
            }
        })
        .await;
        let store_rate = run_for(secs, {
            let (store, f) = (store.clone(), f.clone());
            move || {
                let (store, f) = (store.clone(), f.clone());
                async move {
                    match store
                        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t)
                        .await
                    {
                        Ok(c) if give_back => store
                            .check_in(&f.customer, &c.token, None, None, t)
                            .await
                            .expect("check in"),
                        Ok(_) | Err(StoreError::NoEntitlements(_)) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        })
        .await;
        report.push(format!(
            "{shape}: raw {raw_rate:.0}/s, store {store_rate:.0}/s ({:.1}x)",
            store_rate / raw_rate
        ));
    }
    println!("{CLIENTS} clients, one license, {secs} s each; {}", report.join("; "));
}

/// Runs `one` in a loop on 64 tasks for `secs` seconds; loops per second.
async fn run_for<F, Fut>(secs: u64, one: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (one, count) = (one.clone(), count.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                one().await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client");
    }
    count.load(Ordering::Relaxed) as f64 / secs as f64
}
