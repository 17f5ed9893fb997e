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
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, PgPool, SqlitePool};

use crate::{PgStore, Result, StoreError};

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
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            let shown = PgStore::redact_url(database_url);
            let opts = PgConnectOptions::from_str(&without_pool_param(database_url))
                .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {shown}: {e}")))?
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(connections.clamp(1, MAX_PG_CONNECTIONS))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Config(format!("cannot connect to PostgreSQL at {shown}: {e}")))?;
            return Ok(Self { pool: Pool::Pg(pool) });
        }
        let path = match database_url.strip_prefix("sqlite://") {
            Some(p) => p,
            None if database_url.contains("://") => {
                return Err(StoreError::Config(format!(
                    "unsupported database URL '{}'; use sqlite://PATH or postgres://USER@HOST/DB",
                    PgStore::redact_url(database_url)
                )))
            }
            None => database_url,
        };
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
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

    /// Draws one unit of `entitlement` on `license_arn` if the limit allows:
    /// one conditional `UPDATE`, committed before it returns. True if drawn.
    pub async fn take(&self, license_arn: &str, entitlement: &str) -> Result<bool> {
        let changed = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "UPDATE entitlement_usage SET consumed = consumed + 1 WHERE license_arn = ? AND name = ? \
                 AND (overage = 1 OR max_count IS NULL OR consumed + 1 <= max_count)",
            )
            .bind(license_arn)
            .bind(entitlement)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Pg(pool) => sqlx::query(
                "UPDATE entitlement_usage SET consumed = consumed + 1 WHERE license_arn = $1 AND name = $2 \
                 AND (overage OR max_count IS NULL OR consumed + 1 <= max_count)",
            )
            .bind(license_arn)
            .bind(entitlement)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(changed > 0)
    }

    /// Returns one unit of `entitlement` on `license_arn`: one `UPDATE`,
    /// committed before it returns. True if a unit was returned (false if the
    /// counter was already zero or there is no such counter).
    pub async fn give(&self, license_arn: &str, entitlement: &str) -> Result<bool> {
        let changed = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "UPDATE entitlement_usage SET consumed = consumed - 1 WHERE license_arn = ? AND name = ? \
                 AND consumed >= 1",
            )
            .bind(license_arn)
            .bind(entitlement)
            .execute(pool)
            .await?
            .rows_affected(),
            Pool::Pg(pool) => sqlx::query(
                "UPDATE entitlement_usage SET consumed = consumed - 1 WHERE license_arn = $1 AND name = $2 \
                 AND consumed >= 1",
            )
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

/// `url` without the `pool_max_connections` parameter, which only the store reads.
fn without_pool_param(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("pool_max_connections="))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::without_pool_param;

    #[test]
    fn pool_parameter_is_removed() {
        assert_eq!(without_pool_param("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            without_pool_param("postgres://u@h/db?pool_max_connections=4"),
            "postgres://u@h/db"
        );
        assert_eq!(
            without_pool_param("postgres://u@h/db?sslmode=disable&pool_max_connections=4"),
            "postgres://u@h/db?sslmode=disable"
        );
    }
}
