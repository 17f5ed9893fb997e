//! Random sequences of checkouts (alone and in concurrent bursts that share
//! write batches), check-ins, extensions and expiry, with arbitrary values,
//! run against each backend and against a model of a few lines: a draw is
//! granted when it fits the limit (or Overage) and the countable range.
//! Consumption never passes MaxCount without Overage, and the stored counter
//! always equals the sum of the live consumptions.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use time::{Duration, OffsetDateTime};

use tessera_core::consumption::{parse_requests, EntitlementDataInput};
use tessera_core::license::{CheckoutType, LicenseInput};
use tessera_core::{AccountId, LicenseArn, MAX_UNITS};
use tessera_store::{CheckoutCommand, NewLicense, Store, StoreError};

use crate::helpers::{backends, fingerprint, hash_of, now, token};

/// Minutes a PROVISIONAL consumption lives (the licenses' MaxTimeToLiveInMinutes).
const TTL_MINUTES: i64 = 60;

#[derive(Debug, Clone)]
enum Step {
    Checkout(i64),
    /// Checkouts sent at once, so that they share write batches.
    Burst(Vec<i64>),
    CheckIn(usize),
    Extend(usize),
    Advance(i64),
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1..=5i64,
        1 => (MAX_UNITS - 4)..=MAX_UNITS,
        1 => 1..=MAX_UNITS,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => amount().prop_map(Step::Checkout),
        2 => prop::collection::vec(amount(), 2..10).prop_map(Step::Burst),
        3 => any::<prop::sample::Index>().prop_map(|i| Step::CheckIn(i.index(usize::MAX))),
        1 => any::<prop::sample::Index>().prop_map(|i| Step::Extend(i.index(usize::MAX))),
        1 => (0..=90i64).prop_map(Step::Advance),
    ]
}

/// MaxCount (None: unlimited, only with Overage) and Overage.
fn limit() -> impl Strategy<Value = (Option<i64>, bool)> {
    prop_oneof![
        (0..=20i64, any::<bool>()).prop_map(|(m, o)| (Some(m), o)),
        ((MAX_UNITS - 3)..=MAX_UNITS, any::<bool>()).prop_map(|(m, o)| (Some(m), o)),
        Just((None, true)),
    ]
}

/// One consumption as the model sees it.
struct Held {
    token: String,
    amount: i64,
    expires: OffsetDateTime,
    ended: bool,
}

impl Held {
    fn live(&self, t: OffsetDateTime) -> bool {
        !self.ended && self.expires > t
    }
}

struct Case {
    store: Arc<dyn Store>,
    name: &'static str,
    customer: AccountId,
    vendor: AccountId,
    sku: String,
    arn: String,
    max: Option<i64>,
    overage: bool,
    t: OffsetDateTime,
    held: Vec<Held>,
}

impl Case {
    async fn new(store: Arc<dyn Store>, name: &'static str, max: Option<i64>, overage: bool) -> Case {
        let t = now();
        let (vendor, _) = store.create_account("vendor", t).await.expect("vendor");
        let (customer, _) = store.create_account("customer", t).await.expect("customer");
        let sku = format!("model-{}", token());
        let mut seats = serde_json::json!({"Name": "Seats", "Overage": overage, "Unit": "Count", "AllowCheckIn": true});
        if let Some(m) = max {
            seats["MaxCount"] = m.into();
        }
        let body = serde_json::json!({
            "LicenseName": "Model", "ProductName": "Model", "ProductSKU": sku, "Issuer": {"Name": "Self"},
            "HomeRegion": "us-east-1",
            "Validity": {"Begin": "2020-01-01T00:00:00Z", "End": "2099-01-01T00:00:00Z"},
            "Entitlements": [seats],
            "Beneficiary": customer.id.as_str(),
            "ConsumptionConfiguration": {"ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": TTL_MINUTES}},
        });
        let input: LicenseInput = serde_json::from_value(body.clone()).expect("license input");
        let new = NewLicense {
            arn: LicenseArn::new(&vendor.id, rand_bytes()),
            body: input.validate().expect("a valid license"),
            tags: Vec::new(),
            client_token: token(),
            request_hash: hash_of(&body),
        };
        let arn = store.create_license(new, t).await.expect("license").license_arn;
        Case {
            store,
            name,
            customer: customer.id,
            vendor: vendor.id,
            sku,
            arn,
            max,
            overage,
            t,
            held: Vec::new(),
        }
    }

    fn command(&self, amount: i64) -> CheckoutCommand {
        let ents = serde_json::json!([{"Name": "Seats", "Value": amount.to_string(), "Unit": "Count"}]);
        let raw: Vec<EntitlementDataInput> = serde_json::from_value(ents.clone()).expect("entitlements");
        CheckoutCommand {
            caller: self.customer.clone(),
            product_sku: self.sku.clone(),
            key_fingerprint: fingerprint(&self.vendor),
            checkout_type: CheckoutType::Provisional,
            entitlements: parse_requests(&raw).expect("a countable value"),
            beneficiary: None,
            node_id: None,
            client_token: token(),
            request_hash: hash_of(&ents),
            token: token(),
            only_license: None,
            key: None,
        }
    }

    fn in_use(&self) -> i128 {
        self.held
            .iter()
            .filter(|h| h.live(self.t))
            .map(|h| h.amount as i128)
            .sum()
    }

    /// Whether the model grants `amount` now.
    fn fits(&self, amount: i64) -> bool {
        let after = self.in_use() + amount as i128;
        let within_limit = self.overage || self.max.is_none_or(|m| after <= m as i128);
        within_limit && after <= MAX_UNITS as i128
    }

    fn record(&mut self, token: String, amount: i64) {
        self.held.push(Held {
            token,
            amount,
            expires: self.t + Duration::minutes(TTL_MINUTES),
            ended: false,
        });
    }

    async fn stored(&self) -> i64 {
        let usage = self.store.license_usage(&self.arn, self.t).await.expect("usage");
        usage
            .iter()
            .find(|u| u.name == "Seats")
            .expect("Seats counter")
            .consumed
    }

    async fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let name = self.name;
        match step {
            Step::Checkout(amount) => {
                let want = self.fits(*amount);
                match self.store.checkout(self.command(*amount), self.t).await {
                    Ok(c) => {
                        prop_assert!(want, "{name}: {amount} was granted with {} in use", self.in_use());
                        self.record(c.token, *amount);
                    }
                    Err(StoreError::NoEntitlements(m)) => {
                        prop_assert!(!want, "{name}: {amount} was refused with {} in use: {m}", self.in_use())
                    }
                    Err(e) => prop_assert!(false, "{name}: checkout of {amount} failed: {e}"),
                }
            }
            Step::Burst(amounts) => {
                let mut set = tokio::task::JoinSet::new();
                for a in amounts {
                    let (store, cmd, t, a) = (self.store.clone(), self.command(*a), self.t, *a);
                    set.spawn(async move { (a, store.checkout(cmd, t).await) });
                }
                while let Some(joined) = set.join_next().await {
                    let (a, r) = joined.expect("checkout task");
                    match r {
                        Ok(c) => self.record(c.token, a),
                        Err(StoreError::NoEntitlements(_)) => {}
                        Err(e) => prop_assert!(false, "{name}: a checkout in a burst failed: {e}"),
                    }
                }
            }
            Step::CheckIn(i) | Step::Extend(i) if self.held.is_empty() => {
                let _ = i;
            }
            Step::CheckIn(i) => {
                let k = i % self.held.len();
                let live = self.held[k].live(self.t);
                let r = self
                    .store
                    .check_in(&self.customer, &self.held[k].token, None, None, self.t)
                    .await;
                match r {
                    Ok(()) => {
                        prop_assert!(live, "{name}: a consumption that is not live was checked in");
                        self.held[k].ended = true;
                    }
                    Err(StoreError::Conflict(_)) => prop_assert!(!live, "{name}: a live check-in was refused"),
                    Err(e) => prop_assert!(false, "{name}: check-in failed: {e}"),
                }
            }
            Step::Extend(i) => {
                let k = i % self.held.len();
                let live = self.held[k].live(self.t);
                let r = self
                    .store
                    .extend(&self.customer, &self.held[k].token, None, None, false, self.t)
                    .await;
                match r {
                    Ok(_) => {
                        prop_assert!(live, "{name}: a consumption that is not live was extended");
                        self.held[k].expires = self.t + Duration::minutes(TTL_MINUTES);
                    }
                    Err(StoreError::NotFound(_)) => prop_assert!(!live, "{name}: a live extension was refused"),
                    Err(e) => prop_assert!(false, "{name}: extension failed: {e}"),
                }
            }
            Step::Advance(minutes) => self.t += Duration::minutes(*minutes),
        }
        let stored = self.stored().await as i128;
        prop_assert_eq!(
            stored,
            self.in_use(),
            "{}: the counter is not the sum of live consumptions",
            name
        );
        if let (Some(max), false) = (self.max, self.overage) {
            prop_assert!(stored <= max as i128, "{}: {} in use of {}", name, stored, max);
        }
        prop_assert!(stored <= MAX_UNITS as i128);
        Ok(())
    }
}

fn rand_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// Cases per backend: `TESSERA_MODEL_CASES`, default 24.
fn cases() -> u32 {
    std::env::var("TESSERA_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn counters_follow_the_model_under_random_sequences() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let dbs = rt.block_on(backends());
    for db in &dbs {
        let store = rt.block_on(db.open());
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (limit(), prop::collection::vec(step(), 1..40));
        let outcome = runner.run(&strategy, |((max, overage), steps)| {
            rt.block_on(async {
                let mut case = Case::new(store.clone(), db.name, max, overage).await;
                for s in &steps {
                    case.run(s).await?;
                }
                Ok(())
            })
        });
        if let Err(e) = outcome {
            panic!("{}: {e}", db.name);
        }
    }
}
