//! Request bodies of `POST /v1/orders` and `POST /v1/orders/{id}/refunds`: arbitrary bytes
//! through our JSON extractor's parser (depth limit, shape errors naming the field) and then the
//! field rules that need no server. Opt-in: `cargo fuzz run --features request-json request_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payledger_command_api::http::extract::parse_json;
use payledger_command_api::http::orders::CreateOrderRequest;
use payledger_command_api::http::refunds::RefundRequest;
use payledger_command_api::validate::{self, FieldErrors};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(req) = parse_json::<CreateOrderRequest>(bytes) {
        let mut e = FieldErrors::default();
        validate::merchant_no(&mut e, "out_trade_no", &req.out_trade_no);
        validate::amount_minor(&mut e, "amount", &req.amount);
        validate::currency_code(&mut e, "currency", &req.currency);
        validate::text(&mut e, "subject", &req.subject, validate::SUBJECT_CHARS_MAX, true);
        if let Some(u) = &req.user_id {
            validate::text(&mut e, "user_id", u, validate::SHORT_TEXT_CHARS_MAX, true);
        }
        validate::metadata(&mut e, &req.metadata);
        let _ = e.finish();
    }
    if let Ok(req) = parse_json::<RefundRequest>(bytes) {
        let mut e = FieldErrors::default();
        validate::merchant_no(&mut e, "out_refund_no", &req.out_refund_no);
        validate::amount_minor(&mut e, "amount", &req.amount);
        if let Some(r) = &req.reason {
            validate::text(&mut e, "reason", r, validate::SHORT_TEXT_CHARS_MAX, false);
        }
        let _ = e.finish();
    }
});
