//! Spawns a server in-process on a temporary database and signs requests to it.
//!
//! The database is SQLite in a temporary directory, or, with
//! `TESSERA_TEST_DATABASE=postgres`, a fresh PostgreSQL database per test on
//! the server named by `TESSERA_TEST_POSTGRES_URL` (default
//! `postgres://root@127.0.0.1:5432/test`), dropped when the test ends.

use std::sync::Arc;

use serde_json::{json, Value};
use tessera_client::{Client, ClientError, Credentials};
use tessera_core::AccountId;
use tessera_server::{AppState, ServerClock};
use tessera_store::Store;
use tokio::sync::oneshot;

pub struct Account {
    pub id: AccountId,
    pub client: Client,
    pub creds: Credentials,
}

pub struct TestApp {
    pub endpoint: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<ServerClock>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The test's PostgreSQL database, when the tests run on PostgreSQL.
    pg: Option<PgDatabase>,
}

/// A PostgreSQL database made for one test; dropped with its connections at the end.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

fn on_postgres() -> bool {
    match std::env::var("TESSERA_TEST_DATABASE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("TESSERA_TEST_DATABASE must be sqlite or postgres, not '{other}'"),
    }
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("TESSERA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        let name = format!("tessera_it_{}", uuid::Uuid::new_v4().simple());
        let url = tessera_store::PgStore::create_database(&admin_url, &name)
            .await
            .unwrap_or_else(|e| panic!("TESSERA_TEST_DATABASE=postgres, but: {e}"));
        Self { admin_url, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(tessera_store::PgStore::drop_database(&admin_url, &name));
            }
        })
        .join();
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir).await
    }

    /// Starts a server on the database in `dir` (new or existing); on
    /// PostgreSQL, on a new database.
    pub async fn spawn_in(dir: tempfile::TempDir) -> Self {
        let pg = if on_postgres() {
            Some(PgDatabase::create().await)
        } else {
            None
        };
        Self::spawn_on(dir, pg).await
    }

    async fn spawn_on(dir: tempfile::TempDir, pg: Option<PgDatabase>) -> Self {
        let url = match &pg {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", dir.path().join("tessera.db").display()),
        };
        let store = tessera_store::open(&url).await.expect("open store");
        let clock = Arc::new(ServerClock::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(store.clone(), clock.clone(), true);
        let server = tokio::spawn(tessera_server::serve(listener, state, Default::default(), async move {
            let _ = rx.await;
        }));
        Self {
            endpoint,
            store,
            clock,
            dir,
            stop: Some(tx),
            server: Some(server),
            pg,
        }
    }

    /// Stops the server gracefully and starts another on the same database.
    pub async fn restart(mut self) -> Self {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let pg = self.pg.take();
        drop(self);
        Self::spawn_on(dir, pg).await
    }

    pub async fn account(&self, name: &str) -> Account {
        let (acct, key) = self
            .store
            .create_account(name, time::OffsetDateTime::now_utc())
            .await
            .expect("create account");
        let creds = Credentials {
            access_key_id: key.access_key_id,
            secret_access_key: key.secret,
        };
        Account {
            id: acct.id,
            client: Client::new(&self.endpoint, creds.clone()),
            creds,
        }
    }

    pub fn advance(&self, secs: i64) {
        self.clock
            .advance(secs)
            .expect("a test moves the clock by less than a century");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The seed's license: ReadOnly, MaxCount 5, AllowCheckIn, 60-minute provisional TTL.
pub fn seed_license(sku: &str, beneficiary: &AccountId) -> Value {
    json!({
        "LicenseName": "AWSMP Test License",
        "ProductName": "Test Product",
        "ProductSKU": sku,
        "Issuer": {"Name": "Self"},
        "HomeRegion": "us-east-1",
        "Validity": {"Begin": "2026-01-01T00:00:00Z", "End": "2099-01-01T00:00:00Z"},
        "Entitlements": [{"Name": "ReadOnly", "MaxCount": 5, "Overage": false, "Unit": "Count", "AllowCheckIn": true}],
        "Beneficiary": beneficiary.as_str(),
        "ConsumptionConfiguration": {"RenewType": "None", "ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}},
        "ClientToken": uuid(),
    })
}

pub fn fingerprint(issuer: &AccountId) -> String {
    format!("aws:{issuer}:Self:issuer-fingerprint")
}

pub fn checkout_body(sku: &str, issuer: &AccountId, count: u32) -> Value {
    json!({
        "ProductSKU": sku,
        "CheckoutType": "PROVISIONAL",
        "KeyFingerprint": fingerprint(issuer),
        "Entitlements": [{"Name": "ReadOnly", "Value": count.to_string(), "Unit": "Count"}],
        "ClientToken": uuid(),
    })
}

pub async fn create(vendor: &Account, body: Value) -> String {
    let r = vendor.client.call("CreateLicense", &body).await.expect("CreateLicense");
    r["LicenseArn"].as_str().expect("LicenseArn").to_owned()
}

pub async fn consumed(client: &Client, arn: &str) -> String {
    let r = client
        .call("GetLicenseUsage", &json!({"LicenseArn": arn}))
        .await
        .expect("GetLicenseUsage");
    r["LicenseUsage"]["EntitlementUsages"][0]["ConsumedValue"]
        .as_str()
        .expect("ConsumedValue")
        .to_owned()
}

pub fn kind(r: Result<Value, ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.kind().unwrap_or("transport").to_owned(),
    }
}
