//! One sequence of requests per area, run on every backend: the answers (kinds
//! and messages) must be the expected ones, and the same on every backend.

use time::Duration;

use tessera_core::grant::{AllowedOperation, Grant, GrantStatus};
use tessera_core::license::{LicenseStatus, Tag};
use tessera_core::{AccountId, GrantArn, LicenseArn};
use tessera_store::{GrantQuery, Idempotency, LicenseQuery, NewGrant, NewVersion, Store, StoreError, TokenRecord};

use crate::helpers::*;

/// Replaces the run's random identifiers with names, so transcripts compare.
struct Names(Vec<(String, String)>);

impl Names {
    fn add(&mut self, value: impl Into<String>, name: &str) {
        self.0.push((value.into(), format!("<{name}>")));
    }

    fn clean(&self, s: String) -> String {
        // Longest first: an ARN contains its account's ID.
        let mut pairs: Vec<&(String, String)> = self.0.iter().collect();
        pairs.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        pairs.into_iter().fold(s, |s, (v, n)| s.replace(v.as_str(), n))
    }
}

async fn license_flow(store: &dyn Store) -> Vec<String> {
    let mut log = Vec::new();
    let t0 = now();
    let f = fixture(store, 5).await;
    let mut names = Names(Vec::new());
    names.add(&f.arn, "license");
    names.add(f.vendor.as_str(), "vendor");
    names.add(f.customer.as_str(), "customer");
    names.add(&f.sku, "sku");

    // Checkout, usage, check-in, usage.
    let c1 = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, "ct-1"), t0)
        .await
        .expect("checkout");
    names.add(&c1.token, "c1");
    assert_eq!(c1.license_arn, f.arn);
    assert_eq!(c1.draws.len(), 1);
    log.push(format!(
        "in use after checkout: {}",
        seats_in_use(store, &f.arn, t0).await
    ));
    // A retry of the same request answers the same consumption.
    let again = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, "ct-1"), t0)
        .await
        .expect("replay");
    assert_eq!(again.token, c1.token);
    assert_eq!(again, c1);
    // The same ClientToken for a different request is a conflict.
    let r = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 3, "ct-1"), t0)
        .await;
    log.push(names.clean(outcome(&r)));
    // More than is left.
    let r = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 4, "ct-2"), t0)
        .await;
    log.push(names.clean(outcome(&r)));
    // The vendor without a Beneficiary; a stranger.
    let r = store
        .checkout(checkout_cmd(&f.vendor, &f.sku, &f.vendor, 1, "ct-3"), t0)
        .await;
    log.push(names.clean(outcome(&r)));
    let (stranger, _) = store.create_account("stranger", t0).await.expect("stranger");
    names.add(stranger.id.as_str(), "stranger");
    let r = store.check_in(&stranger.id, &c1.token, None, None, t0).await;
    log.push(names.clean(outcome(&r)));
    let r = store.check_in(&f.customer, "no-such-token", None, None, t0).await;
    log.push(names.clean(outcome(&r)));

    // Extension: dry run, then for real.
    let later = t0 + Duration::minutes(30);
    let ext = store
        .extend(&f.customer, &c1.token, None, None, true, later)
        .await
        .expect("dry run");
    assert_eq!(ext.expires_at, c1.expires_at);
    let ext = store
        .extend(&f.customer, &c1.token, None, None, false, later)
        .await
        .expect("extend");
    assert_eq!(ext.expires_at, later + Duration::minutes(60));
    let stored = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, "ct-1"), later)
        .await
        .expect("replay after extension");
    assert_eq!(stored.expires_at, ext.expires_at, "the extension is stored");

    store
        .check_in(&f.customer, &c1.token, None, None, later)
        .await
        .expect("check in");
    log.push(format!(
        "in use after check-in: {}",
        seats_in_use(store, &f.arn, later).await
    ));
    let r = store.check_in(&f.customer, &c1.token, None, None, later).await;
    log.push(names.clean(outcome(&r)));
    let r = store.extend(&f.customer, &c1.token, None, None, false, later).await;
    log.push(names.clean(outcome(&r)));

    // Expiry: due consumptions go back before a usage read and before a checkout.
    let c2 = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 5, "ct-4"), later)
        .await
        .expect("all five");
    names.add(&c2.token, "c2");
    let r = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "ct-5"), later)
        .await;
    log.push(names.clean(outcome(&r)));
    let after = later + Duration::minutes(61);
    let c3 = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "ct-6"), after)
        .await
        .expect("the expired five are back");
    log.push(format!(
        "in use after expiry: {}",
        seats_in_use(store, &f.arn, after).await
    ));
    let r = store.check_in(&f.customer, &c2.token, None, None, after).await;
    log.push(names.clean(outcome(&r)));
    log.push(format!(
        "expired by the sweep: {}",
        store.expire_due(after).await.expect("sweep")
    ));

    // A new version with ResetUsage: old consumptions no longer give units back.
    let body = license_json(&f.sku, &f.customer, 8);
    let arn = LicenseArn::parse("LicenseArn", &f.arn).expect("arn");
    let version = |source: Option<&str>, reset: bool, ct: &str| NewVersion {
        arn: arn.clone(),
        caller: f.vendor.clone(),
        body: serde_json::from_value::<tessera_core::license::LicenseInput>(body.clone())
            .expect("input")
            .validate()
            .expect("valid"),
        status: LicenseStatus::Available,
        source_version: source.map(str::to_owned),
        reset_usage: reset,
        client_token: ct.to_owned(),
        request_hash: hash_of(&serde_json::json!({"reset": reset, "source": source})),
    };
    let v2 = store
        .create_license_version(version(Some("1"), true, "v-1"), after)
        .await
        .expect("version 2");
    log.push(format!("version: {} {}", v2.version, v2.status.as_str()));
    let replayed = store
        .create_license_version(version(Some("1"), true, "v-1"), after)
        .await
        .expect("replayed");
    assert_eq!(replayed, v2);
    let r = store
        .create_license_version(version(Some("1"), true, "v-2"), after)
        .await;
    log.push(names.clean(outcome(&r)));
    let r = store
        .create_license_version(version(Some("2"), false, "v-1"), after)
        .await;
    log.push(names.clean(outcome(&r)));
    log.push(format!(
        "in use after reset: {}",
        seats_in_use(store, &f.arn, after).await
    ));
    store
        .check_in(&f.customer, &c3.token, None, None, after)
        .await
        .expect("old-epoch check-in");
    log.push(format!(
        "in use after old check-in: {}",
        seats_in_use(store, &f.arn, after).await
    ));
    let usage = store.license_usage(&f.arn, after).await.expect("usage");
    log.push(format!("{usage:?}"));

    // Versions, listing, deletion.
    let page = store.list_license_versions(&f.arn, None, 1).await.expect("versions");
    log.push(format!("versions page: {} next {:?}", page.items.len(), page.next));
    let page = store
        .list_license_versions(&f.arn, page.next, 1)
        .await
        .expect("versions");
    log.push(format!(
        "versions page 2: {:?} next {:?}",
        page.items.iter().map(|l| l.version.clone()).collect::<Vec<_>>(),
        page.next
    ));
    let old = store
        .get_license(&f.arn, Some(1))
        .await
        .expect("v1")
        .expect("v1 exists");
    assert_eq!(old.entitlements[0].max_count, Some(5));
    let listed = store
        .list_licenses(&LicenseQuery {
            received_by: Some(f.customer.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    log.push(format!("received: {}", listed.items.len()));
    let r = store.delete_license(&arn, "1", after).await;
    log.push(names.clean(outcome(&r)));
    let deleted = store.delete_license(&arn, "2", after).await.expect("delete");
    log.push(format!("deleted: {} {}", deleted.status, deleted.version));
    let r = store.delete_license(&arn, "3", after).await;
    log.push(names.clean(outcome(&r)));
    let r = store.create_license_version(version(None, false, "v-3"), after).await;
    log.push(names.clean(outcome(&r)));
    let r = store
        .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "ct-7"), after)
        .await;
    log.push(names.clean(outcome(&r)));

    // Tags.
    let tags = [
        Tag {
            key: "b".into(),
            value: "1".into(),
        },
        Tag {
            key: "B".into(),
            value: "2".into(),
        },
        Tag {
            key: "a".into(),
            value: "3".into(),
        },
    ];
    store.tag_resource(&f.arn, &tags).await.expect("tag");
    store
        .tag_resource(
            &f.arn,
            &[Tag {
                key: "a".into(),
                value: "4".into(),
            }],
        )
        .await
        .expect("retag");
    store.untag_resource(&f.arn, &["b".into()]).await.expect("untag");
    log.push(format!("{:?}", store.list_tags(&f.arn).await.expect("tags")));
    log
}

#[tokio::test]
async fn licenses_checkouts_and_usage_behave_alike() {
    let mut transcripts = Vec::new();
    for db in backends().await {
        let store = db.open().await;
        transcripts.push((db.name, license_flow(store.as_ref()).await));
    }
    let (_, first) = &transcripts[0];
    for line in [
        "in use after checkout: 2",
        "in use after check-in: 0",
        "in use after expiry: 1",
        "in use after reset: 0",
        "in use after old check-in: 0",
        "version: 2 AVAILABLE",
        "deleted: DELETED 3",
    ] {
        assert!(first.iter().any(|l| l == line), "missing '{line}' in {first:#?}");
    }
    assert!(first.iter().any(
        |l| l.starts_with("Conflict: ClientToken 'ct-1' was already used with a different CheckoutLicense request")
    ));
    assert!(first.iter().any(|l| l.starts_with(
        "NoEntitlements: entitlement 'Seats' of license <license> is exhausted: 2 of 5 in use, 4 requested"
    )));
    for (name, t) in &transcripts[1..] {
        assert_eq!(t, first, "{name} answers differently from {}", transcripts[0].0);
    }
}

fn grant(grantor: &AccountId, grantee: &AccountId, license_arn: &str, n: u8) -> Grant {
    Grant {
        grant_arn: GrantArn::new(grantor, [n; 16]).to_string(),
        grant_name: format!("grant {n}"),
        parent_arn: license_arn.to_owned(),
        license_arn: license_arn.to_owned(),
        grantee_principal_arn: grantee.root_arn(),
        home_region: "us-east-1".into(),
        grant_status: GrantStatus::PendingAccept,
        status_reason: None,
        version: "1".into(),
        granted_operations: vec![AllowedOperation::CheckoutLicense, AllowedOperation::CheckInLicense],
    }
}

fn key(account: &AccountId, operation: &'static str, ct: &str, body: &str) -> Idempotency {
    Idempotency {
        account: account.clone(),
        operation,
        client_token: ct.to_owned(),
        request_hash: hash_of(&serde_json::json!(body)),
    }
}

async fn grant_flow(store: &dyn Store) -> Vec<String> {
    let mut log = Vec::new();
    let t = now();
    let f = fixture(store, 5).await;
    let (partner, _) = store.create_account("partner", t).await.expect("partner");
    let mut names = Names(Vec::new());
    names.add(&f.arn, "license");
    names.add(f.vendor.as_str(), "vendor");
    names.add(f.customer.as_str(), "customer");
    names.add(partner.id.as_str(), "partner");
    names.add(&f.sku, "sku");

    let g = grant(&f.customer, &partner.id, &f.arn, 1);
    names.add(&g.grant_arn, "grant");
    let new = |g: &Grant, ct: &str, body: &str| NewGrant {
        grant: g.clone(),
        grantor: f.customer.clone(),
        grantee: partner.id.clone(),
        tags: vec![Tag {
            key: "k".into(),
            value: "v".into(),
        }],
        idempotency: key(&f.customer, "CreateGrant", ct, body),
    };
    let out = store.create_grant(new(&g, "g-1", "a"), t).await.expect("create grant");
    log.push(format!("created: {} {}", out.status.as_str(), out.version));
    // A retry answers the first grant, even if the server made up another ARN.
    let retry = store
        .create_grant(new(&grant(&f.customer, &partner.id, &f.arn, 2), "g-1", "a"), t)
        .await
        .expect("replay");
    assert_eq!(retry, out);
    let r = store.create_grant(new(&g, "g-1", "b"), t).await;
    log.push(names.clean(outcome(&r)));

    // Before the grant is active the partner cannot check out.
    let r = store
        .checkout(checkout_cmd(&partner.id, &f.sku, &f.vendor, 1, "p-1"), t)
        .await;
    log.push(names.clean(outcome(&r)));

    let mut active = g.clone();
    active.grant_status = GrantStatus::Active;
    active.version = "2".into();
    let upd = store
        .update_grant(
            active.clone(),
            "1",
            Some(key(&partner.id, "AcceptGrant", "u-1", "x")),
            t,
        )
        .await
        .expect("accept");
    log.push(format!("updated: {} {}", upd.status.as_str(), upd.version));
    let replay = store
        .update_grant(
            active.clone(),
            "1",
            Some(key(&partner.id, "AcceptGrant", "u-1", "x")),
            t,
        )
        .await
        .expect("replayed update");
    assert_eq!(replay, upd);
    // A stale version is a conflict.
    let r = store.update_grant(active.clone(), "1", None, t).await;
    log.push(names.clean(outcome(&r)));
    let mut missing = active.clone();
    missing.grant_arn = GrantArn::new(&f.customer, [9; 16]).to_string();
    names.add(&missing.grant_arn, "missing");
    let r = store.update_grant(missing, "1", None, t).await;
    log.push(names.clean(outcome(&r)));

    // Through the ACTIVE grant the partner checks out and checks in.
    let c = store
        .checkout(checkout_cmd(&partner.id, &f.sku, &f.vendor, 1, "p-2"), t)
        .await
        .expect("checkout through the grant");
    store
        .check_in(&partner.id, &c.token, None, None, t)
        .await
        .expect("check in");

    let chains = store.grant_chains(&partner.id, &f.arn).await.expect("chains");
    log.push(format!("chains: {} of {}", chains.len(), chains[0].len()));
    let page = store
        .list_grants(&GrantQuery {
            grantor: Some(f.customer.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list grants");
    log.push(format!("grants: {} next {:?}", page.items.len(), page.next));
    let v1 = store
        .get_grant(&g.grant_arn, Some(1))
        .await
        .expect("v1")
        .expect("exists");
    log.push(format!("v1: {}", v1.grant_status.as_str()));
    log.push(format!("{:?}", store.list_tags(&g.grant_arn).await.expect("tags")));

    // Tokens: idempotent for 10 minutes, deleted once, by their owner only.
    let record = |id: &str| TokenRecord {
        token_id: id.to_owned(),
        account: partner.id.clone(),
        license_arn: f.arn.clone(),
        role_arns: vec!["arn:aws:iam::123456789012:role/r".into()],
        token_properties: vec!["p".into()],
        expires_at: t + Duration::days(30),
        deleted: false,
        created_at: t,
    };
    let tk = store
        .create_token(record("tok-1"), key(&partner.id, "CreateToken", "t-1", "a"), t)
        .await
        .expect("token");
    let again = store
        .create_token(record("tok-2"), key(&partner.id, "CreateToken", "t-1", "a"), t)
        .await
        .expect("token replay");
    log.push(format!("token replay keeps: {}", again.token_id == tk.token_id));
    let r = store
        .create_token(record("tok-3"), key(&partner.id, "CreateToken", "t-1", "b"), t)
        .await;
    log.push(names.clean(outcome(&r)));
    let later = store
        .create_token(
            record("tok-4"),
            key(&partner.id, "CreateToken", "t-1", "b"),
            t + Duration::minutes(11),
        )
        .await
        .expect("after 10 minutes a new token");
    log.push(format!("after the window: {}", later.token_id));
    let page = store.list_tokens(&partner.id, &[], &[], None, 1).await.expect("tokens");
    log.push(format!(
        "tokens page: {:?}",
        page.items.iter().map(|t| t.token_id.clone()).collect::<Vec<_>>()
    ));
    let r = store.delete_token(&f.vendor, "tok-1", t).await;
    log.push(names.clean(outcome(&r)));
    store.delete_token(&partner.id, "tok-1", t).await.expect("delete token");
    let r = store.delete_token(&partner.id, "tok-1", t).await;
    log.push(names.clean(outcome(&r)));
    let r = store.delete_token(&partner.id, "tok-9", t).await;
    log.push(names.clean(outcome(&r)));
    log.push(format!(
        "deleted: {}",
        store.get_token("tok-1").await.expect("get").expect("exists").deleted
    ));

    // Accounts, keys and issuer keys.
    let k = store.create_access_key(&partner.id, t).await.expect("key");
    assert!(
        store
            .access_key(&k.access_key_id)
            .await
            .expect("read")
            .expect("exists")
            .active
    );
    store.revoke_access_key(&k.access_key_id, t).await.expect("revoke");
    assert!(
        !store
            .access_key(&k.access_key_id)
            .await
            .expect("read")
            .expect("exists")
            .active
    );
    let r = store.revoke_access_key("AKIANOSUCHKEY", t).await;
    log.push(names.clean(outcome(&r)));
    let ghost = AccountId::parse("999999999999").expect("id");
    let r = store.create_access_key(&ghost, t).await;
    log.push(names.clean(outcome(&r)));
    let key1 = tessera_store::StoredKey {
        account_id: f.vendor.clone(),
        kid: "kid-1".into(),
        alg: "EdDSA".into(),
        private_der: vec![1, 2, 3],
        public_jwk: "{}".into(),
    };
    let kept = store.put_issuer_key(key1.clone(), t).await.expect("put");
    let second = tessera_store::StoredKey {
        kid: "kid-2".into(),
        ..key1.clone()
    };
    let kept2 = store.put_issuer_key(second, t).await.expect("put again");
    assert_eq!(kept, key1);
    assert_eq!(kept2, key1, "the first key is kept");
    let public = store.public_keys().await.expect("public");
    assert!(public.iter().all(|k| k.private_der.is_empty()));
    log.push(format!(
        "accounts: {}",
        store.list_accounts().await.expect("accounts").len()
    ));
    log
}

#[tokio::test]
async fn grants_tokens_and_keys_behave_alike() {
    let mut transcripts = Vec::new();
    for db in backends().await {
        let store = db.open().await;
        transcripts.push((db.name, grant_flow(store.as_ref()).await));
    }
    let (_, first) = &transcripts[0];
    assert!(
        first.iter().any(|l| l == "NotFound: grant <missing> does not exist"),
        "{first:#?}"
    );
    assert!(first
        .iter()
        .any(|l| l.starts_with("Conflict: grant ") && l.ends_with("is at version 2, not 1; read it again and retry")));
    for (name, t) in &transcripts[1..] {
        assert_eq!(t, first, "{name} answers differently from {}", transcripts[0].0);
    }
}

async fn environment_flow(store: &dyn Store) -> Vec<String> {
    let mut log = Vec::new();
    let t = now();
    let f = fixture(store, 10).await;
    let mut names = Names(Vec::new());
    names.add(&f.arn, "license");
    let env = store
        .register_environment(&f.vendor, environment("env-a", &f.arn, 4), t)
        .await
        .expect("register");
    log.push(format!(
        "{} {} {}",
        env.environment_id, env.aku_allocated, env.aku_in_use
    ));
    let r = store
        .register_environment(&f.vendor, environment("env-a", &f.arn, 1), t)
        .await;
    log.push(names.clean(outcome(&r)));
    let r = store
        .register_environment(&f.vendor, environment("env-b", &f.arn, 7), t)
        .await;
    log.push(names.clean(outcome(&r)));
    let r = store
        .register_environment(
            &f.vendor,
            environment(
                "env-c",
                "arn:aws:license-manager::111111111111:license:l-00000000000000000000000000000000",
                1,
            ),
            t,
        )
        .await;
    log.push(names.clean(outcome(&r)));
    let mut bad = environment("env-d", &f.arn, 1);
    bad.entitlement = "Premium".into();
    let r = store.register_environment(&f.vendor, bad, t).await;
    log.push(names.clean(outcome(&r)));
    store
        .register_environment(&f.vendor, environment("env-b", &f.arn, 6), t)
        .await
        .expect("exactly what is left");
    store
        .report_environment_usage(&f.vendor, "env-a", 3, t)
        .await
        .expect("report");
    let r = store.allocate_environment(&f.vendor, "env-a", 2, t).await;
    log.push(names.clean(outcome(&r)));
    let r = store.allocate_environment(&f.vendor, "env-a", 5, t).await;
    log.push(names.clean(outcome(&r)));
    let r = store.allocate_environment(&f.vendor, "env-z", 5, t).await;
    log.push(names.clean(outcome(&r)));
    let env = store
        .allocate_environment(&f.vendor, "env-a", 3, t)
        .await
        .expect("shrink");
    log.push(format!(
        "{} {} {}",
        env.environment_id, env.aku_allocated, env.aku_in_use
    ));
    let got = store
        .get_environment(&f.vendor, "env-a")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.aku_allocated, 3);
    assert!(got.usage_reported_at.is_some());
    let all = store.list_environments(None, None, Some(&f.arn)).await.expect("list");
    log.push(format!(
        "{:?}",
        all.iter()
            .map(|(_, e)| (e.environment_id.clone(), e.aku_allocated))
            .collect::<Vec<_>>()
    ));
    log
}

#[tokio::test]
async fn environments_behave_alike() {
    let mut transcripts = Vec::new();
    for db in backends().await {
        let store = db.open().await;
        transcripts.push((db.name, environment_flow(store.as_ref()).await));
    }
    let (_, first) = &transcripts[0];
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("LimitExceeded: allocating 7 Seats would exceed license <license>")),
        "{first:#?}"
    );
    for (name, t) in &transcripts[1..] {
        assert_eq!(t, first, "{name} answers differently from {}", transcripts[0].0);
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = match tessera_store::open("postgres://root:hunter2@127.0.0.1:1/tessera").await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(msg.contains("postgres://root@127.0.0.1:1/tessera"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let err = tessera_store::open("mysql://h/d").await.err().expect("unsupported");
    assert!(
        err.to_string().contains("unsupported database URL scheme 'mysql'"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_urls_of_both_spellings_open() {
    if skip_postgres() {
        return;
    }
    let db = PgDatabase::create().await;
    for url in [db.url.clone(), db.url.replacen("postgres://", "postgresql://", 1)] {
        let store = tessera_store::open(&format!("{url}?pool_max_connections=2"))
            .await
            .expect("open");
        store.list_accounts().await.expect("query");
    }
}

#[tokio::test]
async fn postgres_replaces_connections_that_died_while_idle() {
    if skip_postgres() {
        return;
    }
    const POOL: usize = 4;
    let db = PgDatabase::create().await;
    let store = tessera_store::open(&format!("{}?pool_max_connections={POOL}", db.url))
        .await
        .expect("open");
    let (_, key) = store.create_account("conns", now()).await.expect("account");
    // Open connections of both kinds (the pool's, and the access-key readers'), then leave them idle.
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..POOL * 2 {
        let (store, id) = (store.clone(), key.access_key_id.clone());
        all.spawn(async move {
            store.list_accounts().await?;
            store.access_key(&id).await.map(|k| assert!(k.is_some()))
        });
    }
    while let Some(r) = all.join_next().await {
        r.expect("task").expect("queries before the connections are killed");
    }
    let killed = db.terminate_connections().await;
    assert!(killed >= 2, "the store held connections to kill: {killed}");
    // Each dead connection may fail one call; after that every call works.
    let mut failures = 0;
    for _ in 0..POOL * 2 + 2 {
        failures += usize::from(store.list_accounts().await.is_err());
        failures += usize::from(store.access_key(&key.access_key_id).await.is_err());
    }
    assert!(
        failures <= POOL * 2,
        "{failures} failures with {POOL} + {POOL} connections"
    );
    for _ in 0..POOL * 2 {
        store
            .list_accounts()
            .await
            .expect("query after the dead connections were replaced");
        let k = store
            .access_key(&key.access_key_id)
            .await
            .expect("access key after the dead connections were replaced");
        assert_eq!(k.map(|k| k.secret), Some(key.secret.clone()));
    }
}

#[tokio::test]
async fn who_may_check_out_a_license_without_a_grant() {
    for db in backends().await {
        let store = db.open().await;
        let f = fixture(store.as_ref(), 5).await;
        let t = now();
        // The issuer without a Beneficiary: refused, and told to name one.
        let own = store
            .checkout(checkout_cmd(&f.vendor, &f.sku, &f.vendor, 1, "ct-own"), t)
            .await;
        let msg = outcome(&own);
        assert!(
            matches!(own, Err(StoreError::NoEntitlements(_))) && msg.contains("must name the beneficiary"),
            "{}: {msg}",
            db.name
        );
        // The issuer naming the beneficiary, and the beneficiary itself: granted.
        let mut for_customer = checkout_cmd(&f.vendor, &f.sku, &f.vendor, 1, "ct-for");
        for_customer.beneficiary = Some(f.customer.to_string());
        store
            .checkout(for_customer, t)
            .await
            .expect("issuer for its beneficiary");
        store
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "ct-self"), t)
            .await
            .expect("the beneficiary");
        // Anyone else naming a Beneficiary is refused even where grants would apply, without the hint.
        let (other, _) = store.create_account("other", t).await.expect("other");
        let mut stranger = checkout_cmd(&other.id, &f.sku, &f.vendor, 1, "ct-other");
        stranger.beneficiary = Some(f.customer.to_string());
        let refused = store.checkout(stranger, t).await;
        let msg = outcome(&refused);
        assert!(
            matches!(refused, Err(StoreError::NoEntitlements(_))) && !msg.contains("must name the beneficiary"),
            "{}: {msg}",
            db.name
        );
        assert_eq!(seats_in_use(store.as_ref(), &f.arn, t).await, 2, "{}", db.name);
    }
}

/// A hot-path write that carries an access key confirms it in its own
/// transaction: a key revoked before the write, through this store or another
/// one on the same database (another server, or the CLI), is refused, and a
/// refused write takes nothing.
#[tokio::test]
async fn writes_confirm_the_access_key_they_carry() {
    for db in backends().await {
        let store = db.open().await;
        let other = db.open().await;
        let (store, other) = (store.as_ref(), other.as_ref());
        assert!(store.confirms_keys(), "{}", db.name);
        let t = now();
        let f = fixture(store, 5).await;
        let local = store
            .create_access_key(&f.customer, t)
            .await
            .expect("key")
            .access_key_id;
        let remote = store
            .create_access_key(&f.customer, t)
            .await
            .expect("key")
            .access_key_id;
        let with_key = |ct: &str, key: &str| {
            let mut cmd = checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, ct);
            cmd.key = Some(key.to_owned());
            cmd
        };
        let c = store
            .checkout(with_key("k-1", &local), t)
            .await
            .expect("checkout, key active");
        store
            .extend(&f.customer, &c.token, None, Some(&remote), false, t)
            .await
            .expect("extend, key active");
        let unknown = store.checkout(with_key("k-0", "AKIANOSUCHKEY0000000"), t).await;
        assert!(
            matches!(unknown, Err(StoreError::UnknownKey(_))),
            "{}: {unknown:?}",
            db.name
        );

        store.revoke_access_key(&local, t).await.expect("revoke here");
        other.revoke_access_key(&remote, t).await.expect("revoke elsewhere");
        for key in [&local, &remote] {
            let r = store.checkout(with_key("k-2", key), t).await;
            assert!(matches!(r, Err(StoreError::UnknownKey(_))), "{}: {r:?}", db.name);
            let r = store.check_in(&f.customer, &c.token, None, Some(key), t).await;
            assert!(matches!(r, Err(StoreError::UnknownKey(_))), "{}: {r:?}", db.name);
            let r = store.extend(&f.customer, &c.token, None, Some(key), false, t).await;
            assert!(matches!(r, Err(StoreError::UnknownKey(_))), "{}: {r:?}", db.name);
        }
        assert_eq!(seats_in_use(store, &f.arn, t).await, 1, "{}", db.name);
        // A caller authenticated otherwise (the key's status read per request) carries no key.
        store
            .check_in(&f.customer, &c.token, None, None, t)
            .await
            .expect("check in");
        assert_eq!(seats_in_use(other, &f.arn, t).await, 0, "{}", db.name);
    }
}

/// The first install of an environment is kept: later installs of the same
/// environment of the same account get it back; a trial start in the future is
/// never recorded; other accounts and environments are apart.
#[tokio::test]
async fn the_first_trial_of_an_environment_is_kept() {
    for db in backends().await {
        let store = db.open().await;
        let t = now();
        let (a, _) = store.create_account("a", t).await.expect("a");
        let (b, _) = store.create_account("b", t).await.expect("b");
        let first = store
            .start_trial(&a.id, "env-1", "install-first", t + time::Duration::days(30), t)
            .await
            .expect("first");
        assert_eq!(first.install_id, "install-first", "{}", db.name);
        assert_eq!(
            first.trial_started_at,
            tessera_core::timefmt::from_millis(tessera_core::timefmt::to_millis(t))
        );
        let later = store
            .start_trial(
                &a.id,
                "env-1",
                "install-again",
                t + time::Duration::days(20),
                t + time::Duration::days(20),
            )
            .await
            .expect("later");
        assert_eq!(later, first, "{}", db.name);
        let other_env = store
            .start_trial(&a.id, "env-2", "install-2", t, t)
            .await
            .expect("env-2");
        assert_eq!(other_env.install_id, "install-2");
        let other_account = store.start_trial(&b.id, "env-1", "install-b", t, t).await.expect("b");
        assert_eq!(other_account.install_id, "install-b", "{}", db.name);
    }
}

/// Closing a store finishes what was written, stops its threads and pools,
/// and refuses what comes after; the next store on the database has it all.
#[tokio::test]
async fn a_closed_store_keeps_what_it_answered_and_refuses_the_rest() {
    for db in backends().await {
        let store = db.open().await;
        let f = fixture(store.as_ref(), 5).await;
        let t = now();
        store
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 2, "ct-before-close"), t)
            .await
            .expect("a checkout before closing");
        store.close().await;
        let after = store
            .checkout(checkout_cmd(&f.customer, &f.sku, &f.vendor, 1, "ct-after-close"), t)
            .await;
        assert!(after.is_err(), "{}: a closed store took a checkout", db.name);
        drop(store);
        let again = db.open().await;
        assert_eq!(seats_in_use(again.as_ref(), &f.arn, t).await, 2, "{}", db.name);
        again.close().await;
    }
}
