//! Merchant notifications, built on the global log.
//!
//! - [`NotifyEnqueuer`]: a transactional subscriber of the global log. Each payment or refund
//!   outcome event becomes one `notify_job` row in the same transaction as the checkpoint, so a
//!   notification is never lost to a restart and never queued twice.
//! - [`EventEnqueuer`]: the same per event, each in its own transaction, as the handler of the
//!   notifier's durable JetStream consumer in NATS mode (`payledger_bus::consumer`).
//! - [`Sender`]: delivers due jobs: `POST notify_url` with the JSON notification and
//!   `Payledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, t + "." + body)>`.
//!   A 2xx answer delivers it; otherwise it is retried on the [`RetrySchedule`] and abandoned
//!   after the last attempt. Every attempt is recorded in `notify_attempt`.
//!
//! - [`outbound`]: the guard that keeps `notify_url` from reaching our own network.
//!
//! - [`queries`]: the merchant's view of the queue (`GET /v1/notifications`) and resend.
//!
//! Notification body: `{"id", "type", "created_at", "data": <order view>}` (+ `refund_id` for
//! refund types); `id` is stable across attempts (the event's id), so merchants de-duplicate on it.

pub mod enqueue;
pub mod outbound;
pub mod queries;
pub mod send;
pub mod signature;

pub use enqueue::{enqueue, notification_type, EventEnqueuer, NotifyEnqueuer, ENQUEUER_NAME};
pub use send::{
    PrivateTargets, RetrySchedule, Sender, SenderConfig, NOTIFICATIONS_TOTAL, NOTIFICATION_LATENCY_SECONDS,
};
pub use signature::{sign, sign_with_all, verify, SIGNATURE_HEADER};
