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

/// The servers of a `--nats-url` value: one URL, or several separated by commas (the nodes of a
/// cluster; the client connects to one and fails over to the others). Every NATS connection of
/// payledger is made with this.
///
/// # Errors
/// The first URL the client cannot parse, named without its credentials.
pub fn server_addrs(nats_url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    nats_url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                let shown = u.rsplit('@').next().unwrap_or(u);
                format!("NATS server URL {shown:?} is invalid: {e}")
            })
        })
        .collect()
}
pub use envelope::Envelope;
pub use relay::{Relay, RelayConfig, RelayError, RelayMetrics, RelayMetricsSnapshot};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_list_is_every_node_and_a_bad_url_is_named_without_credentials() {
        let addrs = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://127.0.0.1:4224").expect("three");
        assert_eq!(addrs.len(), 3);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").expect("one").len(), 1);
        let e = server_addrs("nats://127.0.0.1:4222,nats://user:secret@host:notaport").expect_err("a bad port");
        assert!(e.contains("host:notaport") && !e.contains("secret"), "{e}");
    }
}
