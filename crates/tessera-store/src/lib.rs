//! Persistence: one `Store` trait with domain-level methods, and its backends.
//!
//! The server only ever talks to `dyn Store`. Every method that changes state
//! runs as one transaction that is durable before it returns, so an
//! acknowledged response survives a crash. Only this crate contains SQL.

pub mod baseline;
mod codec;
mod postgres;
mod rules;
mod sqlite;

use async_trait::async_trait;
use time::OffsetDateTime;

use tessera_core::consumption::{Consumption, EntitlementData};
use tessera_core::environment::Environment;
use tessera_core::grant::{Grant, GrantStatus};
use tessera_core::license::{CheckoutType, License, LicenseBody, LicenseStatus, Metadata, Tag};
use tessera_core::{AccountId, LicenseArn};

pub use postgres::PgStore;
pub use sqlite::{backup, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NoEntitlements(String),
    #[error("{0}")]
    EntitlementNotAllowed(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// The access key that signed the request is unknown or revoked.
    #[error("{0}")]
    UnknownKey(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Embedded(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the error says the database itself is damaged (a page SQLite
    /// cannot read, a file that is not a database, corrupt data or indexes on
    /// PostgreSQL, or a stored document Tessera cannot read).
    pub fn is_damage(&self) -> bool {
        match self {
            Self::Embedded(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
            }
            Self::Database(sqlx::Error::Database(e)) => {
                if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // data_corrupted, index_corrupted
                    matches!(pg.code(), "XX001" | "XX002")
                } else if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // Primary codes 11 (CORRUPT) and 26 (NOTADB), with any extension.
                    e.code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|n| matches!(n & 0xff, 11 | 26))
                } else {
                    false
                }
            }
            Self::Corrupt(_) => true,
            _ => false,
        }
    }

    /// An access key that is unknown or revoked: one message, whether the
    /// server's read of the key or a write's own confirmation finds it.
    pub fn unknown_key(key: &str) -> Self {
        Self::UnknownKey(format!(
            "The security token included in the request is invalid: access key {key} is unknown or revoked"
        ))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub account_id: AccountId,
    pub secret: String,
    pub active: bool,
    pub created_at: OffsetDateTime,
}

/// An access key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub access_key_id: String,
    pub active: bool,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// An account's keys, oldest first (`$1`: the account; both engines read `$N`).
pub(crate) const LIST_KEYS: &str = "SELECT access_key_id, active, created_at, revoked_at FROM access_keys \
     WHERE account_id = $1 ORDER BY created_at, access_key_id";

/// What keeps an account from being deleted: licenses it issues or receives,
/// grants it gave or holds, environments it registered.
pub(crate) const ACCOUNT_IN_USE: &str = "SELECT \
     (SELECT count(*) FROM licenses WHERE issuer_account = $1), \
     (SELECT count(*) FROM licenses WHERE beneficiary_account = $1), \
     (SELECT count(*) FROM grants WHERE grantor_account = $1 OR grantee_account = $1), \
     (SELECT count(*) FROM environments WHERE account_id = $1)";

/// Deleting an account that nothing holds: what is its alone goes with it.
pub(crate) const DELETE_ACCOUNT: &[&str] = &[
    "DELETE FROM tokens WHERE account_id = $1",
    "DELETE FROM trials WHERE account_id = $1",
    "DELETE FROM idempotency WHERE account_id = $1",
    "DELETE FROM issuer_keys WHERE account_id = $1",
    "DELETE FROM access_keys WHERE account_id = $1",
    "DELETE FROM accounts WHERE account_id = $1",
];

/// The account-administration operations, written once for both engines:
/// `$read` is the field of the pool reads go to; `$begin` the method that
/// begins a write transaction, returning `(transaction, what must be held
/// while it is open)`.
macro_rules! account_admin {
    ($store:ty, read: $read:ident, begin: $begin:ident) => {
        impl $store {
            async fn list_keys_of(&self, account: &AccountId) -> Result<Vec<crate::KeySummary>> {
                let known: Option<String> = sqlx::query_scalar(crate::ACCOUNT_EXISTS)
                    .bind(account.as_str())
                    .fetch_optional(&self.$read)
                    .await?;
                crate::account_known(account, known)?;
                let rows = sqlx::query(crate::LIST_KEYS)
                    .bind(account.as_str())
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(crate::codec::key_summary).collect()
            }

            async fn delete_unused_account(&self, account: &AccountId) -> Result<()> {
                let (mut tx, _held) = self.$begin().await?;
                let known: Option<String> = sqlx::query_scalar(crate::ACCOUNT_EXISTS)
                    .bind(account.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                crate::account_known(account, known)?;
                let counts: (i64, i64, i64, i64) = sqlx::query_as(crate::ACCOUNT_IN_USE)
                    .bind(account.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(refused) = crate::account_in_use(account, [counts.0, counts.1, counts.2, counts.3]) {
                    return Err(refused);
                }
                for sql in crate::DELETE_ACCOUNT {
                    sqlx::query(sql).bind(account.as_str()).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use account_admin;

/// Whether an account exists (`$1`).
pub(crate) const ACCOUNT_EXISTS: &str = "SELECT account_id FROM accounts WHERE account_id = $1";

/// NotFound unless [`ACCOUNT_EXISTS`] found the account.
pub(crate) fn account_known(account: &AccountId, found: Option<String>) -> Result<()> {
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("account {account} does not exist"))),
    }
}

/// The refusal of deleting an account still in use, from [`ACCOUNT_IN_USE`]'s counts.
pub(crate) fn account_in_use(account: &AccountId, counts: [i64; 4]) -> Option<StoreError> {
    let [issued, received, grants, environments] = counts;
    if counts.iter().all(|n| *n == 0) {
        return None;
    }
    Some(StoreError::Conflict(format!(
        "account {account} is still in use: it issues {issued} licenses, receives {received}, takes part in \
         {grants} grants and has {environments} environments; delete those first"
    )))
}

/// An issuer's signing key as stored: PKCS#8 DER plus its public JWK (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub account_id: AccountId,
    pub kid: String,
    pub alg: String,
    pub private_der: Vec<u8>,
    pub public_jwk: String,
}

/// Filters for ListLicenses and ListReceivedLicenses, already validated.
#[derive(Debug, Clone, Default)]
pub struct LicenseQuery {
    pub issuer: Option<AccountId>,
    /// Licenses this account received: as beneficiary, or through a grant not rejected or deleted.
    pub received_by: Option<AccountId>,
    pub arns: Vec<String>,
    pub product_sku: Option<String>,
    pub fingerprint: Option<String>,
    pub status: Option<LicenseStatus>,
    pub issuer_name: Option<String>,
    pub beneficiary: Option<String>,
    /// Resume after this position (from a NextToken).
    pub after: Option<i64>,
    pub limit: usize,
}

/// A page of results and the position to resume from, if there is more.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// What CreateLicense or CreateLicenseVersion answered (replayed for a retried ClientToken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionOutcome {
    pub license_arn: String,
    pub status: LicenseStatus,
    pub version: String,
}

pub struct NewLicense {
    pub arn: LicenseArn,
    pub body: LicenseBody,
    pub tags: Vec<Tag>,
    pub client_token: String,
    pub request_hash: String,
}

pub struct NewVersion {
    pub arn: LicenseArn,
    pub caller: AccountId,
    pub body: LicenseBody,
    pub status: LicenseStatus,
    pub source_version: Option<String>,
    pub reset_usage: bool,
    pub client_token: String,
    pub request_hash: String,
}

/// A validated CheckoutLicense request.
pub struct CheckoutCommand {
    pub caller: AccountId,
    pub product_sku: String,
    pub key_fingerprint: String,
    pub checkout_type: CheckoutType,
    pub entitlements: Vec<EntitlementData>,
    pub beneficiary: Option<String>,
    pub node_id: Option<String>,
    pub client_token: String,
    pub request_hash: String,
    /// A fresh consumption token, used unless the ClientToken replays an earlier checkout.
    pub token: String,
    /// Set when the caller holds an access token: only this license may be used.
    pub only_license: Option<String>,
    /// An access key to confirm as active in the write's own transaction (see
    /// [`Store::confirms_keys`]); `None` when the caller was authenticated otherwise.
    pub key: Option<String>,
}

/// A validated CheckoutBorrowLicense request.
pub struct BorrowCommand {
    pub caller: AccountId,
    pub license_arn: String,
    pub entitlements: Vec<EntitlementData>,
    pub node_id: Option<String>,
    pub metadata: Vec<Metadata>,
    pub client_token: String,
    pub request_hash: String,
    pub token: String,
    /// An access key to confirm as active, as in [`CheckoutCommand::key`].
    pub key: Option<String>,
}

/// What CreateGrant, AcceptGrant, ... answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantOutcome {
    pub grant_arn: String,
    pub status: GrantStatus,
    pub version: String,
}

/// A request's idempotency key: a retry with the same key and request gets the first answer.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub account: AccountId,
    pub operation: &'static str,
    pub client_token: String,
    pub request_hash: String,
}

pub struct NewGrant {
    pub grant: Grant,
    pub grantor: AccountId,
    pub grantee: AccountId,
    pub tags: Vec<Tag>,
    pub idempotency: Idempotency,
}

/// Filters for ListDistributedGrants and ListReceivedGrants, already validated.
#[derive(Debug, Clone, Default)]
pub struct GrantQuery {
    pub grantor: Option<AccountId>,
    pub grantee: Option<AccountId>,
    pub arns: Vec<String>,
    pub license_arn: Option<String>,
    pub status: Option<GrantStatus>,
    pub grantee_account: Option<AccountId>,
    pub product_sku: Option<String>,
    pub issuer_name: Option<String>,
    pub granter_account: Option<AccountId>,
    pub after: Option<i64>,
    pub limit: usize,
}

/// A refresh token's record (the token itself is re-signed from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub account: AccountId,
    pub license_arn: String,
    pub role_arns: Vec<String>,
    pub token_properties: Vec<String>,
    pub expires_at: OffsetDateTime,
    pub deleted: bool,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementUsage {
    pub name: String,
    pub unit: String,
    pub consumed: i64,
    pub max_count: Option<i64>,
}

/// How many connections a pool holds open and how many of them are busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// A fixed name: `read`, `write`, `main`, `keys`.
    pub pool: &'static str,
    pub open: u32,
    pub in_use: u32,
}

/// Checks that every migration `migrator` knows has been applied: a database
/// migrated by a newer build, or half-migrated, is named, not served.
pub(crate) fn check_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: Option<i64>,
) -> std::result::Result<(), String> {
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied.unwrap_or(0) {
        v if v == latest => Ok(()),
        v if v > latest => Err(format!(
            "the database was migrated to version {v} by a newer Tessera; this build knows up to {latest}"
        )),
        v => Err(format!(
            "the database's migrations stop at version {v}; this build needs {latest}"
        )),
    }
}

/// The newest migration applied successfully, as both engines record it.
pub(crate) const APPLIED_MIGRATION: &str = "SELECT max(version) FROM _sqlx_migrations WHERE success";

/// The consumptions that hold units, as both engines store them.
pub(crate) const LIVE_CONSUMPTIONS: &str = "SELECT count(*) FROM consumptions WHERE status = 'ACTIVE'";

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Accounts and access keys.
    async fn create_account(&self, name: &str, now: OffsetDateTime) -> Result<(Account, AccessKey)>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    async fn create_access_key(&self, account: &AccountId, now: OffsetDateTime) -> Result<AccessKey>;
    async fn revoke_access_key(&self, access_key_id: &str, now: OffsetDateTime) -> Result<()>;
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>>;
    /// The account's access keys, without secrets; NotFound for an unknown account.
    async fn list_access_keys(&self, account: &AccountId) -> Result<Vec<KeySummary>>;
    /// Deletes an account with its keys, refused (Conflict) while it issues or
    /// receives licenses, takes part in grants or has environments.
    async fn delete_account(&self, account: &AccountId) -> Result<()>;
    /// Whether checkout, borrow, check-in and extension confirm the access key
    /// they are given (`key`) inside their own transaction, refusing it with
    /// [`StoreError::UnknownKey`] if it is unknown or revoked by then. A caller
    /// may then skip reading the key's status before those writes: the write
    /// itself is ordered after any revocation that committed before it.
    fn confirms_keys(&self) -> bool {
        false
    }

    /// Finishes the writes already sent, stops the store's threads and closes
    /// its pools. Writes sent afterwards fail.
    async fn close(&self) {}

    /// Records that a call failed because the database is damaged (see
    /// [`StoreError::is_damage`]): logged once, with how to recover, and
    /// reported by [`Store::ready`] from then on.
    fn report_damage(&self, _detail: &str) {}

    /// Whether the store can serve: it answers a query, every migration this
    /// build knows is applied, its writer threads run, and no damage was seen.
    async fn ready(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Consumptions not yet checked in or expired, across every license.
    async fn live_consumptions(&self) -> Result<i64>;

    /// The store's connection pools, for metrics.
    fn pools(&self) -> Vec<PoolStats> {
        Vec::new()
    }

    // Issuer signing keys.
    async fn issuer_key(&self, account: &AccountId, alg: &str) -> Result<Option<StoredKey>>;
    /// Stores `key` unless the account already has one for its algorithm; returns the one kept.
    async fn put_issuer_key(&self, key: StoredKey, now: OffsetDateTime) -> Result<StoredKey>;
    /// How many issuer keys exist: keys are never removed, so a change in the
    /// count says a cached key set is missing one.
    async fn issuer_key_count(&self) -> Result<i64>;
    async fn public_keys(&self) -> Result<Vec<StoredKey>>;

    // Licenses.
    async fn create_license(&self, new: NewLicense, now: OffsetDateTime) -> Result<VersionOutcome>;
    async fn create_license_version(&self, new: NewVersion, now: OffsetDateTime) -> Result<VersionOutcome>;
    async fn get_license(&self, arn: &str, version: Option<i64>) -> Result<Option<License>>;
    async fn list_licenses(&self, query: &LicenseQuery) -> Result<Page<License>>;
    async fn list_license_versions(&self, arn: &str, after: Option<i64>, limit: usize) -> Result<Page<License>>;
    async fn delete_license(&self, arn: &LicenseArn, source_version: &str, now: OffsetDateTime) -> Result<License>;

    // Consumption.
    async fn checkout(&self, cmd: CheckoutCommand, now: OffsetDateTime) -> Result<Consumption>;
    async fn checkout_borrow(&self, cmd: BorrowCommand, now: OffsetDateTime) -> Result<Consumption>;
    /// `only_license` restricts a caller holding an access token to its one
    /// license; `key` is an access key to confirm, as in [`CheckoutCommand::key`].
    async fn check_in(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    async fn extend(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<Consumption>;
    async fn license_usage(&self, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>>;
    /// Returns the units of every PROVISIONAL consumption due by `now`; the count expired.
    async fn expire_due(&self, now: OffsetDateTime) -> Result<u64>;

    // Grants.
    async fn create_grant(&self, new: NewGrant, now: OffsetDateTime) -> Result<GrantOutcome>;
    async fn get_grant(&self, arn: &str, version: Option<i64>) -> Result<Option<Grant>>;
    /// Stores `next` as the grant's new version if the current one is still `expected_version`.
    async fn update_grant(
        &self,
        next: Grant,
        expected_version: &str,
        idempotency: Option<Idempotency>,
        now: OffsetDateTime,
    ) -> Result<GrantOutcome>;
    async fn list_grants(&self, query: &GrantQuery) -> Result<Page<Grant>>;
    /// The grantee's grants on a license that are not rejected or deleted, each
    /// followed by the grants it was re-granted from.
    async fn grant_chains(&self, grantee: &AccountId, license_arn: &str) -> Result<Vec<Vec<Grant>>>;

    // Refresh tokens.
    /// Creates a token, or returns the one made by the same ClientToken in the last 10 minutes.
    async fn create_token(
        &self,
        record: TokenRecord,
        idempotency: Idempotency,
        now: OffsetDateTime,
    ) -> Result<TokenRecord>;
    async fn get_token(&self, token_id: &str) -> Result<Option<TokenRecord>>;
    async fn list_tokens(
        &self,
        account: &AccountId,
        ids: &[String],
        license_arns: &[String],
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<TokenRecord>>;
    async fn delete_token(&self, account: &AccountId, token_id: &str, now: OffsetDateTime) -> Result<()>;

    // BYOC environments.
    /// Registers an environment; its allocation is checked against the license atomically.
    async fn register_environment(
        &self,
        account: &AccountId,
        env: Environment,
        now: OffsetDateTime,
    ) -> Result<Environment>;
    /// Changes an allocation: never above what the license has left, never below what is in use.
    async fn allocate_environment(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku: i64,
        now: OffsetDateTime,
    ) -> Result<Environment>;
    async fn get_environment(&self, account: &AccountId, environment_id: &str) -> Result<Option<Environment>>;
    /// Environments with their owning account, optionally filtered.
    async fn list_environments(
        &self,
        account: Option<&AccountId>,
        environment_id: Option<&str>,
        license_arn: Option<&str>,
    ) -> Result<Vec<(AccountId, Environment)>>;
    async fn report_environment_usage(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku_in_use: i64,
        now: OffsetDateTime,
    ) -> Result<Environment>;

    /// Records `install_id` as the first install of `environment_id` for
    /// `account`, its trial started at `trial_started_at` (never later than
    /// `now`), unless one is recorded already; returns the recorded one.
    async fn start_trial(
        &self,
        account: &AccountId,
        environment_id: &str,
        install_id: &str,
        trial_started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Trial>;

    // Tags.
    async fn tag_resource(&self, arn: &str, tags: &[Tag]) -> Result<()>;
    async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()>;
    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>>;
}

/// The first install of an environment and when its trial started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub install_id: String,
    pub trial_started_at: OffsetDateTime,
}

/// The database a URL names.
pub(crate) enum Database<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

/// Reads a database URL: `sqlite://PATH` or a plain path, or `postgres://...` /
/// `postgresql://...`; any other scheme is an error that names the ones accepted.
pub(crate) fn database(url: &str) -> Result<Database<'_>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Database::Sqlite(std::path::Path::new(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Database::Postgres(url))
    } else if url.contains("://") {
        let scheme = url.split("://").next().unwrap_or_default();
        Err(StoreError::Config(format!(
            "unsupported database URL scheme '{scheme}'; use sqlite://PATH or postgres://USER@HOST/DB"
        )))
    } else {
        Ok(Database::Sqlite(std::path::Path::new(url)))
    }
}

/// The SQLite file a database URL names; None for PostgreSQL; an error for
/// a scheme that is neither.
pub fn sqlite_path(url: &str) -> Result<Option<std::path::PathBuf>> {
    Ok(match database(url)? {
        Database::Sqlite(path) => Some(path.to_owned()),
        Database::Postgres(_) => None,
    })
}

/// Opens the store named by a database URL: `sqlite://PATH` (or a plain path),
/// or `postgres://...` / `postgresql://...` (see [`PgStore::open`]).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    open_checked(url, false).await
}

/// [`open`], and with `integrity` an SQLite database is checked page by page
/// (`PRAGMA quick_check`) first: a server refuses to start on a damaged file.
pub async fn open_checked(url: &str, integrity: bool) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match database(url)? {
        Database::Sqlite(path) => std::sync::Arc::new(SqliteStore::open_checked(path, integrity).await?),
        Database::Postgres(url) => std::sync::Arc::new(PgStore::open(url).await?),
    })
}
