//! Races, on every backend, across several stores opened on one database (on
//! PostgreSQL these are independent pools, like servers sharing the database).

use std::sync::Arc;

use time::Duration;

use tessera_core::grant::GrantStatus;
use tessera_store::{LicenseQuery, NewGrant, Store, StoreError};

use crate::helpers::*;

const REPLICAS: usize = 3;

async fn replicas(db: &TestDb) -> Vec<Arc<dyn Store>> {
    let mut out = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        out.push(db.open().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_checkouts_for_five_seats_grant_exactly_five() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = Arc::new(fixture(stores[0].as_ref(), 5).await);
        let t = now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            tasks.spawn(async move {
                store
                    .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t)
                    .await
            });
        }
        let (mut granted, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(_) => granted += 1,
                Err(StoreError::NoEntitlements(_)) => refused += 1,
                Err(e) => panic!("{}: unexpected error {e:?}", db.name),
            }
        }
        assert_eq!((granted, refused), (5, 59), "{}", db.name);
        assert_eq!(seats_in_use(stores[1].as_ref(), &f.arn, t).await, 5, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_client_token_make_one_consumption() {
    for db in backends().await {
        let stores = replicas(&db).await;
        // One seat: a duplicate that raced the first to the pool would be refused.
        let f = Arc::new(fixture(stores[0].as_ref(), 1).await);
        let t = now();
        for round in 0..6 {
            let ct = token();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..8 {
                let store = stores[i % REPLICAS].clone();
                let f = f.clone();
                let ct = ct.clone();
                tasks.spawn(async move {
                    store
                        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &ct), t)
                        .await
                });
            }
            let mut tokens = Vec::new();
            while let Some(r) = tasks.join_next().await {
                match r.expect("task") {
                    Ok(c) => tokens.push(c.token),
                    Err(e) => panic!("{} round {round}: a retry was answered {e:?}", db.name),
                }
            }
            tokens.dedup();
            assert_eq!(tokens.len(), 1, "{} round {round}: {tokens:?}", db.name);
            assert_eq!(seats_in_use(stores[0].as_ref(), &f.arn, t).await, 1, "{}", db.name);
            stores[round % REPLICAS]
                .check_in(&f.customer, &tokens[0], None, None, t)
                .await
                .expect("check in");
        }
        // The same ClientToken with a different request: one wins, the others conflict.
        let ct = token();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            let ct = ct.clone();
            tasks.spawn(async move {
                let mut cmd = checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &ct);
                cmd.request_hash = format!("request-{}", i % 2);
                (i % 2, store.checkout(cmd, t).await)
            });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                (kind, Ok(c)) => winners.push((kind, c.token)),
                (_, Err(StoreError::Conflict(m))) => assert!(m.contains("different CheckoutLicense request"), "{m}"),
                (_, Err(e)) => panic!("{}: {e:?}", db.name),
            }
        }
        winners.dedup();
        assert_eq!(winners.len(), 1, "{}: {winners:?}", db.name);
        assert_eq!(seats_in_use(stores[0].as_ref(), &f.arn, t).await, 1, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_returns_units_exactly_once() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = Arc::new(fixture(stores[0].as_ref(), 10_000).await);
        let t0 = now();
        let due = 120;
        for i in 0..due {
            stores[i % REPLICAS]
                .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t0)
                .await
                .expect("checkout");
        }
        // Ten more that are not due yet; a unit returned twice would show as fewer.
        let t1 = t0 + Duration::minutes(50);
        for i in 0..10 {
            stores[i % REPLICAS]
                .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t1)
                .await
                .expect("checkout");
        }
        let t2 = t0 + Duration::minutes(61);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..4 {
            let store = stores[i % REPLICAS].clone();
            tasks.spawn(async move { store.expire_due(t2).await.expect("expire") });
        }
        let mut expired = 0;
        while let Some(n) = tasks.join_next().await {
            expired += n.expect("task");
        }
        assert_eq!(expired, due as u64, "{}", db.name);
        assert_eq!(seats_in_use(stores[0].as_ref(), &f.arn, t2).await, 10, "{}", db.name);

        // Sweeps, usage reads (which expire per license) and checkouts together.
        for i in 0..60 {
            stores[i % REPLICAS]
                .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t2)
                .await
                .expect("checkout");
        }
        let t3 = t2 + Duration::minutes(61);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            tasks.spawn(async move {
                match i % 3 {
                    0 => {
                        store.expire_due(t3).await.expect("expire");
                    }
                    1 => {
                        store.license_usage(&f.arn, t3).await.expect("usage");
                    }
                    _ => {
                        let c = store
                            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t3)
                            .await
                            .expect("checkout");
                        assert_eq!(c.expires_at, t3 + Duration::minutes(60));
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        // Everything taken before t3 has expired; the four checkouts at t3 remain.
        assert_eq!(seats_in_use(stores[2].as_ref(), &f.arn, t3).await, 4, "{}", db.name);
        assert_eq!(stores[0].expire_due(t3).await.expect("expire"), 0, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_and_check_ins_racing_with_sweeps_keep_the_count_exact() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = Arc::new(fixture(stores[0].as_ref(), 5).await);
        let t = now();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..24 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            tasks.spawn(async move {
                let mut held = 0i64;
                while std::time::Instant::now() < deadline {
                    match store
                        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, &token()), t)
                        .await
                    {
                        Ok(c) => {
                            if i % 4 == 0 {
                                // Some keep theirs.
                                held += 1;
                                break;
                            }
                            store
                                .check_in(&f.customer, &c.token, None, None, t)
                                .await
                                .expect("check in");
                        }
                        Err(StoreError::NoEntitlements(_)) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                held
            });
        }
        for store in &stores {
            let store = store.clone();
            let f = f.clone();
            tasks.spawn(async move {
                while std::time::Instant::now() < deadline {
                    store.expire_due(t).await.expect("sweep");
                    let used = store.license_usage(&f.arn, t).await.expect("usage")[0].consumed;
                    assert!(used <= 5, "{used} seats in use");
                }
                0
            });
        }
        let mut held = 0;
        while let Some(r) = tasks.join_next().await {
            held += r.expect("task");
        }
        assert_eq!(seats_in_use(stores[0].as_ref(), &f.arn, t).await, held, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_check_ins_of_one_consumption_return_its_units_once() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = Arc::new(fixture(stores[0].as_ref(), 5).await);
        let t = now();
        let c = stores[0]
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 3, &token()), t)
            .await
            .expect("checkout");
        stores[0]
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, &token()), t)
            .await
            .expect("checkout");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            let token = c.token.clone();
            tasks.spawn(async move { store.check_in(&f.customer, &token, None, None, t).await });
        }
        let (mut ok, mut conflict) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(()) => ok += 1,
                Err(StoreError::Conflict(m)) => {
                    assert!(m.ends_with("was already checked in"), "{m}");
                    conflict += 1
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((ok, conflict), (1, 7), "{}", db.name);
        assert_eq!(seats_in_use(stores[0].as_ref(), &f.arn, t).await, 2, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environment_allocations_never_overshoot() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = Arc::new(fixture(stores[0].as_ref(), 100).await);
        let t = now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            tasks.spawn(async move {
                store
                    .register_environment(&f.vendor, environment(&format!("env-{i}"), &f.arn, 7), t)
                    .await
            });
        }
        let mut registered = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(e) => registered.push(e.environment_id),
                Err(StoreError::LimitExceeded(_)) => {}
                Err(e) => panic!("{}: {e:?}", db.name),
            }
        }
        // 14 × 7 = 98 of 100.
        assert_eq!(registered.len(), 14, "{}", db.name);
        let allocated = |all: Vec<(tessera_core::AccountId, tessera_core::environment::Environment)>| {
            all.iter().map(|(_, e)| e.aku_allocated).sum::<i64>()
        };
        let sum = allocated(
            stores[0]
                .list_environments(None, None, Some(&f.arn))
                .await
                .expect("list"),
        );
        assert_eq!(sum, 98, "{}", db.name);

        // Every environment asks for one more: only two fit.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in registered.iter().enumerate() {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            let id = id.clone();
            tasks.spawn(async move { store.allocate_environment(&f.vendor, &id, 8, t).await });
        }
        let mut grown = 0;
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(_) => grown += 1,
                Err(StoreError::LimitExceeded(_)) => {}
                Err(e) => panic!("{}: {e:?}", db.name),
            }
        }
        assert_eq!(grown, 2, "{}", db.name);
        let sum = allocated(
            stores[1]
                .list_environments(None, None, Some(&f.arn))
                .await
                .expect("list"),
        );
        assert_eq!(sum, 100, "{}", db.name);

        // The same environment registered concurrently: one registration, the rest conflict.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..6 {
            let store = stores[i % REPLICAS].clone();
            let f = f.clone();
            tasks.spawn(async move {
                store
                    .register_environment(&f.customer, environment("twin", &f.arn, 0), t)
                    .await
            });
        }
        let (mut ok, mut conflict) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict(m)) => {
                    assert!(m.contains("is already registered"), "{m}");
                    conflict += 1
                }
                Err(e) => panic!("{}: {e:?}", db.name),
            }
        }
        assert_eq!((ok, conflict), (1, 5), "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_updates_race_on_the_version() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let f = fixture(stores[0].as_ref(), 5).await;
        let t = now();
        let (partner, _) = stores[0].create_account("partner", t).await.expect("partner");
        let g = tessera_core::grant::Grant {
            grant_arn: tessera_core::GrantArn::new(&f.customer, [3; 16]).to_string(),
            grant_name: "g".into(),
            parent_arn: f.arn.clone(),
            license_arn: f.arn.clone(),
            grantee_principal_arn: partner.id.root_arn(),
            home_region: "us-east-1".into(),
            grant_status: GrantStatus::PendingAccept,
            status_reason: None,
            version: "1".into(),
            granted_operations: vec![tessera_core::grant::AllowedOperation::CheckoutLicense],
        };
        stores[0]
            .create_grant(
                NewGrant {
                    grant: g.clone(),
                    grantor: f.customer.clone(),
                    grantee: partner.id.clone(),
                    tags: Vec::new(),
                    idempotency: tessera_store::Idempotency {
                        account: f.customer.clone(),
                        operation: "CreateGrant",
                        client_token: token(),
                        request_hash: "h".into(),
                    },
                },
                t,
            )
            .await
            .expect("grant");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = stores[i % REPLICAS].clone();
            let mut next = g.clone();
            next.version = "2".into();
            next.grant_status = if i % 2 == 0 {
                GrantStatus::Active
            } else {
                GrantStatus::Rejected
            };
            tasks.spawn(async move { store.update_grant(next, "1", None, t).await });
        }
        let (mut ok, mut conflict) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(o) => {
                    assert_eq!(o.version, "2");
                    ok += 1
                }
                Err(StoreError::Conflict(m)) => {
                    assert!(m.ends_with("is at version 2, not 1; read it again and retry"), "{m}");
                    conflict += 1
                }
                Err(e) => panic!("{}: {e:?}", db.name),
            }
        }
        assert_eq!((ok, conflict), (1, 7), "{}", db.name);
        let page = stores[2].list_grants(&Default::default()).await;
        assert!(page.is_ok());
        let v2 = stores[1]
            .get_grant(&g.grant_arn, Some(2))
            .await
            .expect("v2")
            .expect("exists");
        let now_ = stores[2]
            .get_grant(&g.grant_arn, None)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(v2, now_, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_license_retries_make_one_license() {
    for db in backends().await {
        let stores = replicas(&db).await;
        let t = now();
        let (vendor, _) = stores[0].create_account("vendor", t).await.expect("vendor");
        let (customer, _) = stores[0].create_account("customer", t).await.expect("customer");
        let body = license_json("sku-race", &customer.id, 5);
        let ct = token();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8u8 {
            let store = stores[i as usize % REPLICAS].clone();
            // Each attempt comes with its own new ARN, as the server makes one per request.
            let new = new_license(&vendor.id, i + 1, &body, &ct);
            tasks.spawn(async move { store.create_license(new, t).await });
        }
        let mut arns = Vec::new();
        while let Some(r) = tasks.join_next().await {
            arns.push(r.expect("task").expect("create").license_arn);
        }
        arns.dedup();
        assert_eq!(arns.len(), 1, "{}: {arns:?}", db.name);
        let listed = stores[1]
            .list_licenses(&LicenseQuery {
                issuer: Some(vendor.id.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1, "{}", db.name);
        let mut keys = Vec::new();
        for i in 0..6 {
            let store = stores[i % REPLICAS].clone();
            let key = tessera_store::StoredKey {
                account_id: vendor.id.clone(),
                kid: format!("kid-{i}"),
                alg: "EdDSA".into(),
                private_der: vec![i as u8],
                public_jwk: "{}".into(),
            };
            keys.push(tokio::spawn(async move { store.put_issuer_key(key, t).await }));
        }
        let mut kept = Vec::new();
        for k in keys {
            kept.push(k.await.expect("task").expect("put").kid);
        }
        kept.dedup();
        assert_eq!(kept.len(), 1, "{}: every caller gets the one key kept", db.name);
    }
}
