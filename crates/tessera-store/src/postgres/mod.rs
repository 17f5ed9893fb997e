//! The PostgreSQL backend, for several stateless servers sharing one database.
//!
//! It reproduces `SqliteStore` method by method: the same checks in the same
//! order, the same errors and messages, the same stored documents. What differs
//! is how a check and the write that depends on it are kept atomic. SQLite has
//! one writer; here many transactions run at once, on several servers.
//!
//! # Isolation: READ COMMITTED plus explicit locks
//!
//! Every method runs in one `READ COMMITTED` transaction. That is enough because
//! no decision rests on a plain read that a concurrent transaction could
//! invalidate before commit. Each such decision is made under a row lock, or by a
//! conditional statement that re-checks its condition on the newest row version
//! (PostgreSQL re-evaluates the `WHERE` of an `UPDATE` or of a locking `SELECT`
//! after waiting for a concurrent writer of the row):
//!
//! * **Counters.** A checkout alone draws with `UPDATE entitlement_usage SET
//!   consumed = consumed + n WHERE ... AND (overage OR max_count IS NULL OR
//!   consumed + n <= max_count)`; zero rows means the pool is short. The counter
//!   rows a transaction will change are locked first with one `SELECT ... ORDER
//!   BY name FOR UPDATE` (a checkout: all its license's, before expiry gives
//!   units back), so that two multi-entitlement checkouts cannot deadlock. A
//!   batch (below) locks all counters of its licenses in (license, name) order,
//!   decides against the locked values, and writes each counter's new value.
//! * **License rows.** A transaction that reads a license's document or usage
//!   epoch and then writes its counters or consumptions (checkout, check-in,
//!   expiry, usage) holds `FOR KEY SHARE` on the license row. Those never block
//!   each other. CreateLicenseVersion and DeleteLicense take `FOR UPDATE`, which
//!   waits for them and blocks them, so a checkout never draws under one version
//!   (or usage epoch) and records another. Grant creation (the per-license grant
//!   limit) and environment allocation (the sum of allocations) take `FOR NO KEY
//!   UPDATE`. That serializes them per license and against new versions, but not
//!   against checkouts. The sum of allocations is read after the lock is granted,
//!   and under READ COMMITTED each statement sees everything committed before it
//!   started, so the sum includes every earlier allocation.
//! * **Consumptions.** Check-in and extension lock the consumption row `FOR
//!   UPDATE` and act on what they then read. Expiry marks consumptions EXPIRED
//!   with one `UPDATE ... WHERE token = ANY(ARRAY(SELECT ... FOR UPDATE SKIP
//!   LOCKED)) ... RETURNING`.
//!   It gives back the units of exactly the rows that statement changed, so with
//!   several reapers running each consumption is expired, and its units
//!   returned, once.
//! * **Idempotency keys.** A request with a ClientToken first takes a
//!   transaction-scoped advisory lock on a hash of (account, operation,
//!   ClientToken). A concurrent duplicate on another server therefore waits for
//!   the first to commit, then finds and replays its answer (or gets
//!   `Conflict` for a different request). It does not race it to a different
//!   outcome. The unique constraints (`idempotency`'s key, `consumptions
//!   (consumer_account, client_token)`) stay as the backstop. A unique violation
//!   rolls the attempt back, and the retry re-reads the winner's row. A batch
//!   takes the locks of all its ClientTokens at once, in key order.
//! * **Upserts.** `ON CONFLICT` where the SQLite backend uses it.
//!
//! A serialization failure (40001), a deadlock (40P01) or a unique violation
//! (23505) rolls the whole transaction back and runs the method again, up to
//! [`ATTEMPTS`] times in all, with a short randomized pause.
//!
//! A transaction that locks several of these takes them in one order:
//! advisory keys, then consumptions, then license rows, then counter rows
//! (several of a kind in key order); expiry skips the consumptions it would
//! wait for.
//!
//! # Group commit
//!
//! Checkout, borrow, check-in and extension go through a group-commit writer
//! (`batch.rs`): many of them in one transaction, decided against rows locked
//! once for all of them, committed with one WAL flush, each answered only once
//! the COMMIT has returned. A batch that cannot run sends its writes to run
//! alone, through the `*_once` methods below.
//!
//! # Pagination
//!
//! `list_*` use the same keysets as SQLite (`seq`, a `BIGSERIAL`, or `version`).
//! A sequence value is taken at insert, not at commit. So a row whose
//! transaction commits after a page was read can have a smaller `seq` than that
//! page's last row, and is then not listed by that pagination.

use crate::codec::{account_of, corrupt, license_of, new_access_key, random_account_id, version_json, version_outcome};
use crate::rules::{
    borrow_consumption, borrow_plan, check_consumer, checkout_consumption, checkout_plan, checkout_reach, direct_user,
    issuer_without_beneficiary, may_not_borrow, no_grant, nothing_available, refusal_of, refuse_check_in,
    refuse_extension, stored_units, token_reused, Reach, Tally,
};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use time::OffsetDateTime;

use tessera_core::consumption::{self, CheckoutPlan, Consumption, ConsumptionStatus, Draw};
use tessera_core::environment::Environment;
use tessera_core::grant::{chain_permits, AllowedOperation, Grant};
use tessera_core::license::{CheckoutType, License, LicenseStatus, Tag};
use tessera_core::timefmt::{from_millis, to_millis};
use tessera_core::{AccountId, LicenseArn, Units, MAX_UNITS};

use crate::{
    AccessKey, Account, BorrowCommand, CheckoutCommand, EntitlementUsage, GrantOutcome, GrantQuery, Idempotency,
    LicenseQuery, NewGrant, NewLicense, NewVersion, Page, Result, Store, StoreError, StoredKey, TokenRecord,
    VersionOutcome,
};

mod batch;
mod environments;
mod grants;
mod readers;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per server when the URL does not say (`?pool_max_connections=N`).
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// The URL query parameter that sets the pool size; it is not sent to the server.
const POOL_PARAM: &str = "pool_max_connections";

/// Attempts of one method in all, when it fails with a serialization failure,
/// a deadlock or a unique violation.
pub const ATTEMPTS: u32 = 6;

pub struct PgStore {
    pool: PgPool,
    /// The group-commit writers of the hot path (checkout, borrow, check-in, extension).
    writer: batch::Writer,
    /// Connections of their own for the access-key read of every request.
    readers: readers::Readers,
}

impl PgStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) and runs the migrations.
    ///
    /// The pool holds [`DEFAULT_POOL_SIZE`] connections unless the URL sets
    /// `pool_max_connections`. An unreachable server is an error that names the
    /// URL, without its password.
    pub async fn open(url: &str) -> Result<Self> {
        let (conn_url, pool_size) = split_pool_size(url)?;
        let shown = redact(url);
        let opts = PgConnectOptions::from_str(&conn_url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {shown}: {e}")))?;
        // One direct connection first: the pool would retry a refused connection
        // until its timeout and then report only that it timed out.
        match tokio::time::timeout(Duration::from_secs(15), opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => {
                return Err(StoreError::Config(format!(
                    "cannot connect to PostgreSQL at {shown}: {e}"
                )))
            }
            Err(_) => {
                return Err(StoreError::Config(format!(
                    "cannot connect to PostgreSQL at {shown}: no answer within 15 seconds"
                )))
            }
        }
        // No ping before each acquire: the pool already pings a connection when it
        // is released, and a second round trip on every acquire was a quarter of the
        // server's CPU under load (access keys are read on every request). A
        // connection that dies while idle (a database restart) fails the one request
        // that gets it, with a retryable 5xx, and is then replaced.
        let readers = readers::Readers::new(opts.clone());
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Config(format!("cannot connect to PostgreSQL at {shown}: {e}")))?;
        // The migrator holds an advisory lock, so servers starting together migrate once.
        MIGRATOR.run(&pool).await?;
        let writer = batch::Writer::start(pool.clone());
        Ok(Self { pool, writer, readers })
    }

    /// `url` with its pool size set to `n` (replacing any `pool_max_connections` it has).
    pub fn with_pool_size(url: &str, n: u32) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut pairs: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with(&format!("{POOL_PARAM}=")))
            .collect();
        let pool = format!("{POOL_PARAM}={n}");
        pairs.push(&pool);
        format!("{base}?{}", pairs.join("&"))
    }

    /// `url` fit for messages and logs: without its password.
    pub fn redact_url(url: &str) -> String {
        redact(url)
    }

    /// Creates the database `name` on the server that `url` (any database on
    /// it) points to, and returns the URL of the new database. For tests and
    /// setup scripts; `name` is lowercase letters, digits and `_`.
    pub async fn create_database(url: &str, name: &str) -> Result<String> {
        let mut conn = Self::admin(url, name).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let server = match base.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
            None => base.to_owned(),
        };
        Ok(match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        })
    }

    /// Drops the database `name` on the server that `url` points to, ending
    /// its open connections. Nothing happens if it does not exist.
    pub async fn drop_database(url: &str, name: &str) -> Result<()> {
        let mut conn = Self::admin(url, name).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn admin(url: &str, name: &str) -> Result<sqlx::PgConnection> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Config(format!(
                "'{name}' is not a database name of lowercase letters, digits and _"
            )));
        }
        let (conn_url, _) = split_pool_size(url)?;
        let opts = PgConnectOptions::from_str(&conn_url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {}: {e}", redact(url))))?;
        opts.connect()
            .await
            .map_err(|e| StoreError::Config(format!("cannot connect to PostgreSQL at {}: {e}", redact(url))))
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?)
    }
}

/// Removes the pool-size parameter from a URL; returns the rest and the size.
pub(crate) fn split_pool_size(url: &str) -> Result<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), DEFAULT_POOL_SIZE));
    };
    let mut size = DEFAULT_POOL_SIZE;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((POOL_PARAM, v)) => {
                size = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    StoreError::Config(format!(
                        "{POOL_PARAM} in the PostgreSQL URL {} must be a positive number, not '{v}'",
                        redact(url)
                    ))
                })?;
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, size))
}

/// A database URL fit for messages and logs: without a password, in the
/// authority or as a `password=` parameter.
fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    format!("{user}@{host}")
                }
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    match query {
        Some(q) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                head
            } else {
                format!("{head}?{}", kept.join("&"))
            }
        }
        None => head,
    }
}

/// Whether running the transaction again may succeed: a serialization failure,
/// a deadlock, or a unique violation (a concurrent transaction inserted the
/// same key first; the retry reads its row).
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => {
            matches!(d.code().as_deref(), Some("40001" | "40P01" | "23505"))
        }
        _ => false,
    }
}

/// Runs `attempt` (one whole transaction) until it succeeds, fails for good,
/// or has run [`ATTEMPTS`] times.
async fn retry<T, F, Fut>(what: &'static str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if n < ATTEMPTS && retryable(&e) => {
                tracing::debug!(operation = what, attempt = n, error = %e, "transaction rolled back; retrying");
                let pause = rand::thread_rng().gen_range(1..=10u64 << n.min(5));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// Serializes transactions that carry the same idempotency key until they end.
async fn lock_key(
    tx: &mut Transaction<'_, Postgres>,
    account: &str,
    operation: &str,
    client_token: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{account}\u{1f}{operation}\u{1f}{client_token}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How a license row is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Against new versions and deletion, shared with other such readers.
    KeyShare,
    /// Against new versions, and one at a time with other such writers.
    NoKeyUpdate,
    /// Exclusive: a new version or a deletion.
    Update,
}

impl Lock {
    fn sql(self) -> &'static str {
        match self {
            Lock::KeyShare => " FOR KEY SHARE",
            Lock::NoKeyUpdate => " FOR NO KEY UPDATE",
            Lock::Update => " FOR UPDATE",
        }
    }
}

async fn insert_access_key(tx: &mut Transaction<'_, Postgres>, k: &AccessKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO access_keys (access_key_id, account_id, secret, active, created_at) VALUES ($1, $2, $3, TRUE, $4)",
    )
    .bind(&k.access_key_id)
    .bind(k.account_id.as_str())
    .bind(&k.secret)
    .bind(to_millis(k.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn consumption_of(row: &PgRow) -> Result<Consumption> {
    let checkout_type: String = row.try_get("checkout_type")?;
    let status: String = row.try_get("status")?;
    Ok(Consumption {
        token: row.try_get("token")?,
        license_arn: row.try_get("license_arn")?,
        consumer: account_of(&row.try_get::<String, _>("consumer_account")?)?,
        checkout_type: CheckoutType::parse("checkout_type", &checkout_type).map_err(corrupt)?,
        allowed: serde_json::from_str(&row.try_get::<String, _>("allowed")?).map_err(corrupt)?,
        draws: serde_json::from_str(&row.try_get::<String, _>("draws")?).map_err(corrupt)?,
        node_id: row.try_get("node_id")?,
        beneficiary: row.try_get("beneficiary")?,
        issued_at: from_millis(row.try_get("issued_at")?),
        expires_at: from_millis(row.try_get("expires_at")?),
        status: ConsumptionStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status}")))?,
        product_sku: row.try_get("product_sku")?,
        key_fingerprint: row.try_get("key_fingerprint")?,
        borrowed: row.try_get("borrowed")?,
        checkout_metadata: match row.try_get::<Option<String>, _>("checkout_metadata")? {
            Some(m) => serde_json::from_str(&m).map_err(corrupt)?,
            None => Vec::new(),
        },
    })
}

const CONSUMPTION_COLUMNS: &str = "token, license_arn, consumer_account, checkout_type, allowed, draws, node_id, \
     beneficiary, issued_at, expires_at, status, product_sku, key_fingerprint, request_hash, usage_epoch, borrowed, \
     checkout_metadata";

/// Locks a license's counter rows named in `names`, in name order, so that
/// transactions changing several counters never wait on each other in a cycle.
async fn lock_counters(tx: &mut Transaction<'_, Postgres>, license_arn: &str, names: &[&str]) -> Result<()> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names.dedup();
    sqlx::query("SELECT name FROM entitlement_usage WHERE license_arn = $1 AND name = ANY($2) ORDER BY name COLLATE \"C\" FOR UPDATE")
        .bind(license_arn)
        .bind(&names)
        .fetch_all(&mut **tx)
        .await?;
    Ok(())
}

/// Returns units to a license's pools, unless ResetUsage has reset the counters
/// since they were taken (in usage epoch `epoch`).
async fn release(tx: &mut Transaction<'_, Postgres>, license_arn: &str, draws: &[Draw], epoch: i64) -> Result<()> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT usage_epoch FROM licenses WHERE license_arn = $1 FOR KEY SHARE")
            .bind(license_arn)
            .fetch_optional(&mut **tx)
            .await?;
    if current != Some(epoch) || draws.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = draws.iter().map(|d| d.name.as_str()).collect();
    lock_counters(tx, license_arn, &names).await?;
    for d in draws {
        sqlx::query(
            "UPDATE entitlement_usage SET consumed = GREATEST(consumed - $1, 0) WHERE license_arn = $2 AND name = $3",
        )
        .bind(d.amount.get())
        .bind(license_arn)
        .bind(&d.name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Expires due PROVISIONAL consumptions, of one license or of all, at most
/// `limit`, and returns the units of exactly those this statement expired.
/// Rows another transaction holds (expiring, checking in or extending them)
/// are skipped: that transaction decides their fate.
async fn expire_in(
    tx: &mut Transaction<'_, Postgres>,
    license_arn: Option<&str>,
    now_ms: i64,
    limit: Option<i64>,
) -> Result<u64> {
    let filter = if license_arn.is_some() {
        "license_arn = $3 AND "
    } else {
        ""
    };
    // `token = ANY(ARRAY(...))` rather than a join with the due rows: planned
    // without statistics, the join may hash the whole table.
    let sql = format!(
        "UPDATE consumptions SET status = 'EXPIRED', ended_at = expires_at \
         WHERE token = ANY(ARRAY(SELECT token FROM consumptions WHERE {filter}status = 'ACTIVE' \
         AND checkout_type = 'PROVISIONAL' AND expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)) \
         AND status = 'ACTIVE' RETURNING token, license_arn, draws, usage_epoch"
    );
    let mut q = sqlx::query(&sql).bind(now_ms).bind(limit);
    if let Some(arn) = license_arn {
        q = q.bind(arn);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        let arn: String = row.try_get("license_arn")?;
        let draws: Vec<Draw> = serde_json::from_str(&row.try_get::<String, _>("draws")?).map_err(corrupt)?;
        let epoch: i64 = row.try_get("usage_epoch")?;
        expired.push((arn, epoch, draws));
    }
    // One license at a time, in order, each consumption's draws summed per counter.
    expired.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut i = 0;
    while i < expired.len() {
        let (arn, epoch) = (expired[i].0.clone(), expired[i].1);
        let mut sums: Vec<Draw> = Vec::new();
        while i < expired.len() && expired[i].0 == arn && expired[i].1 == epoch {
            for d in &expired[i].2 {
                match sums.iter_mut().find(|s| s.name == d.name) {
                    // Every sum is of units counted once, so at most MAX_UNITS.
                    Some(s) => s.amount = s.amount.checked_add(d.amount).unwrap_or(Units::MAX),
                    None => sums.push(d.clone()),
                }
            }
            i += 1;
        }
        release(tx, &arn, &sums, epoch).await?;
    }
    Ok(rows.len() as u64)
}

/// Brings `entitlement_usage` in line with a license version's counted
/// entitlements. The caller holds the license row `FOR UPDATE`.
async fn sync_usage(tx: &mut Transaction<'_, Postgres>, license: &License, reset: bool) -> Result<()> {
    let arn = &license.license_arn;
    let counted: Vec<_> = license.entitlements.iter().filter(|e| e.is_counted()).collect();
    let mut del = QueryBuilder::<Postgres>::new("DELETE FROM entitlement_usage WHERE license_arn = ");
    del.push_bind(arn);
    if !counted.is_empty() {
        del.push(" AND name NOT IN (");
        let mut sep = del.separated(", ");
        for e in &counted {
            sep.push_bind(&e.name);
        }
        del.push(")");
    }
    del.build().execute(&mut **tx).await?;
    for e in counted {
        sqlx::query(
            "INSERT INTO entitlement_usage (license_arn, name, unit, max_count, overage, consumed) VALUES ($1, $2, $3, $4, $5, 0) \
             ON CONFLICT (license_arn, name) DO UPDATE SET unit = EXCLUDED.unit, max_count = EXCLUDED.max_count, overage = EXCLUDED.overage",
        )
        .bind(arn)
        .bind(&e.name)
        .bind(e.unit.as_str())
        .bind(e.max_count)
        .bind(e.overage())
        .execute(&mut **tx)
        .await?;
    }
    if reset {
        sqlx::query("UPDATE entitlement_usage SET consumed = 0 WHERE license_arn = $1")
            .bind(arn)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE licenses SET usage_epoch = usage_epoch + 1 WHERE license_arn = $1")
            .bind(arn)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored answer to an earlier request with the same idempotency key, if any.
/// The same key with a different request is a conflict. The caller holds the
/// key's advisory lock.
async fn replay(tx: &mut Transaction<'_, Postgres>, key: &Idempotency) -> Result<Option<serde_json::Value>> {
    let row = sqlx::query(
        "SELECT request_hash, result FROM idempotency WHERE account_id = $1 AND operation = $2 AND client_token = $3",
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

/// Takes the key's advisory lock and replays an earlier answer, if any.
async fn lock_and_replay(tx: &mut Transaction<'_, Postgres>, key: &Idempotency) -> Result<Option<serde_json::Value>> {
    lock_key(tx, key.account.as_str(), key.operation, &key.client_token).await?;
    replay(tx, key).await
}

async fn remember(
    tx: &mut Transaction<'_, Postgres>,
    key: &Idempotency,
    result: &serde_json::Value,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO idempotency (account_id, operation, client_token, request_hash, result, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
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

async fn load_license(tx: &mut Transaction<'_, Postgres>, arn: &str, lock: Lock) -> Result<(License, i64)> {
    let sql = format!(
        "SELECT document, usage_epoch FROM licenses WHERE license_arn = $1{}",
        lock.sql()
    );
    let row = sqlx::query(&sql)
        .bind(arn)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("license {arn} does not exist")))?;
    Ok((
        license_of(&row.try_get::<String, _>("document")?)?,
        row.try_get("usage_epoch")?,
    ))
}

/// Writes a new current version of a license. The caller holds its row `FOR UPDATE`.
async fn write_version(tx: &mut Transaction<'_, Postgres>, license: &License, now_ms: i64) -> Result<()> {
    let doc = serde_json::to_string(license).map_err(corrupt)?;
    let version = license.version_number();
    sqlx::query("INSERT INTO license_versions (license_arn, version, document, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&license.license_arn)
        .bind(version)
        .bind(&doc)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE licenses SET issuer_name = $1, beneficiary = $2, beneficiary_account = $3, product_sku = $4, \
         key_fingerprint = $5, status = $6, version = $7, document = $8 WHERE license_arn = $9",
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

/// Reads a consumption and locks it until the transaction ends.
async fn load_consumption(tx: &mut Transaction<'_, Postgres>, token: &str) -> Result<(Consumption, i64)> {
    let row = sqlx::query(&format!(
        "SELECT {CONSUMPTION_COLUMNS} FROM consumptions WHERE token = $1 FOR UPDATE"
    ))
    .bind(token)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no license consumption has the token '{token}'")))?;
    Ok((consumption_of(&row)?, row.try_get("usage_epoch")?))
}

/// The answer to an earlier checkout with the same ClientToken, if any. Takes
/// the key's advisory lock first, so a concurrent first attempt is waited for.
async fn replay_checkout(
    tx: &mut Transaction<'_, Postgres>,
    caller: &AccountId,
    client_token: &str,
    hash: &str,
    op: &str,
) -> Result<Option<Consumption>> {
    // Both checkout operations share the (consumer_account, client_token) key.
    lock_key(tx, caller.as_str(), "Checkout", client_token).await?;
    let row = sqlx::query(&format!(
        "SELECT {CONSUMPTION_COLUMNS} FROM consumptions WHERE consumer_account = $1 AND client_token = $2"
    ))
    .bind(caller.as_str())
    .bind(client_token)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("request_hash")?;
    if stored != hash {
        return Err(token_reused(client_token, op));
    }
    Ok(Some(consumption_of(&row)?))
}

/// Takes a plan's units with conditional updates, after expiring what is due
/// on the license. Returns why not, undoing any partial draw, when a pool is
/// short. The caller holds the license row `FOR KEY SHARE`.
async fn draw(
    tx: &mut Transaction<'_, Postgres>,
    license: &License,
    plan: &CheckoutPlan,
    now_ms: i64,
) -> Result<Option<String>> {
    // All the license's counters, in name order, before expiry returns units to
    // some of them: counters are locked in one order everywhere.
    sqlx::query("SELECT name FROM entitlement_usage WHERE license_arn = $1 ORDER BY name COLLATE \"C\" FOR UPDATE")
        .bind(&license.license_arn)
        .fetch_all(&mut **tx)
        .await?;
    expire_in(tx, Some(&license.license_arn), now_ms, None).await?;
    let mut applied: Vec<&Draw> = Vec::new();
    for d in &plan.draws {
        let done = sqlx::query(
            "UPDATE entitlement_usage SET consumed = consumed + $1 WHERE license_arn = $2 AND name = $3 \
             AND consumed + $1 <= $4 AND (overage OR max_count IS NULL OR consumed + $1 <= max_count)",
        )
        .bind(d.amount.get())
        .bind(&license.license_arn)
        .bind(&d.name)
        .bind(MAX_UNITS)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 1 {
            applied.push(d);
            continue;
        }
        let (consumed, max_count, overage): (i64, Option<i64>, bool) = sqlx::query_as(
            "SELECT consumed, max_count, overage FROM entitlement_usage WHERE license_arn = $1 AND name = $2",
        )
        .bind(&license.license_arn)
        .bind(&d.name)
        .fetch_one(&mut **tx)
        .await?;
        let tally = Tally {
            consumed: stored_units(consumed)?,
            max_count,
            overage,
        };
        for a in applied {
            sqlx::query("UPDATE entitlement_usage SET consumed = consumed - $1 WHERE license_arn = $2 AND name = $3")
                .bind(a.amount.get())
                .bind(&license.license_arn)
                .bind(&a.name)
                .execute(&mut **tx)
                .await?;
        }
        return Ok(Some(refusal_of(d, &license.license_arn, tally)));
    }
    Ok(None)
}

async fn insert_consumption(
    tx: &mut Transaction<'_, Postgres>,
    c: &Consumption,
    client_token: &str,
    hash: &str,
    epoch: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO consumptions (token, license_arn, consumer_account, client_token, request_hash, checkout_type, \
         allowed, draws, node_id, beneficiary, product_sku, key_fingerprint, issued_at, expires_at, status, usage_epoch, \
         borrowed, checkout_metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'ACTIVE', $15, $16, $17)",
    )
    .bind(&c.token)
    .bind(&c.license_arn)
    .bind(c.consumer.as_str())
    .bind(client_token)
    .bind(hash)
    .bind(c.checkout_type.as_str())
    .bind(serde_json::to_string(&c.allowed).map_err(corrupt)?)
    .bind(serde_json::to_string(&c.draws).map_err(corrupt)?)
    .bind(&c.node_id)
    .bind(&c.beneficiary)
    .bind(&c.product_sku)
    .bind(&c.key_fingerprint)
    .bind(to_millis(c.issued_at))
    .bind(to_millis(c.expires_at))
    .bind(epoch)
    .bind(c.borrowed)
    .bind(if c.checkout_metadata.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&c.checkout_metadata).map_err(corrupt)?)
    })
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Refuses the write if `key` is given and is not an active access key now.
async fn confirm_key(tx: &mut Transaction<'_, Postgres>, key: Option<&str>) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    let active: Option<bool> = sqlx::query_scalar("SELECT active FROM access_keys WHERE access_key_id = $1")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    if active == Some(true) {
        Ok(())
    } else {
        Err(StoreError::unknown_key(key))
    }
}

/// Whether `caller` holds an ACTIVE grant chain on the license that allows `op`.
async fn granted(
    tx: &mut Transaction<'_, Postgres>,
    caller: &AccountId,
    license_arn: &str,
    op: AllowedOperation,
) -> Result<bool> {
    Ok(grants::chains(tx, caller, license_arn)
        .await?
        .iter()
        .any(|chain| chain_permits(chain, op)))
}

/// Checks that `caller` may act on its own consumption `c` with `op` now, and
/// returns the license, which stays locked `FOR KEY SHARE`.
async fn usable_consumption(
    tx: &mut Transaction<'_, Postgres>,
    caller: &AccountId,
    c: &Consumption,
    only_license: Option<&str>,
    op: AllowedOperation,
) -> Result<License> {
    check_consumer(caller, c, only_license)?;
    let (license, _) = load_license(tx, &c.license_arn, Lock::KeyShare).await?;
    if !direct_user(caller, &license) && !granted(tx, caller, &license.license_arn, op).await? {
        return Err(no_grant(caller, &license.license_arn, op));
    }
    Ok(license)
}

impl PgStore {
    async fn create_account_once(&self, name: &str, now: OffsetDateTime) -> Result<(Account, AccessKey)> {
        let mut tx = self.begin().await?;
        let id = loop {
            let id = random_account_id();
            let done = sqlx::query(
                "INSERT INTO accounts (account_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(&id)
            .bind(name)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                break account_of(&id)?;
            }
        };
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

    async fn create_access_key_once(&self, account: &AccountId, now: OffsetDateTime) -> Result<AccessKey> {
        let mut tx = self.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM accounts WHERE account_id = $1 FOR KEY SHARE")
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

    async fn revoke_access_key_once(&self, access_key_id: &str, now: OffsetDateTime) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE access_keys SET active = FALSE, revoked_at = $1 WHERE access_key_id = $2")
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

    async fn put_issuer_key_once(&self, key: &StoredKey, now: OffsetDateTime) -> Result<StoredKey> {
        let mut tx = self.begin().await?;
        // A concurrent insert of the same (account, alg) is waited for, then kept.
        sqlx::query(
            "INSERT INTO issuer_keys (kid, account_id, alg, private_der, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
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
            "SELECT kid, account_id, alg, private_der, public_jwk FROM issuer_keys WHERE account_id = $1 AND alg = $2",
        )
        .bind(key.account_id.as_str())
        .bind(&key.alg)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        stored_key(&row)
    }

    async fn create_license_once(&self, new: &NewLicense, now: OffsetDateTime) -> Result<VersionOutcome> {
        let now_ms = to_millis(now);
        let issuer = new.arn.account().clone();
        let key = Idempotency {
            account: issuer.clone(),
            operation: "CreateLicense",
            client_token: new.client_token.clone(),
            request_hash: new.request_hash.clone(),
        };
        let mut tx = self.begin().await?;
        if let Some(out) = lock_and_replay(&mut tx, &key).await? {
            return version_outcome(&out);
        }
        let license = new
            .body
            .clone()
            .into_license(&new.arn, LicenseStatus::Available, 1, now);
        let doc = serde_json::to_string(&license).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO licenses (license_arn, issuer_account, issuer_name, beneficiary, beneficiary_account, product_sku, \
             key_fingerprint, status, version, document, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)",
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
        sqlx::query("INSERT INTO license_versions (license_arn, version, document, created_at) VALUES ($1, 1, $2, $3)")
            .bind(&license.license_arn)
            .bind(&doc)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sync_usage(&mut tx, &license, false).await?;
        upsert_tags(&mut tx, &license.license_arn, &new.tags).await?;
        let out = VersionOutcome {
            license_arn: license.license_arn.clone(),
            status: license.status,
            version: license.version.clone(),
        };
        remember(&mut tx, &key, &version_json(&out), now_ms).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn create_license_version_once(&self, new: &NewVersion, now: OffsetDateTime) -> Result<VersionOutcome> {
        let now_ms = to_millis(now);
        let key = Idempotency {
            account: new.caller.clone(),
            operation: "CreateLicenseVersion",
            client_token: new.client_token.clone(),
            request_hash: new.request_hash.clone(),
        };
        let mut tx = self.begin().await?;
        if let Some(out) = lock_and_replay(&mut tx, &key).await? {
            return version_outcome(&out);
        }
        let (current, _) = load_license(&mut tx, new.arn.as_str(), Lock::Update).await?;
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
            .clone()
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

    async fn delete_license_once(
        &self,
        arn: &LicenseArn,
        source_version: &str,
        now: OffsetDateTime,
    ) -> Result<License> {
        let mut tx = self.begin().await?;
        let (mut license, _) = load_license(&mut tx, arn.as_str(), Lock::Update).await?;
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

    async fn checkout_once(&self, cmd: &CheckoutCommand, now: OffsetDateTime) -> Result<Consumption> {
        let now_ms = to_millis(now);
        let mut tx = self.begin().await?;
        confirm_key(&mut tx, cmd.key.as_deref()).await?;
        if let Some(c) = replay_checkout(
            &mut tx,
            &cmd.caller,
            &cmd.client_token,
            &cmd.request_hash,
            "CheckoutLicense",
        )
        .await?
        {
            return Ok(c);
        }
        // FOR KEY SHARE: no new version or deletion until this checkout ends.
        let rows = sqlx::query(
            "SELECT document, usage_epoch FROM licenses WHERE product_sku = $1 AND key_fingerprint = $2 \
             ORDER BY seq FOR KEY SHARE",
        )
        .bind(&cmd.product_sku)
        .bind(&cmd.key_fingerprint)
        .fetch_all(&mut *tx)
        .await?;
        let mut reasons = Vec::new();
        let mut own_license_without_beneficiary = false;
        for row in &rows {
            let license = license_of(&row.try_get::<String, _>("document")?)?;
            let epoch: i64 = row.try_get("usage_epoch")?;
            if cmd
                .only_license
                .as_deref()
                .is_some_and(|only| only != license.license_arn)
            {
                continue;
            }
            let reached = match checkout_reach(cmd, &license) {
                Reach::Direct => true,
                Reach::ThroughGrant => {
                    granted(
                        &mut tx,
                        &cmd.caller,
                        &license.license_arn,
                        AllowedOperation::CheckoutLicense,
                    )
                    .await?
                }
                Reach::Never => false,
            };
            if !reached {
                own_license_without_beneficiary |= issuer_without_beneficiary(cmd, &license);
                continue;
            }
            let plan = match checkout_plan(&license, &cmd.entitlements, now) {
                Ok(p) => p,
                Err(r) => {
                    reasons.push(r);
                    continue;
                }
            };
            if let Some(short) = draw(&mut tx, &license, &plan, now_ms).await? {
                reasons.push(short);
                continue;
            }
            let c = checkout_consumption(cmd, &license, plan, now);
            insert_consumption(&mut tx, &c, &cmd.client_token, &cmd.request_hash, epoch).await?;
            tx.commit().await?;
            return Ok(c);
        }
        // Nothing was drawn; the transaction rolls back on drop.
        drop(tx);
        if reasons.is_empty() {
            return Err(nothing_available(cmd, own_license_without_beneficiary));
        }
        Err(StoreError::NoEntitlements(reasons.join("; ")))
    }

    async fn checkout_borrow_once(&self, cmd: &BorrowCommand, now: OffsetDateTime) -> Result<Consumption> {
        let now_ms = to_millis(now);
        let mut tx = self.begin().await?;
        confirm_key(&mut tx, cmd.key.as_deref()).await?;
        if let Some(c) = replay_checkout(
            &mut tx,
            &cmd.caller,
            &cmd.client_token,
            &cmd.request_hash,
            "CheckoutBorrowLicense",
        )
        .await?
        {
            return Ok(c);
        }
        let (license, epoch) = load_license(&mut tx, &cmd.license_arn, Lock::KeyShare).await?;
        let direct = license.beneficiary_account().as_ref() == Some(&cmd.caller);
        if !direct
            && !granted(
                &mut tx,
                &cmd.caller,
                &license.license_arn,
                AllowedOperation::CheckoutBorrowLicense,
            )
            .await?
        {
            return Err(may_not_borrow(&cmd.caller, &license.license_arn));
        }
        let plan = borrow_plan(&license, &cmd.entitlements, now)?;
        if let Some(short) = draw(&mut tx, &license, &plan, now_ms).await? {
            return Err(StoreError::NoEntitlements(short));
        }
        let c = borrow_consumption(cmd, &license, plan, now);
        insert_consumption(&mut tx, &c, &cmd.client_token, &cmd.request_hash, epoch).await?;
        tx.commit().await?;
        Ok(c)
    }

    async fn check_in_once(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        confirm_key(&mut tx, key).await?;
        let (c, epoch) = load_consumption(&mut tx, token).await?;
        let license = usable_consumption(&mut tx, caller, &c, only_license, AllowedOperation::CheckInLicense).await?;
        refuse_check_in(&c, &license, now)?;
        release(&mut tx, &c.license_arn, &c.draws, epoch).await?;
        sqlx::query("UPDATE consumptions SET status = 'CHECKED_IN', ended_at = $1 WHERE token = $2")
            .bind(to_millis(now))
            .bind(token)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn extend_once(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        let mut tx = self.begin().await?;
        confirm_key(&mut tx, key).await?;
        let (mut c, _) = load_consumption(&mut tx, token).await?;
        let license = usable_consumption(
            &mut tx,
            caller,
            &c,
            only_license,
            AllowedOperation::ExtendConsumptionLicense,
        )
        .await?;
        refuse_extension(&c, &license, now)?;
        if dry_run {
            return Ok(c);
        }
        c.expires_at = consumption::expiry(&license, now);
        sqlx::query("UPDATE consumptions SET expires_at = $1 WHERE token = $2")
            .bind(to_millis(c.expires_at))
            .bind(token)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(c)
    }

    async fn license_usage_once(&self, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>> {
        let mut tx = self.begin().await?;
        expire_in(&mut tx, Some(arn), to_millis(now), None).await?;
        let rows = sqlx::query(
            "SELECT name, unit, consumed, max_count FROM entitlement_usage WHERE license_arn = $1 ORDER BY seq",
        )
        .bind(arn)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(EntitlementUsage {
                    name: r.try_get("name")?,
                    unit: r.try_get("unit")?,
                    consumed: r.try_get("consumed")?,
                    max_count: r.try_get("max_count")?,
                })
            })
            .collect()
    }

    async fn expire_due_once(&self, now: OffsetDateTime) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = expire_in(&mut tx, None, to_millis(now), Some(1000)).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn tag_resource_once(&self, arn: &str, tags: &[Tag]) -> Result<()> {
        let mut tx = self.begin().await?;
        upsert_tags(&mut tx, arn, tags).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn untag_resource_once(&self, arn: &str, keys: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        for k in keys {
            sqlx::query("DELETE FROM tags WHERE resource_arn = $1 AND key = $2")
                .bind(arn)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn upsert_tags(tx: &mut Transaction<'_, Postgres>, arn: &str, tags: &[Tag]) -> Result<()> {
    for t in tags {
        sqlx::query(
            "INSERT INTO tags (resource_arn, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (resource_arn, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(arn)
        .bind(&t.key)
        .bind(&t.value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn close(&self) {
        self.readers.close();
        self.pool.close().await;
    }

    fn report_damage(&self, detail: &str) {
        tracing::error!(error = %detail, "the database reports damaged data; see PostgreSQL's log and restore from a backup");
    }

    async fn ready(&self) -> std::result::Result<(), String> {
        let applied = sqlx::query_scalar::<_, Option<i64>>(crate::APPLIED_MIGRATION)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| format!("PostgreSQL does not answer: {e}"))?;
        crate::check_migrations(&MIGRATOR, applied)
    }

    async fn live_consumptions(&self) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, i64>(crate::LIVE_CONSUMPTIONS)
            .fetch_one(&self.pool)
            .await?)
    }

    fn pools(&self) -> Vec<crate::PoolStats> {
        let p = &self.pool;
        vec![crate::PoolStats {
            pool: "main",
            open: p.size(),
            in_use: p.size().saturating_sub(u32::try_from(p.num_idle()).unwrap_or(u32::MAX)),
        }]
    }

    #[tracing::instrument(skip(self))]
    async fn create_account(&self, name: &str, now: OffsetDateTime) -> Result<(Account, AccessKey)> {
        retry("create_account", || self.create_account_once(name, now)).await
    }

    async fn list_access_keys(&self, account: &AccountId) -> Result<Vec<crate::KeySummary>> {
        self.list_keys_of(account).await
    }

    async fn delete_account(&self, account: &AccountId) -> Result<()> {
        self.delete_unused_account(account).await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query(
            "SELECT account_id, name, created_at FROM accounts ORDER BY created_at, account_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
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

    #[tracing::instrument(skip(self))]
    async fn create_access_key(&self, account: &AccountId, now: OffsetDateTime) -> Result<AccessKey> {
        retry("create_access_key", || self.create_access_key_once(account, now)).await
    }

    #[tracing::instrument(skip(self))]
    async fn revoke_access_key(&self, access_key_id: &str, now: OffsetDateTime) -> Result<()> {
        retry("revoke_access_key", || self.revoke_access_key_once(access_key_id, now)).await
    }

    fn confirms_keys(&self) -> bool {
        true
    }

    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>> {
        let row = self
            .readers
            .fetch_optional(
                "SELECT access_key_id, account_id, secret, active, created_at FROM access_keys WHERE access_key_id = $1",
                access_key_id,
            )
            .await?;
        row.map(|r| {
            Ok(AccessKey {
                access_key_id: r.try_get("access_key_id")?,
                account_id: account_of(&r.try_get::<String, _>("account_id")?)?,
                secret: r.try_get("secret")?,
                active: r.try_get("active")?,
                created_at: from_millis(r.try_get("created_at")?),
            })
        })
        .transpose()
    }

    async fn issuer_key(&self, account: &AccountId, alg: &str) -> Result<Option<StoredKey>> {
        let row = sqlx::query(
            "SELECT kid, account_id, alg, private_der, public_jwk FROM issuer_keys WHERE account_id = $1 AND alg = $2",
        )
        .bind(account.as_str())
        .bind(alg)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stored_key).transpose()
    }

    async fn put_issuer_key(&self, key: StoredKey, now: OffsetDateTime) -> Result<StoredKey> {
        retry("put_issuer_key", || self.put_issuer_key_once(&key, now)).await
    }

    async fn issuer_key_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM issuer_keys")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn public_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, account_id, alg, ''::BYTEA AS private_der, public_jwk FROM issuer_keys ORDER BY created_at, kid COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_key).collect()
    }

    #[tracing::instrument(skip_all, fields(license = %new.arn))]
    async fn create_license(&self, new: NewLicense, now: OffsetDateTime) -> Result<VersionOutcome> {
        retry("create_license", || self.create_license_once(&new, now)).await
    }

    #[tracing::instrument(skip_all, fields(license = %new.arn))]
    async fn create_license_version(&self, new: NewVersion, now: OffsetDateTime) -> Result<VersionOutcome> {
        retry("create_license_version", || self.create_license_version_once(&new, now)).await
    }

    async fn get_license(&self, arn: &str, version: Option<i64>) -> Result<Option<License>> {
        let doc: Option<String> = match version {
            Some(v) => {
                sqlx::query_scalar("SELECT document FROM license_versions WHERE license_arn = $1 AND version = $2")
                    .bind(arn)
                    .bind(v)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT document FROM licenses WHERE license_arn = $1")
                    .bind(arn)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        doc.as_deref().map(license_of).transpose()
    }

    async fn list_licenses(&self, q: &LicenseQuery) -> Result<Page<License>> {
        let mut b = QueryBuilder::<Postgres>::new("SELECT seq, document FROM licenses WHERE 1 = 1");
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
        let rows = b.build().fetch_all(&self.pool).await?;
        page(rows, q.limit)
    }

    async fn list_license_versions(&self, arn: &str, after: Option<i64>, limit: usize) -> Result<Page<License>> {
        let rows = sqlx::query(
            "SELECT version AS seq, document FROM license_versions WHERE license_arn = $1 AND version > $2 \
             ORDER BY version LIMIT $3",
        )
        .bind(arn)
        .bind(after.unwrap_or(0))
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        page(rows, limit)
    }

    #[tracing::instrument(skip(self))]
    async fn delete_license(&self, arn: &LicenseArn, source_version: &str, now: OffsetDateTime) -> Result<License> {
        retry("delete_license", || self.delete_license_once(arn, source_version, now)).await
    }

    #[tracing::instrument(skip_all, fields(account = %cmd.caller, sku = %cmd.product_sku))]
    async fn checkout(&self, cmd: CheckoutCommand, now: OffsetDateTime) -> Result<Consumption> {
        // The one-by-one path is boxed: it is rare, and its future is large.
        let cmd = Arc::new(cmd);
        match self.writer.submit(batch::Op::Checkout(cmd.clone()), now).await {
            Some(done) => done?.consumption(),
            None => Box::pin(retry("checkout", || self.checkout_once(&cmd, now))).await,
        }
    }

    #[tracing::instrument(skip_all, fields(account = %cmd.caller, license = %cmd.license_arn))]
    async fn checkout_borrow(&self, cmd: BorrowCommand, now: OffsetDateTime) -> Result<Consumption> {
        let cmd = Arc::new(cmd);
        match self.writer.submit(batch::Op::Borrow(cmd.clone()), now).await {
            Some(done) => done?.consumption(),
            None => Box::pin(retry("checkout_borrow", || self.checkout_borrow_once(&cmd, now))).await,
        }
    }

    #[tracing::instrument(skip(self, token, key))]
    async fn check_in(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        let op = batch::Op::CheckIn {
            caller: caller.clone(),
            token: token.to_owned(),
            only_license: only_license.map(str::to_owned),
            key: key.map(str::to_owned),
        };
        match self.writer.submit(op, now).await {
            Some(done) => done.map(|_| ()),
            None => {
                Box::pin(retry("check_in", || {
                    self.check_in_once(caller, token, only_license, key, now)
                }))
                .await
            }
        }
    }

    #[tracing::instrument(skip(self, token, key))]
    async fn extend(
        &self,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        key: Option<&str>,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        let op = batch::Op::Extend {
            caller: caller.clone(),
            token: token.to_owned(),
            only_license: only_license.map(str::to_owned),
            key: key.map(str::to_owned),
            dry_run,
        };
        match self.writer.submit(op, now).await {
            Some(done) => done?.consumption(),
            None => {
                Box::pin(retry("extend", || {
                    self.extend_once(caller, token, only_license, key, dry_run, now)
                }))
                .await
            }
        }
    }

    async fn license_usage(&self, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>> {
        retry("license_usage", || self.license_usage_once(arn, now)).await
    }

    async fn expire_due(&self, now: OffsetDateTime) -> Result<u64> {
        retry("expire_due", || self.expire_due_once(now)).await
    }

    async fn create_grant(&self, new: NewGrant, now: OffsetDateTime) -> Result<GrantOutcome> {
        retry("create_grant", || grants::create_grant(self, &new, now)).await
    }

    async fn get_grant(&self, arn: &str, version: Option<i64>) -> Result<Option<Grant>> {
        grants::get_grant(&self.pool, arn, version).await
    }

    async fn update_grant(
        &self,
        next: Grant,
        expected_version: &str,
        idempotency: Option<Idempotency>,
        now: OffsetDateTime,
    ) -> Result<GrantOutcome> {
        retry("update_grant", || {
            grants::update_grant(self, &next, expected_version, idempotency.as_ref(), now)
        })
        .await
    }

    async fn list_grants(&self, query: &GrantQuery) -> Result<Page<Grant>> {
        grants::list_grants(&self.pool, query).await
    }

    async fn grant_chains(&self, grantee: &AccountId, license_arn: &str) -> Result<Vec<Vec<Grant>>> {
        let mut conn = self.pool.acquire().await?;
        grants::chains(&mut conn, grantee, license_arn).await
    }

    async fn create_token(
        &self,
        record: TokenRecord,
        idempotency: Idempotency,
        now: OffsetDateTime,
    ) -> Result<TokenRecord> {
        retry("create_token", || {
            grants::create_token(self, &record, &idempotency, now)
        })
        .await
    }

    async fn get_token(&self, token_id: &str) -> Result<Option<TokenRecord>> {
        grants::get_token(&self.pool, token_id).await
    }

    async fn list_tokens(
        &self,
        account: &AccountId,
        ids: &[String],
        license_arns: &[String],
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<TokenRecord>> {
        grants::list_tokens(&self.pool, account, ids, license_arns, after, limit).await
    }

    async fn delete_token(&self, account: &AccountId, token_id: &str, now: OffsetDateTime) -> Result<()> {
        retry("delete_token", || grants::delete_token(self, account, token_id, now)).await
    }

    async fn register_environment(
        &self,
        account: &AccountId,
        env: Environment,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        retry("register_environment", || {
            environments::register(self, account, &env, now)
        })
        .await
    }

    async fn allocate_environment(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku: i64,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        retry("allocate_environment", || {
            environments::allocate(self, account, environment_id, aku, now)
        })
        .await
    }

    async fn get_environment(&self, account: &AccountId, environment_id: &str) -> Result<Option<Environment>> {
        environments::get(&self.pool, account, environment_id).await
    }

    async fn list_environments(
        &self,
        account: Option<&AccountId>,
        environment_id: Option<&str>,
        license_arn: Option<&str>,
    ) -> Result<Vec<(AccountId, Environment)>> {
        environments::list(&self.pool, account, environment_id, license_arn).await
    }

    async fn report_environment_usage(
        &self,
        account: &AccountId,
        environment_id: &str,
        aku_in_use: i64,
        now: OffsetDateTime,
    ) -> Result<Environment> {
        retry("report_environment_usage", || {
            environments::report(self, account, environment_id, aku_in_use, now)
        })
        .await
    }

    async fn start_trial(
        &self,
        account: &AccountId,
        environment_id: &str,
        install_id: &str,
        trial_started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<crate::Trial> {
        retry("start_trial", || {
            environments::start_trial(&self.pool, account, environment_id, install_id, trial_started_at, now)
        })
        .await
    }

    async fn tag_resource(&self, arn: &str, tags: &[Tag]) -> Result<()> {
        retry("tag_resource", || self.tag_resource_once(arn, tags)).await
    }

    async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        retry("untag_resource", || self.untag_resource_once(arn, keys)).await
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let rows = sqlx::query("SELECT key, value FROM tags WHERE resource_arn = $1 ORDER BY key COLLATE \"C\"")
            .bind(arn)
            .fetch_all(&self.pool)
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

fn stored_key(r: &PgRow) -> Result<StoredKey> {
    Ok(StoredKey {
        account_id: account_of(&r.try_get::<String, _>("account_id")?)?,
        kid: r.try_get("kid")?,
        alg: r.try_get("alg")?,
        private_der: r.try_get("private_der")?,
        public_jwk: r.try_get("public_jwk")?,
    })
}

fn page(rows: Vec<PgRow>, limit: usize) -> Result<Page<License>> {
    grants::paged(rows, limit, |r| license_of(&r.try_get::<String, _>("document")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://root:s3cret@db.internal:5432/tessera"),
            "postgres://root@db.internal:5432/tessera"
        );
        assert_eq!(
            redact("postgresql://u:p%40ss@h/d?sslmode=require&password=x&application_name=t"),
            "postgresql://u@h/d?sslmode=require&application_name=t"
        );
        assert_eq!(
            redact("postgres://root@127.0.0.1/test"),
            "postgres://root@127.0.0.1/test"
        );
    }

    #[test]
    fn the_pool_size_comes_from_the_url() {
        assert_eq!(
            split_pool_size("postgres://h/d").unwrap(),
            ("postgres://h/d".to_owned(), DEFAULT_POOL_SIZE)
        );
        assert_eq!(
            split_pool_size("postgres://h/d?pool_max_connections=4&sslmode=disable").unwrap(),
            ("postgres://h/d?sslmode=disable".to_owned(), 4)
        );
        assert_eq!(
            split_pool_size("postgres://h/d?pool_max_connections=64").unwrap(),
            ("postgres://h/d".to_owned(), 64)
        );
        assert!(split_pool_size("postgres://h/d?pool_max_connections=0").is_err());
    }

    #[test]
    fn a_pool_size_setting_replaces_the_urls() {
        let url = PgStore::with_pool_size("postgres://h/d?pool_max_connections=4&sslmode=disable", 9);
        assert_eq!(
            split_pool_size(&url).unwrap(),
            ("postgres://h/d?sslmode=disable".to_owned(), 9)
        );
        assert_eq!(
            split_pool_size(&PgStore::with_pool_size("postgres://h/d", 2))
                .unwrap()
                .1,
            2
        );
    }
}

crate::account_admin!(PgStore, read: pool, begin: begin_admin);

impl PgStore {
    /// A write transaction for the account administration, which holds nothing else.
    async fn begin_admin(&self) -> Result<(Transaction<'static, Postgres>, ())> {
        Ok((self.pool.begin().await?, ()))
    }
}
