//! A connection that accepts and then says nothing (a hung channel, a half-open database or
//! NATS connection) does not stall the refund worker's loops for ever: a handler stuck on one is
//! abandoned after its timeout, logged, and its event tried again later.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use payledger_bus::{Consumer, ConsumerConfig, Envelope};
use payledger_store::subscription::{run_effects_with, EffectSubscriber, SubscriberError};
use payledger_store::LogEvent;
use payledger_tests::nats::TestStream;
use payledger_tests::{eventually, migrated_database, sandbox_terms, Backend, HangingEndpoint};
use tokio::io::AsyncReadExt;

/// A handler whose every call waits for an answer from `peer`, which never comes.
struct AsksASilentPeer {
    peer: SocketAddr,
    calls: AtomicUsize,
}

impl AsksASilentPeer {
    fn new(peer: &HangingEndpoint) -> Arc<Self> {
        let url = url::Url::parse(&peer.url).expect("url");
        let peer = format!("{}:{}", url.host_str().expect("host"), url.port().expect("port"))
            .parse()
            .expect("addr");
        Arc::new(Self {
            peer,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

// `EffectSubscriber` is an `#[async_trait]`; this is what the macro would write.
impl EffectSubscriber for AsksASilentPeer {
    fn name(&self) -> &'static str {
        "silent_peer_test"
    }

    fn handle<'a, 'b, 'r>(
        &'a self,
        _event: &'b LogEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), SubscriberError>> + Send + 'r>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut socket = tokio::net::TcpStream::connect(self.peer).await.expect("connect");
            let mut answer = [0u8; 1];
            let _ = socket.read(&mut answer).await;
            Ok(())
        })
    }
}

/// NATS mode: the refund worker's JetStream consumer gives up a message whose handler hangs on
/// a silent peer (it used to renew the message's ack wait for ever), and gets it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_handler_stuck_on_a_silent_peer_is_abandoned_and_its_message_redelivered() {
    let Some(stream) = TestStream::create().await else {
        return;
    };
    stream
        .js
        .create_stream(jetstream::stream::Config {
            name: stream.name.clone(),
            subjects: vec![format!("{}.>", stream.prefix)],
            ..Default::default()
        })
        .await
        .expect("create the stream");
    let now = chrono::Utc::now();
    let order_id = uuid::Uuid::new_v4();
    let event = LogEvent {
        position: Default::default(),
        event_id: payledger_domain::ids::event_id(&order_id.to_string(), 1),
        order_id,
        sequence: 1,
        event_type: "OrderClosed".into(),
        event_version: payledger_domain::EVENT_VERSION.into(),
        event: payledger_domain::PaymentOrderEvent::OrderClosed {
            reason: payledger_domain::CloseReason::Expired,
            closed_at: now,
        },
        metadata: serde_json::json!({"actor": "test"}),
        recorded_at: now,
    };
    let owner = payledger_store::OrderOwner {
        merchant_id: "m1".into(),
        mode: payledger_domain::Mode::Test,
    };
    let body = serde_json::to_vec(&Envelope::new(&event, &owner).expect("envelope")).expect("json");
    stream
        .js
        .publish(format!("{}.m1.OrderClosed", stream.prefix), body.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let peer = HangingEndpoint::start().await;
    let handler = AsksASilentPeer::new(&peer);
    let mut config = ConsumerConfig::for_events(
        &stream.relay_config(&payledger_tests::nats::nats_url()),
        "silent-peer-test",
        "*",
    );
    config.handler_timeout_ms = 300;
    config.nak_backoff_ms = vec![100];
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(Consumer::new(config, handler.clone()).run(stopped));
    let again = eventually(Duration::from_secs(15), || async {
        (handler.calls() >= 2).then_some(())
    })
    .await;
    let _ = stop.send(true);
    consumer.abort();
    assert!(
        again.is_some(),
        "the handler stuck on a silent peer was never abandoned: {} call(s), {} connection(s)",
        handler.calls(),
        peer.accepted()
    );
}

/// Embedded mode: the refund worker's loop on the log abandons a batch stuck on a silent peer
/// and handles the event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_subscriber_stuck_on_a_silent_peer_is_abandoned_and_retried() {
    let Some((_test_db, db)) = migrated_database(Backend::Sqlite).await else {
        return;
    };
    let order_id = uuid::Uuid::new_v4();
    db.execute(
        order_id,
        payledger_domain::PaymentOrderCommand::CreateOrder {
            order_id,
            terms: sandbox_terms("SILENT-1", 100),
            created_at: chrono::Utc::now(),
        },
        "merchant:m",
    )
    .await
    .expect("an event in the log");
    let peer = HangingEndpoint::start().await;
    let handler = AsksASilentPeer::new(&peer);
    let worker = tokio::spawn(run_effects_with(db.clone(), handler.clone(), 300));
    let again = eventually(Duration::from_secs(15), || async {
        (handler.calls() >= 2).then_some(())
    })
    .await;
    worker.abort();
    assert!(
        again.is_some(),
        "the batch stuck on a silent peer was never abandoned: {} call(s)",
        handler.calls()
    );
}
