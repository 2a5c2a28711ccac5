//! payledger on NATS JetStream.
//!
//! - [`envelope`]: the message body every event is published in (`schemas/events/`).
//! - [`relay`]: the subscriber of the global log that publishes every event to the stream
//!   `PAYLEDGER_EVENTS`, with many acks in flight, surviving NATS outages.

pub mod envelope;
pub mod relay;

pub use envelope::Envelope;
pub use relay::{Relay, RelayConfig, RelayError, RelayMetrics, RelayMetricsSnapshot};
