//! The payment mix over HTTP: each flow creates an order, pays it with the sandbox channel's
//! signed success callback (what the sandbox's pay page sends), and refunds part of 30% of the
//! orders (see [`refunds`]).
//!
//! Closed loop ([`closed_loop`]): `concurrency` clients each run flows back to back, for a
//! throughput at that concurrency. Open loop ([`open_loop`]): flows start on a fixed schedule
//! whatever the answers, and a create's latency counts from its scheduled start, so a slow
//! server cannot hide its queueing (no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use payledger_channel_adapters::sandbox::{SandboxCallback, SandboxChannel, SIGNATURE_HEADER};
use serde_json::json;
use uuid::Uuid;

use crate::server::Merchant;
use crate::stats::{Endpoint, PhaseStats, Status};

/// Amount of every order, minor units (19.99 CNY).
pub const ORDER_AMOUNT_MINOR: i64 = 1_999;
/// Amount of every refund, minor units (5.00 CNY).
pub const REFUND_AMOUNT_MINOR: i64 = 500;
/// A request slower than this is a transport failure.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Flows an open-loop phase lets run at once; a flow due beyond it is skipped and counted.
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 2_048;

/// Whether flow number `n` (counted per client from 0) refunds: 3 in every 10 (flows 0, 3 and 6
/// of each ten), so 30% exactly, spread out so that a short run refunds 30% too.
pub fn refunds(n: u64) -> bool {
    (n * 7) % 10 < 3
}

/// What every flow of a phase shares.
pub struct Target {
    http: reqwest::Client,
    base_url: String,
    sandbox: SandboxChannel,
    merchants: Vec<Merchant>,
    /// Distinguishes this phase's out_trade_no values from other phases' on the same database.
    run_id: String,
}

impl Target {
    /// A client of the server at `base_url` with keep-alive connections for `concurrency`
    /// requests in flight, signing callbacks with the installation's sandbox `secret`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        secret: &str,
        merchants: Vec<Merchant>,
        concurrency: usize,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!merchants.is_empty(), "the mix needs at least one merchant");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.to_string(),
            sandbox: SandboxChannel::new(base_url, secret.as_bytes()),
            merchants,
            run_id: run_id.to_string(),
        })
    }

    /// Sends `request`, reads the whole answer; its status (None: transport failure) and body.
    async fn send(request: reqwest::RequestBuilder) -> (Status, String) {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(body) => (Some(status), body),
                    Err(_) => (None, String::new()),
                }
            }
            Err(_) => (None, String::new()),
        }
    }

    /// One flow: create order `<run_id>-<client>-<n>` for merchant `client % merchants`, pay it,
    /// refund it when [`refunds`]`(n)`. Records each call in `stats`. The create's latency
    /// counts from `scheduled` (now, in a closed loop). A failed step ends the flow.
    pub async fn flow(&self, client: usize, n: u64, scheduled: Instant, stats: &Mutex<PhaseStats>) {
        let merchant = &self.merchants[client % self.merchants.len()];
        let record = |endpoint, started: Instant, status| {
            let latency = started.elapsed();
            stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .record(endpoint, latency, status);
        };

        let body = json!({
            "out_trade_no": format!("{}-{client}-{n}", self.run_id),
            "amount": ORDER_AMOUNT_MINOR,
            "currency": "CNY",
            "channel": "sandbox",
            "subject": "benchmark order",
        });
        let (status, text) = Self::send(
            self.http
                .post(format!("{}/v1/orders", self.base_url))
                .bearer_auth(&merchant.api_key)
                .json(&body),
        )
        .await;
        record(Endpoint::CreateOrder, scheduled, status);
        if status != Some(Endpoint::CreateOrder.expected_status()) {
            return;
        }
        let Some(order_id) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["order_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()))
        else {
            return;
        };

        let callback = SandboxCallback {
            notify_id: Uuid::new_v4().to_string(),
            order_id,
            channel_trade_no: format!("SBX{}", order_id.simple()),
            trade_status: "SUCCESS".into(),
            amount: ORDER_AMOUNT_MINOR,
            currency: "CNY".into(),
            sent_at: Utc::now(),
        };
        let callback_body = serde_json::to_vec(&callback).unwrap_or_default();
        let started = Instant::now();
        let (status, _) = Self::send(
            self.http
                .post(format!("{}/v1/callbacks/sandbox", self.base_url))
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, format!("v1={}", self.sandbox.sign(&callback_body)))
                .body(callback_body),
        )
        .await;
        record(Endpoint::Callback, started, status);
        if status != Some(Endpoint::Callback.expected_status()) || !refunds(n) {
            return;
        }

        let started = Instant::now();
        let (status, _) = Self::send(
            self.http
                .post(format!("{}/v1/orders/{order_id}/refunds", self.base_url))
                .bearer_auth(&merchant.api_key)
                .json(&json!({"out_refund_no": format!("R{n}"), "amount": REFUND_AMOUNT_MINOR, "reason": "benchmark"})),
        )
        .await;
        record(Endpoint::Refund, started, status);
    }
}

/// What a phase measured.
pub struct PhaseOutcome {
    pub stats: PhaseStats,
    /// From the first flow's start to the last answer.
    pub wall: Duration,
    /// Flows not started because [`OPEN_LOOP_IN_FLIGHT_MAX`] were running (open loop only).
    pub skipped: u64,
}

/// `concurrency` clients run flows back to back; none starts a flow after `duration`.
pub async fn closed_loop(target: Arc<Target>, concurrency: usize, duration: Duration) -> PhaseOutcome {
    let stats = Arc::new(Mutex::new(PhaseStats::default()));
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let target = target.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    target.flow(client, n, Instant::now(), &stats).await;
                    n += 1;
                }
            })
        })
        .collect();
    for c in clients {
        // A client task only panics on a bug; its calls were recorded up to there.
        let _ = c.await;
    }
    let wall = started.elapsed();
    PhaseOutcome {
        stats: take(stats),
        wall,
        skipped: 0,
    }
}

/// Starts `rate_per_s` flows per second for `duration`, each on schedule, whatever the answers.
pub async fn open_loop(target: Arc<Target>, rate_per_s: f64, duration: Duration) -> PhaseOutcome {
    let stats = Arc::new(Mutex::new(PhaseStats::default()));
    let period = Duration::from_secs_f64(1.0 / rate_per_s.max(0.1));
    let started = Instant::now();
    let mut flows = tokio::task::JoinSet::new();
    let mut skipped = 0;
    let mut n: u64 = 0;
    loop {
        let scheduled = started + period.mul_f64(n as f64);
        if scheduled >= started + duration {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        while flows.try_join_next().is_some() {}
        if flows.len() >= OPEN_LOOP_IN_FLIGHT_MAX {
            skipped += 1;
        } else {
            let target = target.clone();
            let stats = stats.clone();
            // Client number n spreads flows over the merchants; n also keeps out_trade_no unique.
            let client = usize::try_from(n).unwrap_or(0);
            flows.spawn(async move { target.flow(client, n, scheduled, &stats).await });
        }
        n += 1;
    }
    while flows.join_next().await.is_some() {}
    let wall = started.elapsed();
    PhaseOutcome {
        stats: take(stats),
        wall,
        skipped,
    }
}

fn take(stats: Arc<Mutex<PhaseStats>>) -> PhaseStats {
    let guard = stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_flows_in_ten_refund() {
        let refunded = (0..1_000).filter(|&n| refunds(n)).count();
        assert_eq!(refunded, 300);
        let first_ten: Vec<u64> = (0..10).filter(|&n| refunds(n)).collect();
        assert_eq!(first_ten, [0, 3, 6]);
    }
}
