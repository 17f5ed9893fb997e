//! `tessera bench checkout`: throughput and latency of PROVISIONAL checkout +
//! check-in through SigV4-signed HTTP against `tessera serve` processes, next to
//! a raw baseline: the same conditional counter update issued directly against
//! the same database, one transaction per call.
//!
//! The servers are separate processes (this executable, `serve`), so the
//! benchmark's clients and the servers do not share a runtime, and each
//! server's resident memory can be sampled on its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tessera_client::{wire, Client, ClientError, Credentials};
use tessera_store::baseline::RawCounter;
use tessera_store::PgStore;
use time::OffsetDateTime;

use crate::Output;

/// The entitlement every benchmark license carries.
const ENTITLEMENT: &str = "Seats";
/// Seats on each license of the spread scenario: enough never to refuse.
const AMPLE_SEATS: i64 = 1_000_000;
/// How often the servers' resident memory is sampled during a measurement.
const RSS_EVERY: Duration = Duration::from_millis(250);

#[derive(Subcommand)]
pub enum BenchCommand {
    /// PROVISIONAL checkout followed by check-in over HTTP, against separate server
    /// processes, next to a raw SQL baseline on the same database.
    ///
    /// Two scenarios: `spread` (clients spread over --licenses licenses with ample
    /// seats) and `hot` (every client on one license whose seat limit is half the
    /// clients). Each runs twice for --seconds: first the raw baseline (each client
    /// loop takes one unit with one conditional UPDATE, then gives it back with a
    /// second, each its own durable transaction, no HTTP), then over HTTP (each
    /// client loop is one signed CheckoutLicense and, if granted, one
    /// CheckInLicense). A loop counts as one checkout, granted or refused.
    Checkout(CheckoutBench),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Clients spread over --licenses licenses with ample seats.
    Spread,
    /// Every client on one license with a seat limit of half the clients.
    Hot,
    /// Spread, then hot.
    Both,
}

#[derive(Args)]
pub struct CheckoutBench {
    /// Concurrent clients, spread round-robin over the replicas.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Licenses in the spread scenario.
    #[arg(long, default_value_t = 1000)]
    licenses: usize,
    /// Seconds each measurement runs (two measurements per scenario).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Which scenarios to run: spread, hot, or both.
    #[arg(long, value_enum, default_value_t = Scenario::Both)]
    scenario: Scenario,
    /// Database for the run: `sqlite://PATH` (used as is) or
    /// `postgres://USER@HOST:PORT/DB[?pool_max_connections=N]`, where the benchmark
    /// creates a fresh database on that server for the run and drops it afterwards.
    /// Default: SQLite in a fresh temporary directory, removed afterwards.
    #[arg(long, conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// Directory for the SQLite database (`tessera.db`), kept afterwards; instead of --database-url.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `tessera serve` processes to start on the database. Several replicas are what
    /// PostgreSQL deployments run; on SQLite they share the file through its lock
    /// (measurable, but one writer at a time).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Checkout(args) = cmd;
    anyhow::ensure!(
        args.clients > 0 && args.seconds > 0 && args.licenses > 0,
        "--clients, --licenses and --seconds must be positive"
    );
    anyhow::ensure!(
        (1..=args.clients).contains(&args.replicas),
        "--replicas must be between 1 and --clients ({})",
        args.clients
    );
    let work = TempDir::new()?;
    let progress = if args.output == Output::Json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut fresh_pg = None;
    let url = match (&args.database_url, &args.data_dir) {
        (Some(u), _) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            let name = format!("tessera_bench_{}", uuid::Uuid::new_v4().simple());
            progress.set_message(format!("creating database {name}"));
            let db_url = PgStore::create_database(u, &name).await?;
            fresh_pg = Some((u.clone(), name));
            db_url
        }
        (Some(u), _) => u.clone(),
        (None, Some(dir)) => format!("sqlite://{}", dir.join("tessera.db").display()),
        (None, None) => format!("sqlite://{}", work.0.join("tessera.db").display()),
    };

    let outcome = tokio::select! {
        r = bench(&args, &url, &work.0, &progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress.finish_and_clear();
    // The servers are stopped by now (their guards dropped with `bench`).
    if let Some((admin_url, name)) = fresh_pg {
        if let Err(e) = PgStore::drop_database(&admin_url, &name).await {
            eprintln!("warning: could not drop the benchmark database {name}: {e}");
        }
    }
    let doc = outcome?;
    match args.output {
        Output::Json => println!("{doc}"),
        Output::Table => print_table(&doc),
    }
    Ok(())
}

/// One scenario's licenses, made over the API.
struct Licenses {
    name: &'static str,
    seats: i64,
    skus: Vec<String>,
    arns: Vec<String>,
}

async fn bench(args: &CheckoutBench, url: &str, work: &Path, progress: &ProgressBar) -> anyhow::Result<Value> {
    let shown_url = PgStore::redact_url(url);
    // Accounts straight in the database (this also creates the schema), before any server runs.
    progress.set_message("creating accounts");
    let (vendor_id, vendor_creds, customer_id, customer_creds) = {
        let store = tessera_store::open(url)
            .await
            .with_context(|| format!("cannot open the database at {shown_url}"))?;
        let now = OffsetDateTime::now_utc();
        let (vendor, vkey) = store.create_account("bench-vendor", now).await?;
        let (customer, ckey) = store.create_account("bench-customer", now).await?;
        (
            vendor.id,
            Credentials {
                access_key_id: vkey.access_key_id,
                secret_access_key: vkey.secret,
            },
            customer.id,
            Credentials {
                access_key_id: ckey.access_key_id,
                secret_access_key: ckey.secret,
            },
        )
    };

    let mut servers = Vec::with_capacity(args.replicas);
    for i in 0..args.replicas {
        progress.set_message(format!("starting server {}/{}", i + 1, args.replicas));
        servers.push(Server::start(i, url, work).await?);
    }
    // One HTTP client (one keep-alive connection pool) per replica, shared by its clients.
    let customers: Arc<Vec<Client>> = Arc::new(
        servers
            .iter()
            .map(|s| Client::new(&s.endpoint, customer_creds.clone()))
            .collect(),
    );
    let vendor = Client::new(&servers[0].endpoint, vendor_creds);
    let fingerprint = tessera_core::license::key_fingerprint(&vendor_id, "Bench");
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let hot_seats = (args.clients as i64 / 2).max(1);
    let plan: Vec<(&'static str, usize, i64)> = match args.scenario {
        Scenario::Spread => vec![("spread", args.licenses, AMPLE_SEATS)],
        Scenario::Hot => vec![("hot", 1, hot_seats)],
        Scenario::Both => vec![("spread", args.licenses, AMPLE_SEATS), ("hot", 1, hot_seats)],
    };
    let mut scenarios = Vec::new();
    for (name, count, seats) in plan {
        let skus: Vec<String> = (0..count).map(|i| format!("bench-{run_id}-{name}-{i}")).collect();
        let arns = create_licenses(&vendor, customer_id.as_str(), &skus, seats, progress).await?;
        scenarios.push(Licenses {
            name,
            seats,
            skus,
            arns,
        });
    }

    // Every raw baseline first, then every HTTP run: on PostgreSQL the baseline's
    // pool and the servers' pools are then not both full at once.
    let mut baselines = Vec::new();
    let counter = Arc::new(
        RawCounter::open(url, args.clients as u32)
            .await
            .with_context(|| format!("cannot open the database at {shown_url} for the baseline"))?,
    );
    for sc in &scenarios {
        let arns = Arc::new(sc.arns.clone());
        let c2 = counter.clone();
        let m = measure(
            1,
            args.seconds,
            &format!("{} raw baseline", sc.name),
            progress,
            &[],
            vec![(); args.clients],
            move |(), c, n| {
                let (counter, arns) = (c2.clone(), arns.clone());
                async move {
                    let arn = &arns[pick(c, n, arns.len())];
                    let outcome = async {
                        if !counter.take(arn, ENTITLEMENT).await.map_err(|e| e.to_string())? {
                            return Ok(false);
                        }
                        match counter.give(arn, ENTITLEMENT).await {
                            Ok(true) => Ok(true),
                            Ok(false) => Err("nothing to give back".to_owned()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    .await;
                    ((), outcome)
                }
            },
        )
        .await;
        baselines.push(m);
    }
    counter.close().await;
    drop(counter);

    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let mut results = Vec::new();
    for (sc, base) in scenarios.iter().zip(baselines) {
        let skus = Arc::new(sc.skus.clone());
        let fp = fingerprint.clone();
        // Each client has its own keep-alive connection to its replica.
        let connections = (0..args.clients)
            .map(|c| wire::Connection::new(&servers[c % servers.len()].endpoint, &customer_creds))
            .collect::<Result<Vec<_>, _>>()?;
        // On the hot license, the store's own count is watched while the clients race.
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler =
            (sc.arns.len() == 1).then(|| sample_usage(customers[0].clone(), sc.arns[0].clone(), stop_sampling.clone()));
        let http = measure(
            args.replicas,
            args.seconds,
            &format!("{} over HTTP", sc.name),
            progress,
            &pids,
            connections,
            move |mut conn, c, n| {
                let (skus, fp) = (skus.clone(), fp.clone());
                async move {
                    let sku = &skus[pick(c, n, skus.len())];
                    let outcome = checkout_and_check_in(&mut conn, sku, &fp).await;
                    (conn, outcome)
                }
            },
        )
        .await;
        stop_sampling.store(true, Ordering::SeqCst);
        let sampled = match sampler {
            Some(task) => Some(task.await.context("the usage sampler failed")??),
            None => None,
        };
        let consumed_after = consumed_total(&customers[0], &sc.arns, progress).await?;
        let base_rate = base.total.rate(base.elapsed);
        let http_rate = http.total.rate(http.elapsed);
        let replicas: Vec<Value> = http
            .groups
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = t.summary(http.elapsed);
                v["replica"] = json!(i + 1);
                v["endpoint"] = json!(servers[i].endpoint);
                v["clients"] = json!((0..args.clients).filter(|c| c % args.replicas == i).count());
                v["peak_rss_mb"] = json!(http.peak_rss[i].map(mb));
                // This replica's share of the window's checkouts, by its clients' share of all.
                let all = (http.total.ok + http.total.refused).max(1) as f64;
                let mine = ((t.ok + t.refused) as f64 / all * http.window_checkouts as f64) as u64;
                v["server_cpu_us"] = json!(per_checkout(http.cpu.servers[i], mine));
                v
            })
            .collect();
        let total_rss: Option<u64> = http.peak_rss.iter().copied().sum();
        let mut http_doc = http.total.summary(http.elapsed);
        http_doc["peak_rss_mb"] = json!(total_rss.map(mb));
        http_doc["cpu"] = cpu_doc(&http);
        http_doc["server_cpu_us"] = http_doc["cpu"]["server_us_per_checkout"].clone();
        http_doc["replicas"] = Value::Array(replicas);
        let base_doc = base.total.summary(base.elapsed);
        results.push(json!({
            "scenario": sc.name,
            "licenses": sc.arns.len(),
            "seats_per_license": sc.seats,
            "baseline": base_doc,
            "http": http_doc,
            "ratio_to_baseline": if base_rate > 0.0 { round(http_rate / base_rate, 2) } else { 0.0 },
            "consumed_after": consumed_after,
            "max_consumed_sampled": sampled.map(|(max, _)| max),
            "usage_samples": sampled.map(|(_, n)| n),
            "limit_exact": sampled.is_none_or(|(max, _)| max <= sc.seats as u64)
                && consumed_after == 0,
        }));
    }
    drop(servers);
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    Ok(json!({
        "clients": args.clients,
        "licenses": args.licenses,
        "seconds": args.seconds,
        "replicas": args.replicas,
        "backend": backend,
        "scenarios": results,
    }))
}

#[derive(serde::Deserialize)]
struct CheckoutAnswer {
    #[serde(rename = "LicenseConsumptionToken")]
    token: Option<String>,
}

/// One loop over HTTP: a signed CheckoutLicense and, if granted, a CheckInLicense.
async fn checkout_and_check_in(conn: &mut wire::Connection, sku: &str, fingerprint: &str) -> Result<bool, String> {
    let body = json!({
        "ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fingerprint,
        "Entitlements": [{"Name": ENTITLEMENT, "Value": "1", "Unit": "Count"}],
        "ClientToken": uuid::Uuid::new_v4().to_string(),
    })
    .to_string();
    let answer = conn
        .call("AWSLicenseManager.CheckoutLicense", body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if answer.status >= 300 {
        let e = ClientError::from_answer(answer.status, answer.body);
        return match e.kind() {
            Some("NoEntitlementsAllowedException") => Ok(false),
            _ => Err(e.to_string()),
        };
    }
    let token = serde_json::from_slice::<CheckoutAnswer>(answer.body)
        .ok()
        .and_then(|a| a.token)
        .ok_or_else(|| "CheckoutLicense answered without a LicenseConsumptionToken".to_owned())?;
    let body = json!({"LicenseConsumptionToken": token}).to_string();
    let answer = conn
        .call("AWSLicenseManager.CheckInLicense", body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if answer.status >= 300 {
        return Err(ClientError::from_answer(answer.status, answer.body).to_string());
    }
    Ok(true)
}

/// Where the CPU went during an HTTP measurement, per checkout.
fn cpu_doc(m: &Measured) -> Value {
    let n = m.window_checkouts;
    let servers: Option<f64> = m.cpu.servers.iter().copied().sum();
    let machine = per_checkout(m.cpu.machine_busy, n);
    let busy = match (m.cpu.machine_busy, m.cpu.machine_all) {
        (Some(b), Some(a)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    json!({
        "server_us_per_checkout": per_checkout(servers, n),
        "client_us_per_checkout": per_checkout(m.cpu.clients, n),
        "machine_us_per_checkout": machine,
        "machine_busy_pct": busy.map(|b| round(b * 100.0, 1)),
        "cores": cores,
        // The rate if every core were busy at this cost per checkout.
        "at_full_cpu_per_sec": machine.filter(|u| *u > 0.0).map(|u| (cores as f64 * 1e6 / u).round() as u64),
    })
}

/// Which license client `c` uses on its `n`th loop.
fn pick(c: usize, n: u64, len: usize) -> usize {
    (c.wrapping_mul(7919).wrapping_add(n as usize)) % len
}

/// Creates one license per SKU over the API, 16 at a time; returns their ARNs in SKU order.
async fn create_licenses(
    vendor: &Client,
    beneficiary: &str,
    skus: &[String],
    seats: i64,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<String>> {
    const WORKERS: usize = 16;
    let begin = tessera_core::timefmt::format(OffsetDateTime::now_utc() - time::Duration::days(1));
    progress.set_length(skus.len() as u64);
    progress.set_position(0);
    progress.set_message(format!("creating {} licenses", skus.len()));
    let skus = Arc::new(skus.to_vec());
    let mut tasks = Vec::new();
    for w in 0..WORKERS.min(skus.len()) {
        let (vendor, skus, begin, beneficiary, progress) = (
            vendor.clone(),
            skus.clone(),
            begin.clone(),
            beneficiary.to_owned(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in (w..skus.len()).step_by(WORKERS) {
                let sku = &skus[i];
                let r = vendor
                    .call(
                        "CreateLicense",
                        &json!({
                            "LicenseName": sku, "ProductName": "Bench", "ProductSKU": sku,
                            "Issuer": {"Name": "Bench"}, "HomeRegion": "us-east-1",
                            "Validity": {"Begin": begin},
                            "Entitlements": [{"Name": ENTITLEMENT, "MaxCount": seats, "Unit": "Count", "AllowCheckIn": true}],
                            "Beneficiary": beneficiary,
                            "ConsumptionConfiguration": {"ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}},
                            "ClientToken": sku,
                        }),
                    )
                    .await
                    .with_context(|| format!("CreateLicense {sku}"))?;
                let arn = r["LicenseArn"]
                    .as_str()
                    .with_context(|| format!("CreateLicense {sku} answered without a LicenseArn"))?;
                made.push((i, arn.to_owned()));
                progress.inc(1);
            }
            anyhow::Ok(made)
        }));
    }
    let mut all = Vec::with_capacity(skus.len());
    for t in tasks {
        all.extend(t.await.context("a license-creating task failed")??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, arn)| arn).collect())
}

/// The sum of the consumed counts of `arns`, read with GetLicenseUsage.
async fn consumed_total(client: &Client, arns: &[String], progress: &ProgressBar) -> anyhow::Result<u64> {
    const WORKERS: usize = 16;
    progress.set_message("reading usage");
    let arns = Arc::new(arns.to_vec());
    let mut tasks = Vec::new();
    for w in 0..WORKERS.min(arns.len()) {
        let (client, arns) = (client.clone(), arns.clone());
        tasks.push(tokio::spawn(async move {
            let mut sum = 0u64;
            for arn in arns.iter().skip(w).step_by(WORKERS) {
                sum += consumed(&client, arn).await?;
            }
            anyhow::Ok(sum)
        }));
    }
    let mut sum = 0;
    for t in tasks {
        sum += t.await.context("a usage-reading task failed")??;
    }
    Ok(sum)
}

/// The units consumed of every entitlement of `arn`, read with GetLicenseUsage.
async fn consumed(client: &Client, arn: &str) -> anyhow::Result<u64> {
    let r = client
        .call("GetLicenseUsage", &json!({"LicenseArn": arn}))
        .await
        .with_context(|| format!("GetLicenseUsage {arn}"))?;
    let mut sum = 0;
    for u in r["LicenseUsage"]["EntitlementUsages"].as_array().into_iter().flatten() {
        let v = u["ConsumedValue"].as_str().unwrap_or("0");
        sum += v
            .parse::<u64>()
            .with_context(|| format!("GetLicenseUsage {arn}: ConsumedValue '{v}'"))?;
    }
    Ok(sum)
}

/// Polls GetLicenseUsage on `arn` until `stop`: the most units the store
/// reported consumed at once, and how many samples were taken.
fn sample_usage(
    client: Client,
    arn: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<(u64, u64)>> {
    tokio::spawn(async move {
        let (mut max, mut samples) = (0u64, 0u64);
        while !stop.load(Ordering::SeqCst) {
            max = max.max(consumed(&client, &arn).await?);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok((max, samples))
    })
}

struct Tally {
    ok: u64,
    refused: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            refused: 0,
            errors: 0,
            first_error: None,
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        let _ = self.hist.add(&other.hist);
    }

    /// Checkouts (granted or refused) per second.
    fn rate(&self, elapsed: f64) -> f64 {
        if elapsed > 0.0 {
            (self.ok + self.refused) as f64 / elapsed
        } else {
            0.0
        }
    }

    fn summary(&self, elapsed: f64) -> Value {
        let q = |p: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                round(self.hist.value_at_quantile(p) as f64 / 1000.0, 3)
            }
        };
        json!({
            "checkouts_per_sec": round(self.rate(elapsed), 1),
            "granted": self.ok,
            "refused": self.refused,
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
        })
    }
}

struct Measured {
    /// Seconds from the start until the last client finished its last loop.
    elapsed: f64,
    total: Tally,
    /// One tally per group of clients (client `c` is in group `c % groups`).
    groups: Vec<Tally>,
    /// Peak resident set in bytes of each process in `pids`, if it could be read.
    peak_rss: Vec<Option<u64>>,
    /// CPU seconds used during the measurement window, where /proc has them.
    cpu: CpuUse,
    /// Checkouts (loops) completed in that window.
    window_checkouts: u64,
}

/// CPU seconds used over a measurement: by each process in `pids`, by this
/// process (the clients), and by the whole machine (busy and in all, over
/// every core, including the database's and the kernel's).
#[derive(Default)]
struct CpuUse {
    servers: Vec<Option<f64>>,
    clients: Option<f64>,
    machine_busy: Option<f64>,
    machine_all: Option<f64>,
}

/// /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ticks (user + system, all threads) of process `pid`.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, all) CPU ticks of the whole machine since boot.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((all - idle, all))
}

struct CpuMark {
    servers: Vec<Option<u64>>,
    own: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl CpuMark {
    fn now(pids: &[u32]) -> Self {
        Self {
            servers: pids.iter().map(|p| process_ticks(*p)).collect(),
            own: process_ticks(std::process::id()),
            machine: machine_ticks(),
        }
    }

    fn since(&self, before: &CpuMark) -> CpuUse {
        let secs = |a: Option<u64>, b: Option<u64>| Some(a?.checked_sub(b?)? as f64 / TICKS_PER_SEC);
        CpuUse {
            servers: self
                .servers
                .iter()
                .zip(&before.servers)
                .map(|(a, b)| secs(*a, *b))
                .collect(),
            clients: secs(self.own, before.own),
            machine_busy: secs(self.machine.map(|m| m.0), before.machine.map(|m| m.0)),
            machine_all: secs(self.machine.map(|m| m.1), before.machine.map(|m| m.1)),
        }
    }
}

/// Microseconds of CPU per checkout, from CPU seconds and a count of checkouts.
fn per_checkout(secs: Option<f64>, checkouts: u64) -> Option<f64> {
    (checkouts > 0).then_some(round(secs? * 1e6 / checkouts as f64, 1))
}

/// Runs one client loop of `op` per element of `states` for `seconds`,
/// sampling the resident memory of `pids` meanwhile. `op(state, client, n)` does one loop with the client's own
/// state (`states[client]`, such as its connection) and hands the state back
/// with Ok(true) granted, Ok(false) refused. A loop under way when time is up
/// runs to its end and counts.
async fn measure<S, F, Fut>(
    groups: usize,
    seconds: u64,
    label: &str,
    progress: &ProgressBar,
    pids: &[u32],
    states: Vec<S>,
    op: F,
) -> Measured
where
    S: Send + 'static,
    F: Fn(S, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (S, Result<bool, String>)> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut peak_rss: Vec<Option<u64>> = pids.iter().map(|p| rss_bytes(*p)).collect();
    let cpu_before = CpuMark::now(pids);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(states.len());
    for (c, state) in states.into_iter().enumerate() {
        let (stop, done, op) = (stop.clone(), done.clone(), op.clone());
        tasks.push((
            c % groups,
            tokio::spawn(async move {
                let mut t = Tally::new();
                let mut n = 0u64;
                let mut state = state;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let (back, outcome) = op(state, c, n).await;
                    state = back;
                    match outcome {
                        Ok(true) => t.ok += 1,
                        Ok(false) => t.refused += 1,
                        Err(e) => {
                            t.errors += 1;
                            if t.first_error.is_none() {
                                t.first_error = Some(e);
                            }
                        }
                    }
                    let us = (start.elapsed().as_micros() as u64).clamp(1, 60_000_000);
                    let _ = t.hist.record(us);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                t
            }),
        ));
    }
    progress.set_length(seconds);
    progress.set_position(0);
    let deadline = Duration::from_secs(seconds);
    while started.elapsed() < deadline {
        tokio::time::sleep(RSS_EVERY.min(deadline.saturating_sub(started.elapsed()))).await;
        for (peak, pid) in peak_rss.iter_mut().zip(pids) {
            *peak = (*peak).max(rss_bytes(*pid));
        }
        progress.set_position(started.elapsed().as_secs().min(seconds));
        progress.set_message(format!("{label}: {} checkouts", done.load(Ordering::Relaxed)));
    }
    // CPU is counted over the fixed window; loops finishing after it are few and short.
    let cpu = CpuMark::now(pids).since(&cpu_before);
    let window_checkouts = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::new();
    let mut by_group: Vec<Tally> = (0..groups).map(|_| Tally::new()).collect();
    for (g, task) in tasks {
        let t = match task.await {
            Ok(t) => t,
            Err(e) => {
                let mut t = Tally::new();
                t.errors = 1;
                t.first_error = Some(format!("a client task failed: {e}"));
                t
            }
        };
        total.add(&t);
        by_group[g].add(&t);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (peak, pid) in peak_rss.iter_mut().zip(pids) {
        *peak = (*peak).max(rss_bytes(*pid));
    }
    Measured {
        elapsed,
        total,
        groups: by_group,
        peak_rss,
        cpu,
        window_checkouts,
    }
}

/// The resident set of process `pid` in bytes (VmRSS), where /proc has it.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    round(bytes as f64 / (1024.0 * 1024.0), 1)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// A `tessera serve` process; killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
}

impl Server {
    /// Starts `tessera serve` on a free local port and waits until it answers.
    async fn start(index: usize, url: &str, work: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the tessera executable")?;
        let log_path = work.join(format!("server-{}.log", index + 1));
        let mut last_error = None;
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("cannot find a free local port")?
                .port();
            let listen = format!("127.0.0.1:{port}");
            let log =
                std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = Command::new(&exe)
                .arg("serve")
                .arg("--listen")
                .arg(&listen)
                .arg("--database-url")
                .arg(url)
                .arg("--data-dir")
                .arg(work)
                // Replicas on SQLite share the file on purpose.
                .arg("--shared-sqlite")
                .env_remove("TESSERA_TEST_CLOCK")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {} serve", exe.display()))?;
            let mut server = Server {
                child,
                endpoint: format!("http://{listen}"),
            };
            match server.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    last_error = Some(anyhow::anyhow!("{e}; its log ends with:\n{}", tail.join("\n")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the server did not start")))
            .with_context(|| format!("server {} did not start", index + 1))
    }

    /// Polls the JWKS endpoint until it answers, the process exits, or time is up.
    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let probe = format!("{}/.well-known/jwks.json", self.endpoint);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited ({status})");
            }
            if let Ok(r) = http.get(&probe).timeout(Duration::from_secs(2)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                anyhow::bail!("no answer from {} within {} s", self.endpoint, limit.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_table(doc: &Value) {
    let replicas = doc["replicas"].as_u64().unwrap_or(1);
    let mut t = crate::out::table(&[
        "scenario",
        "run",
        "checkouts/s",
        "granted",
        "refused",
        "errors",
        "p50 ms",
        "p99 ms",
        "server CPU µs",
        "peak RSS MB",
        "vs raw baseline",
    ]);
    let num = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    let row = |scenario: &str, run: &str, r: &Value, ratio: String| {
        vec![
            scenario.to_owned(),
            run.to_owned(),
            num(&r["checkouts_per_sec"]),
            num(&r["granted"]),
            num(&r["refused"]),
            num(&r["errors"]),
            num(&r["p50_ms"]),
            num(&r["p99_ms"]),
            num(&r["server_cpu_us"]),
            num(&r["peak_rss_mb"]),
            ratio,
        ]
    };
    let mut notes = Vec::new();
    for s in doc["scenarios"].as_array().into_iter().flatten() {
        let name = match s["scenario"].as_str() {
            Some("hot") => format!("hot: 1 license, {} seats", s["seats_per_license"]),
            _ => format!("spread: {} licenses", s["licenses"]),
        };
        t.add_row(row(&name, "raw SQL baseline", &s["baseline"], "-".into()));
        if replicas > 1 {
            for r in s["http"]["replicas"].as_array().into_iter().flatten() {
                let run = format!("HTTP replica {} ({} clients)", r["replica"], r["clients"]);
                t.add_row(row(&name, &run, r, "-".into()));
            }
        }
        let run = if replicas > 1 {
            format!("HTTP total ({replicas} replicas)")
        } else {
            "HTTP + SigV4".to_owned()
        };
        let ratio = s["ratio_to_baseline"]
            .as_f64()
            .map(|x| format!("{x}x"))
            .unwrap_or_else(|| "-".into());
        t.add_row(row(&name, &run, &s["http"], ratio));
        for part in [&s["baseline"], &s["http"]] {
            if let Some(e) = part["first_error"].as_str() {
                notes.push(format!("{}: first error: {e}", s["scenario"].as_str().unwrap_or("")));
            }
        }
        let cpu = &s["http"]["cpu"];
        if cpu["machine_us_per_checkout"].is_number() {
            notes.push(format!(
                "{}: CPU per checkout: servers {} µs, clients {} µs, whole machine {} µs ({}% of {} cores busy); \
                 at full CPU that is about {} checkouts/s",
                s["scenario"].as_str().unwrap_or(""),
                num(&cpu["server_us_per_checkout"]),
                num(&cpu["client_us_per_checkout"]),
                num(&cpu["machine_us_per_checkout"]),
                num(&cpu["machine_busy_pct"]),
                num(&cpu["cores"]),
                num(&cpu["at_full_cpu_per_sec"]),
            ));
        }
        if s["scenario"] == "hot" {
            notes.push(format!(
                "hot: at most {} of {} seats in use in {} GetLicenseUsage samples during the HTTP run; \
                 {} consumed after the run; limit exact: {}",
                s["max_consumed_sampled"],
                s["seats_per_license"],
                s["usage_samples"],
                s["consumed_after"],
                if s["limit_exact"] == true { "yes" } else { "NO" }
            ));
        } else if s["consumed_after"] != 0 {
            notes.push(format!(
                "{}: {} still consumed after the run",
                name, s["consumed_after"]
            ));
        }
    }
    println!("{t}");
    println!(
        "{} clients on {} ({} server process{}), {} s per run. A checkout is a loop: HTTP = signed CheckoutLicense \
         (PROVISIONAL, 1 seat) + CheckInLicense if granted; raw baseline = one conditional UPDATE + one UPDATE back, \
         each its own durable transaction. Latency is per loop.",
        doc["clients"],
        doc["backend"].as_str().unwrap_or("?"),
        replicas,
        if replicas == 1 { "" } else { "es" },
        doc["seconds"],
    );
    for n in notes {
        println!("{n}");
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("tessera-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
