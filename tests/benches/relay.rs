//! The NATS relay's throughput and delay, on PostgreSQL and the test NATS server.
//!
//! 1. Backlog: appends `BENCH_EVENTS` events (default 50,000; orders of 3 events:
//!    created, channel order opened, paid) with the relay off, then starts it and measures how
//!    fast it drains the log into JetStream (events/s).
//! 2. Under load: with the relay running, appends as many events again from 8 concurrent writers
//!    and measures, per event, the delay from `recorded_at` (the appending transaction's time) to
//!    the time JetStream stored the message (its ack follows within the round trip): p50, p99, max.
//!
//! `cargo bench -p payledger-tests --bench relay`; `BENCH_EVENTS` (50,000), `BENCH_BATCH` (the
//! relay's batch, 1,000). Skips (loudly) without PostgreSQL or NATS outside CI.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use chrono::Utc;
use futures::StreamExt;
use payledger_bus::{Envelope, Relay, RelayMetrics};
use payledger_domain::{
    ids, CallbackOutcome, ChannelOrder, ChannelOrderOutcome, Currency, Money, OrderTerms, PaymentOrderCommand,
};
use payledger_store::{Database, LogPosition, PoolConfig};
use payledger_tests::nats::{nats_url, TestStream};
use payledger_tests::{Backend, TestDb};

const WRITERS: usize = 8;

async fn append_orders(db: &Database, prefix: &str, orders: usize) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..orders)
        .for_each_concurrent(WRITERS, |i| async move {
            let out_trade_no = format!("{prefix}-{i}");
            let order_id = ids::order_id("bench", payledger_domain::Mode::Test, &out_trade_no);
            let amount = Money::new(100 + i as i64, Currency::CNY).expect("amount");
            let terms = OrderTerms {
                merchant_id: "bench".into(),
                mode: payledger_domain::Mode::Test,
                out_trade_no,
                amount,
                channel: "sandbox".into(),
                method: "page".into(),
                subject: "Tea".into(),
                user_id: None,
                notify_url: None,
                return_url: None,
                expire_in_seconds: 900,
                metadata: Default::default(),
            };
            let commands = [
                PaymentOrderCommand::CreateOrder {
                    order_id,
                    terms,
                    created_at: Utc::now(),
                },
                PaymentOrderCommand::RecordChannelOrder {
                    outcome: ChannelOrderOutcome::Opened(ChannelOrder::default()),
                    recorded_at: Utc::now(),
                },
                PaymentOrderCommand::ReceiveChannelCallback {
                    account_id: None,
                    channel: "sandbox".into(),
                    notify_id: format!("n-{i}"),
                    channel_trade_no: format!("t-{i}"),
                    outcome: CallbackOutcome::Succeeded {
                        amount,
                        paid_at: Utc::now(),
                    },
                    received_at: Utc::now(),
                },
            ];
            for c in commands {
                db.execute(order_id, c, "merchant:bench").await.expect("append");
            }
        })
        .await;
    started.elapsed()
}

async fn wait_caught_up(db: &Database, metrics: &RelayMetrics) {
    let last = db
        .log()
        .read_after(LogPosition::default(), i64::MAX)
        .await
        .expect("log")
        .last()
        .map_or(0, |e| e.position.global_position as u64);
    while metrics.snapshot().checkpoint_position < last {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let orders = events / 3;
    let Some(test_db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let pools = PoolConfig {
        store_connections_max: WRITERS as u32,
        query_connections_max: 4,
        acquire_timeout_ms: 30_000,
        ..PoolConfig::default()
    };
    let db = Database::connect(Some(&test_db.url), pools).await.expect("connect");
    db.migrate().await.expect("migrate");
    let mut config = stream.relay_config(&nats_url());
    config.ack_timeout_ms = 10_000;
    if let Some(batch) = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()) {
        config.batch_events_max = batch;
    }

    // 1. Backlog.
    let took = append_orders(&db, "A", orders).await;
    println!(
        "appended {} events in {:.1} s ({:.0} events/s, {WRITERS} writers)",
        orders * 3,
        took.as_secs_f64(),
        (orders * 3) as f64 / took.as_secs_f64()
    );
    let relay = Relay::new(db.clone(), config.clone());
    let metrics = relay.metrics();
    let started = Instant::now();
    let task = tokio::spawn(relay.run());
    wait_caught_up(&db, &metrics).await;
    let took = started.elapsed();
    println!(
        "backlog: relay published {} events in {:.2} s: {:.0} events/s (batch {}, includes connecting and creating the stream)",
        metrics.snapshot().published_total,
        took.as_secs_f64(),
        metrics.snapshot().published_total as f64 / took.as_secs_f64(),
        config.batch_events_max
    );

    // 2. Under load.
    let before = stream.count().await;
    let took = append_orders(&db, "B", orders).await;
    wait_caught_up(&db, &metrics).await;
    let live = (orders * 3) as u64;
    println!(
        "under load: {live} events appended in {:.1} s ({:.0} events/s) while the relay ran",
        took.as_secs_f64(),
        live as f64 / took.as_secs_f64()
    );
    task.abort();

    let js_stream = stream.js.get_stream(&stream.name).await.expect("stream");
    let consumer = js_stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: before + 1,
            },
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages").take(live as usize);
    let mut delays_ms = Vec::with_capacity(live as usize);
    while let Some(m) = messages.next().await {
        let m = m.expect("message");
        let stored_ns = m.info().expect("info").published.unix_timestamp_nanos();
        let envelope: Envelope = serde_json::from_slice(&m.payload).expect("envelope");
        let recorded_ns = envelope.recorded_at.timestamp_nanos_opt().expect("in range") as i128;
        delays_ms.push((stored_ns - recorded_ns) as f64 / 1e6);
    }
    delays_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "under load: delay recorded_at -> stored in JetStream over {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays_ms.len(),
        percentile(&delays_ms, 0.50),
        percentile(&delays_ms, 0.99),
        delays_ms.last().copied().unwrap_or_default()
    );
    let m = metrics.snapshot();
    println!(
        "relay counters: published {}, duplicates {}, failed steps {}",
        m.published_total, m.duplicates_total, m.failed_steps_total
    );
    db.close().await;
}

fn main() {
    // RUST_LOG=payledger_bus=debug shows each batch's timings.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
