//! The message every event travels in on NATS: the body of each message of stream
//! `PAYLEDGER_EVENTS`. Its JSON Schema is `schemas/events/envelope.json`; each payload's is
//! `schemas/events/<EventType>.json`.
//!
//! ```json
//! {
//!   "event_id": "0b0c…",                       // stable: UUIDv5 of (order_id, sequence)
//!   "event_type": "PaymentSucceeded",
//!   "event_version": "1.0",                    // version of `payload`'s shape (after upcasting)
//!   "order_id": "6f1e…",
//!   "merchant_id": "m_1",
//!   "mode": "live",                            // test or live: never mix them downstream
//!   "sequence": 3,                             // 1-based, dense per order
//!   "position": {"transaction_id": 812, "global_position": 40312},
//!   "recorded_at": "2026-01-02T03:04:05.123456Z",  // when the database stored it
//!   "occurred_at": "2026-01-02T03:04:05.120Z",     // when the fact happened (command time)
//!   "metadata": {"actor": "channel:sandbox"},
//!   "payload": {"notify_id": "…", "amount": {"amount_minor": 100, "currency": "CNY"}, …}
//! }
//! ```

use chrono::{DateTime, Utc};
use payledger_domain::{Mode, PaymentOrderEvent};
use payledger_store::{LogEvent, LogPosition, OrderOwner};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an envelope could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The event did not serialise as `{"<EventType>": {fields}}` (a bug in the domain's serde).
    #[error("event {order_id}#{sequence} does not serialise as {{\"<EventType>\": {{…}}}}")]
    Shape { order_id: Uuid, sequence: i64 },
    /// serde_json failed.
    #[error("serialising event: {0}")]
    Json(#[from] serde_json::Error),
    /// A message body that is not an envelope, or whose payload is not an event of its
    /// `event_type` (a message not published by the relay, or from a newer payledger).
    #[error("decoding an envelope: {0}")]
    Decode(String),
}

/// One event as published on NATS. Field by field the contract of `schemas/events/envelope.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Stable id of the event: `ids::event_id(order_id, sequence)`. Consumers de-duplicate on it.
    pub event_id: Uuid,
    /// The event type, e.g. `PaymentSucceeded`; selects the payload's schema.
    pub event_type: String,
    /// Version of `payload`'s shape. Stored events of older versions are upcast before
    /// publishing, so this is always the current version of `event_type`.
    pub event_version: String,
    /// The order (aggregate) the event belongs to.
    pub order_id: Uuid,
    /// The merchant that owns the order (also the subject's third token).
    pub merchant_id: String,
    /// The order's mode, `test` or `live` (also the `Payledger-Mode` header). Every message the
    /// relay publishes has it; absent only in messages published before modes existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// 1-based position of the event in its order; dense, so a gap means a missed message.
    pub sequence: i64,
    /// Position in the global log; increases in commit order across all orders.
    pub position: LogPosition,
    /// When the database stored the event (UTC, RFC 3339).
    pub recorded_at: DateTime<Utc>,
    /// When the fact happened: the command's time (UTC, RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// Stored metadata: `actor` (`merchant:<id>`, `channel:<name>`, `worker:<name>`), all strings.
    pub metadata: serde_json::Value,
    /// The event's fields, as `schemas/events/<event_type>.json` describes.
    pub payload: serde_json::Value,
}

impl Envelope {
    /// The envelope of `event`, whose order belongs to `owner`.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the event does not serialise (a bug, not bad input).
    pub fn new(event: &LogEvent, owner: &OrderOwner) -> Result<Self, EnvelopeError> {
        // cqrs-es stores `{"<EventType>": {fields}}`; the envelope names the type once, in
        // `event_type`, and carries the fields alone.
        let payload = match serde_json::to_value(&event.event)? {
            serde_json::Value::Object(map) if map.len() == 1 => {
                map.into_iter().next().map(|(_, fields)| fields).unwrap_or_default()
            }
            _ => {
                return Err(EnvelopeError::Shape {
                    order_id: event.order_id,
                    sequence: event.sequence,
                })
            }
        };
        Ok(Self {
            event_id: event.event_id,
            event_type: event.event.name().to_string(),
            event_version: event.event.version().to_string(),
            order_id: event.order_id,
            merchant_id: owner.merchant_id.clone(),
            mode: Some(owner.mode),
            sequence: event.sequence,
            position: event.position,
            recorded_at: event.recorded_at,
            occurred_at: event.event.occurred_at(),
            metadata: event.metadata.clone(),
            payload,
        })
    }

    /// The envelope in a message body (JSON, as the relay publishes it).
    ///
    /// # Errors
    /// [`EnvelopeError::Decode`] when the body is not an envelope.
    pub fn from_slice(body: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(body).map_err(|e| EnvelopeError::Decode(e.to_string()))
    }

    /// The event back as the global log yields it, for consumers that share handlers with the
    /// embedded subscribers. The relay publishes payloads at the current version; a message an
    /// older payledger published (still in the stream after an upgrade) is upcast here as the
    /// store upcasts its rows, and `event_version` is then the version it was upcast to.
    ///
    /// # Errors
    /// [`EnvelopeError::Decode`] when `payload` is not an event of type `event_type`.
    pub fn into_log_event(mut self) -> Result<LogEvent, EnvelopeError> {
        let mut tagged = serde_json::Map::new();
        tagged.insert(self.event_type.clone(), self.payload);
        let (tagged, version) = payledger_store::upcast::upcast_tagged(
            &self.event_type,
            &self.event_version,
            serde_json::Value::Object(tagged),
        );
        self.event_version = version;
        let event: PaymentOrderEvent = serde_json::from_value(tagged).map_err(|e| {
            EnvelopeError::Decode(format!(
                "{} #{} of order {}: {e}",
                self.event_type, self.sequence, self.order_id
            ))
        })?;
        Ok(LogEvent {
            position: self.position,
            event_id: self.event_id,
            order_id: self.order_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            event,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        })
    }

    /// `Nats-Msg-Id` of this event: `<order_id>:<sequence>`. JetStream drops a second message
    /// with the same id inside the stream's duplicate window.
    pub fn msg_id(&self) -> String {
        msg_id(self.order_id, self.sequence)
    }
}

/// The header every message carries the order's mode in: `test` or `live`.
pub const MODE_HEADER: &str = "Payledger-Mode";

/// `Nats-Msg-Id` of event `sequence` of order `order_id`: `<order_id>:<sequence>`.
pub fn msg_id(order_id: Uuid, sequence: i64) -> String {
    format!("{order_id}:{sequence}")
}

/// Whether `token` is usable as one token of a NATS subject as we build them: 1 to 64 of
/// `A-Z a-z 0-9 _ -` (what the API accepts as a merchant id; no `.`, `*`, `>` or whitespace).
pub fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The subject of an event: `<prefix>.<merchant_id>.<event_type>`. A merchant id that is not a
/// subject token (never accepted by the API; only data written by hand) has every other byte
/// replaced by `_`, so it cannot widen a subscriber's wildcard; the envelope keeps the real id.
pub fn subject(prefix: &str, merchant_id: &str, event_type: &str) -> String {
    if is_subject_token(merchant_id) {
        format!("{prefix}.{merchant_id}.{event_type}")
    } else {
        let safe: String = merchant_id
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let safe = if safe.is_empty() { "_".to_string() } else { safe };
        format!("{prefix}.{safe}.{event_type}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_the_api_accepts_are_subject_tokens_as_they_are() {
        assert_eq!(
            subject("payledger.events", "m_1-A", "OrderCreated"),
            "payledger.events.m_1-A.OrderCreated"
        );
        assert!(is_subject_token(&"a".repeat(64)));
        assert!(!is_subject_token(&"a".repeat(65)));
    }

    #[test]
    fn a_merchant_id_with_wildcards_or_dots_cannot_widen_a_subject() {
        assert_eq!(subject("p", "a.b", "X"), "p.a_b.X");
        assert_eq!(subject("p", ">", "X"), "p._.X");
        assert_eq!(subject("p", "", "X"), "p._.X");
        assert_eq!(subject("p", "a *", "X"), "p.a__.X");
    }

    #[test]
    fn an_envelope_decodes_back_into_the_event_it_was_built_from() {
        let order_id = Uuid::from_u128(7);
        let closed_at = "2026-01-02T03:04:05.123456Z".parse().expect("time");
        let event = LogEvent {
            position: LogPosition {
                transaction_id: 812,
                global_position: 40_312,
            },
            event_id: Uuid::from_u128(8),
            order_id,
            sequence: 3,
            event_type: "OrderClosed".into(),
            event_version: PaymentOrderEvent::OrderClosed {
                reason: payledger_domain::CloseReason::Expired,
                closed_at,
            }
            .version()
            .into(),
            event: PaymentOrderEvent::OrderClosed {
                reason: payledger_domain::CloseReason::Expired,
                closed_at,
            },
            metadata: serde_json::json!({"actor": "worker:monitor"}),
            recorded_at: closed_at,
        };
        let owner = OrderOwner {
            merchant_id: "m_1".into(),
            mode: Mode::Test,
        };
        let envelope = Envelope::new(&event, &owner).expect("envelope");
        assert_eq!(envelope.mode, Some(Mode::Test));
        let body = serde_json::to_vec(&envelope).expect("json");
        let decoded = Envelope::from_slice(&body)
            .expect("decodes")
            .into_log_event()
            .expect("an event");
        assert_eq!(decoded, event);
    }

    #[test]
    fn a_payload_of_another_type_is_refused() {
        let envelope = Envelope {
            event_id: Uuid::nil(),
            event_type: "OrderClosed".into(),
            event_version: "1.0".into(),
            order_id: Uuid::nil(),
            merchant_id: "m".into(),
            mode: Some(Mode::Live),
            sequence: 1,
            position: LogPosition::default(),
            recorded_at: Utc::now(),
            occurred_at: Utc::now(),
            metadata: serde_json::json!({}),
            payload: serde_json::json!({"refund_id": "not this"}),
        };
        let e = envelope.into_log_event().expect_err("not an OrderClosed");
        assert!(
            matches!(e, EnvelopeError::Decode(ref m) if m.contains("OrderClosed")),
            "{e}"
        );
        assert!(matches!(Envelope::from_slice(b"{}"), Err(EnvelopeError::Decode(_))));
    }

    /// A message an older payledger published (OrderCreated 1.0: no mode, no envelope `mode`)
    /// still decodes after an upgrade, upcast as the store upcasts its rows.
    #[test]
    fn a_message_of_an_older_version_is_upcast() {
        let body = serde_json::json!({
            "event_id": Uuid::nil(), "event_type": "OrderCreated", "event_version": "1.0",
            "order_id": Uuid::nil(), "merchant_id": "m", "sequence": 1,
            "position": {"transaction_id": 1, "global_position": 1},
            "recorded_at": "2026-01-01T00:00:00Z", "occurred_at": "2026-01-01T00:00:00Z",
            "metadata": {"actor": "merchant:m"},
            "payload": {"order_id": Uuid::nil(), "created_at": "2026-01-01T00:00:00Z",
                "expire_at": "2026-01-01T01:00:00Z",
                "terms": {"merchant_id": "m", "out_trade_no": "T", "amount": {"amount_minor": 1, "currency": "CNY"},
                    "channel": "sandbox", "method": "page", "subject": "s", "user_id": null, "notify_url": null,
                    "return_url": null, "expire_in_seconds": 3600, "metadata": {}}}
        });
        let envelope = Envelope::from_slice(body.to_string().as_bytes()).expect("an envelope");
        assert_eq!(envelope.mode, None);
        let event = envelope.into_log_event().expect("upcast");
        assert_eq!(event.event_version, payledger_domain::ORDER_CREATED_VERSION);
        match event.event {
            PaymentOrderEvent::OrderCreated { terms, .. } => assert_eq!(terms.mode, Mode::Test),
            other => panic!("expected OrderCreated, got {other:?}"),
        }
    }

    #[test]
    fn msg_id_is_order_and_sequence() {
        let id = Uuid::nil();
        assert_eq!(msg_id(id, 7), "00000000-0000-0000-0000-000000000000:7");
    }
}
