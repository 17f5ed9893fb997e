//! The hot path on SQLite: checkout, borrow, check-in, extension, usage and
//! expiry, group-committed on one dedicated thread that owns a connection, and
//! the small per-request reads (access keys, grant chains) done in place.
//!
//! Each statement here is a plain function call on the thread that owns the
//! connection. Every write waiting when a batch starts runs in one
//! transaction; the batch commits once (one WAL fsync) and only then is each
//! write answered.
//!
//! The thread keeps what the hot path decides from in memory: licenses by
//! product and fingerprint, their versions and usage epochs, counters, the
//! earliest expiry due, and recently made consumptions. That memory is the
//! database's state as this connection last left it, and SQLite says when it
//! stopped being so: `PRAGMA data_version` changes when any other connection
//! (the server's other writer, the CLI, another process) commits. The thread
//! checks it at the start of every batch, under the write lock, and forgets
//! everything when it moved. Counters are written once per batch, their final
//! values, before the COMMIT.
//!
//! The COMMIT itself only appends the batch to the write-ahead log (this
//! connection runs with `synchronous=NORMAL`); a second thread then flushes
//! the log to disk with `fdatasync` and only after that answers the batch's
//! writes. While it waits on the disk, the writer already runs the next batch,
//! and one flush answers every batch committed before it. An answer is still
//! never given before what it reports is on disk. (Checkpoints, which copy the
//! log into the database file, are synced by SQLite itself in this mode.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex as StdMutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tessera_observe::metrics::{COMMIT_BATCH_SIZE, COMMIT_DURATION};
use time::OffsetDateTime;
use tokio::sync::{oneshot, Mutex};

use tessera_core::consumption::{self, CheckoutPlan, Consumption, ConsumptionStatus, Draw};
use tessera_core::grant::{chain_permits, AllowedOperation, Grant};
use tessera_core::license::{CheckoutType, License};
use tessera_core::timefmt::{from_millis, to_millis};
use tessera_core::{AccountId, Units};

use crate::codec::{account_of, corrupt, grant_of, license_of};
use crate::rules::{
    borrow_consumption, borrow_plan, check_consumer, checkout_consumption, checkout_plan, checkout_reach, decide_draws,
    direct_user, issuer_without_beneficiary, may_not_borrow, no_grant, nothing_available, refuse_check_in,
    refuse_extension, stored_units, token_reused, Reach, Tally,
};
use crate::{AccessKey, BorrowCommand, CheckoutCommand, EntitlementUsage, Result, StoreError};

/// At most this many writes share one transaction (and one fsync).
const MAX_BATCH: usize = 256;

/// WAL pages (4 KiB each) between the writer's automatic checkpoints.
const WAL_PAGES: i64 = 8_000;

/// Re-grants deeper than this are refused when followed (a cycle cannot form, but be safe).
const MAX_CHAIN: usize = 16;

/// Parsed license documents kept; versions are immutable, so these outlive the other caches.
const LICENSE_DOCS: usize = 10_000;

/// Licenses (and their counters) whose state is kept between batches.
const LICENSE_STATES: usize = 10_000;

/// Active consumptions kept for the check-in or extension that usually follows soon.
const RECENT_CONSUMPTIONS: usize = 8_192;

/// Due consumptions expired per statement round.
const EXPIRY_CHUNK: i64 = 1_000;

/// A license's current version and usage epoch.
#[derive(Clone, Copy)]
struct LicenseState {
    version: i64,
    epoch: i64,
}

/// A counted entitlement's counter as the transaction currently has it.
#[derive(Clone, Copy)]
struct Counter {
    /// The counter's row in `usage_counts`.
    usage_id: i64,
    consumed: Units,
    max_count: Option<i64>,
    overage: bool,
}

impl Counter {
    fn tally(&self) -> Tally {
        Tally {
            consumed: self.consumed,
            max_count: self.max_count,
            overage: self.overage,
        }
    }
}

/// The database as this connection left it; emptied when another connection commits.
#[derive(Default)]
struct Memory {
    /// (ProductSKU, KeyFingerprint) -> license ARNs, oldest first.
    by_product: HashMap<(String, String), Vec<String>>,
    licenses: HashMap<String, LicenseState>,
    /// (license ARN, entitlement name) -> counter.
    counters: HashMap<(String, String), Counter>,
    /// Counters changed in this batch, written before its COMMIT.
    dirty: HashSet<(String, String)>,
    /// No ACTIVE PROVISIONAL consumption expires before this (milliseconds); None: not known.
    next_due: Option<i64>,
    /// Access keys confirmed in this state: whether each is active.
    keys: HashMap<String, bool>,
    /// Recently made consumptions that are still ACTIVE, with their usage epochs.
    recent: HashMap<String, (Consumption, i64)>,
    recent_order: VecDeque<String>,
}

impl Memory {
    fn remember(&mut self, c: Consumption, epoch: i64) {
        // The order still holds tokens forgotten since (checked in, expired):
        // it is trimmed from its oldest end, which also bounds the map.
        while self.recent.len() >= RECENT_CONSUMPTIONS || self.recent_order.len() >= 2 * RECENT_CONSUMPTIONS {
            match self.recent_order.pop_front() {
                Some(old) => {
                    self.recent.remove(&old);
                }
                None => break,
            }
        }
        self.recent_order.push_back(c.token.clone());
        self.recent.insert(c.token.clone(), (c, epoch));
    }

    fn forget(&mut self, token: &str) {
        // Its place in `recent_order` goes when the order is next trimmed.
        self.recent.remove(token);
    }
}

/// What a job may use: the connection and what the thread keeps between jobs.
pub(super) struct Ctx {
    conn: Connection,
    /// Parsed license documents by ARN, with their version.
    docs: HashMap<String, (i64, Arc<License>)>,
    mem: Memory,
    /// `PRAGMA data_version` when `mem` was last known to match the database.
    data_version: i64,
    /// When a batch last found that another connection had committed.
    others_seen: Option<std::time::Instant>,
    /// Set by `Hot::close`: the writer stops after committing the batch at hand.
    stopping: bool,
}

/// Runs after the batch's COMMIT: `None` if it succeeded, else why not.
type Completion = Box<dyn FnOnce(Option<String>) + Send>;

/// Runs in the batch's transaction and returns what to do after the COMMIT.
/// A job makes each change in the database first and then in memory, one
/// statement per change, so that a failed statement leaves both as they were.
type Job = Box<dyn FnOnce(&mut Ctx) -> Completion + Send>;

/// Read connections kept for reuse; more are opened when all are in use.
const IDLE_READERS: usize = 8;

/// A committed batch's answers, given once the log is on disk.
type Committed = Vec<Completion>;

/// The handle the async store holds; the writer thread stops when it is dropped.
pub(super) struct Hot {
    jobs: mpsc::Sender<Job>,
    /// The writer thread, woken after each job sent (it may be waiting on a flush).
    writer: std::thread::Thread,
    /// Dropped to stop the checkpoint thread: by `close`, or with the store.
    checkpointing: StdMutex<Option<mpsc::Sender<()>>>,
    /// The writer, sync and checkpoint threads, joined by `close`.
    threads: StdMutex<Vec<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    readers: StdMutex<Vec<Connection>>,
}

/// Waits for another process's lock in short steps (at most 2 ms, about 30 s
/// in all), where SQLite's own timeout sleeps up to 100 ms at a time: another
/// server process on the same file holds the lock for a batch, a millisecond or two.
fn wait_for_lock(attempts: i32) -> bool {
    const MAX_STEP_US: u64 = 2_000;
    const ATTEMPTS: i32 = 15_000;
    let step = (100 * (attempts.max(0) as u64 + 1)).min(MAX_STEP_US);
    std::thread::sleep(Duration::from_micros(step));
    attempts < ATTEMPTS
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_handler(Some(wait_for_lock))?;
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
        // The log is flushed by the syncer thread before any answer (see the module's notes).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let wal = wal_path(path);
        let (synced, to_sync) = mpsc::channel::<Committed>();
        let flushes = Arc::new(Flushes::default());
        let writer_ctx = Ctx {
            conn,
            docs: HashMap::new(),
            mem: Memory::default(),
            data_version: -1,
            others_seen: None,
            stopping: false,
        };
        let (jobs, rx) = mpsc::channel();
        let log = Log {
            to_sync: synced,
            flushes: flushes.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("tessera-writer".into())
            .spawn(move || writer(writer_ctx, rx, gate, log))
            .map_err(|e| StoreError::Config(format!("cannot start the database writer thread: {e}")))?;
        let wake = writer.thread().clone();
        let checkpoints = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let (checkpointing, stop_checkpoints) = mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("tessera-checkpoint".into())
            .spawn(move || checkpointer(checkpoints, stop_checkpoints))
            .map_err(|e| StoreError::Config(format!("cannot start the database checkpoint thread: {e}")))?;
        let syncer = std::thread::Builder::new()
            .name("tessera-wal-sync".into())
            .spawn(move || syncer(wal, to_sync, flushes, wake))
            .map_err(|e| StoreError::Config(format!("cannot start the database sync thread: {e}")))?;
        Ok(Self {
            jobs,
            checkpointing: StdMutex::new(Some(checkpointing)),
            writer: writer.thread().clone(),
            threads: StdMutex::new(vec![writer, syncer, checkpointer]),
            path: path.to_owned(),
            readers: StdMutex::new(Vec::new()),
        })
    }

    /// Whether the writer, sync and checkpoint threads are all running.
    pub(super) fn running(&self) -> std::result::Result<(), String> {
        let threads = self
            .threads
            .lock()
            .map_err(|_| "the database threads' list is poisoned".to_owned())?;
        if threads.is_empty() {
            return Err("the database writer has been stopped".into());
        }
        match threads.iter().find(|t| t.is_finished()) {
            Some(t) => Err(format!(
                "the database's {} thread has stopped",
                t.thread().name().unwrap_or("writer")
            )),
            None => Ok(()),
        }
    }

    /// Stops the threads once what was sent before is committed and flushed,
    /// and waits for them. Writes sent afterwards fail as Unavailable. Blocks.
    pub(super) fn close(&self) {
        let stop: Job = Box::new(|ctx| {
            ctx.stopping = true;
            Box::new(|_| {})
        });
        // The writer ends after this batch, dropping its side of the sync
        // thread's channel; the sync thread ends after the last flush.
        let _ = self.jobs.send(stop);
        self.writer.unpark();
        if let Ok(mut c) = self.checkpointing.lock() {
            c.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let name = t.thread().name().unwrap_or("a database thread").to_owned();
            if t.join().is_err() {
                tracing::error!(thread = %name, "a database thread had panicked when the store closed");
            }
        }
        if let Ok(mut r) = self.readers.lock() {
            r.clear();
        }
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
            Box::new(move |failed| {
                let _ = reply.send(match failed {
                    None => result,
                    Some(e) => Err(StoreError::Unavailable(format!("the write was not committed: {e}"))),
                });
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        self.writer.unpark();
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

/// Runs a transaction-control statement from the statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Starts a batch's transaction and makes sure memory matches the database.
fn begin(ctx: &mut Ctx) -> rusqlite::Result<()> {
    run(&ctx.conn, "BEGIN IMMEDIATE")?;
    let version: i64 = ctx
        .conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    if version != ctx.data_version {
        if ctx.data_version != -1 {
            ctx.others_seen = Some(std::time::Instant::now());
        }
        ctx.mem = Memory::default();
        ctx.data_version = version;
    }
    Ok(())
}

impl Ctx {
    /// Whether another connection has been writing lately (another server
    /// process on the file, say): then the write lock is not held longer than
    /// a batch needs, since they wait for it.
    fn shared(&self) -> bool {
        self.others_seen.is_some_and(|t| t.elapsed() < Duration::from_secs(1))
    }
}

/// Writes the counters the batch changed, then commits.
fn commit(ctx: &mut Ctx) -> rusqlite::Result<()> {
    {
        let mut update = ctx
            .conn
            .prepare_cached("UPDATE usage_counts SET consumed = ?1 WHERE usage_id = ?2")?;
        for key in ctx.mem.dirty.drain() {
            if let Some(c) = ctx.mem.counters.get(&key) {
                update.execute(params![c.consumed.get(), c.usage_id])?;
            }
        }
    }
    run(&ctx.conn, "COMMIT")
}

/// Ends a transaction that will not commit: rolls it back and forgets memory,
/// which may hold its changes. Every write done in it is answered with `why`.
fn abandon(ctx: &mut Ctx, done: &mut Vec<Completion>, why: &str) {
    if !ctx.conn.is_autocommit() {
        let _ = ctx.conn.execute_batch("ROLLBACK");
    }
    ctx.mem = Memory::default();
    for c in done.drain(..) {
        c(Some(why.to_owned()));
    }
}

/// Commits handed to the sync thread, and how many of them it has flushed.
#[derive(Default)]
struct Flushes {
    sent: std::sync::atomic::AtomicU64,
    flushed: std::sync::atomic::AtomicU64,
}

impl Flushes {
    fn pending(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        self.flushed.load(Acquire) < self.sent.load(Acquire)
    }
}

/// The writer's side of the sync thread.
struct Log {
    to_sync: mpsc::Sender<Committed>,
    flushes: Arc<Flushes>,
}

impl Log {
    fn hand_over(&self, done: Committed) {
        self.flushes.sent.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Err(mpsc::SendError(batch)) = self.to_sync.send(done) {
            batch
                .into_iter()
                .for_each(|c| c(Some("the database sync thread has stopped".into())));
        }
    }
}

/// Runs `writes` in the open transaction (opening one if needed). A panic, or
/// SQLite ending the transaction on its own (a full disk, an I/O error),
/// abandons the transaction: the writes done in it are answered with the
/// failure, and the rest run in a new one.
fn run_jobs(ctx: &mut Ctx, writes: &mut VecDeque<Job>, done: &mut Vec<Completion>) {
    while !writes.is_empty() {
        if ctx.conn.is_autocommit() {
            if let Err(e) = begin(ctx) {
                // Dropping the jobs drops their reply channels: each caller gets an error.
                tracing::error!(error = %e, "cannot begin a write transaction");
                abandon(ctx, done, &e.to_string());
                writes.clear();
                return;
            }
        }
        while let Some(job) = writes.pop_front() {
            match catch_unwind(AssertUnwindSafe(|| job(ctx))) {
                Ok(completion) => done.push(completion),
                Err(p) => {
                    // The job's reply channel was dropped in the unwind: its caller gets an error.
                    // What it changed is unknown, so nothing of this transaction is kept.
                    tracing::error!(panic = %panic_message(&*p), "a database write panicked");
                    abandon(ctx, done, "another write of its batch failed");
                    break;
                }
            }
            if ctx.conn.is_autocommit() {
                tracing::error!("SQLite rolled back a write transaction on its own");
                abandon(ctx, done, "the database rolled the transaction back");
                break;
            }
        }
    }
}

/// Group commit: takes every write that is waiting and runs them in one
/// transaction. While the sync thread is still flushing the previous commit,
/// a commit now would wait for the next flush anyway, so the transaction stays
/// open and takes the writes that arrive meanwhile; it commits when the flush
/// is done, and the next flush covers all of it (unless other connections
/// have been writing lately: they would wait for the lock meanwhile). A write refused by the rules
/// changes nothing. If the commit fails, every write of the batch is answered
/// with the failure.
fn writer(mut ctx: Ctx, rx: mpsc::Receiver<Job>, gate: Arc<Mutex<()>>, log: Log) {
    let take_waiting = |writes: &mut VecDeque<Job>, room: usize| {
        while writes.len() < room {
            match rx.try_recv() {
                Ok(job) => writes.push_back(job),
                Err(_) => break,
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut writes = VecDeque::with_capacity(64);
        writes.push_back(first);
        take_waiting(&mut writes, MAX_BATCH);
        let _turn = gate.blocking_lock();
        let mut done: Vec<Completion> = Vec::with_capacity(64);
        loop {
            run_jobs(&mut ctx, &mut writes, &mut done);
            if !log.flushes.pending() || done.len() >= MAX_BATCH || ctx.shared() {
                break;
            }
            // Woken by the sync thread when its flush ends, or by a new write.
            std::thread::park_timeout(Duration::from_millis(5));
            take_waiting(&mut writes, MAX_BATCH - done.len());
        }
        if ctx.conn.is_autocommit() {
            // Nothing left to commit (the last transaction was abandoned).
            if ctx.stopping {
                break;
            }
            continue;
        }
        let started = std::time::Instant::now();
        let committed = commit(&mut ctx);
        metrics::histogram!(COMMIT_DURATION, "phase" => "commit").record(started.elapsed().as_secs_f64());
        metrics::histogram!(COMMIT_BATCH_SIZE).record(done.len() as f64);
        match committed {
            Ok(()) => log.hand_over(std::mem::take(&mut done)),
            Err(e) => {
                tracing::error!(error = %e, "a write transaction did not commit");
                abandon(&mut ctx, &mut done, &e.to_string());
            }
        }
        if ctx.stopping {
            break;
        }
    }
}

/// How often the checkpoint thread copies the log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies the log into the database file alongside the writer (a PASSIVE
/// checkpoint waits for nobody and nobody waits for it), so that the pages are
/// not copied on the writer's thread while answers wait. Under a steady stream
/// of writes it never finishes the log, so the log never starts over from its
/// beginning; the writer's own checkpoint (at WAL_PAGES) does that, and finds
/// little left to copy. Stops when `stop`'s sender (held by [`Hot`]) is dropped.
fn checkpointer(conn: Connection, stop: mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "background checkpoint skipped");
                }
            }
            _ => return,
        }
    }
}

/// SQLite's write-ahead log of the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// The write-ahead log, opened for flushing. Linux flushes a file's data
/// whichever descriptor wrote it, so a descriptor of our own does.
struct WalFile {
    path: PathBuf,
    open: Option<(std::fs::File, u64)>,
}

impl WalFile {
    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let on_disk = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino(),
            // No log: everything is in the database file, which checkpoints sync.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !matches!(&self.open, Some((_, ino)) if *ino == on_disk) {
            // A new log file: flush its directory entry too, once.
            let file = std::fs::File::open(&self.path)?;
            let ino = file.metadata()?.ino();
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            self.open = Some((file, ino));
        }
        match &self.open {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

/// Flushes the log after each commit and then gives the answers of every
/// batch committed before the flush began; then wakes the writer, which may
/// be holding its next batch open until this flush ends.
fn syncer(wal: PathBuf, rx: mpsc::Receiver<Committed>, flushes: Arc<Flushes>, writer: std::thread::Thread) {
    let mut file = WalFile { path: wal, open: None };
    let mut received = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        received += batches.len() as u64;
        let started = std::time::Instant::now();
        let synced = file.sync();
        metrics::histogram!(COMMIT_DURATION, "phase" => "flush").record(started.elapsed().as_secs_f64());
        let failed = match synced {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "flushing the write-ahead log failed");
                // After a failed flush the kernel's copy is not to be trusted: reopen next time.
                file.open = None;
                Some(format!("the write-ahead log could not be flushed to disk: {e}"))
            }
        };
        flushes.flushed.store(received, std::sync::atomic::Ordering::Release);
        writer.unpark();
        for c in batches.into_iter().flatten() {
            c(failed.clone());
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
    /// License `arn` as it is now, with its usage epoch.
    fn load_license(&mut self, arn: &str) -> Result<(Arc<License>, i64)> {
        let state = match self.mem.licenses.get(arn) {
            Some(s) => *s,
            None => {
                let row: Option<(i64, i64)> = self
                    .conn
                    .prepare_cached("SELECT version, usage_epoch FROM licenses WHERE license_arn = ?1")?
                    .query_row(params![arn], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (version, epoch) =
                    row.ok_or_else(|| StoreError::NotFound(format!("license {arn} does not exist")))?;
                let state = LicenseState { version, epoch };
                self.keep_license(arn, state);
                state
            }
        };
        Ok((self.license_at(arn, state.version)?, state.epoch))
    }

    fn keep_license(&mut self, arn: &str, state: LicenseState) {
        if self.mem.licenses.len() >= LICENSE_STATES {
            // Rare (more licenses in use than kept): start afresh rather than track use.
            // Counters changed in this batch must still be written, so keep those.
            let dirty: Vec<((String, String), Counter)> = self
                .mem
                .dirty
                .iter()
                .filter_map(|k| self.mem.counters.get(k).map(|c| (k.clone(), *c)))
                .collect();
            self.mem.licenses.clear();
            self.mem.by_product.clear();
            self.mem.counters.clear();
            self.mem.counters.extend(dirty);
        }
        self.mem.licenses.insert(arn.to_owned(), state);
    }

    /// License `arn` at `version`: from the cache, else read and parsed (versions never change once written).
    fn license_at(&mut self, arn: &str, version: i64) -> Result<Arc<License>> {
        if let Some((v, l)) = self.docs.get(arn) {
            if *v == version {
                return Ok(l.clone());
            }
        }
        let doc: String = self
            .conn
            .prepare_cached("SELECT document FROM license_versions WHERE license_arn = ?1 AND version = ?2")?
            .query_row(params![arn, version], |r| r.get(0))?;
        let l = Arc::new(license_of(&doc)?);
        insert_bounded(&mut self.docs, LICENSE_DOCS, arn.to_owned(), (version, l.clone()));
        Ok(l)
    }

    /// The licenses a checkout may draw from, oldest first, with their usage epochs.
    fn licenses_for(&mut self, sku: &str, fingerprint: &str) -> Result<Vec<(Arc<License>, i64)>> {
        let key = (sku.to_owned(), fingerprint.to_owned());
        let arns = match self.mem.by_product.get(&key) {
            Some(arns) => arns.clone(),
            None => {
                let rows: Vec<(String, i64, i64)> = self
                    .conn
                    .prepare_cached(
                        "SELECT license_arn, version, usage_epoch FROM licenses \
                         WHERE product_sku = ?1 AND key_fingerprint = ?2 ORDER BY seq",
                    )?
                    .query_map(params![sku, fingerprint], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut arns = Vec::with_capacity(rows.len());
                for (arn, version, epoch) in rows {
                    self.keep_license(&arn, LicenseState { version, epoch });
                    arns.push(arn);
                }
                // Products asked for that have no license are remembered too: bounded.
                insert_bounded(&mut self.mem.by_product, LICENSE_STATES, key, arns.clone());
                arns
            }
        };
        arns.iter().map(|arn| self.load_license(arn)).collect()
    }

    /// The counter of entitlement `name` of license `arn`.
    fn counter(&mut self, arn: &str, name: &str) -> Result<Counter> {
        let key = (arn.to_owned(), name.to_owned());
        if let Some(c) = self.mem.counters.get(&key) {
            return Ok(*c);
        }
        let c = self
            .conn
            .prepare_cached(
                "SELECT u.usage_id, c.consumed, u.max_count, u.overage FROM entitlement_usage u \
                 JOIN usage_counts c ON c.usage_id = u.usage_id WHERE u.license_arn = ?1 AND u.name = ?2",
            )?
            .query_row(params![arn, name], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?
            .ok_or_else(|| corrupt(format!("license {arn} has no counter for entitlement '{name}'")))?;
        let c = Counter {
            usage_id: c.0,
            consumed: stored_units(c.1)?,
            max_count: c.2,
            overage: c.3,
        };
        self.mem.counters.insert(key, c);
        Ok(c)
    }

    /// Reads the counters `draws` touch into memory, so that applying them
    /// after a row is written cannot fail halfway.
    fn load_counters(&mut self, arn: &str, draws: &[Draw]) -> Result<()> {
        for d in draws {
            self.counter(arn, &d.name)?;
        }
        Ok(())
    }

    /// Adds each draw to its counter (`take`) or gives it back (never below
    /// zero); written at the batch's end. The counters must be loaded, and a
    /// draw added must have been decided by `decide_draws` against them.
    fn apply(&mut self, arn: &str, draws: &[Draw], take: bool) {
        for d in draws {
            let key = (arn.to_owned(), d.name.clone());
            if let Some(c) = self.mem.counters.get_mut(&key) {
                c.consumed = if take {
                    c.consumed.checked_add(d.amount).unwrap_or(Units::MAX)
                } else {
                    c.consumed.saturating_sub(d.amount)
                };
                self.mem.dirty.insert(key);
            }
        }
    }

    /// The earliest expiry of an ACTIVE PROVISIONAL consumption, or i64::MAX.
    fn next_due(&mut self) -> Result<i64> {
        if let Some(t) = self.mem.next_due {
            return Ok(t);
        }
        let t: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT MIN(expires_at) FROM consumptions WHERE status = 'ACTIVE' AND checkout_type = 'PROVISIONAL'",
            )?
            .query_row([], |r| r.get(0))?;
        let t = t.unwrap_or(i64::MAX);
        self.mem.next_due = Some(t);
        Ok(t)
    }

    /// Expires at most `limit` due PROVISIONAL consumptions; returns how many.
    fn expire(&mut self, now_ms: i64, limit: i64) -> Result<u64> {
        if now_ms < self.next_due()? {
            return Ok(0);
        }
        let due: Vec<(String, String, String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT token, license_arn, draws, usage_epoch FROM consumptions \
                 WHERE status = 'ACTIVE' AND checkout_type = 'PROVISIONAL' AND expires_at <= ?1 LIMIT ?2",
            )?
            .query_map(params![now_ms, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (token, arn, draws, epoch) in &due {
            let draws: Vec<Draw> = serde_json::from_str(draws).map_err(corrupt)?;
            let (_, current) = self.load_license(arn)?;
            self.end(token, arn, &draws, *epoch == current, "EXPIRED", None)?;
        }
        if (due.len() as i64) < limit {
            // Everything due is expired: the next expiry is read afresh when needed.
            self.mem.next_due = None;
        }
        Ok(due.len() as u64)
    }

    /// Ends ACTIVE consumption `token` of license `arn` with `status` at
    /// `ended_at` (None: at its expiry) and, if its units are still `counted`
    /// (no ResetUsage since the checkout), gives them back.
    fn end(
        &mut self,
        token: &str,
        arn: &str,
        draws: &[Draw],
        counted: bool,
        status: &str,
        ended_at: Option<i64>,
    ) -> Result<()> {
        if counted {
            self.load_counters(arn, draws)?;
        }
        self.conn
            .prepare_cached(
                "UPDATE consumptions SET status = ?1, ended_at = COALESCE(?2, expires_at) WHERE token = ?3",
            )?
            .execute(params![status, ended_at, token])?;
        self.mem.forget(token);
        if counted {
            self.apply(arn, draws, false);
        }
        Ok(())
    }

    /// Expires everything due by `now_ms`, so that a checkout or a usage read sees exact counts.
    fn expire_all(&mut self, now_ms: i64) -> Result<()> {
        while self.expire(now_ms, EXPIRY_CHUNK)? as i64 == EXPIRY_CHUNK {}
        Ok(())
    }

    /// Why the plan's units cannot all be taken from `license` now, if they cannot.
    fn shortfall(&mut self, license: &License, plan: &CheckoutPlan) -> Result<Option<String>> {
        let arn = &license.license_arn;
        Ok(decide_draws(arn, &plan.draws, |name| self.counter(arn, name).map(|c| c.tally()))?.err())
    }

    /// Records a granted consumption and takes its units; `None` (and nothing
    /// changed) when the caller has used its ClientToken before.
    fn take(&mut self, c: Consumption, client_token: &str, hash: &str, epoch: i64) -> Result<Option<Consumption>> {
        self.load_counters(&c.license_arn, &c.draws)?;
        if !insert_consumption(&self.conn, &c, client_token, hash, epoch)? {
            return Ok(None);
        }
        self.apply(&c.license_arn, &c.draws, true);
        if c.checkout_type == CheckoutType::Provisional {
            // Only lower a known bound: an unknown one is read afresh, with this row in it.
            if let Some(t) = self.mem.next_due.as_mut() {
                *t = (*t).min(to_millis(c.expires_at));
            }
            self.mem.remember(c.clone(), epoch);
        }
        Ok(Some(c))
    }

    /// Refuses the write if `key` is given and is not an active access key now.
    /// A revocation commits through another connection, which empties memory,
    /// so a key remembered as active was active at this batch's start.
    fn confirm_key(&mut self, key: Option<&str>) -> Result<()> {
        let Some(key) = key else { return Ok(()) };
        let active = match self.mem.keys.get(key) {
            Some(a) => *a,
            None => {
                let a = self
                    .conn
                    .prepare_cached("SELECT active FROM access_keys WHERE access_key_id = ?1")?
                    .query_row(params![key], |r| r.get::<_, i64>(0))
                    .optional()?
                    == Some(1);
                insert_bounded(&mut self.mem.keys, LICENSE_STATES, key.to_owned(), a);
                a
            }
        };
        if active {
            Ok(())
        } else {
            Err(StoreError::unknown_key(key))
        }
    }

    /// A consumption by token, with its usage epoch.
    fn consumption(&mut self, token: &str) -> Result<(Consumption, i64)> {
        if let Some((c, epoch)) = self.mem.recent.get(token) {
            return Ok((c.clone(), *epoch));
        }
        load_consumption(&self.conn, token)
    }
}

/// Inserts into a cache of at most `limit` entries; a full one starts afresh
/// (caches here are far larger than what is in use, so tracking use costs more).
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, limit: usize, k: K, v: V) {
    if map.len() >= limit && !map.contains_key(&k) {
        map.clear();
    }
    map.insert(k, v);
}

/// Inserts a consumption row; false (and nothing inserted) if its consumer has
/// used the ClientToken before.
fn insert_consumption(conn: &Connection, c: &Consumption, client_token: &str, hash: &str, epoch: i64) -> Result<bool> {
    let metadata = if c.checkout_metadata.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&c.checkout_metadata).map_err(corrupt)?)
    };
    let inserted = conn.prepare_cached(
        "INSERT INTO consumptions (token, license_arn, consumer_account, client_token, request_hash, checkout_type, \
         allowed, draws, node_id, beneficiary, product_sku, key_fingerprint, issued_at, expires_at, status, usage_epoch, \
         borrowed, checkout_metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'ACTIVE', ?15, ?16, ?17) \
         ON CONFLICT (consumer_account, client_token) DO NOTHING",
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
    Ok(inserted == 1)
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

/// A checkout's outcome before its ClientToken is looked at.
enum Decision {
    Granted(Box<Consumption>, i64),
    Refused(StoreError),
}

/// Decides a checkout against the licenses it may use, as if its ClientToken were new.
fn decide_checkout(ctx: &mut Ctx, cmd: &CheckoutCommand, now: OffsetDateTime) -> Result<Decision> {
    let now_ms = to_millis(now);
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
        ctx.expire_all(now_ms)?;
        if let Some(short) = ctx.shortfall(&license, &plan)? {
            reasons.push(short);
            continue;
        }
        return Ok(Decision::Granted(
            Box::new(checkout_consumption(cmd, &license, plan, now)),
            epoch,
        ));
    }
    Ok(Decision::Refused(if reasons.is_empty() {
        nothing_available(cmd, own_license_without_beneficiary)
    } else {
        StoreError::NoEntitlements(reasons.join("; "))
    }))
}

/// A checkout. The ClientToken is looked up only when the checkout is not
/// granted or its row is refused as a duplicate: a retry then gets the first
/// answer (or a conflict, for another request), whatever the pool holds now.
pub(super) fn checkout(ctx: &mut Ctx, cmd: &CheckoutCommand, now: OffsetDateTime) -> Result<Consumption> {
    ctx.confirm_key(cmd.key.as_deref())?;
    let refusal = match decide_checkout(ctx, cmd, now)? {
        Decision::Granted(c, epoch) => match ctx.take(*c, &cmd.client_token, &cmd.request_hash, epoch)? {
            Some(c) => return Ok(c),
            None => None,
        },
        Decision::Refused(e) => Some(e),
    };
    let earlier = replay_checkout(
        &ctx.conn,
        &cmd.caller,
        &cmd.client_token,
        &cmd.request_hash,
        "CheckoutLicense",
    )?;
    match (earlier, refusal) {
        (Some(c), _) => Ok(c),
        (None, Some(e)) => Err(e),
        (None, None) => Err(corrupt(format!(
            "ClientToken '{}' was refused as a duplicate, but no consumption has it",
            cmd.client_token
        ))),
    }
}

pub(super) fn checkout_borrow(ctx: &mut Ctx, cmd: &BorrowCommand, now: OffsetDateTime) -> Result<Consumption> {
    ctx.confirm_key(cmd.key.as_deref())?;
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
    ctx.expire_all(to_millis(now))?;
    if let Some(short) = ctx.shortfall(&license, &plan)? {
        return Err(StoreError::NoEntitlements(short));
    }
    let c = borrow_consumption(cmd, &license, plan, now);
    // The ClientToken was looked up above, in this transaction: it is new.
    ctx.take(c, &cmd.client_token, &cmd.request_hash, epoch)?
        .ok_or_else(|| corrupt("a new ClientToken was refused as a duplicate"))
}

pub(super) fn check_in(
    ctx: &mut Ctx,
    caller: &AccountId,
    token: &str,
    only_license: Option<&str>,
    key: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    ctx.confirm_key(key)?;
    let (c, epoch) = ctx.consumption(token)?;
    let (license, current) = usable_consumption(ctx, caller, &c, only_license, AllowedOperation::CheckInLicense)?;
    refuse_check_in(&c, &license, now)?;
    ctx.end(
        token,
        &c.license_arn,
        &c.draws,
        epoch == current,
        "CHECKED_IN",
        Some(to_millis(now)),
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn extend(
    ctx: &mut Ctx,
    caller: &AccountId,
    token: &str,
    only_license: Option<&str>,
    key: Option<&str>,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<Consumption> {
    ctx.confirm_key(key)?;
    let (mut c, epoch) = ctx.consumption(token)?;
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
    // An extension only moves an expiry later, so the known next expiry stays a lower bound.
    if ctx.mem.recent.contains_key(token) {
        ctx.mem.recent.insert(token.to_owned(), (c.clone(), epoch));
    }
    Ok(c)
}

pub(super) fn license_usage(ctx: &mut Ctx, arn: &str, now: OffsetDateTime) -> Result<Vec<EntitlementUsage>> {
    ctx.expire_all(to_millis(now))?;
    let rows: Vec<(String, String, i64, Option<i64>)> = ctx
        .conn
        .prepare_cached(
            "SELECT u.name, u.unit, c.consumed, u.max_count FROM entitlement_usage u \
             JOIN usage_counts c ON c.usage_id = u.usage_id WHERE u.license_arn = ?1 ORDER BY u.usage_id",
        )?
        .query_map(params![arn], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // The stored counts may trail this batch's changes, which are written at its end.
    Ok(rows
        .into_iter()
        .map(|(name, unit, consumed, max_count)| {
            let consumed = ctx
                .mem
                .counters
                .get(&(arn.to_owned(), name.clone()))
                .map_or(consumed, |c| c.consumed.get());
            EntitlementUsage {
                name,
                unit,
                consumed,
                max_count,
            }
        })
        .collect())
}

pub(super) fn expire_due(ctx: &mut Ctx, now: OffsetDateTime) -> Result<u64> {
    ctx.expire(to_millis(now), EXPIRY_CHUNK)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::consumption::ConsumptionStatus;

    fn consumption(token: String) -> Consumption {
        Consumption {
            token,
            license_arn: "arn".into(),
            consumer: AccountId::parse("123456789012").expect("account"),
            checkout_type: CheckoutType::Provisional,
            allowed: Vec::new(),
            draws: Vec::new(),
            node_id: None,
            beneficiary: None,
            issued_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: OffsetDateTime::UNIX_EPOCH,
            status: ConsumptionStatus::Active,
            product_sku: "sku".into(),
            key_fingerprint: "fp".into(),
            borrowed: false,
            checkout_metadata: Vec::new(),
        }
    }

    fn counter(usage_id: i64, consumed: i64) -> Counter {
        Counter {
            usage_id,
            consumed: Units::new(consumed).unwrap(),
            max_count: Some(10),
            overage: false,
        }
    }

    /// When more licenses are in use than are kept, memory starts afresh, but
    /// the counters the open batch changed stay, so its commit still writes them.
    #[test]
    fn a_full_memory_starts_afresh_but_keeps_the_batch_s_changed_counters() {
        let mut ctx = Ctx {
            conn: Connection::open_in_memory().expect("in-memory database"),
            docs: HashMap::new(),
            mem: Memory::default(),
            data_version: 0,
            others_seen: None,
            stopping: false,
        };
        let changed = ("arn-changed".to_owned(), "Seats".to_owned());
        let clean = ("arn-clean".to_owned(), "Seats".to_owned());
        ctx.mem.counters.insert(changed.clone(), counter(1, 7));
        ctx.mem.counters.insert(clean.clone(), counter(2, 3));
        ctx.mem.dirty.insert(changed.clone());
        ctx.mem
            .by_product
            .insert(("sku".into(), "fp".into()), vec!["arn-changed".into()]);
        let state = LicenseState { version: 1, epoch: 0 };
        for i in 0..LICENSE_STATES {
            ctx.keep_license(&format!("arn-{i}"), state);
        }
        assert_eq!(ctx.mem.licenses.len(), LICENSE_STATES);
        ctx.keep_license("arn-one-more", state);
        assert_eq!(ctx.mem.licenses.len(), 1);
        assert!(ctx.mem.licenses.contains_key("arn-one-more"));
        assert!(ctx.mem.by_product.is_empty());
        assert_eq!(ctx.mem.counters.get(&changed).map(|c| c.consumed.get()), Some(7));
        assert!(!ctx.mem.counters.contains_key(&clean));
        assert!(ctx.mem.dirty.contains(&changed));
    }

    #[test]
    fn a_bounded_cache_starts_afresh_when_full_but_not_to_replace_an_entry() {
        let mut m = HashMap::new();
        insert_bounded(&mut m, 2, "a", 1);
        insert_bounded(&mut m, 2, "b", 2);
        insert_bounded(&mut m, 2, "b", 3);
        assert_eq!((m.len(), m.get("b")), (2, Some(&3)));
        insert_bounded(&mut m, 2, "c", 4);
        assert_eq!((m.len(), m.get("c")), (1, Some(&4)));
    }

    /// Checkouts checked in soon after, for a long time, keep memory bounded.
    #[test]
    fn recent_consumptions_stay_bounded_when_each_is_soon_forgotten() {
        let mut mem = Memory::default();
        for i in 0..10 * RECENT_CONSUMPTIONS {
            let token = format!("t{i}");
            mem.remember(consumption(token.clone()), 0);
            if i % 10 != 0 {
                mem.forget(&token);
            }
        }
        assert!(mem.recent.len() <= RECENT_CONSUMPTIONS);
        assert!(mem.recent_order.len() <= 2 * RECENT_CONSUMPTIONS);
        // The newest kept one is still there; a forgotten one is not.
        let last_kept = format!("t{}", 10 * RECENT_CONSUMPTIONS - 10);
        assert!(mem.recent.contains_key(&last_kept));
        assert!(!mem.recent.contains_key(&format!("t{}", 10 * RECENT_CONSUMPTIONS - 1)));
    }
}
