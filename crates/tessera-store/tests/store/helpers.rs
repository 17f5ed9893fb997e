//! Backends for the tests, and requests built the way the server builds them.

use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;

use tessera_core::consumption::{parse_requests, EntitlementDataInput};
use tessera_core::environment::Environment;
use tessera_core::license::{CheckoutType, LicenseInput};
use tessera_core::{AccountId, LicenseArn};
use tessera_store::{CheckoutCommand, NewLicense, Store};

const DEFAULT_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// A database for one test. Each `open` is another server on it (its own pool).
pub struct TestDb {
    pub name: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
        Self {
            name: "sqlite",
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    /// A fresh PostgreSQL database; panics (fails the test) when the server
    /// cannot be reached.
    pub async fn postgres() -> Self {
        let pg = PgDatabase::create().await;
        Self {
            name: "postgres",
            url: format!("{}?pool_max_connections=8", pg.url),
            _dir: None,
            _pg: Some(pg),
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        tessera_store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open the {} store: {e}", self.name))
    }
}

/// SQLite, and PostgreSQL unless `TESSERA_SKIP_POSTGRES=1`.
pub async fn backends() -> Vec<TestDb> {
    let mut out = vec![TestDb::sqlite().await];
    if !skip_postgres() {
        out.push(TestDb::postgres().await);
    }
    out
}

pub fn skip_postgres() -> bool {
    std::env::var("TESSERA_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

fn admin_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database created for one test and dropped (with its connections) at the end.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin}: {e}\n\
                 start it (pg_ctlcluster 15 main start) or set TESSERA_SKIP_POSTGRES=1 to leave these tests out"
            )
        });
        let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let base = admin.split('?').next().unwrap_or(&admin);
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl PgDatabase {
    /// Ends every server process connected to this database (as a database
    /// restart would); returns how many there were.
    pub async fn terminate_connections(&self) -> i64 {
        let mut conn = PgConnection::connect(&admin_url()).await.expect("admin connection");
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("pg_terminate_backend");
        let _ = conn.close().await;
        killed
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                        let _ = conn
                            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                            .await;
                        let _ = conn.close().await;
                    }
                });
            }
        })
        .join();
    }
}

/// The business time of the tests: fixed, so that answers compare across backends.
pub fn now() -> OffsetDateTime {
    time::macros::datetime!(2030-01-01 00:00:00.123 UTC)
}

pub fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn hash_of(v: &serde_json::Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(v.to_string().as_bytes()))
}

/// The request body of a license: one counted entitlement `Seats` with `max`,
/// and a feature flag.
pub fn license_json(sku: &str, beneficiary: &AccountId, max: i64) -> serde_json::Value {
    serde_json::json!({
        "LicenseName": "Test License",
        "ProductName": "Test Product",
        "ProductSKU": sku,
        "Issuer": {"Name": "Self"},
        "HomeRegion": "us-east-1",
        "Validity": {"Begin": "2020-01-01T00:00:00Z", "End": "2099-01-01T00:00:00Z"},
        "Entitlements": [
            {"Name": "Seats", "MaxCount": max, "Overage": false, "Unit": "Count", "AllowCheckIn": true},
            {"Name": "Premium", "Unit": "None", "Value": "true"},
        ],
        "Beneficiary": beneficiary.as_str(),
        "ConsumptionConfiguration": {"RenewType": "None", "ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}},
    })
}

pub fn new_license(issuer: &AccountId, n: u8, body: &serde_json::Value, client_token: &str) -> NewLicense {
    let input: LicenseInput = serde_json::from_value(body.clone()).expect("license input");
    NewLicense {
        arn: LicenseArn::new(issuer, [n; 16]),
        body: input.validate().expect("valid license"),
        tags: Vec::new(),
        client_token: client_token.to_owned(),
        request_hash: hash_of(body),
    }
}

pub fn fingerprint(issuer: &AccountId) -> String {
    tessera_core::license::key_fingerprint(issuer, "Self")
}

pub fn checkout_cmd(
    caller: &AccountId,
    sku: &str,
    issuer: &AccountId,
    seats: i64,
    client_token: &str,
) -> CheckoutCommand {
    let ents = serde_json::json!([{"Name": "Seats", "Value": seats.to_string(), "Unit": "Count"}]);
    let raw: Vec<EntitlementDataInput> = serde_json::from_value(ents.clone()).expect("entitlements");
    CheckoutCommand {
        caller: caller.clone(),
        product_sku: sku.to_owned(),
        key_fingerprint: fingerprint(issuer),
        checkout_type: CheckoutType::Provisional,
        entitlements: parse_requests(&raw).expect("valid entitlements"),
        beneficiary: None,
        node_id: None,
        client_token: client_token.to_owned(),
        request_hash: hash_of(&serde_json::json!({"sku": sku, "ents": ents})),
        token: token(),
        only_license: None,
        key: None,
    }
}

pub fn environment(id: &str, license_arn: &str, aku: i64) -> Environment {
    Environment {
        environment_id: id.to_owned(),
        install_id: format!("install-{id}"),
        ops_bucket: format!("s3://ops-{id}"),
        cloud_provider: "aws".into(),
        region: "us-east-1".into(),
        license_arn: license_arn.to_owned(),
        entitlement: "Seats".into(),
        aku_allocated: aku,
        aku_in_use: 0,
        usage_reported_at: None,
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// An issuer and a customer, and a license of `max` seats from the one to the other.
pub struct Fixture {
    pub vendor: AccountId,
    pub customer: AccountId,
    pub sku: String,
    pub arn: String,
}

pub async fn fixture(store: &dyn Store, max: i64) -> Fixture {
    let t = now();
    let (vendor, _) = store.create_account("vendor", t).await.expect("vendor");
    let (customer, _) = store.create_account("customer", t).await.expect("customer");
    let sku = format!("sku-{}", &token()[..8]);
    let body = license_json(&sku, &customer.id, max);
    let out = store
        .create_license(new_license(&vendor.id, 7, &body, &token()), t)
        .await
        .expect("create license");
    Fixture {
        vendor: vendor.id,
        customer: customer.id,
        sku,
        arn: out.license_arn,
    }
}

pub async fn seats_in_use(store: &dyn Store, arn: &str, at: OffsetDateTime) -> i64 {
    let usage = store.license_usage(arn, at).await.expect("usage");
    usage
        .iter()
        .find(|u| u.name == "Seats")
        .expect("Seats counter")
        .consumed
}

/// The error's kind and message, for comparing backends.
pub fn outcome<T: std::fmt::Debug>(r: &Result<T, tessera_store::StoreError>) -> String {
    use tessera_store::StoreError as E;
    match r {
        Ok(_) => "ok".into(),
        Err(E::NotFound(m)) => format!("NotFound: {m}"),
        Err(E::AccessDenied(m)) => format!("AccessDenied: {m}"),
        Err(E::Conflict(m)) => format!("Conflict: {m}"),
        Err(E::Invalid(m)) => format!("Invalid: {m}"),
        Err(E::NoEntitlements(m)) => format!("NoEntitlements: {m}"),
        Err(E::EntitlementNotAllowed(m)) => format!("EntitlementNotAllowed: {m}"),
        Err(E::LimitExceeded(m)) => format!("LimitExceeded: {m}"),
        Err(e) => format!("other: {e}"),
    }
}
