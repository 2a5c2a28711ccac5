//! payledger on NATS JetStream.
//!
//! - [`consumer`]: durable JetStream pull consumers running the refund worker and the
//!   notifier's enqueuer in NATS mode.
//! - [`envelope`]: the message body every event is published in (`schemas/events/`).
//! - [`relay`]: the subscriber of the global log that publishes every event to the stream
//!   `PAYLEDGER_EVENTS`, with many acks in flight, surviving NATS outages.
//! - [`channel_service`]: the channel adapters as a NATS service, and the requester that calls it.

pub mod channel_service;
pub mod consumer;
pub mod envelope;
pub mod relay;

pub use consumer::{Consumer, ConsumerConfig};
pub use envelope::Envelope;
pub use relay::{Relay, RelayConfig, RelayError, RelayMetrics, RelayMetricsSnapshot};
