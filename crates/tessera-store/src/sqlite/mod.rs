//! The embedded SQLite backend: WAL, every acknowledged write on disk.
//!
//! The hot path's writes go through the writer thread of `hot`; the rest
//! through one async connection (`synchronous=FULL`). Both write with `BEGIN
//! IMMEDIATE` and take turns through a process-wide gate, so a
//! read-check-update inside one transaction cannot interleave with another
//! writer in this process, and other processes (the CLI) wait on the lock.

use crate::codec::{account_of, corrupt, license_of, new_access_key, random_account_id, version_json, version_outcome};
use crate::rules::token_reused;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

use tessera_core::consumption::Consumption;
use tessera_core::environment::Environment;
use tessera_core::grant::Grant;
use tessera_core::license::{License, LicenseStatus, Tag};
use tessera_core::timefmt::{from_millis, to_millis};
use tessera_core::{AccountId, LicenseArn};

use crate::{
    AccessKey, Account, BorrowCommand, CheckoutCommand, EntitlementUsage, GrantOutcome, GrantQuery, Idempotency,
    LicenseQuery, NewGrant, NewLicense, NewVersion, Page, Result, Store, StoreError, StoredKey, TokenRecord,
    VersionOutcome,
};

pub mod backup;
mod environments;
mod file;
mod grants;
mod hot;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// The group-commit writer of the hot path (checkout, check-in, extension, expiry).
    hot: Arc<hot::Hot>,
    /// Held around every write transaction of this process, by both writer connections.
    gate: Arc<Mutex<()>>,
    path: std::path::PathBuf,
    /// The first sign of a damaged database file seen while serving, if any.
    damage: std::sync::Mutex<Option<String>>,
}

/// A write transaction of the general writer connection, holding the process's write turn.
type WriteTx = (Transaction<'static, Sqlite>, OwnedMutexGuard<()>);

/// How every sqlx connection to a Tessera SQLite file is opened: WAL, durable
/// commits (`synchronous=FULL`), foreign keys, and a 30 s wait for the lock.
pub(crate) fn connect_options(path: &Path) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true))
}

impl SqliteStore {
    /// Opens the database file (creating it where there is none) and runs
    /// migrations, without the integrity check of [`SqliteStore::open_checked`].
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_checked(path, false).await
    }

    /// Opens the database at `path`: refuses a file that is not a Tessera
    /// database, and with `integrity`, one that `PRAGMA quick_check` finds
    /// damaged; makes a new database where there is no file.
    pub async fn open_checked(path: &Path, integrity: bool) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let inspect = |path: &Path| {
            let owned = path.to_owned();
            async move {
                tokio::task::spawn_blocking(move || file::inspect(&owned, integrity))
                    .await
                    .map_err(|e| StoreError::Config(format!("checking the database failed: {e}")))?
            }
        };
        if inspect(path).await? == file::Found::Nothing && !create(path).await? {
            // Another process made the database meanwhile: it is checked like any other.
            inspect(path).await?;
        }
        let opts = connect_options(path)?;
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await?;
        restrict_permissions(path);
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        let gate = Arc::new(Mutex::new(()));
        let hot = Arc::new(hot::Hot::start(path, gate.clone())?);
        Ok(Self {
            read,
            write,
            hot,
            gate,
            path: path.to_owned(),
            damage: std::sync::Mutex::new(None),
        })
    }

    /// Begins a write transaction on the general writer connection once it is this connection's turn.
    async fn begin(&self) -> Result<WriteTx> {
        let turn = self.gate.clone().lock_owned().await;
        Ok((self.write.begin_with("BEGIN IMMEDIATE").await?, turn))
    }
}

/// Makes a new, marked and migrated database at `path`: complete under a
/// temporary name first, then linked into place, so that a crash leaves
/// either no database or a whole one. False when another process put one
/// there first.
async fn create(path: &Path) -> Result<bool> {
    file::remove_stale_staging(path);
    let staging = file::staging(path);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(&staging)?.create_if_missing(true))
        .await?;
    restrict_permissions(&staging);
    sqlx::query(&format!("PRAGMA application_id = {}", file::APPLICATION_ID))
        .execute(&pool)
        .await?;
    MIGRATOR.run(&pool).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
    pool.close().await;
    let placed = file::put_in_place(&staging, path)?;
    if placed {
        tracing::info!(path = %path.display(), "created a new database");
    }
    Ok(placed)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The file holds access-key secrets and issuer private keys.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

async fn insert_access_key(tx: &mut Transaction<'_, Sqlite>, k: &AccessKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO access_keys (access_key_id, account_id, secret, active, created_at) VALUES (?, ?, ?, 1, ?)",
    )
    .bind(&k.access_key_id)
    .bind(k.account_id.as_str())
    .bind(&k.secret)
    .bind(to_millis(k.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Brings `entitlement_usage` (and each row's count in `usage_counts`) in line
/// with a license version's counted entitlements.
async fn sync_usage(tx: &mut Transaction<'_, Sqlite>, license: &License, reset: bool) -> Result<()> {
    let arn = &license.license_arn;
    let counted: Vec<_> = license.entitlements.iter().filter(|e| e.is_counted()).collect();
    let mut del = QueryBuilder::<Sqlite>::new("DELETE FROM entitlement_usage WHERE license_arn = ");
    del.push_bind(arn);
    if !counted.is_empty() {
        del.push(" AND name NOT IN (");
        let mut sep = del.separated(", ");
        for e in &counted {
            sep.push_bind(&e.name);
        }
        del.push(")");
    }
    // Their counts go with them (ON DELETE CASCADE).
    del.build().execute(&mut **tx).await?;
    for e in counted {
        sqlx::query(
            "INSERT INTO entitlement_usage (license_arn, name, unit, max_count, overage) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (license_arn, name) DO UPDATE SET unit = excluded.unit, max_count = excluded.max_count, overage = excluded.overage",
        )
        .bind(arn)
        .bind(&e.name)
        .bind(e.unit.as_str())
        .bind(e.max_count)
        .bind(e.overage())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO usage_counts (usage_id, consumed) \
             SELECT usage_id, 0 FROM entitlement_usage WHERE license_arn = ? AND name = ? \
             ON CONFLICT (usage_id) DO NOTHING",
        )
        .bind(arn)
        .bind(&e.name)
        .execute(&mut **tx)
        .await?;
    }
    if reset {
        sqlx::query(
            "UPDATE usage_counts SET consumed = 0 \
             WHERE usage_id IN (SELECT usage_id FROM entitlement_usage WHERE license_arn = ?)",
        )
        .bind(arn)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE licenses SET usage_epoch = usage_epoch + 1 WHERE license_arn = ?")
            .bind(arn)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored answer to an earlier request with the same idempotency key, if any.
/// The same key with a different request is a conflict.
async fn replay(tx: &mut Transaction<'_, Sqlite>, key: &Idempotency) -> Result<Option<serde_json::Value>> {
    let row = sqlx::query(
        "SELECT request_hash, result FROM idempotency WHERE account_id = ? AND operation = ? AND client_token = ?",
    )
    .bind(key.account.as_str())
    .bind(key.operation)
    .bind(&key.client_token)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("request_hash")?;
    if stored != key.request_hash {
        return Err(token_reused(&key.client_token, key.operation));
    }
    let result: String = row.try_get("result")?;
    Ok(Some(serde_json::from_str(&result).map_err(corrupt)?))
}

async fn remember(
    tx: &mut Transaction<'_, Sqlite>,
    key: &Idempotency,
    result: &serde_json::Value,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO idempotency (account_id, operation, client_token, request_hash, result, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(key.account.as_str())
        .bind(key.operation)
        .bind(&key.client_token)
        .bind(&key.request_hash)
        .bind(result.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn load_license(tx: &mut Transaction<'_, Sqlite>, arn: &str) -> Result<(License, i64)> {
    let row = sqlx::query("SELECT document, usage_epoch FROM licenses WHERE license_arn = ?")
        .bind(arn)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("license {arn} does not exist")))?;
    Ok((
        license_of(&row.try_get::<String, _>("document")?)?,
        row.try_get("usage_epoch")?,
    ))
}

/// Writes a new current version of a license.
async fn write_version(tx: &mut Transaction<'_, Sqlite>, license: &License, now_ms: i64) -> Result<()> {
    let doc = serde_json::to_string(license).map_err(corrupt)?;
    let version = license.version_number();
    sqlx::query("INSERT INTO license_versions (license_arn, version, document, created_at) VALUES (?, ?, ?, ?)")
        .bind(&license.license_arn)
        .bind(version)
        .bind(&doc)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE licenses SET issuer_name = ?, beneficiary = ?, beneficiary_account = ?, product_sku = ?, \
         key_fingerprint = ?, status = ?, version = ?, document = ? WHERE license_arn = ?",
    )
    .bind(&license.issuer.name)
    .bind(&license.beneficiary)
    .bind(license.beneficiary_account().map(|a| a.to_string()))
    .bind(&license.product_sku)
    .bind(&license.issuer.key_fingerprint)
    .bind(license.status.as_str())
    .bind(version)
    .bind(&doc)
    .bind(&license.license_arn)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn report_damage(&self, detail: &str) {
        let Ok(mut damage) = self.damage.lock() else { return };
        if damage.is_none() {
            tracing::error!(
                path = %self.path.display(),
                error = %detail,
                "the database file is damaged; requests that touch the damage fail. To recover: {}",
                file::restore_hint(&self.path)
            );
            *damage = Some(detail.to_owned());
        }
    }

    async fn ready(&self) -> std::result::Result<(), String> {
        if let Some(d) = self.damage.lock().ok().and_then(|d| d.clone()) {
            return Err(format!("the database {} is damaged: {d}", self.path.display()));
        }
        self.hot.running()?;
        match sqlx::query_scalar::<_, Option<i64>>(crate::APPLIED_MIGRATION)
            .fetch_one(&self.read)
            .await
        {
            Ok(applied) => crate::check_migrations(&MIGRATOR, applied),
            Err(e) => {
                let e = StoreError::from(e);
                if e.is_damage() {
                    self.report_damage(&e.to_string());
                }
                Err(format!("the database {} does not answer: {e}", self.path.display()))
            }
        }
    }

    async fn live_consumptions(&self) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, i64>(crate::LIVE_CONSUMPTIONS)
            .fetch_one(&self.read)
            .await?)
    }

    fn pools(&self) -> Vec<crate::PoolStats> {
        let stats = |pool: &'static str, p: &SqlitePool| crate::PoolStats {
            pool,
            open: p.size(),
            in_use: p.size().saturating_sub(u32::try_from(p.num_idle()).unwrap_or(u32::MAX)),
        };
        vec![stats("read", &self.read), stats("write", &self.write)]
    }

    async fn close(&self) {
        let hot = self.hot.clone();
        if tokio::task::spawn_blocking(move || hot.close()).await.is_err() {
            tracing::error!("closing the database writer failed");
        }
        // Fold the write-ahead log into the database file, so that a copy of
        // the file alone is complete; best effort, the log is durable anyway.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.write)
            .await
        {
            tracing::debug!(error = %e, "final checkpoint skipped");
        }
        self.write.close().await;
        self.read.close().await;
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn create_account(&self, name: &str, now: OffsetDateTime) -> Result<(Account, AccessKey)> {
        let (mut tx, _turn) = self.begin().await?;
        let id = loop {
            let id = random_account_id();
            let taken: Option<String> = sqlx::query_scalar("SELECT account_id FROM accounts WHERE account_id = ?")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_none() {
                break account_of(&id)?;
            }
        };
        sqlx::query("INSERT INTO accounts (account_id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.as_str())
            .bind(name)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        let key = new_access_key(&id, now);
        insert_access_key(&mut tx, &key).await?;
        tx.commit().await?;
        Ok((
            Account {
                id,
                name: name.to_owned(),
                created_at: now,
            },
            key,
        ))
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query("SELECT account_id, name, created_at FROM accounts ORDER BY created_at, account_id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Account {
                    id: account_of(&r.try_get::<String, _>("account_id")?)?,
                    name: r.try_get("name")?,
                    created_at: from_millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn create_access_key(&self, account: &AccountId, now: OffsetDateTime) -> Result<AccessKey> {
        let (mut tx, _turn) = self.begin().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT account_id FROM accounts WHERE account_id = ?")
            .bind(account.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("account {account} does not exist")));
        }
        let key = new_access_key(account, now);
        insert_access_key(&mut tx, &key).await?;
        tx.commit().await?;
        Ok(key)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn revoke_access_key(&self, access_key_id: &str, now: OffsetDateTime) -> Result<()> {
        let (mut tx, _turn) = self.begin().await?;
        let done = sqlx::query("UPDATE access_keys SET active = 0, revoked_at = ? WHERE access_key_id = ?")
            .bind(to_millis(now))
            .bind(access_key_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "access key {access_key_id} does not exist"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>> {
        self.hot.read(|conn| hot::access_key(conn, access_key_id))
    }

    fn confirms_keys(&self) -> bool {
        true
    }

    async fn list_access_keys(&self, account: &AccountId) -> Result<Vec<crate::KeySummary>> {
        self.list_keys_of(account).await
    }

    async fn delete_account(&self, account: &AccountId) -> Result<()> {
        self.delete_unused_account(account).await
    }

    async fn issuer_key(&self, account: &AccountId, alg: &str) -> Result<Option<StoredKey>> {
        let row = sqlx::query(
            "SELECT kid, account_id, alg, private_der, public_jwk FROM issuer_keys WHERE account_id = ? AND alg = ?",
        )
        .bind(account.as_str())
        .bind(alg)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(stored_key).transpose()
    }

    async fn put_issuer_key(&self, key: StoredKey, now: OffsetDateTime) -> Result<StoredKey> {
        let (mut tx, _turn) = self.begin().await?;
        sqlx::query(
            "INSERT INTO issuer_keys (kid, account_id, alg, private_der, public_jwk, created_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account_id, alg) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(key.account_id.as_str())
        .bind(&key.alg)
        .bind(&key.private_der)
        .bind(&key.public_jwk)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT kid, account_id, alg, private_der, public_jwk FROM issuer_keys WHERE account_id = ? AND alg = ?",
        )
        .bind(key.account_id.as_str())
        .bind(&key.alg)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        stored_key(&row)
    }

    async fn issuer_key_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM issuer_keys")
            .fetch_one(&self.read)
            .await?)
    }

    async fn public_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, account_id, alg, X'' AS private_der, public_jwk FROM issuer_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(stored_key).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(license = %new.arn))]
    async fn create_license(&self, new: NewLicense, now: OffsetDateTime) -> Result<VersionOutcome> {
        let now_ms = to_millis(now);
        let issuer = new.arn.account().clone();
        let key = Idempotency {
            account: issuer.clone(),
            operation: "CreateLicense",
            client_token: new.client_token.clone(),
            request_hash: new.request_hash.clone(),
        };
        let (mut tx, _turn) = self.begin().await?;
        if let Some(out) = replay(&mut tx, &key).await? {
            return version_outcome(&out);
        }
        let license = new.body.into_license(&new.arn, LicenseStatus::Available, 1, now);
        let doc = serde_json::to_string(&license).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO licenses (license_arn, issuer_account, issuer_name, beneficiary, beneficiary_account, product_sku, \
             key_fingerprint, status, version, document, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
        )
        .bind(&license.license_arn)
        .bind(issuer.as_str())
        .bind(&license.issuer.name)
        .bind(&license.beneficiary)
        .bind(license.beneficiary_account().map(|a| a.to_string()))
        .bind(&license.product_sku)
        .bind(&license.issuer.key_fingerprint)
        .bind(license.status.as_str())
        .bind(&doc)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO license_versions (license_arn, version, document, created_at) VALUES (?, 1, ?, ?)")
            .bind(&license.license_arn)
            .bind(&doc)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sync_usage(&mut tx, &license, false).await?;
        for t in &new.tags {
            sqlx::query("INSERT INTO tags (resource_arn, key, value) VALUES (?, ?, ?) ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value")
                .bind(&license.license_arn)
                .bind(&t.key)
                .bind(&t.value)
                .execute(&mut *tx)
                .await?;
        }
        let out = VersionOutcome {
            license_arn: license.license_arn.clone(),
            status: license.status,
            version: license.version.clone(),
        };
        remember(&mut tx, &key, &version_json(&out), now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(license = %new.arn))]
    async fn create_license_version(&self, new: NewVersion, now: OffsetDateTime) -> Result<VersionOutcome> {
        let now_ms = to_millis(now);
        let key = Idempotency {
            account: new.caller.clone(),
            operation: "CreateLicenseVersion",
            client_token: new.client_token.clone(),
            request_hash: new.request_hash.clone(),
        };
        let (mut tx, _turn) = self.begin().await?;
        if let Some(out) = replay(&mut tx, &key).await? {
            return version_outcome(&out);
        }
        let (current, _) = load_license(&mut tx, new.arn.as_str()).await?;
        if current.status == LicenseStatus::Deleted {
            return Err(StoreError::Conflict(format!(
                "license {} is deleted; it can no longer change",
                new.arn
            )));
        }
        if let Some(src) = &new.source_version {
            if *src != current.version {
                return Err(StoreError::Conflict(format!(
                    "SourceVersion {src} is not the current version of license {} (the current version is {}); read it again and retry",
                    new.arn, current.version
                )));
            }
        }
        let license = new
            .body
            .into_license(&new.arn, new.status, current.version_number() + 1, now);
        write_version(&mut tx, &license, now_ms).await?;
        sync_usage(&mut tx, &license, new.reset_usage).await?;
        let out = VersionOutcome {
            license_arn: license.license_arn.clone(),
            status: license.status,
            version: license.version.clone(),
        };
        remember(&mut tx, &key, &version_json(&out), now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_license(&self, arn: &str, version: Option<i64>) -> Result<Option<License>> {
        let doc: Option<String> = match version {
            Some(v) => {
                sqlx::query_scalar("SELECT document FROM license_versions WHERE license_arn = ? AND version = ?")
                    .bind(arn)
                    .bind(v)
                    .fetch_optional(&self.read)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT document FROM licenses WHERE license_arn = ?")
                    .bind(arn)
                    .fetch_optional(&self.read)
                    .await?
            }
        };
        doc.as_deref().map(license_of).transpose()
    }

    async fn list_licenses(&self, q: &LicenseQuery) -> Result<Page<License>> {
        let mut b = QueryBuilder::<Sqlite>::new("SELECT seq, document FROM licenses WHERE 1 = 1");
        if let Some(a) = &q.issuer {
            b.push(" AND issuer_account = ").push_bind(a.to_string());
        }
        if let Some(a) = &q.received_by {
            b.push(" AND (beneficiary_account = ")
                .push_bind(a.to_string())
                .push(" OR license_arn IN (SELECT license_arn FROM grants WHERE grantee_account = ")
                .push_bind(a.to_string())
                .push(" AND status NOT IN ('REJECTED', 'DELETED')))");
        }
        if !q.arns.is_empty() {
            b.push(" AND license_arn IN (");
            let mut sep = b.separated(", ");
            for arn in &q.arns {
                sep.push_bind(arn.clone());
            }
            b.push(")");
        }
        if let Some(v) = &q.product_sku {
            b.push(" AND product_sku = ").push_bind(v.clone());
        }
        if let Some(v) = &q.fingerprint {
            b.push(" AND key_fingerprint = ").push_bind(v.clone());
        }
        if let Some(v) = &q.status {
            b.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = &q.issuer_name {
            b.push(" AND issuer_name = ").push_bind(v.clone());
        }
        if let Some(v) = &q.beneficiary {
            b.push(" AND beneficiary = ").push_bind(v.clone());
        }
        if let Some(after) = q.after {
            b.push(" AND seq > ").push_bind(after);
        }
        b.push(" ORDER BY seq LIMIT ").push_bind(q.limit as i64 + 1);
        let rows = b.build().fetch_all(&self.read).await?;
        page(rows, q.limit)
    }

    async fn list_license_versions(&self, arn: &str, after: Option<i64>, limit: usize) -> Result<Page<License>> {
        let rows = sqlx::query(
            "SELECT version AS seq, document FROM license_versions WHERE license_arn = ? AND version > ? ORDER BY version LIMIT ?",
        )
        .bind(arn)
        .bind(after.unwrap_or(0))
        .bind(limit as i64 + 1)
        .fetch_all(&self.read)
        .await?;
        page(rows, limit)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_license(&self, arn: &LicenseArn, source_version: &str, now: OffsetDateTime) -> Result<License> {
        let (mut tx, _turn) = self.begin().await?;
        let (mut license, _) = load_license(&mut tx, arn.as_str()).await?;
        if license.status == LicenseStatus::Deleted {
            return Err(StoreError::Conflict(format!("license {arn} is already deleted")));
        }
        if source_version != license.version {
            return Err(StoreError::Conflict(format!(
                "SourceVersion {source_version} is not the current version of license {arn} (the current version is {})",
                license.version
            )));
        }
        license.status = LicenseStatus::Deleted;
        license.version = (license.version_number() + 1).to_string();
        write_version(&mut tx, &license, to_millis(now)).await?;
        tx.commit().await?;
        Ok(license)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(account = %cmd.caller, sku = %cmd.product_sku))]
    async fn checkout(&self, cmd: CheckoutCommand, now: OffsetDateTime) -> Result<Consumption> {
        self.hot.write(move |ctx| hot::checkout(ctx, &cmd, now)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(account = %cmd.caller, license = %cmd.license_arn))]
    async fn checkout_borrow(&self, cmd: BorrowCommand, now: OffsetDateTime) -> Result<Consumption> {
        self.hot.write(move |ctx| hot::checkout_borrow(ctx, &cmd, now)).await
    }

    #[tracing::instrument(level = "debug", skip(self, token, key))]
    async fn check_in(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        let (caller, token, only) = (caller.clone(), token.to_owned(), only_license.map(str::to_owned));
        let key = key.map(str::to_owned);
        self.hot
            .write(move |ctx| hot::check_in(ctx, &caller, &token, only.as_deref(), key.as_deref(), now))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, token, key))]
    async fn extend(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        let (caller, token, only) = (caller.clone(), token.to_owned(), only_license.map(str::to_owned));
        let key = key.map(str::to_owned);
        self.hot
            .write(move |ctx| hot::extend(ctx, &caller, &token, only.as_deref(), key.as_deref(), dry_run, now))
            .await
    }

    async fn license_usage(&self, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>> {
        let arn = arn.to_owned();
        self.hot.write(move |ctx| hot::license_usage(ctx, &arn, now)).await
    }

    async fn expire_due(&self, now: OffsetDateTime) -> Result<u64> {
        self.hot.write(move |ctx| hot::expire_due(ctx, now)).await
    }

    async fn create_grant(&self, new: NewGrant, now: OffsetDateTime) -> Result<GrantOutcome> {
        grants::create_grant(self, new, now).await
    }

    async fn get_grant(&self, arn: &str, version: Option<i64>) -> Result<Option<Grant>> {
        grants::get_grant(&self.read, arn, version).await
    }

    async fn update_grant(
        &self,
        next: Grant,
        expected_version: &str,
        idempotency: Option<Idempotency>,
        now: OffsetDateTime,
    ) -> Result<GrantOutcome> {
        grants::update_grant(self, next, expected_version, idempotency, now).await
    }

    async fn list_grants(&self, query: &GrantQuery) -> Result<Page<Grant>> {
        grants::list_grants(&self.read, query).await
    }

    async fn grant_chains(&self, grantee: &AccountId, license_arn: &str) -> Result<Vec<Vec<Grant>>> {
        self.hot.read(|conn| hot::chains(conn, grantee, license_arn))
    }

    async fn create_token(
        &self,
        record: TokenRecord,
        idempotency: Idempotency,
        now: OffsetDateTime,
    ) -> Result<TokenRecord> {
        grants::create_token(self, record, idempotency, now).await
    }

    async fn get_token(&self, token_id: &str) -> Result<Option<TokenRecord>> {
        grants::get_token(&self.read, token_id).await
    }

    async fn list_tokens(
        &self,
        account: &AccountId,
        ids: &[String],
        license_arns: &[String],
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<TokenRecord>> {
        grants::list_tokens(&self.read, account, ids, license_arns, after, limit).await
    }

    async fn delete_token(&self, account: &AccountId, token_id: &str, now: OffsetDateTime) -> Result<()> {
        grants::delete_token(self, account, token_id, now).await
    }

    async fn register_environment(
        &self,
        account: &AccountId,
        env: Environment,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        environments::register(self, account, env, now).await
    }

    async fn allocate_environment(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku: i64,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        environments::allocate(self, account, environment_id, aku, now).await
    }

    async fn get_environment(&self, account: &AccountId, environment_id: &str) -> Result<Option<Environment>> {
        environments::get(&self.read, account, environment_id).await
    }

    async fn list_environments(
        &self,
        account: Option<&AccountId>,
        environment_id: Option<&str>,
        license_arn: Option<&str>,
    ) -> Result<Vec<(AccountId, Environment)>> {
        environments::list(&self.read, account, environment_id, license_arn).await
    }

    async fn report_environment_usage(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku_in_use: i64,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        environments::report(self, account, environment_id, aku_in_use, now).await
    }

    async fn start_trial(
        &self,
        account: &AccountId,
        environment_id: &str,
        install_id: &str,
        trial_started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<crate::Trial> {
        environments::start_trial(self, account, environment_id, install_id, trial_started_at, now).await
    }

    async fn tag_resource(&self, arn: &str, tags: &[Tag]) -> Result<()> {
        let (mut tx, _turn) = self.begin().await?;
        for t in tags {
            sqlx::query("INSERT INTO tags (resource_arn, key, value) VALUES (?, ?, ?) ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value")
                .bind(arn)
                .bind(&t.key)
                .bind(&t.value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        let (mut tx, _turn) = self.begin().await?;
        for k in keys {
            sqlx::query("DELETE FROM tags WHERE resource_arn = ? AND key = ?")
                .bind(arn)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let rows = sqlx::query("SELECT key, value FROM tags WHERE resource_arn = ? ORDER BY key")
            .bind(arn)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tag {
                    key: r.try_get("key")?,
                    value: r.try_get("value")?,
                })
            })
            .collect()
    }
}

fn stored_key(r: &SqliteRow) -> Result<StoredKey> {
    Ok(StoredKey {
        account_id: account_of(&r.try_get::<String, _>("account_id")?)?,
        kid: r.try_get("kid")?,
        alg: r.try_get("alg")?,
        private_der: r.try_get("private_der")?,
        public_jwk: r.try_get("public_jwk")?,
    })
}

fn page(rows: Vec<SqliteRow>, limit: usize) -> Result<Page<License>> {
    grants::paged(rows, limit, |r| license_of(&r.try_get::<String, _>("document")?))
}

crate::account_admin!(SqliteStore, read: read, begin: begin);
