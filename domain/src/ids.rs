//! Deterministic identifiers.
//!
//! Both ids are UUIDv5 (RFC 9562 §5.5) of the merchant's own keys, so a retried request lands on
//! the same aggregate or the same refund: idempotency by construction, checked under the
//! aggregate's optimistic lock rather than in a separate table.

use uuid::Uuid;

use crate::mode::Mode;

/// Namespace of order ids. Never change it: every stored order id depends on it.
pub const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b01);
/// Namespace of refund ids. Never change it: every stored refund id depends on it.
pub const REFUND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b02);
/// Namespace of event ids (one per stored event: order id + sequence).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b03);

/// The order id of `out_trade_no` at `merchant_id` in `mode`: live,
/// `UUIDv5(ns, merchant_id + "\n" + out_trade_no)` (the id every order had before modes
/// existed); test, `UUIDv5(ns, merchant_id + "\n" + out_trade_no + "\ntest")`. Each mode has its
/// own `out_trade_no`s: a merchant's staging system may reuse its production order numbers.
///
/// The newline cannot occur in either part (both are validated as `[A-Za-z0-9_-]`), so distinct
/// triples never collide by concatenation.
pub fn order_id(merchant_id: &str, mode: Mode, out_trade_no: &str) -> Uuid {
    let key = match mode {
        Mode::Live => format!("{merchant_id}\n{out_trade_no}"),
        Mode::Test => format!("{merchant_id}\n{out_trade_no}\ntest"),
    };
    Uuid::new_v5(&ORDER_ID_NAMESPACE, key.as_bytes())
}

/// The id a test order of `out_trade_no` had when it was created before modes existed (a sandbox
/// order then, keyed like a live one): [`order_id`] in live mode. Creating a test order looks
/// for it there too, so that a retry of such an order still finds it.
pub fn legacy_test_order_id(merchant_id: &str, out_trade_no: &str) -> Uuid {
    order_id(merchant_id, Mode::Live, out_trade_no)
}

/// The id of a live order whose [`order_id`] is taken by a test order from before modes existed
/// (see [`legacy_test_order_id`]): `UUIDv5(ns, merchant_id + "\n" + out_trade_no + "\nlive")`.
/// So test data never blocks a live order number.
pub fn live_order_id_beside_legacy_test(merchant_id: &str, out_trade_no: &str) -> Uuid {
    let key = format!("{merchant_id}\n{out_trade_no}\nlive");
    Uuid::new_v5(&ORDER_ID_NAMESPACE, key.as_bytes())
}

/// The refund id of `out_refund_no` on `order_id`: `UUIDv5(ns, order_id bytes + out_refund_no)`.
pub fn refund_id(order_id: Uuid, out_refund_no: &str) -> Uuid {
    let mut key = order_id.as_bytes().to_vec();
    key.extend_from_slice(out_refund_no.as_bytes());
    Uuid::new_v5(&REFUND_ID_NAMESPACE, &key)
}

/// The id of the event at `sequence` (1-based, dense) of `order_id`. Stable across replays and
/// backends, so consumers can de-duplicate on it.
pub fn event_id(order_id: &str, sequence: i64) -> Uuid {
    let key = format!("{order_id}:{sequence}");
    Uuid::new_v5(&EVENT_ID_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_id_is_stable_and_keyed_by_merchant_and_out_trade_no() {
        let live = |m, no| order_id(m, Mode::Live, no);
        assert_eq!(live("m1", "T1"), live("m1", "T1"));
        assert_ne!(live("m1", "T1"), live("m2", "T1"));
        assert_ne!(live("m1", "T1"), live("m1", "T2"));
        assert_eq!(live("m1", "T1").get_version_num(), 5);
        // Each mode has its own order numbers.
        assert_ne!(order_id("m1", Mode::Test, "T1"), live("m1", "T1"));
        // Live ids are the ids of before modes: stored orders keep theirs.
        assert_eq!(live("m1", "T1").to_string(), "b23cd10a-1080-5bc8-a57b-daf0f671d88c");
    }

    #[test]
    fn refund_id_is_keyed_by_order_and_out_refund_no() {
        let o = order_id("m1", Mode::Live, "T1");
        assert_eq!(refund_id(o, "R1"), refund_id(o, "R1"));
        assert_ne!(refund_id(o, "R1"), refund_id(o, "R2"));
        assert_ne!(refund_id(o, "R1"), refund_id(order_id("m1", Mode::Live, "T2"), "R1"));
    }
}
