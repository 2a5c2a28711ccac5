//! The read side at scale, on PostgreSQL: a database of `BENCH_ORDERS` test orders on the sandbox
//! (default one million, ~3.3 events each) and a tenth as many live orders on three channels
//! (WeChat Pay, Alipay, UnionPay), spread over the 30 days before the bench starts, is seeded
//! straight into the event store with `COPY`, then:
//!
//! 1. **raw COPY**: `COPY events TO STDOUT`, the floor any replay reads at (events/s);
//! 2. **replay**: `payledger replay` of each projection (`rebuild::replay`), events/s;
//! 3. **queries**: the dashboard endpoints over HTTP on the real server — `GET /v1/orders` (first
//!    page, status filter, day range, next page by cursor, by out_trade_no), `GET
//!    /v1/stats/daily`, `GET /v1/ledger/balances` — p50/p99/max per endpoint;
//! 4. **console pages** over HTTP with an admin's session (every merchant; the admin has
//!    `BENCH_ADMIN_ACTIONS` recorded actions, default 100,000): overview (test mode,
//!    and live mode with its three channels), order list
//!    (first page, status, day range, out_trade_no, merchant, amount range, next page), an
//!    order's page, the audit log, refunds, notifications, ledger, channels, merchants, users,
//!    reconciliation — p50/p99/max per page;
//! 5. **projection lag** under a steady load of orders created and paid over HTTP: how old the
//!    oldest event not yet applied is, sampled every 100 ms, p50/p99/max per projection;
//! 6. **verify** after that load: the live tables against a replay, and the journal's balance.
//!
//! ```text
//! cargo bench -p payledger-tests --bench read_models
//! BENCH_ORDERS=100000 cargo bench -p payledger-tests --bench read_models
//! ```
//!
//! Environment: `BENCH_ORDERS` (default 1,000,000), `BENCH_QUERIES` (per endpoint, default 1000),
//! `BENCH_QUERY_CONCURRENCY` (default 4), `BENCH_ADMIN_ACTIONS` (default 100,000), `BENCH_LOAD_RATE` (orders/s for the lag run, default
//! 100), `BENCH_LOAD_SECONDS` (default 20), `BENCH_REPLAY_ONLY=1` (stop after the replay),
//! `PAYLEDGER_TEST_PG` (see the `payledger-tests` crate; a fresh database is created and
//! dropped).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use futures::TryStreamExt;
use payledger_command_api::app::{self, ServeConfig};
use payledger_command_api::http::rate_limit::RateLimitConfig;
use payledger_command_api::workers::refunds::REFUND_WORKER_NAME;
use payledger_domain::{ids, ChannelOrder, Currency, Money, OrderTerms, PaymentOrderEvent as E};
use payledger_notifier::enqueue::ENQUEUER_NAME;
use payledger_projections::rebuild::{self, Projection};
use payledger_store::subscription::save_checkpoint;
use payledger_store::{merchants, Database, LogPosition, PoolConfig};
use payledger_tests::{Backend, TestDb};
use serde_json::{json, Value};
use sqlx::Connection;

const MERCHANTS: usize = 100;
/// Orders are spread over this many days before the bench's "now".
const DAYS: i64 = 30;
/// The channels of the live orders (a tenth of the test orders' count), in turn.
const LIVE_CHANNELS: [&str; 3] = ["wechatpay", "alipay", "unionpay"];
/// Orders per COPY chunk.
const SEED_CHUNK: usize = 20_000;

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn merchant(i: usize) -> String {
    format!("m{:03}", i % MERCHANTS)
}

fn api_key(m: &str) -> String {
    format!("plk_bench_{m}")
}

/// The events of order `i`: created, opened; 85% paid (a fifth of those half refunded), 10%
/// closed, 5% left awaiting payment (closed too when live). A test order on the sandbox (`B…`), or with `live` a live
/// order on one of [`LIVE_CHANNELS`] (`L…`).
fn order_events(i: usize, start: DateTime<Utc>, spacing_ms: i64, live: bool) -> Vec<E> {
    use payledger_domain::Mode;
    let m = merchant(i);
    let (mode, channel, out_trade_no) = if live {
        (Mode::Live, LIVE_CHANNELS[i % LIVE_CHANNELS.len()], format!("L{i:09}"))
    } else {
        (Mode::Test, "sandbox", format!("B{i:09}"))
    };
    let order_id = ids::order_id(&m, mode, &out_trade_no);
    let created_at = start + chrono::Duration::milliseconds(spacing_ms * i as i64);
    let amount = Money::new(100 + (i as i64 * 7919) % 100_000, Currency::CNY).expect("amount");
    let mut events = vec![
        E::OrderCreated {
            order_id,
            terms: OrderTerms {
                merchant_id: m,
                mode,
                out_trade_no,
                amount,
                channel: channel.into(),
                method: "qr".into(),
                subject: "Green tea".into(),
                user_id: None,
                notify_url: None,
                return_url: None,
                expire_in_seconds: 900,
                metadata: Default::default(),
            },
            created_at,
            expire_at: created_at + chrono::Duration::seconds(900),
        },
        E::ChannelOrderOpened {
            account: None,
            channel_order: ChannelOrder {
                pay_url: (!live).then(|| format!("http://127.0.0.1:8080/sandbox/pay/{order_id}")),
                qr_code: None,
                channel_ref: None,
            },
            opened_at: created_at,
        },
    ];
    match i % 20 {
        // A live order is never left open: the bench's server has no live channel accounts, and
        // it refuses to start with open orders no account serves.
        0 | 1 => events.push(E::OrderClosed {
            reason: payledger_domain::CloseReason::Expired,
            closed_at: created_at + chrono::Duration::seconds(900),
        }),
        2 if live => events.push(E::OrderClosed {
            reason: payledger_domain::CloseReason::Expired,
            closed_at: created_at + chrono::Duration::seconds(900),
        }),
        2 => {}
        k => {
            let paid_at = created_at + chrono::Duration::seconds(30);
            events.push(E::PaymentSucceeded {
                notify_id: format!("n{i}"),
                channel_trade_no: format!("{}{i}", if live { channel } else { "SBX" }),
                amount,
                paid_at,
                late: false,
            });
            if k % 5 == 0 {
                let refund_id = ids::refund_id(order_id, "R1");
                let half = Money::new((amount.amount_minor / 2).max(1), Currency::CNY).expect("half");
                events.push(E::RefundRequested {
                    refund_id,
                    out_refund_no: "R1".into(),
                    amount: half,
                    reason: None,
                    requested_at: paid_at + chrono::Duration::hours(1),
                });
                events.push(E::RefundSucceeded {
                    refund_id,
                    channel_refund_no: None,
                    succeeded_at: paid_at + chrono::Duration::hours(1),
                });
            }
        }
    }
    events
}

/// Writes `orders` test orders' and `orders / 10` live orders' events with COPY; returns the
/// number of events.
async fn seed(url: &str, orders: usize, start: DateTime<Utc>) -> u64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let mut written = 0u64;
    let began = Instant::now();
    let chunks = [false, true].into_iter().flat_map(|live| {
        let n = if live { orders / 10 } else { orders };
        (0..n)
            .step_by(SEED_CHUNK)
            .map(move |c| (live, c..(c + SEED_CHUNK).min(n), DAYS * 86_400_000 / n.max(1) as i64))
    });
    for (live, range, spacing_ms) in chunks {
        let mut text = String::with_capacity(SEED_CHUNK * 1200);
        for i in range {
            let events = order_events(i, start, spacing_ms, live);
            let E::OrderCreated { order_id, .. } = &events[0] else {
                unreachable!()
            };
            for (s, e) in events.iter().enumerate() {
                let payload = serde_json::to_string(e).expect("json").replace('\\', "\\\\");
                text.push_str(&format!(
                    "PaymentOrder\t{order_id}\t{}\t{}\t{}\t{payload}\t{{\"actor\":\"bench\"}}\n",
                    s + 1,
                    e.name(),
                    e.version()
                ));
                written += 1;
            }
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 FROM STDIN",
            )
            .await
            .expect("copy in");
        copy.send(text.into_bytes()).await.expect("send");
        copy.finish().await.expect("finish");
        eprint!(
            "\rseeded {written} events ({:.0}/s)",
            written as f64 / began.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    sqlx::query("VACUUM ANALYZE events")
        .execute(&mut conn)
        .await
        .expect("vacuum");
    written
}

/// `COPY events TO STDOUT`: rows and seconds.
async fn raw_copy(url: &str) -> (u64, f64) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let began = Instant::now();
    let mut stream = conn.copy_out_raw("COPY events TO STDOUT").await.expect("copy out");
    let mut rows = 0u64;
    while let Some(chunk) = stream.try_next().await.expect("chunk") {
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    (rows, began.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn get(http: &reqwest::Client, url: &str, key: &str) -> (Duration, Value) {
    let began = Instant::now();
    let r = http.get(url).bearer_auth(key).send().await.expect("request");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {body}");
    (began.elapsed(), body)
}

/// The path of the k-th request to an endpoint.
type PathOf = Box<dyn Fn(usize) -> String>;

async fn queries(base: &str, start: DateTime<Utc>, count: usize, concurrency: usize) {
    let http = reqwest::Client::new();
    let day = move |k: i64| (start + chrono::Duration::days(k)).format("%Y-%m-%d").to_string();
    let ts = move |k: i64| (start + chrono::Duration::days(k)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let endpoints: Vec<(&str, PathOf)> = vec![
        ("orders, first page", Box::new(|_| "/v1/orders?limit=20".to_string())),
        (
            "orders, status=paid",
            Box::new(|_| "/v1/orders?status=paid&limit=20".to_string()),
        ),
        (
            "orders, one day",
            Box::new(move |k| {
                format!(
                    "/v1/orders?from={}&to={}&limit=20",
                    ts((k % 29) as i64),
                    ts((k % 29) as i64 + 1)
                )
            }),
        ),
        (
            "orders, by out_trade_no",
            Box::new(|k| {
                format!(
                    "/v1/orders?out_trade_no=B{:09}",
                    (k * 7_919) % 1000 * MERCHANTS + k % MERCHANTS
                )
            }),
        ),
        (
            "stats, 30 days",
            Box::new(move |_| format!("/v1/stats/daily?from={}&to={}", day(0), day(DAYS))),
        ),
        ("ledger balances", Box::new(|_| "/v1/ledger/balances".to_string())),
    ];
    println!(
        "\n{:<26} {:>8} {:>9} {:>9} {:>9}",
        "endpoint", "requests", "p50 ms", "p99 ms", "max ms"
    );
    for (name, path) in &endpoints {
        let mut latencies: Vec<Duration> = stream::iter(0..count)
            .map(|k| {
                let m = merchant(k);
                let url = format!("{base}{}", path(k));
                let http = &http;
                async move { get(http, &url, &api_key(&m)).await.0 }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        latencies.sort();
        println!(
            "{name:<26} {count:>8} {:>9} {:>9} {:>9}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("some"))
        );
    }
    // The next page by cursor.
    let mut latencies = vec![];
    for k in 0..count.min(500) {
        let m = merchant(k);
        let (_, first) = get(&http, &format!("{base}/v1/orders?limit=20"), &api_key(&m)).await;
        let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
        let (d, _) = get(
            &http,
            &format!("{base}/v1/orders?limit=20&cursor={cursor}"),
            &api_key(&m),
        )
        .await;
        latencies.push(d);
    }
    latencies.sort();
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>9}",
        "orders, next page",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("some"))
    );
}

/// An admin's console session, made directly in the store (the bench measures pages, not the
/// login): the cookie to send.
async fn console_session(db: &Database) -> String {
    use payledger_domain::console::{console_user_id, ConsoleRole, ConsoleUserCommand};
    let email = "bench-admin@example.com";
    let user_id = console_user_id(email);
    let add = ConsoleUserCommand::AddUser {
        email: email.into(),
        role: ConsoleRole::Admin,
        merchant_id: None,
        password_hash: "not used".into(),
        added_by: "bench".into(),
        at: Utc::now(),
    };
    payledger_store::console::execute(db.pool(), user_id, add)
        .await
        .expect("user");
    admin_history(db, user_id, email).await;
    let token = payledger_command_api::console::auth::session_token();
    payledger_store::console::create_session(
        db.pool(),
        &payledger_command_api::console::auth::token_hash(&token),
        user_id,
        "full",
        "csrf",
        "127.0.0.1",
        Utc::now(),
    )
    .await
    .expect("session");
    format!("{}={token}", payledger_command_api::console::auth::SESSION_COOKIE)
}

/// Gives the bench's admin a long history (`BENCH_ADMIN_ACTIONS` recorded actions, default
/// 100,000: a busy operator's year), as the store writes them, then one more action through the
/// store, which writes the user's snapshot. Every console request loads its user: prints how
/// long that takes from the snapshot and, with the snapshot removed, from the first event.
async fn admin_history(db: &Database, user_id: uuid::Uuid, email: &str) {
    use payledger_domain::console::{ConsoleUserCommand, ConsoleUserEvent};
    let actions: i64 = env_number("BENCH_ADMIN_ACTIONS", 100_000);
    let now = Utc::now();
    let payload = serde_json::to_string(&ConsoleUserEvent::ActionRecorded {
        action: "resend".into(),
        target: "notification:bench".into(),
        detail: String::new(),
        outcome: "ok".into(),
        address: "127.0.0.1".into(),
        at: now,
    })
    .expect("json");
    sqlx::query(
        "INSERT INTO console_events (aggregate_type, aggregate_id, sequence, event_type, actor, at, payload) \
         SELECT 'ConsoleUser', $1, g, 'ActionRecorded', $2, $3, $4 FROM generate_series(2, $5 + 1) AS g",
    )
    .bind(user_id.to_string())
    .bind(email)
    .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    .bind(&payload)
    .bind(actions)
    .execute(db.pool())
    .await
    .expect("history");
    let record = || ConsoleUserCommand::RecordAction {
        action: "resend".into(),
        target: "notification:bench".into(),
        detail: String::new(),
        outcome: "ok".into(),
        address: "127.0.0.1".into(),
        at: Utc::now(),
    };
    let timed = |n: usize| async move {
        let mut took = Vec::with_capacity(n);
        for _ in 0..n {
            let began = Instant::now();
            payledger_store::console::load(db.pool(), user_id).await.expect("load");
            took.push(began.elapsed());
        }
        took.sort();
        took
    };
    payledger_store::console::execute(db.pool(), user_id, record())
        .await
        .expect("action");
    let from_snapshot = timed(200).await;
    sqlx::query("DELETE FROM console_snapshots")
        .execute(db.pool())
        .await
        .expect("drop snapshots");
    let from_first = timed(10).await;
    // The next append writes the snapshot again.
    payledger_store::console::execute(db.pool(), user_id, record())
        .await
        .expect("action");
    println!(
        "console user with {} events, loaded on every console request: from its snapshot p50 {} / p99 {} ms; \
         from the first event p50 {} ms",
        actions + 3,
        ms(percentile(&from_snapshot, 0.5)),
        ms(percentile(&from_snapshot, 0.99)),
        ms(percentile(&from_first, 0.5)),
    );
}

async fn page(http: &reqwest::Client, url: &str, cookie: &str) -> (Duration, String) {
    let began = Instant::now();
    let r = http.get(url).header("cookie", cookie).send().await.expect("request");
    let status = r.status();
    let body = r.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {}", &body[..body.len().min(500)]);
    (began.elapsed(), body)
}

/// The console's pages as an operator sees them (every merchant of the test mode).
async fn console_pages(base: &str, db: &Database, start: DateTime<Utc>, count: usize, concurrency: usize) {
    let cookie = console_session(db).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let day = move |k: i64| (start + chrono::Duration::days(k)).format("%Y-%m-%d").to_string();
    let out_trade_no = |k: usize| (k * 7_919) % 1000 * MERCHANTS + k % MERCHANTS;
    let pages: Vec<(&str, PathOf)> = vec![
        ("overview", Box::new(|_| "/console?mode=test".to_string())),
        ("overview, live, 3 channels", Box::new(|_| "/console".to_string())),
        (
            "orders, first page",
            Box::new(|_| "/console/orders?mode=test".to_string()),
        ),
        (
            "orders, status=paid",
            Box::new(|_| "/console/orders?mode=test&status=paid".to_string()),
        ),
        (
            "orders, one day",
            Box::new(move |k| {
                let d = day((k % 29) as i64);
                format!("/console/orders?mode=test&from={d}&to={d}")
            }),
        ),
        (
            "orders, by out_trade_no",
            Box::new(move |k| format!("/console/orders?mode=test&out_trade_no=B{:09}", out_trade_no(k))),
        ),
        (
            "orders, one merchant",
            Box::new(|k| format!("/console/orders?mode=test&merchant={}", merchant(k))),
        ),
        (
            "orders, amount range",
            Box::new(|_| "/console/orders?mode=test&amount_min=10.00&amount_max=20.00".to_string()),
        ),
        (
            "an order's page",
            Box::new(move |k| {
                let i = out_trade_no(k);
                let id = ids::order_id(&merchant(i), payledger_domain::Mode::Test, &format!("B{i:09}"));
                format!("/console/orders/{id}")
            }),
        ),
        ("audit log", Box::new(|_| "/console/audit".to_string())),
        ("refunds", Box::new(|_| "/console/refunds?mode=test".to_string())),
        (
            "notifications",
            Box::new(|_| "/console/notifications?mode=test".to_string()),
        ),
        (
            "ledger, by order",
            Box::new(move |k| {
                let i = out_trade_no(k);
                let id = ids::order_id(&merchant(i), payledger_domain::Mode::Test, &format!("B{i:09}"));
                format!("/console/ledger?mode=test&reference={id}")
            }),
        ),
        (
            "ledger, one merchant",
            Box::new(|k| format!("/console/ledger?mode=test&merchant={}", merchant(k))),
        ),
        ("channels", Box::new(|_| "/console/channels".to_string())),
        ("merchants", Box::new(|_| "/console/merchants".to_string())),
        (
            "a merchant",
            Box::new(|k| format!("/console/merchants/{}", merchant(k))),
        ),
        ("users", Box::new(|_| "/console/users".to_string())),
        ("reconciliation", Box::new(|_| "/console/reconciliation".to_string())),
    ];
    println!(
        "\n{:<26} {:>8} {:>9} {:>9} {:>9}",
        "console page", "requests", "p50 ms", "p99 ms", "max ms"
    );
    for (name, path) in &pages {
        let mut latencies: Vec<Duration> = stream::iter(0..count)
            .map(|k| {
                let url = format!("{base}{}", path(k));
                let (http, cookie) = (&http, &cookie);
                async move { page(http, &url, cookie).await.0 }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        latencies.sort();
        println!(
            "{name:<26} {count:>8} {:>9} {:>9} {:>9}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("some"))
        );
    }
    // The next page: the first page's "next page" link.
    let (_, first) = page(&http, &format!("{base}/console/orders?mode=test"), &cookie).await;
    let marker = "href=\"";
    let next = first
        .split("id=\"next-page\"")
        .next()
        .and_then(|before| before.rfind(marker).map(|i| &before[i + marker.len()..]))
        .and_then(|rest| rest.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let mut latencies = vec![];
    for _ in 0..count.min(500) {
        latencies.push(page(&http, &format!("{base}{next}"), &cookie).await.0);
    }
    latencies.sort();
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>9}",
        "orders, next page",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("some"))
    );
}

/// Age of the oldest event the projection `name` has not applied yet (zero when caught up).
async fn lag(db: &Database, name: &str) -> Duration {
    let pos = payledger_store::subscription::checkpoint(db.pool(), name)
        .await
        .expect("checkpoint");
    let age: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (now() - recorded_at))::float8 FROM events \
         WHERE (transaction_id, global_position) > (($1::bigint)::text::xid8, $2) \
         ORDER BY transaction_id, global_position LIMIT 1",
    )
    .bind(pos.transaction_id)
    .bind(pos.global_position)
    .fetch_optional(db.pool())
    .await
    .expect("lag");
    Duration::from_secs_f64(age.unwrap_or(0.0).max(0.0))
}

async fn steady_load(base: &str, db: &Database, rate: u64, seconds: u64) {
    let http = reqwest::Client::new();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let base = base.to_string();
    let load = tokio::spawn({
        let http = http.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut n = 0usize;
            let mut tasks = tokio::task::JoinSet::new();
            while Instant::now() < stop_at {
                tick.tick().await;
                n += 1;
                let (http, base) = (http.clone(), base.clone());
                tasks.spawn(async move {
                    let m = merchant(n);
                    let r = http
                        .post(format!("{base}/v1/orders"))
                        .bearer_auth(api_key(&m))
                        .json(
                            &json!({"out_trade_no": format!("L{n:09}"), "amount": 1999, "currency": "CNY",
                                      "channel": "sandbox", "subject": "Tea"}),
                        )
                        .send()
                        .await
                        .expect("create");
                    let order: Value = r.json().await.expect("json");
                    let id = order["order_id"].as_str().expect("order_id");
                    http.post(format!("{base}/sandbox/pay/{id}"))
                        .json(&json!({"result": "success"}))
                        .send()
                        .await
                        .expect("pay");
                });
            }
            while tasks.join_next().await.is_some() {}
            n
        }
    });
    let mut samples: Vec<(Duration, Duration)> = vec![];
    while !load.is_finished() {
        samples.push((lag(db, "order_view").await, lag(db, "journal").await));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orders = load.await.expect("load");
    let mut views: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut journal: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    views.sort();
    journal.sort();
    println!(
        "\nprojection lag under {rate} orders/s (create + pay, ~{} events/s) for {seconds} s, {orders} orders, {} samples",
        rate * 3,
        samples.len()
    );
    println!("{:<12} {:>9} {:>9} {:>9}", "projection", "p50 ms", "p99 ms", "max ms");
    for (name, s) in [("order_view", &views), ("journal", &journal)] {
        println!(
            "{name:<12} {:>9} {:>9} {:>9}",
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.99)),
            ms(*s.last().unwrap_or(&Duration::ZERO))
        );
    }
}

#[tokio::main]
async fn main() {
    let orders: usize = env_number("BENCH_ORDERS", 1_000_000);
    let per_endpoint: usize = env_number("BENCH_QUERIES", 1000);
    let concurrency: usize = env_number("BENCH_QUERY_CONCURRENCY", 4);
    let rate: u64 = env_number("BENCH_LOAD_RATE", 100);
    let seconds: u64 = env_number("BENCH_LOAD_SECONDS", 20);
    let test_db = TestDb::create(Backend::Postgres)
        .await
        .expect("the benchmark needs PostgreSQL (PAYLEDGER_TEST_PG)");
    let db = Database::connect(Some(&test_db.url), PoolConfig::maintenance())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    // The 30 days up to now: the overview's windows (today, 7 and 30 days) hold seeded orders.
    let start = Utc::now() - chrono::Duration::days(DAYS);

    let began = Instant::now();
    let events = seed(&test_db.url, orders, start).await;
    println!(
        "seeded {orders} test orders and {} live orders, {events} events in {:.1} s (COPY in)",
        orders / 10,
        began.elapsed().as_secs_f64()
    );

    let (rows, secs) = raw_copy(&test_db.url).await;
    assert_eq!(rows, events);
    println!(
        "raw COPY events TO STDOUT: {rows} rows in {secs:.2} s = {:.0} events/s",
        rows as f64 / secs
    );

    for p in Projection::ALL {
        let r = rebuild::replay(&db, p, &|_| {}).await.expect("replay");
        assert_eq!(r.events, events);
        println!(
            "replay {:<10}: {} events in {:.2} s = {:.0} events/s ({:.0}% of raw COPY)",
            r.projection,
            r.events,
            r.seconds,
            r.events_per_second,
            100.0 * r.events_per_second / (rows as f64 / secs)
        );
    }
    if std::env::var("BENCH_REPLAY_ONLY").is_ok_and(|v| v == "1") {
        db.close().await;
        return;
    }
    // The other subscribers start at the head, as on a server that has been running.
    let head: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events \
         ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(db.pool())
    .await
    .expect("head");
    for name in [ENQUEUER_NAME, REFUND_WORKER_NAME] {
        save_checkpoint(
            db.pool(),
            name,
            LogPosition {
                transaction_id: head.0,
                global_position: head.1,
            },
        )
        .await
        .expect("checkpoint");
    }
    let keyring = payledger_tests::secrets_key_for(&test_db.url).load().expect("keyring");
    for i in 0..MERCHANTS {
        let m = merchant(i);
        let (test, live) = (api_key(&m), format!("{}_live", api_key(&m)));
        let credentials = merchants::Credentials {
            live_api_key: &live,
            test_api_key: &test,
            webhook_secret: "whsec_bench",
            test_webhook_secret: "whsec_bench_test",
        };
        merchants::add(db.pool(), &keyring, &m, credentials)
            .await
            .expect("merchant");
    }
    sqlx::query("ANALYZE").execute(db.pool()).await.expect("analyze");

    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), Some(test_db.url.clone()));
    config.secrets_key = payledger_tests::secrets_key_for(&test_db.url);
    // The dashboard load is each merchant's many queries; measure the queries, not the quota.
    config.rate_limit = RateLimitConfig {
        per_second: 0,
        burst: 0,
    };
    let running = app::start(config).await.expect("server");
    let base = format!("http://{}", running.addr);
    queries(&base, start, per_endpoint, concurrency).await;
    console_pages(&base, &db, start, per_endpoint, concurrency).await;
    steady_load(&base, &db, rate, seconds).await;
    running.shutdown().await;

    // After the load, the live tables must equal a replay and the journal must balance.
    let began = Instant::now();
    let report = rebuild::verify(&db, &|_| {}).await.expect("verify");
    println!(
        "\nreconcile --verify after the load: {} ({} events replayed, {} rows compared, {} differences, {} unbalanced entries) in {:.1} s",
        if report.is_clean() { "clean" } else { "NOT CLEAN" },
        report.events,
        report.rows_compared,
        report.differences_total,
        report.unbalanced_entries.len(),
        began.elapsed().as_secs_f64()
    );
    db.close().await;
}
