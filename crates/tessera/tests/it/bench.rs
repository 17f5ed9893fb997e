//! `tessera bench checkout` end to end: the binary starts its own server
//! processes and prints one JSON document.
//!
//! On PostgreSQL (`TESSERA_TEST_DATABASE=postgres`) the benchmark is pointed at
//! the server named by `TESSERA_TEST_POSTGRES_URL` and makes (and drops) a
//! database of its own.

use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "bench",
        "checkout",
        "--seconds",
        "1",
        "--licenses",
        "5",
        "--clients",
        "4",
        "--output",
        "json",
    ])
    .args(extra);
    if std::env::var("TESSERA_TEST_DATABASE").as_deref() == Ok("postgres") {
        let url = std::env::var("TESSERA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        cmd.args(["--database-url", &url]);
    }
    let out = cmd.output().expect("run tessera bench");
    assert!(
        out.status.success(),
        "tessera bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn check(doc: &Value, replicas: u64, scenarios: &[&str]) {
    assert_eq!(doc["replicas"], replicas, "{doc}");
    let got: Vec<&str> = doc["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| s["scenario"].as_str().expect("scenario name"))
        .collect();
    assert_eq!(got, scenarios, "{doc}");
    for s in doc["scenarios"].as_array().into_iter().flatten() {
        for part in ["baseline", "http"] {
            let r = &s[part];
            assert!(r["checkouts_per_sec"].as_f64().expect("rate") > 0.0, "{part}: {s}");
            assert!(r["granted"].as_u64().expect("granted") > 0, "{part}: {s}");
            assert_eq!(r["errors"], 0, "{part}: {s}");
        }
        assert!(s["ratio_to_baseline"].as_f64().expect("ratio") > 0.0, "{s}");
        assert_eq!(s["consumed_after"], 0, "{s}");
        assert_eq!(s["limit_exact"], true, "{s}");
        let seats = s["seats_per_license"].as_u64().expect("seats");
        if s["scenario"] == "hot" {
            // The store's own count was read during the race, and the race filled the pool.
            assert!(s["usage_samples"].as_u64().expect("usage samples") > 0, "{s}");
            let most = s["max_consumed_sampled"].as_u64().expect("sampled usage");
            assert!(most > 0 && most <= seats, "{s}");
        }
        if cfg!(target_os = "linux") {
            // CPU per checkout, read from /proc over the measurement.
            let cpu = &s["http"]["cpu"];
            for k in [
                "server_us_per_checkout",
                "client_us_per_checkout",
                "machine_us_per_checkout",
            ] {
                assert!(cpu[k].as_f64().unwrap_or(0.0) > 0.0, "{k}: {cpu}");
            }
            let busy = cpu["machine_busy_pct"].as_f64().expect("busy %");
            assert!(busy > 0.0 && busy <= 100.0, "{cpu}");
            assert!(cpu["at_full_cpu_per_sec"].as_u64().unwrap_or(0) > 0, "{cpu}");
        }
        let per_replica = s["http"]["replicas"].as_array().expect("per-replica results");
        assert_eq!(per_replica.len() as u64, replicas, "{s}");
        let sum: u64 = per_replica.iter().map(|r| r["granted"].as_u64().unwrap_or(0)).sum();
        assert_eq!(sum, s["http"]["granted"].as_u64().unwrap_or(0), "{s}");
        for r in per_replica {
            assert!(r["checkouts_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
            if cfg!(target_os = "linux") {
                assert!(r["peak_rss_mb"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
            }
        }
    }
    let hot = &doc["scenarios"][scenarios.len() - 1];
    if scenarios.last() == Some(&"hot") {
        // 4 clients, a limit of 2 seats: some checkouts are refused, none beyond the limit.
        assert_eq!(hot["seats_per_license"], 2, "{hot}");
        assert!(hot["http"]["refused"].as_u64().unwrap_or(0) > 0, "{hot}");
    }
}

#[test]
fn bench_checkout_reports_baseline_and_http() {
    let doc = bench(&[]);
    check(&doc, 1, &["spread", "hot"]);
}

#[test]
fn bench_checkout_spreads_clients_over_replicas() {
    let doc = bench(&["--replicas", "2", "--scenario", "hot"]);
    check(&doc, 2, &["hot"]);
}
