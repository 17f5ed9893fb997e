//! `tessera bench checkout`: throughput and latency of PROVISIONAL checkout +
//! check-in through SigV4-signed HTTP, against a baseline of the same calls
//! made directly on the store in the same run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use comfy_table::Table;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tessera_client::{Client, Credentials};
use tessera_core::consumption::EntitlementData;
use tessera_core::license::{CheckoutType, EntitlementUnit};
use tessera_core::AccountId;
use tessera_server::{AppState, ServerClock};
use tessera_store::{CheckoutCommand, Store};
use time::OffsetDateTime;

use crate::Output;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// PROVISIONAL checkout followed by check-in, many licenses and one hot license.
    Checkout(CheckoutBench),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Clients spread over --licenses licenses with ample seats.
    Spread,
    /// Every client on one license with a seat limit of half the clients.
    Hot,
    Both,
}

#[derive(Args)]
pub struct CheckoutBench {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Licenses in the spread scenario.
    #[arg(long, default_value_t = 1000)]
    licenses: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, value_enum, default_value_t = Scenario::Both)]
    scenario: Scenario,
    /// Data directory for the benchmark's server (default: a fresh temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

struct Fixture {
    store: Arc<dyn Store>,
    endpoint: String,
    customer: AccountId,
    customer_creds: Credentials,
    vendor_creds: Credentials,
    vendor_fp: String,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
    errors: u64,
    hist: Option<Histogram<u64>>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Opens a store in `data_dir`, makes a vendor and a customer, and serves on a free port.
async fn setup(data_dir: &std::path::Path) -> anyhow::Result<Fixture> {
    let store = tessera_store::open(&format!("sqlite://{}", data_dir.join("tessera.db").display())).await?;
    let now = OffsetDateTime::now_utc();
    let (vendor, vkey) = store.create_account("bench-vendor", now).await?;
    let (customer, ckey) = store.create_account("bench-customer", now).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(store.clone(), Arc::new(ServerClock::default()), false);
    tokio::spawn(tessera_server::serve(listener, state, std::future::pending()));
    Ok(Fixture {
        store,
        endpoint: format!("http://{addr}"),
        customer: customer.id,
        customer_creds: Credentials {
            access_key_id: ckey.access_key_id,
            secret_access_key: ckey.secret,
        },
        vendor_creds: Credentials {
            access_key_id: vkey.access_key_id,
            secret_access_key: vkey.secret,
        },
        vendor_fp: tessera_core::license::key_fingerprint(&vendor.id, "Bench"),
    })
}

async fn create_licenses(
    f: &Fixture,
    vendor: &Client,
    prefix: &str,
    count: usize,
    seats: i64,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<String>> {
    let begin = tessera_core::timefmt::format(OffsetDateTime::now_utc() - time::Duration::days(1));
    let mut skus = Vec::with_capacity(count);
    progress.set_length(count as u64);
    progress.set_position(0);
    progress.set_message(format!("creating {count} licenses"));
    for i in 0..count {
        let sku = format!("{prefix}-{i}");
        vendor
            .call(
                "CreateLicense",
                &json!({
                    "LicenseName": sku, "ProductName": "Bench", "ProductSKU": sku,
                    "Issuer": {"Name": "Bench"}, "HomeRegion": "us-east-1",
                    "Validity": {"Begin": begin},
                    "Entitlements": [{"Name": "Seats", "MaxCount": seats, "Unit": "Count", "AllowCheckIn": true}],
                    "Beneficiary": f.customer.as_str(),
                    "ConsumptionConfiguration": {"ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": 60}},
                    "ClientToken": format!("bench-{sku}"),
                }),
            )
            .await?;
        skus.push(sku);
        progress.inc(1);
    }
    Ok(skus)
}

/// Runs `clients` loops of checkout + check-in for `seconds`; `op` does one pair.
async fn measure<F, Fut>(clients: usize, seconds: u64, label: &str, progress: &ProgressBar, op: F) -> Tally
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool, String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, done, op) = (stop.clone(), done.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally {
                hist: Some(new_hist()),
                ..Default::default()
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                match op(c, n).await {
                    Ok(true) => t.ok += 1,
                    Ok(false) => t.refused += 1,
                    Err(_) => t.errors += 1,
                }
                let us = start.elapsed().as_micros().max(1) as u64;
                if let Some(h) = t.hist.as_mut() {
                    let _ = h.record(us.min(60_000_000));
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        }));
    }
    progress.set_length(seconds);
    progress.set_position(0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        progress.set_position(started.elapsed().as_secs().min(seconds));
        progress.set_message(format!("{label}: {} checkouts", done.load(Ordering::Relaxed)));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally {
        hist: Some(new_hist()),
        ..Default::default()
    };
    for t in tasks {
        if let Ok(t) = t.await {
            total.ok += t.ok;
            total.refused += t.refused;
            total.errors += t.errors;
            if let (Some(a), Some(b)) = (total.hist.as_mut(), t.hist.as_ref()) {
                let _ = a.add(b);
            }
        }
    }
    total
}

fn summary(name: &str, t: &Tally, seconds: u64, baseline: Option<f64>) -> Value {
    let h = t.hist.as_ref();
    let q = |p: f64| h.map(|h| h.value_at_quantile(p) as f64 / 1000.0).unwrap_or(0.0);
    let rate = (t.ok + t.refused) as f64 / seconds as f64;
    json!({
        "scenario": name,
        "checkouts_per_sec": (rate * 10.0).round() / 10.0,
        "granted": t.ok,
        "refused": t.refused,
        "errors": t.errors,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "ratio_to_baseline": baseline.map(|b| if b > 0.0 { ((rate / b) * 100.0).round() / 100.0 } else { 0.0 }),
    })
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Checkout(args) = cmd;
    anyhow::ensure!(
        args.clients > 0 && args.seconds > 0,
        "--clients and --seconds must be positive"
    );
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let progress = if args.output == Output::Json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let f = setup(&dir).await?;
    let vendor = Client::new(&f.endpoint, f.vendor_creds.clone());
    let customer = Client::new(&f.endpoint, f.customer_creds.clone());
    let mut results = Vec::new();

    let scenarios: Vec<(&str, usize, i64)> = match args.scenario {
        Scenario::Spread => vec![("spread", args.licenses, 1_000_000)],
        Scenario::Hot => vec![("hot", 1, (args.clients as i64 / 2).max(1))],
        Scenario::Both => vec![
            ("spread", args.licenses, 1_000_000),
            ("hot", 1, (args.clients as i64 / 2).max(1)),
        ],
    };
    for (name, count, seats) in scenarios {
        let skus = Arc::new(create_licenses(&f, &vendor, name, count, seats, &progress).await?);

        // Baseline: the same checkout + check-in, directly on the store.
        let store = f.store.clone();
        let (cust, fp, s2) = (f.customer.clone(), f.vendor_fp.clone(), skus.clone());
        let base = measure(
            args.clients,
            args.seconds,
            &format!("{name} baseline (store)"),
            &progress,
            move |c, n| {
                let (store, cust, fp, skus) = (store.clone(), cust.clone(), fp.clone(), s2.clone());
                async move {
                    let sku = skus[(c * 7919 + n as usize) % skus.len()].clone();
                    let cmd = CheckoutCommand {
                        caller: cust.clone(),
                        product_sku: sku,
                        key_fingerprint: fp,
                        checkout_type: CheckoutType::Provisional,
                        entitlements: vec![EntitlementData {
                            name: "Seats".into(),
                            value: Some("1".into()),
                            unit: EntitlementUnit::Count,
                        }],
                        beneficiary: None,
                        node_id: None,
                        client_token: uuid::Uuid::new_v4().to_string(),
                        request_hash: String::new(),
                        token: uuid::Uuid::new_v4().simple().to_string(),
                        only_license: None,
                    };
                    let now = OffsetDateTime::now_utc();
                    match store.checkout(cmd, now).await {
                        Ok(c) => store
                            .check_in(&cust, &c.token, None, now)
                            .await
                            .map(|_| true)
                            .map_err(|e| e.to_string()),
                        Err(tessera_store::StoreError::NoEntitlements(_)) => Ok(false),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        let base_rate = (base.ok + base.refused) as f64 / args.seconds as f64;

        let (client, fp, s3) = (customer.clone(), f.vendor_fp.clone(), skus.clone());
        let http = measure(
            args.clients,
            args.seconds,
            &format!("{name} over HTTP"),
            &progress,
            move |c, n| {
                let (client, fp, skus) = (client.clone(), fp.clone(), s3.clone());
                async move {
                    let sku = &skus[(c * 7919 + n as usize) % skus.len()];
                    let r = client
                        .call(
                            "CheckoutLicense",
                            &json!({
                                "ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp,
                                "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}],
                                "ClientToken": uuid::Uuid::new_v4().to_string(),
                            }),
                        )
                        .await;
                    match r {
                        Ok(v) => {
                            let token = v["LicenseConsumptionToken"].as_str().unwrap_or_default();
                            client
                                .call("CheckInLicense", &json!({"LicenseConsumptionToken": token}))
                                .await
                                .map(|_| true)
                                .map_err(|e| e.to_string())
                        }
                        Err(e) if e.kind() == Some("NoEntitlementsAllowedException") => Ok(false),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        results.push(summary(
            &format!("{name} baseline (store, no HTTP)"),
            &base,
            args.seconds,
            None,
        ));
        results.push(summary(
            &format!("{name} (HTTP, SigV4)"),
            &http,
            args.seconds,
            Some(base_rate),
        ));
    }
    progress.finish_and_clear();
    let doc = json!({"clients": args.clients, "licenses": args.licenses, "seconds": args.seconds, "results": results});
    match args.output {
        Output::Json => println!("{doc}"),
        Output::Table => {
            let mut t = Table::new();
            t.set_header(vec![
                "scenario",
                "checkouts/s",
                "granted",
                "refused",
                "errors",
                "p50 ms",
                "p99 ms",
                "vs baseline",
            ]);
            for r in &results {
                t.add_row(vec![
                    r["scenario"].as_str().unwrap_or_default().to_owned(),
                    r["checkouts_per_sec"].to_string(),
                    r["granted"].to_string(),
                    r["refused"].to_string(),
                    r["errors"].to_string(),
                    r["p50_ms"].to_string(),
                    r["p99_ms"].to_string(),
                    r["ratio_to_baseline"]
                        .as_f64()
                        .map(|x| format!("{x}x"))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            println!("{t}");
            println!(
                "{} clients, {} s per measurement; each checkout is PROVISIONAL, 1 seat, followed by a check-in.",
                args.clients, args.seconds
            );
        }
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("tessera-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}
