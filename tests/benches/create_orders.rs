//! Throughput and latency of `POST /v1/orders`, end to end: HTTP, validation, the sandbox channel,
//! the `PlaceOrder` command (one event-store commit), and the wait
//! for the order's read model (read-your-writes) before the 201 is sent.
//!
//! A real server runs in this process (the same `app::start` that `payledger serve` runs) on a
//! fresh database, with its projection, notifier and refund worker. One reqwest client keeps
//! `BENCH_CONCURRENCY` requests in flight, each with its own `out_trade_no`; every answer must be
//! 201. Prints orders, concurrency, wall time, orders/s and latency p50/p95/p99/max.
//!
//! ```text
//! cargo bench -p payledger-tests --bench create_orders
//! BENCH_ORDERS=20000 BENCH_CONCURRENCY=8 cargo bench -p payledger-tests --bench create_orders
//! BENCH_BACKEND=sqlite cargo bench -p payledger-tests --bench create_orders
//! ```
//!
//! Environment:
//! - `BENCH_ORDERS` (default 5000): orders measured, after a warm-up of [`WARMUP_ORDERS`].
//! - `BENCH_CONCURRENCY` (default 32): requests in flight.
//! - `BENCH_BACKEND` (`postgres`, default, or `sqlite`).
//! - `BENCH_CONNECTIONS` (default 16): size of each of the server's two database pools.
//! - `PAYLEDGER_TEST_PG`: the PostgreSQL server on which a fresh database is created (see the
//!   `payledger-tests` crate); the benchmark fails when it is unreachable.
//!
//! The client runs on the same machine, in the same process: its CPU time is taken from the
//! server, and the figures are a lower bound on what the server alone would do.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use payledger_command_api::app::{self, ServeConfig};
use payledger_store::{merchants, PoolConfig};
use payledger_tests::{Backend, TestDb};
use serde_json::json;

/// Orders created before measuring: fills connection pools and caches.
const WARMUP_ORDERS: usize = 100;
const ORDERS_DEFAULT: usize = 5_000;
const CONCURRENCY_DEFAULT: usize = 32;
const CONNECTIONS_DEFAULT: u32 = 16;
/// A request slower than this is a failure, not a data point.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
const MERCHANT_ID: &str = "bench";

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn backend_from_env() -> Backend {
    match std::env::var("BENCH_BACKEND").as_deref() {
        Err(_) | Ok("postgres") | Ok("pg") => Backend::Postgres,
        Ok("sqlite") => Backend::Sqlite,
        Ok(other) => panic!("BENCH_BACKEND={other:?}: expected postgres or sqlite"),
    }
}

/// One request's outcome: latency, status, and the body when the status was not 201.
struct Outcome {
    latency: Duration,
    status: u16,
    body_if_failed: Option<String>,
}

/// Creates `count` orders, `out_trade_no` `<prefix>-00000000` onwards, with `concurrency` requests in flight.
async fn create_orders(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Vec<Outcome> {
    stream::iter(0..count)
        .map(|i| async move {
            let body = json!({
                "out_trade_no": format!("{prefix}-{i:08}"),
                "amount": 1999,
                "currency": "CNY",
                "channel": "sandbox",
                "subject": "benchmark order",
            });
            let started = Instant::now();
            let result = http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(api_key)
                .json(&body)
                .send()
                .await;
            match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // Read the body either way: the latency includes the whole answer.
                    let text = response.text().await.unwrap_or_default();
                    Outcome {
                        latency: started.elapsed(),
                        status,
                        body_if_failed: (status != 201).then_some(text),
                    }
                }
                Err(e) => Outcome {
                    latency: started.elapsed(),
                    status: 0,
                    body_if_failed: Some(format!("request failed: {e}")),
                },
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Panics unless every outcome is a 201, naming how many failed and the first failure.
fn assert_all_created(outcomes: &[Outcome], phase: &str) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 201).collect();
    if let Some(first) = failed.first() {
        panic!(
            "{phase}: {} of {} requests were not answered 201; first: HTTP {} {}",
            failed.len(),
            outcomes.len(),
            first.status,
            first.body_if_failed.as_deref().unwrap_or_default()
        );
    }
}

/// The `q`-quantile (0..=1) of sorted latencies, nearest-rank, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "no latencies to summarise");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1_000.0
}

#[tokio::main]
async fn main() {
    let backend = backend_from_env();
    let orders: usize = env_number("BENCH_ORDERS", ORDERS_DEFAULT);
    let concurrency: usize = env_number("BENCH_CONCURRENCY", CONCURRENCY_DEFAULT);
    let connections: u32 = env_number("BENCH_CONNECTIONS", CONNECTIONS_DEFAULT);
    assert!(orders > 0, "BENCH_ORDERS must be at least 1");
    assert!(concurrency > 0, "BENCH_CONCURRENCY must be at least 1");
    assert!(connections > 0, "BENCH_CONNECTIONS must be at least 1");

    let Some(db) = TestDb::create(backend).await else {
        panic!(
            "the benchmark needs PostgreSQL: {} is unreachable. Start it or point PAYLEDGER_TEST_PG at one \
             (or run with BENCH_BACKEND=sqlite)",
            payledger_tests::pg_admin_url()
        );
    };
    let mut config = ServeConfig::new("127.0.0.1:0".parse().expect("address"), Some(db.url.clone()));
    config.secrets_key = payledger_tests::secrets_key_for(&db.url);
    config.pools = PoolConfig {
        store_connections_max: connections,
        query_connections_max: connections,
        acquire_timeout_ms: 10_000,
        ..PoolConfig::default()
    };
    let running = app::start(config).await.expect("the server starts");
    let base = format!("http://{}", running.addr);

    let api_key = format!("plk_bench_{}", uuid::Uuid::new_v4().simple());
    let webhook_secret = format!("whsec_bench_{}", uuid::Uuid::new_v4().simple());
    let live_api_key = format!("plk_bench_live_{}", uuid::Uuid::new_v4().simple());
    let credentials = merchants::Credentials {
        live_api_key: &live_api_key,
        test_api_key: &api_key,
        webhook_secret: &webhook_secret,
        test_webhook_secret: &webhook_secret,
    };
    merchants::add(running.db.pool(), &running.keyring, MERCHANT_ID, credentials)
        .await
        .expect("add the benchmark merchant");

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build()
        .expect("HTTP client");

    let warmup = create_orders(&http, &base, &api_key, "warmup", WARMUP_ORDERS, concurrency).await;
    assert_all_created(&warmup, "warm-up");

    let started = Instant::now();
    let outcomes = create_orders(&http, &base, &api_key, "bench", orders, concurrency).await;
    let wall = started.elapsed();
    assert_all_created(&outcomes, "benchmark");

    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort_unstable();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("create_orders: POST /v1/orders, every answer 201");
    println!("  backend       {backend:?} (pools {connections}+{connections} connections)");
    println!("  orders        {orders} (after {WARMUP_ORDERS} warm-up)");
    println!("  concurrency   {concurrency}");
    println!("  wall time     {:.2} s", wall.as_secs_f64());
    println!("  throughput    {:.0} orders/s", orders as f64 / wall.as_secs_f64());
    println!(
        "  latency ms    p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        quantile_ms(&latencies, 0.50),
        quantile_ms(&latencies, 0.95),
        quantile_ms(&latencies, 0.99),
        quantile_ms(&latencies, 1.00),
    );
    println!(
        "  note          {cores} CPU cores, shared by the benchmark client, the server and the database \
         when it is local"
    );

    running.shutdown().await;
    drop(db);
}
