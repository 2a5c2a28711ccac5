//! Upcasters: older stored payloads read as the current ones, on every load (the aggregate's and
//! the global log's). Stored events are never rewritten.
//!
//! | type | from | to | change |
//! |---|---|---|---|
//! | `ChannelOrderFailed` | 1.0 | 2.0 | added `retryable` |
//! | `OrderCreated` | 1.0 | 2.0 | added `terms.mode` |
//! | `ChannelOrderOpened` | 1.0 | 2.0 | added `account` (`null`: the channel's legacy account) |

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use payledger_domain::{Mode, CHANNEL_ORDER_FAILED_VERSION, CHANNEL_ORDER_OPENED_VERSION, ORDER_CREATED_VERSION};

/// Every upcaster, applied in order.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(ChannelOrderFailedV1),
        Box::new(OrderCreatedV1),
        Box::new(ChannelOrderOpenedV1),
    ]
}

/// `tagged` (`{"<EventType>": {fields}}`, stored at `event_version`) at the current version of
/// `event_type`, through every upcaster that claims it, and that version. For payloads that
/// reach us outside the event store: messages published by an older payledger.
pub fn upcast_tagged(event_type: &str, event_version: &str, tagged: serde_json::Value) -> (serde_json::Value, String) {
    let mut serialized = SerializedEvent {
        aggregate_id: String::new(),
        sequence: 0,
        aggregate_type: String::new(),
        event_type: event_type.to_string(),
        event_version: event_version.to_string(),
        payload: tagged,
        metadata: serde_json::Value::Null,
    };
    for upcaster in upcasters() {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    (serialized.payload, serialized.event_version)
}

/// `ChannelOrderFailed` 1.0 → 2.0: adds `retryable`.
///
/// Version 1.0 recorded code `channel_error` for every failure, with the adapter error's
/// `Display` as the message, which starts with `channel unavailable: ` exactly when the channel
/// could not be reached (`ChannelError::Unavailable`) — the failures 2.0 calls retryable.
pub struct ChannelOrderFailedV1;

/// What 1.0 messages of unreachable channels start with.
const V1_UNAVAILABLE_PREFIX: &str = "channel unavailable: ";

impl EventUpcaster for ChannelOrderFailedV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "ChannelOrderFailed" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event
            .payload
            .get_mut("ChannelOrderFailed")
            .and_then(|f| f.as_object_mut())
        {
            let retryable = fields
                .get("message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.starts_with(V1_UNAVAILABLE_PREFIX));
            fields.insert("retryable".into(), serde_json::Value::Bool(retryable));
        }
        event.event_version = CHANNEL_ORDER_FAILED_VERSION.to_string();
        event
    }
}

/// `OrderCreated` 1.0 → 2.0: adds `terms.mode`.
///
/// Before modes existed the sandbox was the only channel whose money was no one's, and a real
/// channel's money was real: an order on the sandbox is a test order, any other a live one
/// ([`Mode::of_legacy_channel`]).
pub struct OrderCreatedV1;

impl EventUpcaster for OrderCreatedV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "OrderCreated" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(terms) = event
            .payload
            .get_mut("OrderCreated")
            .and_then(|f| f.get_mut("terms"))
            .and_then(|t| t.as_object_mut())
        {
            let channel = terms.get("channel").and_then(|c| c.as_str()).unwrap_or_default();
            let mode = Mode::of_legacy_channel(channel);
            terms.insert("mode".into(), serde_json::Value::String(mode.as_str().into()));
        }
        event.event_version = ORDER_CREATED_VERSION.to_string();
        event
    }
}

/// `ChannelOrderOpened` 1.0 → 2.0: adds `account`, `null`.
///
/// Before accounts were recorded a channel had exactly one account, and the event does not say
/// which: `null` reads as "the channel's legacy account", the one the configuration marks
/// `legacy = true`, or its only account (see the command API's configuration docs). Nothing
/// better can be said without inventing a fact.
pub struct ChannelOrderOpenedV1;

impl EventUpcaster for ChannelOrderOpenedV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "ChannelOrderOpened" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event
            .payload
            .get_mut("ChannelOrderOpened")
            .and_then(|f| f.as_object_mut())
        {
            fields.insert("account".into(), serde_json::Value::Null);
        }
        event.event_version = CHANNEL_ORDER_OPENED_VERSION.to_string();
        event
    }
}
