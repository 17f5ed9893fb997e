//! BYOC environments on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use time::OffsetDateTime;

use tessera_core::environment::{allocation_refusal, Environment};
use tessera_core::timefmt::{self, from_millis, to_millis};
use tessera_core::AccountId;

use super::{account_of, load_license, Lock, PgStore};
use crate::{Result, StoreError};

const COLUMNS: &str = "account_id, environment_id, license_arn, install_id, ops_bucket, cloud_provider, region, \
     entitlement, aku_allocated, aku_in_use, usage_reported_at, created_at, updated_at";

fn environment_of(r: &PgRow) -> Result<Environment> {
    Ok(Environment {
        environment_id: r.try_get("environment_id")?,
        install_id: r.try_get("install_id")?,
        ops_bucket: r.try_get("ops_bucket")?,
        cloud_provider: r.try_get("cloud_provider")?,
        region: r.try_get("region")?,
        license_arn: r.try_get("license_arn")?,
        entitlement: r.try_get("entitlement")?,
        aku_allocated: r.try_get("aku_allocated")?,
        aku_in_use: r.try_get("aku_in_use")?,
        usage_reported_at: r
            .try_get::<Option<i64>, _>("usage_reported_at")?
            .map(|t| timefmt::format(from_millis(t))),
        created_at: timefmt::format(from_millis(r.try_get("created_at")?)),
        updated_at: timefmt::format(from_millis(r.try_get("updated_at")?)),
    })
}

/// Checks that `requested` fits in what the license's entitlement has left
/// after every other environment's allocation. The license row stays locked
/// `FOR NO KEY UPDATE` until the transaction ends, so allocations from one
/// license are checked and written one at a time, and the sum below (read after
/// the lock was granted) includes every allocation committed before.
async fn check_allocation(
    tx: &mut Transaction<'_, Postgres>,
    account: &AccountId,
    env: &Environment,
    requested: i64,
) -> Result<()> {
    let (license, _) = load_license(tx, &env.license_arn, Lock::NoKeyUpdate).await?;
    let ent = license
        .entitlement(&env.entitlement)
        .filter(|e| e.is_counted())
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "license {} has no counted entitlement named '{}' to allocate from",
                env.license_arn, env.entitlement
            ))
        })?;
    let max = match ent.max_count {
        Some(m) => m,
        // Overage without a MaxCount: nothing to split.
        None => return Ok(()),
    };
    let others: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(aku_allocated), 0)::BIGINT FROM environments WHERE license_arn = $1 AND entitlement = $2 \
         AND NOT (account_id = $3 AND environment_id = $4)",
    )
    .bind(&env.license_arn)
    .bind(&env.entitlement)
    .bind(account.as_str())
    .bind(&env.environment_id)
    .fetch_one(&mut **tx)
    .await?;
    match allocation_refusal(&env.entitlement, &env.license_arn, max, others, requested) {
        Some(msg) => Err(StoreError::LimitExceeded(msg)),
        None => Ok(()),
    }
}

pub(super) async fn register(
    store: &PgStore,
    account: &AccountId,
    env: &Environment,
    now: OffsetDateTime,
) -> Result<Environment> {
    let now_ms = to_millis(now);
    let mut tx = store.begin().await?;
    // A concurrent registration of the same environment ends in a unique
    // violation on the primary key; the retry then finds this row.
    let exists: Option<String> =
        sqlx::query_scalar("SELECT environment_id FROM environments WHERE account_id = $1 AND environment_id = $2")
            .bind(account.as_str())
            .bind(&env.environment_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_some() {
        return Err(StoreError::Conflict(format!(
            "environment {} is already registered; use AllocateEnvironment to change its AKU",
            env.environment_id
        )));
    }
    check_allocation(&mut tx, account, env, env.aku_allocated).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO environments (account_id, environment_id, license_arn, install_id, ops_bucket, cloud_provider, \
         region, entitlement, aku_allocated, aku_in_use, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(account.as_str())
    .bind(&env.environment_id)
    .bind(&env.license_arn)
    .bind(&env.install_id)
    .bind(&env.ops_bucket)
    .bind(&env.cloud_provider)
    .bind(&env.region)
    .bind(&env.entitlement)
    .bind(env.aku_allocated)
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    environment_of(&row)
}

/// Reads an environment and locks it until the transaction ends.
async fn load(tx: &mut Transaction<'_, Postgres>, account: &AccountId, id: &str) -> Result<Environment> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM environments WHERE account_id = $1 AND environment_id = $2 FOR UPDATE"
    ))
    .bind(account.as_str())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("environment {id} is not registered")))?;
    environment_of(&row)
}

pub(super) async fn allocate(
    store: &PgStore,
    account: &AccountId,
    id: &str,
    aku: i64,
    now: OffsetDateTime,
) -> Result<Environment> {
    let mut tx = store.begin().await?;
    let mut env = load(&mut tx, account, id).await?;
    if aku < env.aku_in_use {
        return Err(StoreError::Conflict(format!(
            "environment {id} reports {} {} in use; its allocation cannot shrink to {aku} below that",
            env.aku_in_use, env.entitlement
        )));
    }
    check_allocation(&mut tx, account, &env, aku).await?;
    sqlx::query(
        "UPDATE environments SET aku_allocated = $1, updated_at = $2 WHERE account_id = $3 AND environment_id = $4",
    )
    .bind(aku)
    .bind(to_millis(now))
    .bind(account.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    env.aku_allocated = aku;
    env.updated_at = timefmt::format(now);
    Ok(env)
}

pub(super) async fn report(
    store: &PgStore,
    account: &AccountId,
    id: &str,
    aku_in_use: i64,
    now: OffsetDateTime,
) -> Result<Environment> {
    let mut tx = store.begin().await?;
    let mut env = load(&mut tx, account, id).await?;
    sqlx::query(
        "UPDATE environments SET aku_in_use = $1, usage_reported_at = $2 WHERE account_id = $3 AND environment_id = $4",
    )
    .bind(aku_in_use)
    .bind(to_millis(now))
    .bind(account.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    env.aku_in_use = aku_in_use;
    env.usage_reported_at = Some(timefmt::format(now));
    Ok(env)
}

pub(super) async fn get(pool: &PgPool, account: &AccountId, id: &str) -> Result<Option<Environment>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM environments WHERE account_id = $1 AND environment_id = $2"
    ))
    .bind(account.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(environment_of).transpose()
}

pub(super) async fn list(
    pool: &PgPool,
    account: Option<&AccountId>,
    id: Option<&str>,
    license_arn: Option<&str>,
) -> Result<Vec<(AccountId, Environment)>> {
    let mut b = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM environments WHERE 1 = 1"));
    if let Some(a) = account {
        b.push(" AND account_id = ").push_bind(a.to_string());
    }
    if let Some(i) = id {
        b.push(" AND environment_id = ").push_bind(i.to_owned());
    }
    if let Some(l) = license_arn {
        b.push(" AND license_arn = ").push_bind(l.to_owned());
    }
    b.push(" ORDER BY created_at, environment_id COLLATE \"C\"");
    let rows = b.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((account_of(&r.try_get::<String, _>("account_id")?)?, environment_of(r)?)))
        .collect()
}

pub(super) async fn start_trial(
    pool: &PgPool,
    account: &AccountId,
    id: &str,
    install_id: &str,
    trial_started_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<crate::Trial> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO trials (account_id, environment_id, install_id, trial_started_at, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, environment_id) DO NOTHING")
        .bind(account.as_str())
        .bind(id)
        .bind(install_id)
        .bind(to_millis(trial_started_at.min(now)))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
    let (install_id, started): (String, i64) =
        sqlx::query_as("SELECT install_id, trial_started_at FROM trials WHERE account_id = $1 AND environment_id = $2")
            .bind(account.as_str())
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(crate::Trial {
        install_id,
        trial_started_at: tessera_core::timefmt::from_millis(started),
    })
}
