//! The NATS relay against a real NATS server (JetStream) and a real database: what it publishes
//! (subjects, `Nats-Msg-Id`, order per order, the envelope's schema), that a relay killed
//! mid-stream loses and duplicates nothing, and that a NATS outage costs no order and no event.
//!
//! Every message any of these tests reads back from JetStream is validated against
//! `schemas/events/` ([`check_stream`]).

use std::collections::{HashMap, HashSet};

use payledger_bus::envelope::msg_id;
use payledger_bus::relay::RelayProgress;
use payledger_bus::{Envelope, Relay, RelayMetrics};
use payledger_domain::{Currency, Mode, Money, PaymentOrderEvent, EVENT_VERSION};
use payledger_store::{Database, LogEvent, LogPosition, OrderOwner};
use payledger_tests::flows::{create_id, order_body, pay, wait_status, WAIT};
use payledger_tests::nats::{nats_addr, nats_url, Proxy, StoredMessage, TestStream};
use payledger_tests::{eventually, Backend, TestServer};
use serde_json::{json, Value};
use uuid::Uuid;

const SCHEMA_BASE: &str = "https://payledger.invalid/schemas/events/";

/// Serves `schemas/events/*.json` for `$ref`s under [`SCHEMA_BASE`]; nothing else is fetched.
struct SchemaFiles;

impl jsonschema::Retrieve for SchemaFiles {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .as_str()
            .strip_prefix(SCHEMA_BASE)
            .ok_or_else(|| format!("{uri} is not one of schemas/events"))?;
        Ok(serde_json::from_str(&std::fs::read_to_string(schema_path(name))?)?)
    }
}

fn schema_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/events")
        .join(name)
}

/// The envelope's validator, formats (uuid, date-time, uri) checked.
fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(schema_path("envelope.json")).unwrap()).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_retriever(SchemaFiles)
        .build(&schema)
        .expect("envelope.json compiles")
}

fn schema_errors(validator: &jsonschema::Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Checks that the stream holds exactly the log's events, once each: subject
/// `<prefix>.<merchant>.<type>`, `Nats-Msg-Id` `<order>:<sequence>`, the envelope of the event
/// (valid against the schemas), and each order's events in sequence order with no gap.
fn check_stream(
    stream: &TestStream,
    messages: &[StoredMessage],
    events: &[LogEvent],
    merchants: &HashMap<Uuid, OrderOwner>,
) {
    let validator = validator();
    for m in messages {
        let errors = schema_errors(&validator, &m.body);
        assert!(
            errors.is_empty(),
            "{} does not match the schemas: {errors:?}\n{}",
            m.msg_id,
            m.body
        );
    }
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a message is duplicated in the stream");
    assert_eq!(messages.len(), events.len(), "stream and log differ in length");

    let by_id: HashMap<String, &LogEvent> = events.iter().map(|e| (msg_id(e.order_id, e.sequence), e)).collect();
    let mut next_sequence: HashMap<Uuid, i64> = HashMap::new();
    for m in messages {
        let e = by_id
            .get(&m.msg_id)
            .unwrap_or_else(|| panic!("{} is not an event of the log", m.msg_id));
        let owner = &merchants[&e.order_id];
        assert_eq!(
            m.subject,
            format!("{}.{}.{}", stream.prefix, owner.merchant_id, e.event_type)
        );
        assert_eq!(m.envelope, Envelope::new(e, owner).unwrap(), "{}", m.msg_id);
        assert_eq!(m.mode, owner.mode.as_str(), "{}: the Payledger-Mode header", m.msg_id);
        let expected = next_sequence.entry(e.order_id).or_insert(1);
        assert_eq!(e.sequence, *expected, "order {} out of order in the stream", e.order_id);
        *expected += 1;
    }
}

/// The log's events and each order's owner.
async fn log_of(db: &Database) -> (Vec<LogEvent>, HashMap<Uuid, OrderOwner>) {
    let events = payledger_tests::committed_events(db).await;
    let orders: Vec<Uuid> = events
        .iter()
        .map(|e| e.order_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let merchants = db.log().owners_of(&orders).await.unwrap();
    (events, merchants)
}

/// Waits until the relay's checkpoint is at the log's last event.
async fn wait_caught_up(db: &Database, metrics: &RelayMetrics) {
    let (events, _) = log_of(db).await;
    let last = events.last().expect("events").position.global_position as u64;
    let caught_up = eventually(WAIT * 3, || async {
        (metrics.snapshot().checkpoint_position == last).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "relay never caught up: {:?}", metrics.snapshot());
}

async fn refund(s: &TestServer, key: &str, order_id: &str, out_refund_no: &str, amount: i64) {
    let r = s
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(key),
            Some(&json!({"out_refund_no": out_refund_no, "amount": amount})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn create_pay_refund_publish_the_expected_messages_once_each(backend: Backend) {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let Some(s) = TestServer::start_with_relay(backend, stream.relay_config(&nats_url())).await else {
        return;
    };
    let shop1 = s.add_merchant("shop1").await;
    let shop2 = s.add_merchant("shop-2").await;
    let a = create_id(&s, &shop1.api_key, &order_body("A-1", 1000)).await;
    let b = create_id(&s, &shop2.api_key, &order_body("B-1", 500)).await;
    assert_eq!(pay(&s, &a, "success").await.status, 200);
    assert_eq!(pay(&s, &b, "success").await.status, 200);
    refund(&s, &shop1.api_key, &a, "R-1", 300).await;
    wait_status(&s, &shop1.api_key, &a, "partially_refunded").await;
    refund(&s, &shop1.api_key, &a, "R-2", 700).await;
    wait_status(&s, &shop1.api_key, &a, "refunded").await;

    let db = s.database().clone();
    let metrics = s
        .running
        .as_ref()
        .unwrap()
        .relay_metrics
        .clone()
        .expect("the relay runs");
    wait_caught_up(&db, &metrics).await;
    let messages = stream.messages().await;
    let (events, merchants) = log_of(&db).await;
    check_stream(&stream, &messages, &events, &merchants);

    let of = |order: &str| -> Vec<(String, String)> {
        messages
            .iter()
            .filter(|m| m.envelope.order_id.to_string() == order)
            .map(|m| (m.subject.clone(), m.msg_id.clone()))
            .collect()
    };
    let expected = |merchant: &str, order: &str, types: &[&str]| -> Vec<(String, String)> {
        types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    format!("{}.{merchant}.{t}", stream.prefix),
                    format!("{order}:{}", i + 1),
                )
            })
            .collect()
    };
    assert_eq!(
        of(&a),
        expected(
            "shop1",
            &a,
            &[
                "OrderCreated",
                "ChannelOrderOpened",
                "PaymentSucceeded",
                "RefundRequested",
                "RefundSucceeded",
                "RefundRequested",
                "RefundSucceeded"
            ]
        )
    );
    assert_eq!(
        of(&b),
        expected(
            "shop-2",
            &b,
            &["OrderCreated", "ChannelOrderOpened", "PaymentSucceeded"]
        )
    );
    let paid = messages
        .iter()
        .find(|m| m.msg_id == format!("{a}:3"))
        .expect("PaymentSucceeded");
    assert_eq!(paid.envelope.metadata["actor"], "channel:sandbox");
    assert_eq!(
        paid.envelope.payload["amount"],
        json!({"amount_minor": 1000, "currency": "CNY"})
    );
    let no_lag = eventually(WAIT, || async { (metrics.snapshot().lag_ms == 0).then_some(()) }).await;
    assert!(
        no_lag.is_some(),
        "a caught-up relay reports lag: {:?}",
        metrics.snapshot()
    );
    // And Prometheus sees the relay (the counter is per process: other tests add to it).
    let scraped = s.call("GET", "/metrics", None, None).await;
    let published: f64 = scraped
        .text
        .lines()
        .find_map(|l| l.strip_prefix("payledger_events_published_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no payledger_events_published_total in {}", scraped.text));
    assert!(published >= messages.len() as f64, "{published} < {}", messages.len());
}

#[tokio::test]
async fn create_pay_refund_publish_the_expected_messages_once_each_postgres() {
    create_pay_refund_publish_the_expected_messages_once_each(Backend::Postgres).await;
}

#[tokio::test]
async fn create_pay_refund_publish_the_expected_messages_once_each_sqlite() {
    create_pay_refund_publish_the_expected_messages_once_each(Backend::Sqlite).await;
}

/// `n` paid orders of merchant `m` (3 events each).
async fn paid_orders(s: &TestServer, key: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let id = create_id(s, key, &order_body(&format!("{prefix}-{i}"), 100 + i as i64)).await;
        assert_eq!(pay(s, &id, "success").await.status, 200);
    }
}

/// One step of `relay` that is not [`RelayProgress::HeldBack`]: an open transaction anywhere
/// in the cluster (the transaction ids' horizon is cluster-wide, and sibling tests load it) may
/// hold the log's end back for a moment; the relay's contract is to look again.
async fn step_past_held_back(relay: &mut Relay) -> RelayProgress {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match relay.step().await.unwrap() {
            RelayProgress::HeldBack if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            progress => return progress,
        }
    }
}

#[tokio::test]
async fn a_relay_killed_mid_stream_restarts_without_losing_or_duplicating_a_message() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let Some(s) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    paid_orders(&s, &m.api_key, "K", 20).await;
    let db = s.database().clone();
    let mut config = stream.relay_config(&nats_url());
    config.batch_events_max = 7;

    // Killed exactly between the acks of a batch and its checkpoint: the batch is in the stream,
    // the checkpoint does not say so.
    let mut first = Relay::new(db.clone(), config.clone());
    first.connect().await.unwrap();
    assert_eq!(step_past_held_back(&mut first).await, RelayProgress::Published(7));
    assert_eq!(step_past_held_back(&mut first).await, RelayProgress::Published(7));
    let checkpoint = payledger_store::subscription::checkpoint(db.pool(), &config.checkpoint)
        .await
        .unwrap();
    let unacknowledged = db.log().read_after(checkpoint, 7).await.unwrap();
    let published = first.publish(&unacknowledged).await.unwrap();
    assert_eq!((published.acked, published.duplicates), (7, 0));
    drop(first);
    assert_eq!(stream.count().await, 21);

    let second = Relay::new(db.clone(), config.clone());
    let second_metrics = second.metrics();
    let task = tokio::spawn(second.run());
    wait_caught_up(&db, &second_metrics).await;
    task.abort();
    assert_eq!(
        second_metrics.snapshot().duplicates_total,
        7,
        "the re-published batch was absorbed by JetStream"
    );

    // Killed at whatever point it happens to be (aborting the task), several times.
    paid_orders(&s, &m.api_key, "L", 20).await;
    config.batch_events_max = 5;
    for _ in 0..3 {
        let relay = Relay::new(db.clone(), config.clone());
        let metrics = relay.metrics();
        let task = tokio::spawn(relay.run());
        eventually(WAIT, || async {
            (metrics.snapshot().published_total >= 5).then_some(())
        })
        .await;
        task.abort();
        let _ = task.await;
    }
    let last = Relay::new(db.clone(), config.clone());
    let metrics = last.metrics();
    let task = tokio::spawn(last.run());
    wait_caught_up(&db, &metrics).await;
    task.abort();

    let (events, merchants) = log_of(&db).await;
    assert_eq!(events.len(), 120);
    check_stream(&stream, &stream.messages().await, &events, &merchants);
}

#[tokio::test]
async fn while_nats_is_down_orders_are_accepted_and_published_in_order_when_it_returns() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    // NATS down from the start: the relay's port is closed.
    let mut proxy = Proxy::new(nats_addr()).await;
    let Some(s) =
        TestServer::start_with_relay(Backend::Postgres, stream.relay_config(&proxy.url_for(&nats_url()))).await
    else {
        return;
    };
    let metrics = s
        .running
        .as_ref()
        .unwrap()
        .relay_metrics
        .clone()
        .expect("the relay runs");
    let m = s.add_merchant("shop1").await;
    paid_orders(&s, &m.api_key, "D", 3).await;
    let failed = eventually(WAIT, || async {
        (metrics.snapshot().failed_steps_total >= 2).then_some(())
    })
    .await;
    assert!(failed.is_some(), "the relay never noticed NATS is down");
    assert_eq!(metrics.snapshot().published_total, 0);
    assert_eq!(stream.count().await, 0);
    assert!(metrics.snapshot().lag_ms > 0);

    // NATS comes back: everything is published.
    proxy.start().await;
    let db = s.database().clone();
    wait_caught_up(&db, &metrics).await;
    assert_eq!(stream.count().await, 9);

    // NATS goes away while the relay is connected, more orders come, NATS returns.
    proxy.stop().await;
    let failed_before = metrics.snapshot().failed_steps_total;
    paid_orders(&s, &m.api_key, "E", 5).await;
    let failed = eventually(WAIT, || async {
        (metrics.snapshot().failed_steps_total > failed_before).then_some(())
    })
    .await;
    assert!(failed.is_some(), "the relay never noticed NATS went away");
    assert_eq!(stream.count().await, 9, "nothing is published while NATS is away");
    proxy.start().await;
    wait_caught_up(&db, &metrics).await;

    let (events, merchants) = log_of(&db).await;
    assert_eq!(events.len(), 24);
    check_stream(&stream, &stream.messages().await, &events, &merchants);
}

/// What the test above lacks: NATS cut while orders keep coming from concurrent clients, and cut
/// again while the relay works through a backlog (between a batch's publishes and their acks).
/// JetStream must end up with every event exactly once, in order per order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cut_under_load_and_mid_backlog_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 3;
    const ORDERS_PER_CLIENT: usize = 8;
    const BACKLOG_ORDERS: usize = 20;
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let mut proxy = Proxy::new(nats_addr()).await;
    proxy.start().await;
    let mut config = stream.relay_config(&proxy.url_for(&nats_url()));
    // Small batches: a backlog takes many publish-and-ack rounds, so a cut lands inside it.
    config.batch_events_max = 5;
    let Some(s) = TestServer::start_with_relay(Backend::Postgres, config).await else {
        return;
    };
    let metrics = s
        .running
        .as_ref()
        .unwrap()
        .relay_metrics
        .clone()
        .expect("the relay runs");
    let m = s.add_merchant("shop1").await;

    // Under load: clients create and pay orders while NATS is cut twice.
    let load = futures::future::join_all(
        (0..CLIENTS).map(|c| paid_orders(&s, &m.api_key, ["L0", "L1", "L2"][c], ORDERS_PER_CLIENT)),
    );
    let cuts = async {
        for _ in 0..2 {
            let seen = stream.count().await;
            let more = stream.wait_count(seen + 1, WAIT).await;
            assert!(more > seen, "the relay published nothing under load");
            proxy.stop().await;
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            proxy.start().await;
        }
    };
    let failed_before = metrics.snapshot().failed_steps_total;
    futures::join!(load, cuts);
    let db = s.database().clone();
    wait_caught_up(&db, &metrics).await;
    assert!(
        metrics.snapshot().failed_steps_total > failed_before,
        "the relay never noticed the cuts: {:?}",
        metrics.snapshot()
    );

    // A backlog built while NATS is away, cut again once the relay is part-way through it.
    proxy.stop().await;
    let before = stream.count().await;
    paid_orders(&s, &m.api_key, "B", BACKLOG_ORDERS).await;
    let backlog = (BACKLOG_ORDERS * 3) as u64;
    proxy.start().await;
    let at_cut = stream.wait_count(before + 1, WAIT).await;
    proxy.stop().await;
    assert!(
        at_cut > before && at_cut < before + backlog,
        "the cut missed the backlog: {at_cut} of {before}+{backlog} published"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    proxy.start().await;
    wait_caught_up(&db, &metrics).await;

    let (events, merchants) = log_of(&db).await;
    assert_eq!(events.len(), (CLIENTS * ORDERS_PER_CLIENT + BACKLOG_ORDERS) * 3);
    check_stream(&stream, &stream.messages().await, &events, &merchants);
}

fn money(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::CNY).unwrap()
}

/// One envelope of every event type, as the relay builds them.
fn one_of_each() -> Vec<Value> {
    let now = chrono::Utc::now();
    let order_id = payledger_domain::ids::order_id("m1", Mode::Test, "T-1");
    let terms = payledger_domain::OrderTerms {
        merchant_id: "m1".into(),
        mode: Mode::Test,
        out_trade_no: "T-1".into(),
        amount: money(100),
        channel: "sandbox".into(),
        method: "page".into(),
        subject: "Tea".into(),
        user_id: Some("u1".into()),
        notify_url: Some("https://shop.example/notify".into()),
        return_url: None,
        expire_in_seconds: 900,
        metadata: [("k".to_string(), "v".to_string())].into(),
    };
    let refund_id = Uuid::new_v4();
    let events = vec![
        PaymentOrderEvent::OrderCreated {
            order_id,
            terms,
            created_at: now,
            expire_at: now,
        },
        PaymentOrderEvent::ChannelOrderOpened {
            account: None,
            channel_order: payledger_domain::ChannelOrder {
                pay_url: Some("https://pay.example/1".into()),
                qr_code: None,
                channel_ref: Some("ref".into()),
            },
            opened_at: now,
        },
        PaymentOrderEvent::ChannelOrderFailed {
            code: "CHANNEL_DOWN".into(),
            message: "timeout".into(),
            retryable: true,
            failed_at: now,
        },
        PaymentOrderEvent::PaymentSucceeded {
            notify_id: "n1".into(),
            channel_trade_no: "t1".into(),
            amount: money(100),
            paid_at: now,
            late: false,
        },
        PaymentOrderEvent::PaymentFailed {
            notify_id: "n2".into(),
            channel_trade_no: "t1".into(),
            reason: "declined".into(),
            failed_at: now,
        },
        PaymentOrderEvent::PaymentAmountMismatch {
            notify_id: "n3".into(),
            channel_trade_no: "t1".into(),
            expected: money(100),
            received: Money::new(1, Currency::JPY).unwrap(),
            received_at: now,
        },
        PaymentOrderEvent::DuplicatePayment {
            notify_id: "n4".into(),
            channel_trade_no: "t2".into(),
            amount: money(100),
            received_at: now,
        },
        PaymentOrderEvent::OrderClosed {
            reason: payledger_domain::CloseReason::Expired,
            closed_at: now,
        },
        PaymentOrderEvent::RefundRequested {
            refund_id,
            out_refund_no: "R-1".into(),
            amount: money(50),
            reason: None,
            requested_at: now,
        },
        PaymentOrderEvent::RefundSucceeded {
            refund_id,
            channel_refund_no: None,
            succeeded_at: now,
        },
        PaymentOrderEvent::RefundFailed {
            refund_id,
            reason: "closed account".into(),
            failed_at: now,
        },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let sequence = i as i64 + 1;
            let log_event = LogEvent {
                position: LogPosition {
                    transaction_id: 7,
                    global_position: sequence,
                },
                event_id: payledger_domain::ids::event_id(&order_id.to_string(), sequence),
                order_id,
                sequence,
                event_type: event.name().to_string(),
                event_version: EVENT_VERSION.to_string(),
                event,
                metadata: json!({"actor": "merchant:m1"}),
                recorded_at: now,
            };
            let owner = OrderOwner {
                merchant_id: "m1".into(),
                mode: Mode::Test,
            };
            serde_json::to_value(Envelope::new(&log_event, &owner).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn every_event_type_has_a_schema_its_envelope_satisfies() {
    let validator = validator();
    let envelopes = one_of_each();
    assert_eq!(envelopes.len(), 11);
    for e in &envelopes {
        let errors = schema_errors(&validator, e);
        assert!(errors.is_empty(), "{}: {errors:?}\n{e}", e["event_type"]);
        assert!(schema_path(&format!("{}.json", e["event_type"].as_str().unwrap())).exists());
    }
}

#[test]
fn the_schemas_refuse_what_the_ledger_never_publishes() {
    let validator = validator();
    let envelopes = one_of_each();
    let paid = envelopes
        .iter()
        .find(|e| e["event_type"] == "PaymentSucceeded")
        .unwrap();
    let refused = |change: &dyn Fn(&mut Value), why: &str| {
        let mut e = paid.clone();
        change(&mut e);
        assert!(!validator.is_valid(&e), "accepted {why}: {e}");
    };
    refused(&|e| e["payload"]["amount"]["amount_minor"] = json!(0), "a zero amount");
    refused(
        &|e| e["payload"]["amount"]["amount_minor"] = json!(10.5),
        "a fractional amount",
    );
    refused(
        &|e| e["payload"]["amount"]["amount_minor"] = json!(9_007_199_254_740_992_i64),
        "an amount past 2^53 - 1",
    );
    refused(
        &|e| e["payload"]["amount"]["currency"] = json!("cny"),
        "a lower-case currency",
    );
    refused(
        &|e| e["payload"]["paid_at"] = json!("yesterday"),
        "a time that is not RFC 3339",
    );
    refused(
        &|e| e["order_id"] = json!("not-a-uuid"),
        "an order id that is not a UUID",
    );
    refused(
        &|e| {
            e["payload"].as_object_mut().unwrap().remove("late");
        },
        "a payload missing a field",
    );
    refused(&|e| e["payload"]["extra"] = json!(1), "an unknown payload field");
    refused(&|e| e["event_version"] = json!("2.0"), "a version this type never had");
    let failed = envelopes
        .iter()
        .find(|e| e["event_type"] == "ChannelOrderFailed")
        .unwrap();
    assert_eq!(failed["event_version"], "2.0");
    let mut v1 = failed.clone();
    v1["payload"].as_object_mut().unwrap().remove("retryable");
    assert!(
        !validator.is_valid(&v1),
        "accepted a 1.0 ChannelOrderFailed: the relay publishes upcast payloads"
    );
    refused(
        &|e| e["event_type"] = json!("RefundFailed"),
        "a payload of another type",
    );
    refused(&|e| e["event_type"] = json!("Unknown"), "an unknown event type");
    refused(&|e| e["sequence"] = json!(0), "sequence 0");
}

async fn the_relay_checkpoint_only_moves_forward(backend: Backend) {
    use payledger_bus::relay::save_checkpoint_forward;
    use payledger_store::subscription::checkpoint;
    let Some(test_db) = payledger_tests::TestDb::create(backend).await else {
        return;
    };
    let db = Database::connect(Some(&test_db.url), Default::default())
        .await
        .expect("connects");
    db.migrate().await.expect("migrates");
    let at = |global_position| LogPosition {
        transaction_id: 0,
        global_position,
    };
    save_checkpoint_forward(db.pool(), "nats_relay", at(10))
        .await
        .expect("saved");
    // A second relay that read the same old batch finishes later: it must not move it back.
    save_checkpoint_forward(db.pool(), "nats_relay", at(5))
        .await
        .expect("saved");
    assert_eq!(checkpoint(db.pool(), "nats_relay").await.expect("read"), at(10));
    save_checkpoint_forward(db.pool(), "nats_relay", at(12))
        .await
        .expect("saved");
    assert_eq!(checkpoint(db.pool(), "nats_relay").await.expect("read"), at(12));
    // Commit order comes first on PostgreSQL: a later transaction with a smaller position is ahead.
    let later_tx = LogPosition {
        transaction_id: 1,
        global_position: 3,
    };
    save_checkpoint_forward(db.pool(), "nats_relay", later_tx)
        .await
        .expect("saved");
    assert_eq!(checkpoint(db.pool(), "nats_relay").await.expect("read"), later_tx);
    db.close().await;
}

payledger_tests::both_backends!(the_relay_checkpoint_only_moves_forward);

/// The stream's retention and duplicate window.
async fn stream_settings(stream: &TestStream) -> (std::time::Duration, std::time::Duration) {
    let mut s = stream.js.get_stream(&stream.name).await.expect("the stream exists");
    let info = s.info().await.expect("stream info");
    (info.config.max_age, info.config.duplicate_window)
}

#[tokio::test]
async fn the_relay_creates_a_missing_stream_with_the_configured_retention_and_dup_window() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let mut relay = stream.relay_config(&nats_url());
    relay.max_age_ms = 7_200_000;
    relay.duplicate_window_ms = 90_000;
    let Some(_s) = TestServer::start_with_relay(Backend::Sqlite, relay).await else {
        return;
    };
    // Created before the first event, so consumers elsewhere can bind to it.
    eventually(WAIT, || async {
        stream.js.get_stream(&stream.name).await.ok().map(|_| ())
    })
    .await
    .expect("the relay created the stream");
    let (max_age, dup_window) = stream_settings(&stream).await;
    assert_eq!(max_age, std::time::Duration::from_secs(7_200));
    assert_eq!(dup_window, std::time::Duration::from_secs(90));
}

#[tokio::test]
async fn an_existing_stream_keeps_the_settings_an_operator_gave_it() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    let hour = std::time::Duration::from_secs(3_600);
    let half_minute = std::time::Duration::from_secs(30);
    stream
        .js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.name.clone(),
            subjects: vec![format!("{}.>", stream.prefix)],
            max_age: hour,
            duplicate_window: half_minute,
            ..Default::default()
        })
        .await
        .expect("the operator's stream");
    let Some(s) = TestServer::start_with_relay(Backend::Sqlite, stream.relay_config(&nats_url())).await else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    paid_orders(&s, &m.api_key, "K", 1).await;
    assert_eq!(stream.wait_count(3, WAIT).await, 3, "the relay publishes into it");
    assert_eq!(
        stream_settings(&stream).await,
        (hour, half_minute),
        "left as the operator set it"
    );
}
