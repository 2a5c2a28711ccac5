//! OpenAPI schemas of the domain's wire enums, so the domain crate stays free of `utoipa`: a
//! view's `status` field names one of these with `#[schema(value_type = …)]`.

use std::borrow::Cow;

use payledger_domain::{Mode, OrderStatus, RefundStatus};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Every [`RefundStatus`], in lifecycle order.
pub const REFUND_STATUSES: [RefundStatus; 3] = [RefundStatus::Pending, RefundStatus::Succeeded, RefundStatus::Failed];

// A new `RefundStatus` variant stops the build here, so it cannot be missing from the list above.
const _: () = {
    const fn listed(s: RefundStatus) {
        match s {
            RefundStatus::Pending | RefundStatus::Succeeded | RefundStatus::Failed => {}
        }
    }
    listed(REFUND_STATUSES[0])
};

fn string_enum(description: &str, values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

/// Schema `OrderStatus`: the wire names of [`OrderStatus::ALL`].
pub struct OrderStatusSchema;

impl PartialSchema for OrderStatusSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "Where the order stands: awaiting_payment → paid → partially_refunded → refunded; \
             awaiting_payment → closed | failed.",
            OrderStatus::ALL.map(OrderStatus::as_str),
        )
    }
}

impl ToSchema for OrderStatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OrderStatus")
    }
}

/// Schema `RefundStatus`: the wire names of [`REFUND_STATUSES`].
pub struct RefundStatusSchema;

impl PartialSchema for RefundStatusSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "Where the refund stands: pending (the channel has not answered; counts against the \
             refundable amount) → succeeded | failed.",
            REFUND_STATUSES.map(RefundStatus::as_str),
        )
    }
}

impl ToSchema for RefundStatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RefundStatus")
    }
}

/// Schema `Mode`: `test` or `live`.
pub struct ModeSchema;

impl PartialSchema for ModeSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "test: created with the merchant's test key, on the sandbox channel, no real money; \
             live: created with the live key, on a real channel. Never mixed in any list, figure \
             or balance.",
            [Mode::Test, Mode::Live].map(Mode::as_str),
        )
    }
}

impl ToSchema for ModeSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Mode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_schemas_list_the_serialized_wire_names() {
        for s in OrderStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in REFUND_STATUSES {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let schema = serde_json::to_value(RefundStatusSchema::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["pending", "succeeded", "failed"]));
    }
}
