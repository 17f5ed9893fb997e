//! The benchmark's raw baseline: the conditional counter update that a checkout
//! makes, issued directly against the database, one durable transaction per
//! call, with no group commit, no consumption rows and no HTTP.
//!
//! It opens the database the way the backends do (SQLite: WAL,
//! `synchronous=FULL`, a 30 s busy timeout, one writer connection; PostgreSQL:
//! default `synchronous_commit`), so a call costs what one commit costs there.
//! It does not run migrations: the database must already hold the schema, and
//! it does not log slow statements: under load every statement is slow.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{ConnectOptions, PgPool, SqlitePool};

use crate::postgres::split_pool_size;
use crate::{database, sqlite, Database, PgStore, Result, StoreError};

/// Most connections a PostgreSQL [`RawCounter`] opens, whatever it is asked for.
pub const MAX_PG_CONNECTIONS: u32 = 64;

/// Draws and returns one unit of an entitlement's counter, one transaction each.
pub struct RawCounter {
    pool: Pool,
}

enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl RawCounter {
    /// Connects to `database_url` (`sqlite://PATH`, a bare path, or
    /// `postgres://...`). On PostgreSQL the pool holds up to `connections`
    /// (at most [`MAX_PG_CONNECTIONS`]); SQLite has one writer, so it uses one
    /// connection whatever `connections` says.
    pub async fn open(database_url: &str, connections: u32) -> Result<Self> {
        match database(database_url)? {
            Database::Postgres(url) => {
                let shown = PgStore::redact_url(url);
                let opts = PgConnectOptions::from_str(&split_pool_size(url)?.0)
                    .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {shown}: {e}")))?
                    .disable_statement_logging();
                let pool = PgPoolOptions::new()
                    .max_connections(connections.clamp(1, MAX_PG_CONNECTIONS))
                    .acquire_timeout(Duration::from_secs(30))
                    // As the store's pool: no extra round trip before each use.
                    .test_before_acquire(false)
                    .connect_with(opts)
                    .await
                    .map_err(|e| StoreError::Config(format!("cannot connect to PostgreSQL at {shown}: {e}")))?;
                Ok(Self { pool: Pool::Pg(pool) })
            }
            Database::Sqlite(path) => {
                let opts = sqlite::connect_options(path)?
                    .create_if_missing(false)
                    .disable_statement_logging();
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with(opts)
                    .await?;
                Ok(Self {
                    pool: Pool::Sqlite(pool),
                })
            }
        }
    }

    /// Draws one unit of `entitlement` on `license_arn` if the limit allows:
    /// one conditional `UPDATE`, committed before it returns. True if drawn.
    pub async fn take(&self, license_arn: &str, entitlement: &str) -> Result<bool> {
        self.update(
            "consumed = consumed + 1",
            "(overage OR max_count IS NULL OR consumed + 1 <= max_count)",
            license_arn,
            entitlement,
        )
        .await
    }

    /// Returns one unit of `entitlement` on `license_arn`: one `UPDATE`,
    /// committed before it returns. True if a unit was returned (false if the
    /// counter was already zero or there is no such counter).
    pub async fn give(&self, license_arn: &str, entitlement: &str) -> Result<bool> {
        self.update("consumed = consumed - 1", "consumed >= 1", license_arn, entitlement)
            .await
    }

    /// One autocommitted conditional `UPDATE` of a counter; true if it changed a row.
    async fn update(&self, set: &str, condition: &str, license_arn: &str, entitlement: &str) -> Result<bool> {
        // `$1` and `$2` read as positional parameters in both dialects.
        let changed = match &self.pool {
            // SQLite keeps counts in usage_counts, apart from the limits in entitlement_usage.
            Pool::Sqlite(pool) => sqlx::query(&format!(
                "UPDATE usage_counts SET {set} FROM entitlement_usage u \
                 WHERE u.usage_id = usage_counts.usage_id AND u.license_arn = $1 AND u.name = $2 AND {condition}"
            ))
            .bind(license_arn)
            .bind(entitlement)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Pg(pool) => sqlx::query(&format!(
                "UPDATE entitlement_usage SET {set} WHERE license_arn = $1 AND name = $2 AND {condition}"
            ))
            .bind(license_arn)
            .bind(entitlement)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(changed > 0)
    }

    /// Closes the connections now rather than when the last handle is dropped.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Pg(pool) => pool.close().await,
        }
    }
}
