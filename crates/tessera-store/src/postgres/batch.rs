//! Group commit of the hot path on PostgreSQL: checkouts, borrows, check-ins
//! and extensions.
//!
//! A checkout in a transaction of its own holds its license's counter row from
//! its conditional update until its commit is durable, so the checkouts of one
//! license commit one after the other, each waiting for its own WAL flush.
//! Here a writer task takes every write that is waiting (up to [`MAX_BATCH`])
//! and runs them together in one `READ COMMITTED` transaction, set-wise rather
//! than one by one, in four round trips:
//!
//! 1. BEGIN, and the advisory lock of every ClientToken in the batch, in key
//!    order ([`begin_sql`]);
//! 2. one statement ([`load_sql`]) that reads which of the access keys the
//!    writes carry are active, then locks and reads, in this order, the
//!    consumptions checked in or extended (`FOR UPDATE`, token order); reads
//!    the consumptions that the ClientTokens replay (after the advisory locks
//!    were granted, so a concurrent first attempt has committed); locks the
//!    licenses involved (`FOR KEY SHARE`, ARN order) and all counter rows of
//!    the licenses drawn from or returned to (`FOR UPDATE`, (ARN, name)
//!    order); and expires the due PROVISIONAL consumptions of the licenses
//!    drawn from (`FOR UPDATE SKIP LOCKED`);
//! 3. every write decided in memory, in arrival order, against that locked
//!    state, with the rules and messages of the one-by-one methods (`*_once`),
//!    then written with one statement: each counter's new value, the
//!    consumptions created, checked in or extended;
//! 4. COMMIT, and only then the answers.
//!
//! So all the checkouts of one license in a batch share one counter lock, one
//! update of the counter and one WAL flush. A batch waits for nothing once it
//! holds counter rows, and every batch (of any server) and every one-by-one
//! method takes its locks in the same order: advisory keys, consumptions,
//! licenses, counters. So concurrent batches queue on each other's rows but do
//! not deadlock.
//!
//! A refused write (no seats, a ClientToken used for another request, ...) is
//! an answer and writes nothing. It is answered after the COMMIT like the rest,
//! because it was decided against the batch's uncommitted state. A
//! serialization failure or deadlock runs the whole batch again from the start
//! (nothing was answered, so nothing is answered twice), up to [`ATTEMPTS`]
//! times in all. Any other failure before the COMMIT, and a panic, rolls the
//! batch back and sends every write to run alone in a transaction of its own
//! (the `*_once` methods, with their retries), where it gets the answer it
//! would have had alone. If the COMMIT fails without the server refusing it,
//! whether it took effect is unknown, and every write of the batch is answered
//! with an error, as a lone write would be.
//!
//! Writes are spread over [`WRITERS`] writer tasks by account: a hot license's
//! checkouts and check-ins come from its customer, so they share batches
//! instead of queueing on one counter row from several transactions.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::{PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use tessera_core::consumption::{self, CheckoutPlan, Consumption, ConsumptionStatus, Draw};
use tessera_core::grant::AllowedOperation;
use tessera_core::license::License;
use tessera_core::timefmt::to_millis;
use tessera_core::{AccountId, Units};

use super::{consumption_of, granted, retryable, ATTEMPTS, CONSUMPTION_COLUMNS};
use crate::codec::{corrupt, license_of};
use crate::rules::{
    borrow_consumption, borrow_plan, check_consumer, checkout_consumption, checkout_plan, checkout_reach, decide_draws,
    direct_user, issuer_without_beneficiary, may_not_borrow, no_grant, nothing_available, refuse_check_in,
    refuse_extension, stored_units, token_reused, Reach, Tally,
};
use crate::{BorrowCommand, CheckoutCommand, Result, StoreError};

/// At most this many writes share one transaction.
pub(super) const MAX_BATCH: usize = 128;

/// At most this many times a writer lets other tasks run while it gathers a
/// batch, as long as each time brings more writes.
const GATHER_YIELDS: usize = 16;

/// Writer tasks per server, each running one batch at a time on one connection.
pub(super) const WRITERS: usize = 2;

/// Starts a batch. Its statements are planned once per connection and reused
/// (no planning per batch) and never scan a whole table: every row they touch
/// is found through an index, however small the table was when the plan was
/// made or whatever statistics it had.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan";

/// A write of the hot path.
pub(super) enum Op {
    Checkout(Arc<CheckoutCommand>),
    Borrow(Arc<BorrowCommand>),
    CheckIn {
        caller: AccountId,
        token: String,
        only_license: Option<String>,
        key: Option<String>,
    },
    Extend {
        caller: AccountId,
        token: String,
        only_license: Option<String>,
        key: Option<String>,
        dry_run: bool,
    },
}

impl Op {
    /// The access key the write is to confirm, if any.
    fn key(&self) -> Option<&str> {
        match self {
            Op::Checkout(cmd) => cmd.key.as_deref(),
            Op::Borrow(cmd) => cmd.key.as_deref(),
            Op::CheckIn { key, .. } | Op::Extend { key, .. } => key.as_deref(),
        }
    }
}

/// What a write of the hot path answers.
pub(super) enum Done {
    Consumption(Box<Consumption>),
    CheckedIn,
}

impl Done {
    pub(super) fn consumption(self) -> Result<Consumption> {
        match self {
            Done::Consumption(c) => Ok(*c),
            Done::CheckedIn => Err(corrupt("a batched write answered with the wrong kind of result")),
        }
    }
}

enum Reply {
    Done(Result<Done>),
    /// The batch could not run: run this write in a transaction of its own.
    Alone,
}

struct Job {
    op: Op,
    now: OffsetDateTime,
    reply: Option<oneshot::Sender<Reply>>,
}

/// The writes of one transaction. Each is answered exactly once: by `answer`,
/// `alone` or `fail`, or, if the batch is dropped before (a panic), on drop.
struct Batch {
    jobs: Vec<Job>,
    /// The COMMIT was sent: from here on, its outcome may be unknown.
    committing: bool,
}

impl Batch {
    fn answer(&mut self, answers: Vec<Result<Done>>) {
        for (job, a) in self.jobs.iter_mut().zip(answers) {
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Reply::Done(a));
            }
        }
    }

    fn alone(&mut self) {
        for job in &mut self.jobs {
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Reply::Alone);
            }
        }
    }

    fn fail(&mut self, why: &str) {
        for job in &mut self.jobs {
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Reply::Done(Err(StoreError::Unavailable(format!(
                    "the write may not have been committed: {why}"
                )))));
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.committing {
            self.fail("the write batch stopped while committing");
        } else {
            // Nothing was committed; the transaction rolls back as it is dropped.
            self.alone();
        }
    }
}

/// The group-commit writers of one server.
pub(super) struct Writer {
    /// One queue per writer task; an account's writes all go to one of them.
    queues: Vec<mpsc::Sender<Job>>,
}

impl Writer {
    pub(super) fn start(pool: PgPool) -> Self {
        let queues = (0..WRITERS)
            .map(|_| {
                let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(writer(pool.clone(), rx));
                jobs
            })
            .collect();
        Self { queues }
    }

    /// Runs `op` in a batch; returns its answer once it is durable, or `None`
    /// when it is to run alone.
    pub(super) async fn submit(&self, op: Op, now: OffsetDateTime) -> Option<Result<Done>> {
        // By account: a hot license's checkouts and check-ins come from its
        // customer, and share batches instead of contending for its counters.
        let caller = match &op {
            Op::Checkout(cmd) => &cmd.caller,
            Op::Borrow(cmd) => &cmd.caller,
            Op::CheckIn { caller, .. } | Op::Extend { caller, .. } => caller,
        };
        let client_token = match &op {
            Op::Checkout(cmd) => Some(&cmd.client_token),
            Op::Borrow(cmd) => Some(&cmd.client_token),
            _ => None,
        };
        if client_token.is_some_and(|ct| ct.contains('\0')) {
            // PostgreSQL text cannot hold it; alone, it fails without failing a batch.
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        caller.hash(&mut h);
        let queue = &self.queues[(h.finish() % self.queues.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let job = Job {
            op,
            now,
            reply: Some(reply),
        };
        queue.send(job).await.ok()?;
        match answer.await {
            Ok(Reply::Done(r)) => Some(r),
            Ok(Reply::Alone) => None,
            Err(_) => Some(Err(StoreError::Unavailable(
                "the write batch ended without an answer; the write may not have been committed".into(),
            ))),
        }
    }
}

/// Takes every write that is waiting in its queue and runs them as one batch,
/// one batch at a time.
async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        // Writers woken by the previous commit are still queueing theirs: let
        // them, for as long as more keep coming.
        let mut jobs = vec![first];
        for _ in 0..GATHER_YIELDS {
            let before = jobs.len();
            tokio::task::yield_now().await;
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if jobs.len() == before || jobs.len() == MAX_BATCH {
                break;
            }
        }
        let batch = Batch {
            jobs,
            committing: false,
        };
        // A task of its own, so that a panic drops (and so answers) the batch
        // instead of ending the writer.
        if let Err(e) = tokio::spawn(run(pool.clone(), batch)).await {
            tracing::error!(error = %e, "a write batch panicked; its writes were answered");
        }
    }
}

async fn run(pool: PgPool, mut batch: Batch) {
    let mut attempt = 1;
    loop {
        let e = match run_once(&pool, &mut batch).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if retryable(&e) && attempt < ATTEMPTS {
            tracing::debug!(attempt, error = %e, "write batch rolled back; running it again");
            let pause = rand::thread_rng().gen_range(1..=10u64 << attempt.min(5));
            tokio::time::sleep(Duration::from_millis(pause)).await;
            attempt += 1;
            continue;
        }
        tracing::warn!(error = %e, writes = batch.jobs.len(), "a write batch failed; its writes run alone");
        batch.alone();
        return;
    }
}

/// One attempt at a batch. `Ok` once every job is answered: committed, or
/// failed because the COMMIT's outcome is unknown. `Err`: rolled back, nothing
/// answered.
async fn run_once(pool: &PgPool, batch: &mut Batch) -> Result<()> {
    let begin = begin_sql(&batch.jobs)?;
    let mut conn = pool.acquire().await?;
    let failed = match sqlx::Connection::begin_with(&mut *conn, begin).await {
        Ok(tx) => return finish(tx, batch).await,
        Err(e) => e,
    };
    // A statement after BEGIN may have failed inside the transaction; rather
    // than repair the connection's state, replace it.
    conn.close_on_drop();
    Err(failed.into())
}

/// Runs the batch in the transaction `run_once` began, and commits.
async fn finish(mut tx: Transaction<'_, Postgres>, batch: &mut Batch) -> Result<()> {
    let answers = match apply(&mut tx, &batch.jobs).await {
        Ok(a) => a,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    batch.committing = true;
    let started = std::time::Instant::now();
    let committed = tx.commit().await;
    metrics::histogram!(tessera_observe::metrics::COMMIT_DURATION, "phase" => "commit")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(tessera_observe::metrics::COMMIT_BATCH_SIZE).record(batch.jobs.len() as f64);
    match committed {
        Ok(()) => batch.answer(answers),
        Err(sqlx::Error::Database(e)) => {
            // The server refused the COMMIT: the transaction rolled back.
            batch.committing = false;
            return Err(StoreError::Database(sqlx::Error::Database(e)));
        }
        Err(e) => {
            tracing::error!(error = %e, "a write batch may not have been committed");
            batch.fail(&e.to_string());
        }
    }
    Ok(())
}

/// An answer to one write, as opposed to a failure of the whole batch.
fn is_answer(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound(_)
            | StoreError::AccessDenied(_)
            | StoreError::Conflict(_)
            | StoreError::Invalid(_)
            | StoreError::NoEntitlements(_)
            | StoreError::EntitlementNotAllowed(_)
            | StoreError::LimitExceeded(_)
            | StoreError::UnknownKey(_)
    )
}

/// Runs every job against the batch's locked state and writes the outcome;
/// the caller commits. An `Err` fails the whole batch.
async fn apply(tx: &mut Transaction<'_, Postgres>, jobs: &[Job]) -> Result<Vec<Result<Done>>> {
    let mut s = State::load(tx, jobs).await?;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let now = job.now;
        if let Some(key) = job.op.key().filter(|k| !s.active_keys.contains(*k)) {
            answers.push(Err(StoreError::unknown_key(key)));
            continue;
        }
        let answer = match &job.op {
            Op::Checkout(cmd) => s.checkout(tx, cmd, now).await.map(|c| Done::Consumption(Box::new(c))),
            Op::Borrow(cmd) => s.borrow(tx, cmd, now).await.map(|c| Done::Consumption(Box::new(c))),
            Op::CheckIn {
                caller,
                token,
                only_license,
                ..
            } => s
                .check_in(tx, caller, token, only_license.as_deref(), now)
                .await
                .map(|()| Done::CheckedIn),
            Op::Extend {
                caller,
                token,
                only_license,
                dry_run,
                ..
            } => s
                .extend(tx, caller, token, only_license.as_deref(), *dry_run, now)
                .await
                .map(|c| Done::Consumption(Box::new(c))),
        };
        match answer {
            Err(e) if !is_answer(&e) => return Err(e),
            a => answers.push(a),
        }
    }
    s.write(tx).await?;
    Ok(answers)
}

struct Lic {
    license: Arc<License>,
    epoch: i64,
}

struct Counter {
    consumed: Units,
    max_count: Option<i64>,
    overage: bool,
    changed: bool,
}

/// A consumption this batch checks in or extends, locked `FOR UPDATE`.
struct Held {
    c: Consumption,
    epoch: i64,
    ended_at: Option<i64>,
    changed: bool,
}

/// A checkout's consumption found by its (consumer, ClientToken).
struct Earlier {
    c: Consumption,
    request_hash: String,
}

struct Created {
    c: Consumption,
    client_token: String,
    request_hash: String,
    epoch: i64,
}

/// What the batch holds locked, and what it changed so far.
#[derive(Default)]
struct State {
    licenses: HashMap<String, Lic>,
    /// The licenses of each (ProductSKU, KeyFingerprint), in `seq` order.
    products: HashMap<(String, String), Vec<String>>,
    counters: HashMap<(String, String), Counter>,
    held: HashMap<String, Held>,
    earlier: HashMap<(String, String), Earlier>,
    grants: HashMap<(AccountId, String, AllowedOperation), bool>,
    created: Vec<Created>,
    /// Of the access keys the writes name, those active now.
    active_keys: HashSet<String>,
}

/// What a batch asks for, as the arrays its statements take.
#[derive(Default)]
struct Wanted {
    /// Consumptions checked in or extended, in token order.
    tokens: Vec<String>,
    /// Of those, the ones checked in (their units go back).
    checked_in: Vec<String>,
    /// (consumer, ClientToken) of every checkout and borrow, in pairs.
    accounts: Vec<String>,
    client_tokens: Vec<String>,
    /// Licenses borrowed from.
    borrowed: Vec<String>,
    /// (ProductSKU, KeyFingerprint) of every checkout, in pairs.
    skus: Vec<String>,
    fingerprints: Vec<String>,
    /// The latest business time of a checkout or borrow: expiry runs as of then.
    draw_now: Option<OffsetDateTime>,
    /// Access keys the writes are to confirm.
    access_keys: Vec<String>,
}

impl Wanted {
    fn of(jobs: &[Job]) -> Self {
        let mut w = Wanted::default();
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut products: Vec<(String, String)> = Vec::new();
        for job in jobs {
            if let Some(k) = job.op.key() {
                w.access_keys.push(k.to_owned());
            }
            match &job.op {
                Op::Checkout(cmd) => {
                    keys.push((cmd.caller.to_string(), cmd.client_token.clone()));
                    products.push((cmd.product_sku.clone(), cmd.key_fingerprint.clone()));
                    w.draw_now = w.draw_now.max(Some(job.now));
                }
                Op::Borrow(cmd) => {
                    keys.push((cmd.caller.to_string(), cmd.client_token.clone()));
                    w.borrowed.push(cmd.license_arn.clone());
                    w.draw_now = w.draw_now.max(Some(job.now));
                }
                Op::CheckIn { token, .. } => {
                    w.tokens.push(token.clone());
                    w.checked_in.push(token.clone());
                }
                Op::Extend { token, .. } => w.tokens.push(token.clone()),
            }
        }
        for v in [&mut w.tokens, &mut w.checked_in, &mut w.borrowed, &mut w.access_keys] {
            v.sort();
            v.dedup();
        }
        keys.sort();
        keys.dedup();
        (w.accounts, w.client_tokens) = keys.into_iter().unzip();
        products.sort();
        products.dedup();
        (w.skus, w.fingerprints) = products.into_iter().unzip();
        w
    }
}

/// The batch's BEGIN, sent as one simple query: the transaction, its planner
/// settings, and the advisory lock of every ClientToken in the batch, as
/// [`lock_key`] names them, taken in key order (output expressions are
/// evaluated after the sort). The keys are quoted as escape string literals,
/// every backslash and quote doubled. A key with a NUL byte, which PostgreSQL
/// text cannot hold, is refused here; `Writer::submit` already sends such a
/// write to fail alone, as it always did.
///
/// [`lock_key`]: super::lock_key
fn begin_sql(jobs: &[Job]) -> Result<String> {
    let mut keys: Vec<String> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Checkout(cmd) => Some(format!("{}\u{1f}Checkout\u{1f}{}", cmd.caller, cmd.client_token)),
            Op::Borrow(cmd) => Some(format!("{}\u{1f}Checkout\u{1f}{}", cmd.caller, cmd.client_token)),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut sql = String::from(BEGIN);
    if keys.is_empty() {
        return Ok(sql);
    }
    sql.push_str(
        "; SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(n, 0) AS k FROM unnest(ARRAY[",
    );
    for (i, key) in keys.iter().enumerate() {
        if key.contains('\0') {
            return Err(StoreError::Invalid("a ClientToken contains a NUL character".into()));
        }
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("E'");
        for ch in key.chars() {
            match ch {
                '\\' => sql.push_str("\\\\"),
                '\'' => sql.push_str("''"),
                c => sql.push(c),
            }
        }
        sql.push('\'');
    }
    sql.push_str("]::text[]) AS n) AS keys ORDER BY k");
    Ok(sql)
}

/// The columns of [`load_sql`]'s rows: each kind of row fills some, the rest are NULL.
const LOAD_COLUMNS: [(&str, &str); 25] = [
    ("kind", "text"),
    ("token", "text"),
    ("license_arn", "text"),
    ("consumer_account", "text"),
    ("checkout_type", "text"),
    ("allowed", "text"),
    ("draws", "text"),
    ("node_id", "text"),
    ("beneficiary", "text"),
    ("issued_at", "bigint"),
    ("expires_at", "bigint"),
    ("status", "text"),
    ("product_sku", "text"),
    ("key_fingerprint", "text"),
    ("request_hash", "text"),
    ("usage_epoch", "bigint"),
    ("borrowed", "boolean"),
    ("checkout_metadata", "text"),
    ("client_token", "text"),
    ("seq", "bigint"),
    ("document", "text"),
    ("name", "text"),
    ("consumed", "bigint"),
    ("max_count", "bigint"),
    ("overage", "boolean"),
];

/// One statement for everything a batch reads and locks, in the order its
/// parts run (UNION ALL runs its branches one after the other):
///
/// 0. `key`: of the access keys the writes are to confirm ($9), those active
///    (READ COMMITTED: as of this statement, so a revocation committed before
///    it is seen; nothing is locked);
/// 1. `held`: the consumptions checked in or extended ($1), `FOR UPDATE` in token order;
/// 2. `earlier`: the consumptions of the batch's (consumer, ClientToken) pairs
///    ($2, $3), read after the advisory locks were granted, so a concurrent
///    first attempt has committed;
/// 3. `license`: the licenses borrowed from ($4), of the checkouts' products
///    ($5, $6) and of the held consumptions, `FOR KEY SHARE` in ARN order;
/// 4. `counter`: every counter of the licenses drawn from or returned to
///    ($7: the tokens checked in), `FOR UPDATE` in (ARN, name) order;
/// 5. `expired`: the due PROVISIONAL consumptions of the licenses drawn from,
///    as of $8, not held by this batch, marked EXPIRED (`SKIP LOCKED`: another
///    transaction that holds one decides its fate).
///
/// Parts whose arrays are empty are left out rather than given an empty array:
/// planned without statistics (a young table), `token = ANY('{}')` may scan a
/// whole index. Sets computed inside the statement are compared with `=
/// ANY(ARRAY(...))`, which is planned as an index condition on a parameter.
fn load_sql(w: &Wanted) -> String {
    let branch = |kind: &str, given: &[&str], from: &str| {
        let cols: Vec<String> = LOAD_COLUMNS
            .iter()
            .map(|(name, ty)| match *name {
                "kind" => format!("'{kind}'::text AS kind"),
                n if given.contains(&n) => n.to_owned(),
                n => format!("NULL::{ty} AS {n}"),
            })
            .collect();
        format!("SELECT {} FROM {from}", cols.join(", "))
    };
    let consumption: Vec<&str> = CONSUMPTION_COLUMNS.split(", ").collect();
    let mut earlier = consumption.clone();
    earlier.push("client_token");
    let held = !w.tokens.is_empty();
    let mut drawn_from = Vec::new();
    if !w.borrowed.is_empty() {
        drawn_from.push("SELECT license_arn FROM licenses WHERE license_arn = ANY($4)");
    }
    if !w.skus.is_empty() {
        drawn_from.push(
            "SELECT l.license_arn FROM licenses l JOIN unnest($5::text[], $6::text[]) AS p (sku, fp) \
             ON l.product_sku = p.sku AND l.key_fingerprint = p.fp",
        );
    }
    let mut ctes = Vec::new();
    let mut parts = Vec::new();
    if !w.access_keys.is_empty() {
        parts.push(branch(
            "key",
            &["token"],
            "(SELECT access_key_id AS token FROM access_keys WHERE access_key_id = ANY($9) AND active) AS s",
        ));
    }
    if !drawn_from.is_empty() {
        ctes.push(format!("drawn_from AS MATERIALIZED ({})", drawn_from.join(" UNION ")));
    }
    if held {
        parts.push(branch(
            "held",
            &consumption,
            &format!(
                "(SELECT {CONSUMPTION_COLUMNS} FROM consumptions WHERE token = ANY($1) \
                 ORDER BY token COLLATE \"C\" FOR UPDATE) AS s"
            ),
        ));
    }
    if !w.accounts.is_empty() {
        parts.push(branch(
            "earlier",
            &earlier,
            &format!(
                "(SELECT {CONSUMPTION_COLUMNS}, client_token FROM consumptions \
                 WHERE (consumer_account, client_token) IN (SELECT * FROM unnest($2::text[], $3::text[]))) AS s"
            ),
        ));
    }
    let union = |sets: &[&str]| {
        sets.iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" UNION ")
    };
    let from_drawn = if drawn_from.is_empty() {
        ""
    } else {
        "SELECT license_arn FROM drawn_from"
    };
    let involved = union(&[
        from_drawn,
        if held {
            "SELECT license_arn FROM consumptions WHERE token = ANY($1)"
        } else {
            ""
        },
    ]);
    if !involved.is_empty() {
        parts.push(branch(
            "license",
            &[
                "license_arn",
                "seq",
                "document",
                "usage_epoch",
                "product_sku",
                "key_fingerprint",
            ],
            &format!(
                "(SELECT license_arn, seq, document, usage_epoch, product_sku, key_fingerprint FROM licenses \
                 WHERE license_arn = ANY(ARRAY({involved})) ORDER BY license_arn COLLATE \"C\" FOR KEY SHARE) AS s"
            ),
        ));
    }
    let changed = union(&[
        from_drawn,
        if w.checked_in.is_empty() {
            ""
        } else {
            "SELECT license_arn FROM consumptions WHERE token = ANY($7)"
        },
    ]);
    if !changed.is_empty() {
        parts.push(branch(
            "counter",
            &["license_arn", "name", "consumed", "max_count", "overage"],
            &format!(
                "(SELECT license_arn, name, consumed, max_count, overage FROM entitlement_usage \
                 WHERE license_arn = ANY(ARRAY({changed})) \
                 ORDER BY license_arn COLLATE \"C\", name COLLATE \"C\" FOR UPDATE) AS s"
            ),
        ));
    }
    if !drawn_from.is_empty() && w.draw_now.is_some() {
        ctes.push(format!(
            "expired AS (UPDATE consumptions SET status = 'EXPIRED', ended_at = expires_at \
             WHERE token = ANY(ARRAY(SELECT token FROM consumptions \
             WHERE license_arn = ANY(ARRAY(SELECT license_arn FROM drawn_from)) AND status = 'ACTIVE' \
             AND checkout_type = 'PROVISIONAL' AND expires_at <= $8{} FOR UPDATE SKIP LOCKED)) \
             AND status = 'ACTIVE' RETURNING license_arn, draws, usage_epoch)",
            if held { " AND NOT (token = ANY($1))" } else { "" }
        ));
        parts.push(branch(
            "expired",
            &["license_arn", "draws", "usage_epoch"],
            "expired AS s",
        ));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    format!("{with}{}", parts.join(" UNION ALL "))
}

impl State {
    /// Everything the batch reads, locked, in one statement; also expires what
    /// is due on the licenses checked out from. The caller holds the batch's
    /// advisory locks (see [`begin_sql`]).
    async fn load(tx: &mut Transaction<'_, Postgres>, jobs: &[Job]) -> Result<Self> {
        let w = Wanted::of(jobs);
        let rows = sqlx::query(&load_sql(&w))
            .bind(&w.tokens)
            .bind(&w.accounts)
            .bind(&w.client_tokens)
            .bind(&w.borrowed)
            .bind(&w.skus)
            .bind(&w.fingerprints)
            .bind(&w.checked_in)
            .bind(w.draw_now.map(to_millis))
            .bind(&w.access_keys)
            .fetch_all(&mut **tx)
            .await?;
        let mut s = State::default();
        let wanted: HashSet<(&str, &str)> = w
            .skus
            .iter()
            .zip(&w.fingerprints)
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut by_product: Vec<(i64, (String, String), String)> = Vec::new();
        let mut expired: Vec<(String, Vec<Draw>, i64)> = Vec::new();
        for row in &rows {
            let kind: &str = row.try_get("kind")?;
            match kind {
                "key" => {
                    s.active_keys.insert(row.try_get("token")?);
                }
                "held" => {
                    let c = consumption_of(row)?;
                    let epoch = row.try_get("usage_epoch")?;
                    let held = Held {
                        c,
                        epoch,
                        ended_at: None,
                        changed: false,
                    };
                    s.held.insert(held.c.token.clone(), held);
                }
                "earlier" => {
                    let c = consumption_of(row)?;
                    let key = (c.consumer.to_string(), row.try_get::<String, _>("client_token")?);
                    let request_hash = row.try_get("request_hash")?;
                    s.earlier.insert(key, Earlier { c, request_hash });
                }
                "license" => {
                    let arn: String = row.try_get("license_arn")?;
                    // The row as it is now: a new version committed meanwhile may have changed it.
                    let sku: String = row.try_get("product_sku")?;
                    let fp: String = row.try_get("key_fingerprint")?;
                    if wanted.contains(&(sku.as_str(), fp.as_str())) {
                        by_product.push((row.try_get("seq")?, (sku, fp), arn.clone()));
                    }
                    let license = license_of(&row.try_get::<String, _>("document")?)?;
                    let epoch = row.try_get("usage_epoch")?;
                    s.licenses.insert(
                        arn,
                        Lic {
                            license: Arc::new(license),
                            epoch,
                        },
                    );
                }
                "counter" => {
                    s.counters.insert(
                        (row.try_get("license_arn")?, row.try_get("name")?),
                        Counter {
                            consumed: stored_units(row.try_get("consumed")?)?,
                            max_count: row.try_get("max_count")?,
                            overage: row.try_get("overage")?,
                            changed: false,
                        },
                    );
                }
                "expired" => {
                    let draws = serde_json::from_str(&row.try_get::<String, _>("draws")?).map_err(corrupt)?;
                    expired.push((row.try_get("license_arn")?, draws, row.try_get("usage_epoch")?));
                }
                other => return Err(corrupt(format!("unexpected row kind '{other}' in a write batch"))),
            }
        }
        by_product.sort();
        for (_, product, arn) in by_product {
            s.products.entry(product).or_default().push(arn);
        }
        for (arn, draws, epoch) in &expired {
            s.release(arn, draws, *epoch);
        }
        Ok(s)
    }

    /// Returns units to a license's counters unless ResetUsage has reset them
    /// since they were taken (in usage epoch `epoch`).
    fn release(&mut self, arn: &str, draws: &[Draw], epoch: i64) {
        if self.licenses.get(arn).map(|l| l.epoch) != Some(epoch) {
            return;
        }
        for d in draws {
            if let Some(c) = self.counters.get_mut(&(arn.to_owned(), d.name.clone())) {
                c.consumed = c.consumed.saturating_sub(d.amount);
                c.changed = true;
            }
        }
    }

    /// Takes a plan's units if every pool has them; otherwise says why not and takes nothing.
    fn draw(&mut self, license: &License, plan: &CheckoutPlan) -> Result<Option<String>> {
        let arn = &license.license_arn;
        let counters = &self.counters;
        let decided = decide_draws(arn, &plan.draws, |name| {
            counters
                .get(&(arn.clone(), name.to_owned()))
                .map(|c| Tally {
                    consumed: c.consumed,
                    max_count: c.max_count,
                    overage: c.overage,
                })
                // The one-by-one method fails here the same way.
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
        })?;
        let values = match decided {
            Ok(v) => v,
            Err(why) => return Ok(Some(why)),
        };
        for (d, value) in plan.draws.iter().zip(values) {
            if let Some(c) = self.counters.get_mut(&(arn.clone(), d.name.clone())) {
                c.consumed = value;
                c.changed = true;
            }
        }
        Ok(None)
    }

    async fn granted(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        caller: &AccountId,
        license_arn: &str,
        op: AllowedOperation,
    ) -> Result<bool> {
        let key = (caller.clone(), license_arn.to_owned(), op);
        if let Some(g) = self.grants.get(&key) {
            return Ok(*g);
        }
        let g = granted(tx, caller, license_arn, op).await?;
        self.grants.insert(key, g);
        Ok(g)
    }

    /// The earlier checkout with this ClientToken, as this batch now sees it.
    fn replay(&self, caller: &AccountId, client_token: &str, hash: &str, op: &str) -> Result<Option<Consumption>> {
        let Some(e) = self.earlier.get(&(caller.to_string(), client_token.to_owned())) else {
            return Ok(None);
        };
        if e.request_hash != hash {
            return Err(token_reused(client_token, op));
        }
        Ok(Some(match self.held.get(&e.c.token) {
            Some(h) => h.c.clone(),
            None => e.c.clone(),
        }))
    }

    fn create(&mut self, c: &Consumption, client_token: &str, request_hash: &str, epoch: i64) {
        self.earlier.insert(
            (c.consumer.to_string(), client_token.to_owned()),
            Earlier {
                c: c.clone(),
                request_hash: request_hash.to_owned(),
            },
        );
        self.created.push(Created {
            c: c.clone(),
            client_token: client_token.to_owned(),
            request_hash: request_hash.to_owned(),
            epoch,
        });
    }

    /// `checkout_once`, against the batch's state.
    async fn checkout(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        cmd: &CheckoutCommand,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        if let Some(c) = self.replay(&cmd.caller, &cmd.client_token, &cmd.request_hash, "CheckoutLicense")? {
            return Ok(c);
        }
        let arns = self
            .products
            .get(&(cmd.product_sku.clone(), cmd.key_fingerprint.clone()))
            .cloned()
            .unwrap_or_default();
        let mut reasons = Vec::new();
        let mut own_license_without_beneficiary = false;
        for arn in &arns {
            let (license, epoch) = {
                let l = &self.licenses[arn];
                (l.license.clone(), l.epoch)
            };
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
                    self.granted(tx, &cmd.caller, &license.license_arn, AllowedOperation::CheckoutLicense)
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
            if let Some(short) = self.draw(&license, &plan)? {
                reasons.push(short);
                continue;
            }
            let c = checkout_consumption(cmd, &license, plan, now);
            self.create(&c, &cmd.client_token, &cmd.request_hash, epoch);
            return Ok(c);
        }
        if reasons.is_empty() {
            return Err(nothing_available(cmd, own_license_without_beneficiary));
        }
        Err(StoreError::NoEntitlements(reasons.join("; ")))
    }

    /// `checkout_borrow_once`, against the batch's state.
    async fn borrow(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        cmd: &BorrowCommand,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        if let Some(c) = self.replay(
            &cmd.caller,
            &cmd.client_token,
            &cmd.request_hash,
            "CheckoutBorrowLicense",
        )? {
            return Ok(c);
        }
        let (license, epoch) = match self.licenses.get(&cmd.license_arn) {
            Some(l) => (l.license.clone(), l.epoch),
            None => {
                return Err(StoreError::NotFound(format!(
                    "license {} does not exist",
                    cmd.license_arn
                )))
            }
        };
        let direct = license.beneficiary_account().as_ref() == Some(&cmd.caller);
        if !direct
            && !self
                .granted(
                    tx,
                    &cmd.caller,
                    &license.license_arn,
                    AllowedOperation::CheckoutBorrowLicense,
                )
                .await?
        {
            return Err(may_not_borrow(&cmd.caller, &license.license_arn));
        }
        let plan = borrow_plan(&license, &cmd.entitlements, now)?;
        if let Some(short) = self.draw(&license, &plan)? {
            return Err(StoreError::NoEntitlements(short));
        }
        let c = borrow_consumption(cmd, &license, plan, now);
        self.create(&c, &cmd.client_token, &cmd.request_hash, epoch);
        Ok(c)
    }

    /// `usable_consumption`, against the batch's state.
    async fn usable(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        caller: &AccountId,
        c: &Consumption,
        only_license: Option<&str>,
        op: AllowedOperation,
    ) -> Result<Arc<License>> {
        check_consumer(caller, c, only_license)?;
        let license = match self.licenses.get(&c.license_arn) {
            Some(l) => l.license.clone(),
            None => {
                return Err(StoreError::NotFound(format!(
                    "license {} does not exist",
                    c.license_arn
                )))
            }
        };
        if !direct_user(caller, &license) && !self.granted(tx, caller, &license.license_arn, op).await? {
            return Err(no_grant(caller, &license.license_arn, op));
        }
        Ok(license)
    }

    fn held(&self, token: &str) -> Result<(Consumption, i64)> {
        self.held
            .get(token)
            .map(|h| (h.c.clone(), h.epoch))
            .ok_or_else(|| StoreError::NotFound(format!("no license consumption has the token '{token}'")))
    }

    /// `check_in_once`, against the batch's state.
    async fn check_in(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        let (c, epoch) = self.held(token)?;
        let license = self
            .usable(tx, caller, &c, only_license, AllowedOperation::CheckInLicense)
            .await?;
        refuse_check_in(&c, &license, now)?;
        if !c.draws.is_empty() {
            self.release(&c.license_arn, &c.draws, epoch);
        }
        if let Some(h) = self.held.get_mut(token) {
            h.c.status = ConsumptionStatus::CheckedIn;
            h.ended_at = Some(to_millis(now));
            h.changed = true;
        }
        Ok(())
    }

    /// `extend_once`, against the batch's state.
    async fn extend(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        caller: &AccountId,
        token: &str,
        only_license: Option<&str>,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<Consumption> {
        let (mut c, _) = self.held(token)?;
        let license = self
            .usable(tx, caller, &c, only_license, AllowedOperation::ExtendConsumptionLicense)
            .await?;
        refuse_extension(&c, &license, now)?;
        if dry_run {
            return Ok(c);
        }
        c.expires_at = consumption::expiry(&license, now);
        if let Some(h) = self.held.get_mut(token) {
            h.c.expires_at = c.expires_at;
            h.changed = true;
        }
        Ok(c)
    }

    /// Every write of the batch in one statement.
    async fn write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        let mut counter_arns = Vec::new();
        let mut counter_names = Vec::new();
        let mut counter_values = Vec::new();
        for ((arn, name), c) in &self.counters {
            if c.changed {
                counter_arns.push(arn.as_str());
                counter_names.push(name.as_str());
                counter_values.push(c.consumed.get());
            }
        }
        let mut ended_tokens = Vec::new();
        let mut ended_status = Vec::new();
        let mut ended_at = Vec::new();
        let mut ended_expires = Vec::new();
        for (token, h) in &self.held {
            if h.changed {
                ended_tokens.push(token.as_str());
                ended_status.push(h.c.status.as_str());
                ended_at.push(h.ended_at);
                ended_expires.push(to_millis(h.c.expires_at));
            }
        }
        let n = self.created.len();
        let mut v = NewRows::with_capacity(n);
        for r in &self.created {
            let c = &r.c;
            v.token.push(c.token.as_str());
            v.license_arn.push(c.license_arn.as_str());
            v.consumer.push(c.consumer.as_str());
            v.client_token.push(r.client_token.as_str());
            v.request_hash.push(r.request_hash.as_str());
            v.checkout_type.push(c.checkout_type.as_str());
            v.allowed.push(serde_json::to_string(&c.allowed).map_err(corrupt)?);
            v.draws.push(serde_json::to_string(&c.draws).map_err(corrupt)?);
            v.node_id.push(c.node_id.as_deref());
            v.beneficiary.push(c.beneficiary.as_deref());
            v.product_sku.push(c.product_sku.as_str());
            v.key_fingerprint.push(c.key_fingerprint.as_str());
            v.issued_at.push(to_millis(c.issued_at));
            v.expires_at.push(to_millis(c.expires_at));
            v.usage_epoch.push(r.epoch);
            v.borrowed.push(c.borrowed);
            v.metadata.push(if c.checkout_metadata.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&c.checkout_metadata).map_err(corrupt)?)
            });
        }
        if counter_arns.is_empty() && ended_tokens.is_empty() && n == 0 {
            return Ok(());
        }
        let row = sqlx::query(
            "WITH counters AS (UPDATE entitlement_usage e SET consumed = v.consumed \
               FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v (license_arn, name, consumed) \
               WHERE e.license_arn = v.license_arn AND e.name = v.name RETURNING 1), \
             ended AS (UPDATE consumptions c SET status = v.status, ended_at = COALESCE(v.ended_at, c.ended_at), \
               expires_at = v.expires_at \
               FROM unnest($4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS v (token, status, ended_at, expires_at) \
               WHERE c.token = v.token RETURNING 1), \
             created AS (INSERT INTO consumptions (token, license_arn, consumer_account, client_token, request_hash, \
               checkout_type, allowed, draws, node_id, beneficiary, product_sku, key_fingerprint, issued_at, expires_at, \
               status, usage_epoch, borrowed, checkout_metadata) \
               SELECT token, license_arn, consumer_account, client_token, request_hash, checkout_type, allowed, draws, \
               node_id, beneficiary, product_sku, key_fingerprint, issued_at, expires_at, 'ACTIVE', usage_epoch, \
               borrowed, checkout_metadata \
               FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
               $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::bigint[], $21::bigint[], \
               $22::bigint[], $23::bool[], $24::text[]) AS v (token, license_arn, consumer_account, client_token, \
               request_hash, checkout_type, allowed, draws, node_id, beneficiary, product_sku, key_fingerprint, \
               issued_at, expires_at, usage_epoch, borrowed, checkout_metadata) \
               RETURNING 1) \
             SELECT (SELECT count(*) FROM counters) AS counters, (SELECT count(*) FROM ended) AS ended, \
               (SELECT count(*) FROM created) AS created",
        )
        .bind(&counter_arns)
        .bind(&counter_names)
        .bind(&counter_values)
        .bind(&ended_tokens)
        .bind(&ended_status)
        .bind(&ended_at)
        .bind(&ended_expires)
        .bind(&v.token)
        .bind(&v.license_arn)
        .bind(&v.consumer)
        .bind(&v.client_token)
        .bind(&v.request_hash)
        .bind(&v.checkout_type)
        .bind(&v.allowed)
        .bind(&v.draws)
        .bind(&v.node_id)
        .bind(&v.beneficiary)
        .bind(&v.product_sku)
        .bind(&v.key_fingerprint)
        .bind(&v.issued_at)
        .bind(&v.expires_at)
        .bind(&v.usage_epoch)
        .bind(&v.borrowed)
        .bind(&v.metadata)
        .fetch_one(&mut **tx)
        .await?;
        let written: (i64, i64, i64) = (row.try_get("counters")?, row.try_get("ended")?, row.try_get("created")?);
        let expected = (counter_arns.len() as i64, ended_tokens.len() as i64, n as i64);
        if written != expected {
            // Rows this batch holds locked cannot have gone; roll back rather than guess.
            return Err(corrupt(format!(
                "a write batch wrote {written:?} (counters, consumptions ended or extended, consumptions created), not {expected:?}"
            )));
        }
        Ok(())
    }
}

/// The consumptions a batch creates, column by column.
struct NewRows<'a> {
    token: Vec<&'a str>,
    license_arn: Vec<&'a str>,
    consumer: Vec<&'a str>,
    client_token: Vec<&'a str>,
    request_hash: Vec<&'a str>,
    checkout_type: Vec<&'a str>,
    allowed: Vec<String>,
    draws: Vec<String>,
    node_id: Vec<Option<&'a str>>,
    beneficiary: Vec<Option<&'a str>>,
    product_sku: Vec<&'a str>,
    key_fingerprint: Vec<&'a str>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
    usage_epoch: Vec<i64>,
    borrowed: Vec<bool>,
    metadata: Vec<Option<String>>,
}

impl NewRows<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            token: Vec::with_capacity(n),
            license_arn: Vec::with_capacity(n),
            consumer: Vec::with_capacity(n),
            client_token: Vec::with_capacity(n),
            request_hash: Vec::with_capacity(n),
            checkout_type: Vec::with_capacity(n),
            allowed: Vec::with_capacity(n),
            draws: Vec::with_capacity(n),
            node_id: Vec::with_capacity(n),
            beneficiary: Vec::with_capacity(n),
            product_sku: Vec::with_capacity(n),
            key_fingerprint: Vec::with_capacity(n),
            issued_at: Vec::with_capacity(n),
            expires_at: Vec::with_capacity(n),
            usage_epoch: Vec::with_capacity(n),
            borrowed: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }
}
