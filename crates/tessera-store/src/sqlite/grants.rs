//! Grants and refresh tokens on SQLite.

use crate::codec::{grant_of, outcome, outcome_json, outcome_of};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use time::{Duration, OffsetDateTime};

use tessera_core::grant::{Grant, MAX_GRANTS_PER_LICENSE};
use tessera_core::timefmt::{from_millis, to_millis};
use tessera_core::AccountId;

use super::{account_of, corrupt, remember, replay, SqliteStore};
use crate::{GrantOutcome, GrantQuery, Idempotency, NewGrant, Page, Result, StoreError, TokenRecord};

async fn write_grant_version(tx: &mut Transaction<'_, Sqlite>, g: &Grant, now_ms: i64) -> Result<()> {
    let doc = serde_json::to_string(g).map_err(corrupt)?;
    sqlx::query("INSERT INTO grant_versions (grant_arn, version, document, created_at) VALUES (?, ?, ?, ?)")
        .bind(&g.grant_arn)
        .bind(g.version.parse::<i64>().unwrap_or(0))
        .bind(&doc)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn create_grant(store: &SqliteStore, new: NewGrant, now: OffsetDateTime) -> Result<GrantOutcome> {
    let now_ms = to_millis(now);
    let (mut tx, _turn) = store.begin().await?;
    if let Some(v) = replay(&mut tx, &new.idempotency).await? {
        return outcome_of(&v);
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE license_arn = ?")
        .bind(&new.grant.license_arn)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_GRANTS_PER_LICENSE {
        return Err(StoreError::LimitExceeded(format!(
            "license {} already has {count} grants; at most {MAX_GRANTS_PER_LICENSE} are allowed",
            new.grant.license_arn
        )));
    }
    let g = &new.grant;
    sqlx::query(
        "INSERT INTO grants (grant_arn, license_arn, parent_arn, grantor_account, grantee_account, status, version, document, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&g.grant_arn)
    .bind(&g.license_arn)
    .bind(&g.parent_arn)
    .bind(new.grantor.as_str())
    .bind(new.grantee.as_str())
    .bind(g.grant_status.as_str())
    .bind(g.version.parse::<i64>().unwrap_or(1))
    .bind(serde_json::to_string(g).map_err(corrupt)?)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    write_grant_version(&mut tx, g, now_ms).await?;
    for t in &new.tags {
        sqlx::query("INSERT INTO tags (resource_arn, key, value) VALUES (?, ?, ?) ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value")
            .bind(&g.grant_arn)
            .bind(&t.key)
            .bind(&t.value)
            .execute(&mut *tx)
            .await?;
    }
    let out = outcome(g);
    remember(&mut tx, &new.idempotency, &outcome_json(&out), now_ms).await?;
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn get_grant(pool: &SqlitePool, arn: &str, version: Option<i64>) -> Result<Option<Grant>> {
    let doc: Option<String> = match version {
        Some(v) => {
            sqlx::query_scalar("SELECT document FROM grant_versions WHERE grant_arn = ? AND version = ?")
                .bind(arn)
                .bind(v)
                .fetch_optional(pool)
                .await?
        }
        None => {
            sqlx::query_scalar("SELECT document FROM grants WHERE grant_arn = ?")
                .bind(arn)
                .fetch_optional(pool)
                .await?
        }
    };
    doc.as_deref().map(grant_of).transpose()
}

pub(super) async fn update_grant(
    store: &SqliteStore,
    next: Grant,
    expected_version: &str,
    idempotency: Option<Idempotency>,
    now: OffsetDateTime,
) -> Result<GrantOutcome> {
    let now_ms = to_millis(now);
    let (mut tx, _turn) = store.begin().await?;
    if let Some(key) = &idempotency {
        if let Some(v) = replay(&mut tx, key).await? {
            return outcome_of(&v);
        }
    }
    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM grants WHERE grant_arn = ?")
        .bind(&next.grant_arn)
        .fetch_optional(&mut *tx)
        .await?;
    let current = current.ok_or_else(|| StoreError::NotFound(format!("grant {} does not exist", next.grant_arn)))?;
    if current.to_string() != expected_version {
        return Err(StoreError::Conflict(format!(
            "grant {} is at version {current}, not {expected_version}; read it again and retry",
            next.grant_arn
        )));
    }
    sqlx::query("UPDATE grants SET status = ?, version = ?, document = ? WHERE grant_arn = ?")
        .bind(next.grant_status.as_str())
        .bind(next.version.parse::<i64>().unwrap_or(current + 1))
        .bind(serde_json::to_string(&next).map_err(corrupt)?)
        .bind(&next.grant_arn)
        .execute(&mut *tx)
        .await?;
    write_grant_version(&mut tx, &next, now_ms).await?;
    let out = outcome(&next);
    if let Some(key) = &idempotency {
        remember(&mut tx, key, &outcome_json(&out), now_ms).await?;
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn list_grants(pool: &SqlitePool, q: &GrantQuery) -> Result<Page<Grant>> {
    let mut b = QueryBuilder::<Sqlite>::new(
        "SELECT g.seq, g.document FROM grants g JOIN licenses l ON l.license_arn = g.license_arn WHERE 1 = 1",
    );
    if let Some(a) = &q.grantor {
        b.push(" AND g.grantor_account = ").push_bind(a.to_string());
    }
    if let Some(a) = &q.grantee {
        b.push(" AND g.grantee_account = ").push_bind(a.to_string());
    }
    if !q.arns.is_empty() {
        b.push(" AND g.grant_arn IN (");
        let mut sep = b.separated(", ");
        for arn in &q.arns {
            sep.push_bind(arn.clone());
        }
        b.push(")");
    }
    if let Some(v) = &q.license_arn {
        b.push(" AND g.license_arn = ").push_bind(v.clone());
    }
    if let Some(v) = &q.status {
        b.push(" AND g.status = ").push_bind(v.as_str());
    }
    if let Some(v) = &q.grantee_account {
        b.push(" AND g.grantee_account = ").push_bind(v.to_string());
    }
    if let Some(v) = &q.product_sku {
        b.push(" AND l.product_sku = ").push_bind(v.clone());
    }
    if let Some(v) = &q.issuer_name {
        b.push(" AND l.issuer_name = ").push_bind(v.clone());
    }
    if let Some(v) = &q.granter_account {
        b.push(" AND g.grantor_account = ").push_bind(v.to_string());
    }
    if let Some(after) = q.after {
        b.push(" AND g.seq > ").push_bind(after);
    }
    b.push(" ORDER BY g.seq LIMIT ").push_bind(q.limit as i64 + 1);
    let rows = b.build().fetch_all(pool).await?;
    paged(rows, q.limit, |r| grant_of(&r.try_get::<String, _>("document")?))
}

/// Splits `limit + 1` rows (ordered by `seq`) into a page and the position to resume from.
pub(super) fn paged<T>(rows: Vec<SqliteRow>, limit: usize, f: impl Fn(&SqliteRow) -> Result<T>) -> Result<Page<T>> {
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for r in rows.iter().take(limit) {
        last = Some(r.try_get::<i64, _>("seq")?);
        items.push(f(r)?);
    }
    Ok(Page {
        items,
        next: if more { last } else { None },
    })
}

fn token_of(r: &SqliteRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        token_id: r.try_get("token_id")?,
        account: account_of(&r.try_get::<String, _>("account_id")?)?,
        license_arn: r.try_get("license_arn")?,
        role_arns: serde_json::from_str(&r.try_get::<String, _>("role_arns")?).map_err(corrupt)?,
        token_properties: serde_json::from_str(&r.try_get::<String, _>("token_properties")?).map_err(corrupt)?,
        expires_at: from_millis(r.try_get("expires_at")?),
        deleted: r.try_get::<String, _>("status")? == "DELETED",
        created_at: from_millis(r.try_get("created_at")?),
    })
}

const TOKEN_COLUMNS: &str =
    "seq, token_id, account_id, license_arn, role_arns, token_properties, expires_at, status, created_at, request_hash";

/// CreateToken's ClientToken is valid for 10 minutes.
const TOKEN_IDEMPOTENCY: Duration = Duration::minutes(10);

pub(super) async fn create_token(
    store: &SqliteStore,
    record: TokenRecord,
    key: Idempotency,
    now: OffsetDateTime,
) -> Result<TokenRecord> {
    let (mut tx, _turn) = store.begin().await?;
    let prior = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE account_id = ? AND client_token = ? AND created_at > ? ORDER BY seq DESC LIMIT 1"
    ))
    .bind(key.account.as_str())
    .bind(&key.client_token)
    .bind(to_millis(now - TOKEN_IDEMPOTENCY))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = prior {
        if row.try_get::<String, _>("request_hash")? != key.request_hash {
            return Err(StoreError::Conflict(format!(
                "ClientToken '{}' was used with a different CreateToken request in the last 10 minutes; use a new ClientToken",
                key.client_token
            )));
        }
        return token_of(&row);
    }
    sqlx::query(
        "INSERT INTO tokens (token_id, account_id, license_arn, role_arns, token_properties, expires_at, status, client_token, request_hash, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'AVAILABLE', ?, ?, ?)",
    )
    .bind(&record.token_id)
    .bind(record.account.as_str())
    .bind(&record.license_arn)
    .bind(serde_json::to_string(&record.role_arns).map_err(corrupt)?)
    .bind(serde_json::to_string(&record.token_properties).map_err(corrupt)?)
    .bind(to_millis(record.expires_at))
    .bind(&key.client_token)
    .bind(&key.request_hash)
    .bind(to_millis(record.created_at))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn get_token(pool: &SqlitePool, token_id: &str) -> Result<Option<TokenRecord>> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id = ?"))
        .bind(token_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(token_of).transpose()
}

pub(super) async fn list_tokens(
    pool: &SqlitePool,
    account: &AccountId,
    ids: &[String],
    license_arns: &[String],
    after: Option<i64>,
    limit: usize,
) -> Result<Page<TokenRecord>> {
    let mut b = QueryBuilder::<Sqlite>::new(format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE account_id = "));
    b.push_bind(account.to_string());
    if !ids.is_empty() {
        b.push(" AND token_id IN (");
        let mut sep = b.separated(", ");
        for id in ids {
            sep.push_bind(id.clone());
        }
        b.push(")");
    }
    if !license_arns.is_empty() {
        b.push(" AND license_arn IN (");
        let mut sep = b.separated(", ");
        for a in license_arns {
            sep.push_bind(a.clone());
        }
        b.push(")");
    }
    if let Some(after) = after {
        b.push(" AND seq > ").push_bind(after);
    }
    b.push(" ORDER BY seq LIMIT ").push_bind(limit as i64 + 1);
    let rows = b.build().fetch_all(pool).await?;
    paged(rows, limit, token_of)
}

pub(super) async fn delete_token(
    store: &SqliteStore,
    account: &AccountId,
    token_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let (mut tx, _turn) = store.begin().await?;
    let owner: Option<(String, String)> = sqlx::query_as("SELECT account_id, status FROM tokens WHERE token_id = ?")
        .bind(token_id)
        .fetch_optional(&mut *tx)
        .await?;
    match owner {
        None => return Err(StoreError::NotFound(format!("token {token_id} does not exist"))),
        Some((a, _)) if a != account.as_str() => {
            return Err(StoreError::AccessDenied(format!(
                "token {token_id} belongs to another account"
            )))
        }
        Some((_, s)) if s == "DELETED" => {
            return Err(StoreError::NotFound(format!("token {token_id} is already deleted")))
        }
        Some(_) => {}
    }
    sqlx::query("UPDATE tokens SET status = 'DELETED' WHERE token_id = ?")
        .bind(token_id)
        .execute(&mut *tx)
        .await?;
    let _ = now;
    tx.commit().await?;
    Ok(())
}
