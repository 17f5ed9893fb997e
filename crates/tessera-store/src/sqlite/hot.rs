//! The hot path on SQLite: checkout, borrow, check-in, extension, usage and
//! expiry, group-committed on one dedicated thread that owns a connection, and
//! the small per-request reads (access keys, grant chains) done in place.
//!
//! Each statement here is a plain function call on the thread that owns the
//! connection, so a checkout costs microseconds of SQLite work instead of a
//! cross-thread hand-off per statement. Every write waiting when a batch starts
//! runs in its own savepoint of one transaction; the batch commits once (one
//! WAL fsync) and only then is each write answered.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex as StdMutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use time::OffsetDateTime;
use tokio::sync::{oneshot, Mutex};

use tessera_core::consumption::{self, CheckoutPlan, Consumption, ConsumptionStatus, Draw};
use tessera_core::grant::{chain_permits, AllowedOperation, Grant};
use tessera_core::license::{CheckoutType, License};
use tessera_core::timefmt::{from_millis, to_millis};
use tessera_core::AccountId;

use crate::codec::{account_of, corrupt, grant_of, license_of};
use crate::rules::{
    borrow_consumption, borrow_plan, check_consumer, checkout_consumption, checkout_plan, checkout_reach, direct_user,
    exhausted, issuer_without_beneficiary, may_not_borrow, no_grant, nothing_available, refuse_check_in,
    refuse_extension, token_reused, Reach,
};
use crate::{AccessKey, BorrowCommand, CheckoutCommand, EntitlementUsage, Result, StoreError};

/// At most this many writes share one transaction (and one fsync).
const MAX_BATCH: usize = 256;

/// WAL pages (4 KiB each) between the writer's automatic checkpoints.
const WAL_PAGES: i64 = 8_000;

/// Re-grants deeper than this are refused when followed (a cycle cannot form, but be safe).
const MAX_CHAIN: usize = 16;

/// Parsed license documents by ARN, valid while the stored version is the same.
const LICENSE_CACHE: usize = 10_000;

/// What a job may use: the connection and what the thread keeps between jobs.
pub(super) struct Ctx {
    conn: Connection,
    licenses: HashMap<String, (i64, Arc<License>)>,
}

/// Runs after the batch's COMMIT: `None` if it succeeded, else why not.
type Completion = Box<dyn FnOnce(Option<String>) + Send>;

/// Runs in a savepoint of the batch's transaction; says whether to keep its changes.
type Job = Box<dyn FnOnce(&mut Ctx) -> (bool, Completion) + Send>;

/// Read connections kept for reuse; more are opened when all are in use.
const IDLE_READERS: usize = 8;

/// The handle the async store holds; the writer thread stops when it is dropped.
pub(super) struct Hot {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    readers: StdMutex<Vec<Connection>>,
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Hot {
    /// Opens the writer connection on `path` (already migrated) and starts its thread.
    /// `gate` is held around every write transaction in this process, so that the
    /// other writer connection takes its turn between batches instead of polling the lock.
    pub(super) fn start(path: &Path, gate: Arc<Mutex<()>>) -> Result<Self> {
        let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        // Checkpoint every WAL_PAGES pages rather than SQLite's 1,000: the hot
        // pages (counters, index tails) are rewritten by nearly every batch, and a
        // longer interval copies each of them into the database file once, not many times.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)?;
        let writer_ctx = Ctx {
            conn,
            licenses: HashMap::new(),
        };
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || writer(writer_ctx, rx, gate))
            .map_err(|e| StoreError::Config(format!("cannot start the database writer thread: {e}")))?;
        Ok(Self {
            jobs,
            path: path.to_owned(),
            readers: StdMutex::new(Vec::new()),
        })
    }

    /// Runs `f` in the next batch; returns its result once the batch is durable.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |ctx| {
            let result = f(ctx);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |failed| {
                let _ = reply.send(match failed {
                    None => result,
                    Some(e) => Err(StoreError::Unavailable(format!("the write was not committed: {e}"))),
                });
            });
            (ok, completion)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the database writer dropped the request".into()))?
    }

    /// Runs `f` in place on a read connection (it sees every committed write).
    ///
    /// Only for reads of a row or two by key, which take microseconds and never
    /// wait on a writer in WAL mode: handing them to another thread would cost
    /// more than running them on the caller's.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match idle {
            Some(c) => c,
            None => connect(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = f(&conn);
        if let Ok(mut r) = self.readers.lock() {
            if r.len() < IDLE_READERS {
                r.push(conn);
            }
        }
        out
    }
}

/// Runs a transaction-control statement from the statement cache: these run
/// once or twice per write, and parsing them each time showed in profiles.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Group commit: takes every write that is waiting, runs each in a savepoint
/// of one transaction and commits once. A write that
/// fails (or panics) rolls back to its savepoint and leaves the others intact;
/// if the commit fails, every write of the batch is answered with the failure.
fn writer(mut ctx: Ctx, rx: mpsc::Receiver<Job>, gate: Arc<Mutex<()>>) {
    while let Ok(first) = rx.recv() {
        let mut writes = vec![first];
        while writes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => writes.push(job),
                Err(_) => break,
            }
        }
        let _turn = gate.blocking_lock();
        if let Err(e) = run(&ctx.conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs drops their reply channels: each caller gets an error.
            tracing::error!(error = %e, "cannot begin a write transaction");
            continue;
        }
        let mut done: Vec<Completion> = Vec::with_capacity(writes.len());
        for f in writes {
            if let Err(e) = run(&ctx.conn, "SAVEPOINT job") {
                tracing::error!(error = %e, "cannot open a savepoint");
                continue;
            }
            let (ok, completion) = match catch_unwind(AssertUnwindSafe(|| f(&mut ctx))) {
                Ok(r) => r,
                Err(p) => {
                    // The job's reply channel was dropped in the unwind: its caller gets an error.
                    tracing::error!(panic = %panic_message(&*p), "a database write panicked");
                    (false, Box::new(|_| {}) as Completion)
                }
            };
            let closed = if ok {
                run(&ctx.conn, "RELEASE job")
            } else {
                run(&ctx.conn, "ROLLBACK TO job").and_then(|()| run(&ctx.conn, "RELEASE job"))
            };
            match closed {
                Ok(()) => done.push(completion),
                Err(e) => completion(Some(e.to_string())),
            }
        }
        match run(&ctx.conn, "COMMIT") {
            Ok(()) => done.into_iter().for_each(|c| c(None)),
            Err(e) => {
                let _ = ctx.conn.execute_batch("ROLLBACK");
                // Cached documents may come from the rolled-back writes' reads; start afresh.
                ctx.licenses.clear();
                let e = e.to_string();
                done.into_iter().for_each(|c| c(Some(e.clone())));
            }
        }
    }
}

const CONSUMPTION_COLUMNS: &str = "token, license_arn, consumer_account, checkout_type, allowed, draws, node_id, \
     beneficiary, issued_at, expires_at, status, product_sku, key_fingerprint, request_hash, usage_epoch, borrowed, \
     checkout_metadata";

/// A consumption row (selected with CONSUMPTION_COLUMNS), its request hash and usage epoch.
fn consumption_of(row: &Row<'_>) -> rusqlite::Result<Result<(Consumption, String, i64)>> {
    // By position, in CONSUMPTION_COLUMNS order: a lookup by name scans the column names.
    let (token, license_arn): (String, String) = (row.get(0)?, row.get(1)?);
    let consumer: String = row.get(2)?;
    let checkout_type: String = row.get(3)?;
    let (allowed, draws): (String, String) = (row.get(4)?, row.get(5)?);
    let (node_id, beneficiary) = (row.get(6)?, row.get(7)?);
    let (issued_at, expires_at): (i64, i64) = (row.get(8)?, row.get(9)?);
    let status: String = row.get(10)?;
    let (product_sku, key_fingerprint) = (row.get(11)?, row.get(12)?);
    let hash: String = row.get(13)?;
    let epoch: i64 = row.get(14)?;
    let borrowed: i64 = row.get(15)?;
    let metadata: Option<String> = row.get(16)?;
    Ok((|| {
        Ok((
            Consumption {
                token,
                license_arn,
                consumer: account_of(&consumer)?,
                checkout_type: CheckoutType::parse("checkout_type", &checkout_type).map_err(corrupt)?,
                allowed: serde_json::from_str(&allowed).map_err(corrupt)?,
                draws: serde_json::from_str(&draws).map_err(corrupt)?,
                node_id,
                beneficiary,
                issued_at: from_millis(issued_at),
                expires_at: from_millis(expires_at),
                status: ConsumptionStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status}")))?,
                product_sku,
                key_fingerprint,
                borrowed: borrowed == 1,
                checkout_metadata: match metadata {
                    Some(m) => serde_json::from_str(&m).map_err(corrupt)?,
                    None => Vec::new(),
                },
            },
            hash,
            epoch,
        ))
    })())
}

fn load_consumption(conn: &Connection, token: &str) -> Result<(Consumption, i64)> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {CONSUMPTION_COLUMNS} FROM consumptions WHERE token = ?1"
        ))?
        .query_row(params![token], consumption_of)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no license consumption has the token '{token}'")))?;
    let (c, _, epoch) = found?;
    Ok((c, epoch))
}

/// The answer to an earlier checkout with the same ClientToken, if any.
fn replay_checkout(
    conn: &Connection,
    caller: &AccountId,
    client_token: &str,
    hash: &str,
    op: &str,
) -> Result<Option<Consumption>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {CONSUMPTION_COLUMNS} FROM consumptions WHERE consumer_account = ?1 AND client_token = ?2"
        ))?
        .query_row(params![caller.as_str(), client_token], consumption_of)
        .optional()?;
    let Some(found) = found else { return Ok(None) };
    let (c, stored, _) = found?;
    if stored != hash {
        return Err(token_reused(client_token, op));
    }
    Ok(Some(c))
}

impl Ctx {
    fn load_license(&mut self, arn: &str) -> Result<(Arc<License>, i64)> {
        let row: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT version, usage_epoch FROM licenses WHERE license_arn = ?1")?
            .query_row(params![arn], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (version, epoch) = row.ok_or_else(|| StoreError::NotFound(format!("license {arn} does not exist")))?;
        Ok((self.license_at(arn, version)?, epoch))
    }

    /// License `arn` at `version`: from the cache, else read and parsed (versions never change once written).
    fn license_at(&mut self, arn: &str, version: i64) -> Result<Arc<License>> {
        if let Some((v, l)) = self.licenses.get(arn) {
            if *v == version {
                return Ok(l.clone());
            }
        }
        let doc: String = self
            .conn
            .prepare_cached("SELECT document FROM licenses WHERE license_arn = ?1")?
            .query_row(params![arn], |r| r.get(0))?;
        if self.licenses.len() >= LICENSE_CACHE {
            self.licenses.clear();
        }
        let l = Arc::new(license_of(&doc)?);
        self.licenses.insert(arn.to_owned(), (version, l.clone()));
        Ok(l)
    }

    /// The licenses a checkout may draw from, oldest first, with their usage epochs.
    fn licenses_for(&mut self, sku: &str, fingerprint: &str) -> Result<Vec<(Arc<License>, i64)>> {
        let rows: Vec<(String, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT license_arn, version, usage_epoch FROM licenses \
                 WHERE product_sku = ?1 AND key_fingerprint = ?2 ORDER BY seq",
            )?
            .query_map(params![sku, fingerprint], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (arn, version, epoch) in rows {
            let license = self.license_at(&arn, version)?;
            out.push((license, epoch));
        }
        Ok(out)
    }
}

/// Returns a consumption's units to the pool. `counted` is false when
/// ResetUsage has reset the counters since they were taken (the consumption's
/// usage epoch is older than the license's): they are then no longer counted.
fn release(conn: &Connection, license_arn: &str, draws: &[Draw], counted: bool) -> Result<()> {
    if !counted {
        return Ok(());
    }
    let mut update = conn.prepare_cached(
        "UPDATE entitlement_usage SET consumed = MAX(consumed - ?1, 0) WHERE license_arn = ?2 AND name = ?3",
    )?;
    for d in draws {
        update.execute(params![d.amount, license_arn, d.name])?;
    }
    Ok(())
}

/// Expires due PROVISIONAL consumptions, of one license or of all, at most `limit`.
fn expire_in(conn: &Connection, license_arn: Option<&str>, now_ms: i64, limit: i64) -> Result<u64> {
    let map = |r: &Row<'_>| -> rusqlite::Result<(String, String, String, bool)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    };
    let due: Vec<(String, String, String, bool)> = match license_arn {
        Some(arn) => conn
            .prepare_cached(
                "SELECT c.token, c.license_arn, c.draws, c.usage_epoch = l.usage_epoch \
                 FROM consumptions c JOIN licenses l ON l.license_arn = c.license_arn WHERE c.license_arn = ?1 \
                 AND c.status = 'ACTIVE' AND c.checkout_type = 'PROVISIONAL' AND c.expires_at <= ?2 LIMIT ?3",
            )?
            .query_map(params![arn, now_ms, limit], map)?
            .collect::<rusqlite::Result<_>>()?,
        None => conn
            .prepare_cached(
                "SELECT c.token, c.license_arn, c.draws, c.usage_epoch = l.usage_epoch \
                 FROM consumptions c JOIN licenses l ON l.license_arn = c.license_arn \
                 WHERE c.status = 'ACTIVE' AND c.checkout_type = 'PROVISIONAL' AND c.expires_at <= ?1 LIMIT ?2",
            )?
            .query_map(params![now_ms, limit], map)?
            .collect::<rusqlite::Result<_>>()?,
    };
    for (token, arn, draws, counted) in &due {
        let draws: Vec<Draw> = serde_json::from_str(draws).map_err(corrupt)?;
        release(conn, arn, &draws, *counted)?;
        conn.prepare_cached("UPDATE consumptions SET status = 'EXPIRED', ended_at = expires_at WHERE token = ?1")?
            .execute(params![token])?;
    }
    Ok(due.len() as u64)
}

/// Takes a plan's units with conditional updates, after expiring what is due
/// on the license. Returns why not, undoing any partial draw, when a pool is short.
fn draw(conn: &Connection, license: &License, plan: &CheckoutPlan, now_ms: i64) -> Result<Option<String>> {
    expire_in(conn, Some(&license.license_arn), now_ms, i64::MAX)?;
    let arn = &license.license_arn;
    let mut applied: Vec<&Draw> = Vec::new();
    for d in &plan.draws {
        let done = conn
            .prepare_cached(
                "UPDATE entitlement_usage SET consumed = consumed + ?1 WHERE license_arn = ?2 AND name = ?3 \
                 AND (overage = 1 OR max_count IS NULL OR consumed + ?1 <= max_count)",
            )?
            .execute(params![d.amount, arn, d.name])?;
        if done == 1 {
            applied.push(d);
            continue;
        }
        let (consumed, max): (i64, Option<i64>) = conn
            .prepare_cached("SELECT consumed, max_count FROM entitlement_usage WHERE license_arn = ?1 AND name = ?2")?
            .query_row(params![arn, d.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for a in applied {
            conn.prepare_cached(
                "UPDATE entitlement_usage SET consumed = consumed - ?1 WHERE license_arn = ?2 AND name = ?3",
            )?
            .execute(params![a.amount, arn, a.name])?;
        }
        return Ok(Some(exhausted(d, arn, consumed, max)));
    }
    Ok(None)
}

fn insert_consumption(conn: &Connection, c: &Consumption, client_token: &str, hash: &str, epoch: i64) -> Result<()> {
    let metadata = if c.checkout_metadata.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&c.checkout_metadata).map_err(corrupt)?)
    };
    conn.prepare_cached(
        "INSERT INTO consumptions (token, license_arn, consumer_account, client_token, request_hash, checkout_type, \
         allowed, draws, node_id, beneficiary, product_sku, key_fingerprint, issued_at, expires_at, status, usage_epoch, \
         borrowed, checkout_metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'ACTIVE', ?15, ?16, ?17)",
    )?
    .execute(params![
        c.token,
        c.license_arn,
        c.consumer.as_str(),
        client_token,
        hash,
        c.checkout_type.as_str(),
        serde_json::to_string(&c.allowed).map_err(corrupt)?,
        serde_json::to_string(&c.draws).map_err(corrupt)?,
        c.node_id,
        c.beneficiary,
        c.product_sku,
        c.key_fingerprint,
        to_millis(c.issued_at),
        to_millis(c.expires_at),
        epoch,
        c.borrowed,
        metadata,
    ])?;
    Ok(())
}

/// The grantee's live grants on a license, each followed by its ancestors.
pub(super) fn chains(conn: &Connection, grantee: &AccountId, license_arn: &str) -> Result<Vec<Vec<Grant>>> {
    let docs: Vec<String> = conn
        .prepare_cached(
            "SELECT document FROM grants WHERE grantee_account = ?1 AND license_arn = ?2 \
             AND status NOT IN ('REJECTED', 'DELETED') ORDER BY seq",
        )?
        .query_map(params![grantee.as_str(), license_arn], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let mut chain = vec![grant_of(&d)?];
        while chain.len() < MAX_CHAIN {
            let parent = chain.last().map(|g| g.parent_arn.clone()).unwrap_or_default();
            if !parent.contains(":grant:") {
                break;
            }
            let doc: Option<String> = conn
                .prepare_cached("SELECT document FROM grants WHERE grant_arn = ?1")?
                .query_row(params![parent], |r| r.get(0))
                .optional()?;
            match doc {
                Some(d) => chain.push(grant_of(&d)?),
                None => break,
            }
        }
        out.push(chain);
    }
    Ok(out)
}

/// Whether `caller` holds an ACTIVE grant chain on the license that allows `op`.
fn granted(conn: &Connection, caller: &AccountId, license_arn: &str, op: AllowedOperation) -> Result<bool> {
    Ok(chains(conn, caller, license_arn)?
        .iter()
        .any(|chain| chain_permits(chain, op)))
}

/// Checks that `caller` may act on its own consumption `c` with `op` now, and returns the license.
fn usable_consumption(
    ctx: &mut Ctx,
    caller: &AccountId,
    c: &Consumption,
    only_license: Option<&str>,
    op: AllowedOperation,
) -> Result<(Arc<License>, i64)> {
    check_consumer(caller, c, only_license)?;
    let (license, epoch) = ctx.load_license(&c.license_arn)?;
    if !direct_user(caller, &license) && !granted(&ctx.conn, caller, &license.license_arn, op)? {
        return Err(no_grant(caller, &license.license_arn, op));
    }
    Ok((license, epoch))
}

pub(super) fn checkout(ctx: &mut Ctx, cmd: &CheckoutCommand, now: OffsetDateTime) -> Result<Consumption> {
    if let Some(c) = replay_checkout(
        &ctx.conn,
        &cmd.caller,
        &cmd.client_token,
        &cmd.request_hash,
        "CheckoutLicense",
    )? {
        return Ok(c);
    }
    let mut reasons = Vec::new();
    let mut own_license_without_beneficiary = false;
    for (license, epoch) in ctx.licenses_for(&cmd.product_sku, &cmd.key_fingerprint)? {
        if cmd
            .only_license
            .as_deref()
            .is_some_and(|only| only != license.license_arn)
        {
            continue;
        }
        let reached = match checkout_reach(cmd, &license) {
            Reach::Direct => true,
            Reach::ThroughGrant => granted(
                &ctx.conn,
                &cmd.caller,
                &license.license_arn,
                AllowedOperation::CheckoutLicense,
            )?,
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
        if let Some(short) = draw(&ctx.conn, &license, &plan, to_millis(now))? {
            reasons.push(short);
            continue;
        }
        let c = checkout_consumption(cmd, &license, plan, now);
        insert_consumption(&ctx.conn, &c, &cmd.client_token, &cmd.request_hash, epoch)?;
        return Ok(c);
    }
    // Nothing was drawn; the savepoint rolls back.
    if reasons.is_empty() {
        return Err(nothing_available(cmd, own_license_without_beneficiary));
    }
    Err(StoreError::NoEntitlements(reasons.join("; ")))
}

pub(super) fn checkout_borrow(ctx: &mut Ctx, cmd: &BorrowCommand, now: OffsetDateTime) -> Result<Consumption> {
    if let Some(c) = replay_checkout(
        &ctx.conn,
        &cmd.caller,
        &cmd.client_token,
        &cmd.request_hash,
        "CheckoutBorrowLicense",
    )? {
        return Ok(c);
    }
    let (license, epoch) = ctx.load_license(&cmd.license_arn)?;
    let direct = license.beneficiary_account().as_ref() == Some(&cmd.caller);
    if !direct
        && !granted(
            &ctx.conn,
            &cmd.caller,
            &license.license_arn,
            AllowedOperation::CheckoutBorrowLicense,
        )?
    {
        return Err(may_not_borrow(&cmd.caller, &license.license_arn));
    }
    let plan = borrow_plan(&license, &cmd.entitlements, now)?;
    if let Some(short) = draw(&ctx.conn, &license, &plan, to_millis(now))? {
        return Err(StoreError::NoEntitlements(short));
    }
    let c = borrow_consumption(cmd, &license, plan, now);
    insert_consumption(&ctx.conn, &c, &cmd.client_token, &cmd.request_hash, epoch)?;
    Ok(c)
}

pub(super) fn check_in(
    ctx: &mut Ctx,
    caller: &AccountId,
    token: &str,
    only_license: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    let (c, epoch) = load_consumption(&ctx.conn, token)?;
    let (license, current) = usable_consumption(ctx, caller, &c, only_license, AllowedOperation::CheckInLicense)?;
    refuse_check_in(&c, &license, now)?;
    release(&ctx.conn, &c.license_arn, &c.draws, epoch == current)?;
    ctx.conn
        .prepare_cached("UPDATE consumptions SET status = 'CHECKED_IN', ended_at = ?1 WHERE token = ?2")?
        .execute(params![to_millis(now), token])?;
    Ok(())
}

pub(super) fn extend(
    ctx: &mut Ctx,
    caller: &AccountId,
    token: &str,
    only_license: Option<&str>,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<Consumption> {
    let (mut c, _) = load_consumption(&ctx.conn, token)?;
    let (license, _) = usable_consumption(
        ctx,
        caller,
        &c,
        only_license,
        AllowedOperation::ExtendConsumptionLicense,
    )?;
    refuse_extension(&c, &license, now)?;
    if dry_run {
        return Ok(c);
    }
    c.expires_at = consumption::expiry(&license, now);
    ctx.conn
        .prepare_cached("UPDATE consumptions SET expires_at = ?1 WHERE token = ?2")?
        .execute(params![to_millis(c.expires_at), token])?;
    Ok(c)
}

pub(super) fn license_usage(ctx: &mut Ctx, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>> {
    expire_in(&ctx.conn, Some(arn), to_millis(now), i64::MAX)?;
    let rows = ctx
        .conn
        .prepare_cached(
            "SELECT name, unit, consumed, max_count FROM entitlement_usage WHERE license_arn = ?1 ORDER BY rowid",
        )?
        .query_map(params![arn], |r| {
            Ok(EntitlementUsage {
                name: r.get(0)?,
                unit: r.get(1)?,
                consumed: r.get(2)?,
                max_count: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn expire_due(ctx: &mut Ctx, now: OffsetDateTime) -> Result<u64> {
    expire_in(&ctx.conn, None, to_millis(now), 1000)
}

pub(super) fn access_key(conn: &Connection, access_key_id: &str) -> Result<Option<AccessKey>> {
    let row: Option<(String, String, String, i64, i64)> = conn
        .prepare_cached(
            "SELECT access_key_id, account_id, secret, active, created_at FROM access_keys WHERE access_key_id = ?1",
        )?
        .query_row(params![access_key_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    row.map(|(access_key_id, account, secret, active, created_at)| {
        Ok(AccessKey {
            access_key_id,
            account_id: account_of(&account)?,
            secret,
            active: active == 1,
            created_at: from_millis(created_at),
        })
    })
    .transpose()
}
