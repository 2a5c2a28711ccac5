//! NATS for tests: the server (`PAYLEDGER_TEST_NATS`, default `nats://127.0.0.1:4222`, with
//! JetStream), a stream and subject prefix of its own per test so parallel tests never share
//! subjects, reading back what the relay stored; [`Proxy`] (see [`crate::proxy`]) cuts NATS off and
//! brings it back.
//!
//! When NATS is unreachable, tests fail if `CI=true`, and are skipped with a loud message
//! otherwise (as for PostgreSQL).

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::proxy::Proxy;
use async_nats::jetstream::{self, Context};
use payledger_bus::{Envelope, RelayConfig};
pub use payledger_testkit::nats_url;

/// A stream and subject prefix of one test, deleted when dropped.
pub struct TestStream {
    /// JetStream on the test server.
    pub js: Context,
    /// The stream's name, `PAYLEDGER_TEST_<uuid>`.
    pub name: String,
    /// The subject prefix, `payledger_test.<uuid>.events`.
    pub prefix: String,
    /// The channel service's subject prefix, `payledger_test.<uuid>.channel`: a test's channel
    /// calls reach only its own servers' channel service.
    pub channel_prefix: String,
}

impl TestStream {
    /// A fresh stream name and prefix on the test server, or `None` when NATS is unreachable
    /// outside CI. The relay creates the stream.
    ///
    /// # Panics
    /// When NATS is unreachable and `CI=true`.
    pub async fn create() -> Option<Self> {
        let client = payledger_testkit::connect_nats("NATS test").await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        Some(Self {
            js: jetstream::new(client),
            name: format!("PAYLEDGER_TEST_{}", id.to_uppercase()),
            prefix: format!("payledger_test.{id}.events"),
            channel_prefix: format!("payledger_test.{id}.channel"),
        })
    }

    /// A relay configuration for this stream at `nats_url`.
    pub fn relay_config(&self, nats_url: &str) -> RelayConfig {
        let mut config = RelayConfig::new(nats_url);
        config.stream = self.name.clone();
        config.subject_prefix = self.prefix.clone();
        config.channel_subject_prefix = self.channel_prefix.clone();
        // Short, so a test of a NATS outage sees a failed step quickly.
        config.ack_timeout_ms = 1_000;
        config
    }

    /// Messages in the stream (0 while it does not exist).
    pub async fn count(&self) -> u64 {
        match self.js.get_stream(&self.name).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until the stream holds at least `n` messages (or `timeout`); returns the count.
    pub async fn wait_count(&self, n: u64, timeout: Duration) -> u64 {
        crate::eventually(timeout, || async {
            let c = self.count().await;
            (c >= n).then_some(c)
        })
        .await
        .unwrap_or(self.count().await)
    }

    /// Every message of the stream, in stream order.
    ///
    /// # Panics
    /// When the stream cannot be read or a body is not an [`Envelope`].
    pub async fn messages(&self) -> Vec<StoredMessage> {
        let mut stream = self.js.get_stream(&self.name).await.expect("stream exists");
        let last = stream.info().await.expect("stream info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.expect("message");
            let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON body");
            out.push(StoredMessage {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                mode: m
                    .headers
                    .get(payledger_bus::envelope::MODE_HEADER)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                envelope: serde_json::from_value(body.clone()).expect("an envelope"),
                body,
                stored_at_unix_ns: m.time.unix_timestamp_nanos(),
            });
        }
        out
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop cannot await inside the test's runtime.
        let (url, name) = (nats_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                jetstream::new(client).delete_stream(&name).await.ok()
            })
        })
        .join();
    }
}

/// One message as JetStream stored it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub subject: String,
    /// The `Nats-Msg-Id` header.
    pub msg_id: String,
    /// The `Payledger-Mode` header (empty when absent).
    pub mode: String,
    /// The body as JSON (for schema validation).
    pub body: serde_json::Value,
    /// The body as an envelope.
    pub envelope: Envelope,
    /// When JetStream stored it, Unix nanoseconds.
    pub stored_at_unix_ns: i128,
}

/// The address of the test NATS server (for [`Proxy`]).
pub fn nats_addr() -> SocketAddr {
    crate::proxy::upstream_of(&nats_url(), 4222)
}
