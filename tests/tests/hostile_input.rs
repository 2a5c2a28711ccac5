//! A shared corpus of hostile text, sent to both backends: every case gets the same answer on
//! SQLite and PostgreSQL (a 422 naming the field), never a 500 from a database that cannot
//! store the text, and nothing is stored.

use base64::Engine;
use payledger_tests::flows::{create, order_body};
use payledger_tests::{Backend, TestServer};
use serde_json::{json, Value};

/// One hostile request: what it is, the request, and the field the 422 must name.
struct Case {
    what: &'static str,
    request: Request,
    field: &'static str,
}

enum Request {
    /// `POST /v1/orders` with this JSON body.
    Create(Value),
    /// `POST /v1/orders` with this body as bytes (JSON that serde_json's `Value` cannot hold).
    CreateRaw(String),
    /// `GET` of this path and query.
    Get(String),
}

fn with(field: &str, value: Value) -> Value {
    let mut body = order_body("T-HOSTILE", 100);
    body[field] = value;
    body
}

fn cursor(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn corpus() -> Vec<Case> {
    let uuid = "0b1e4f4e-6d4a-4c1b-9f4e-3c2d1a0b9e8f";
    let case = |what, request, field| Case { what, request, field };
    vec![
        case("NUL in a metadata value", Request::Create(with("metadata", json!({"k": "a\u{0}b"}))), "metadata"),
        case("NUL in a metadata key", Request::Create(with("metadata", json!({"a\u{0}b": "v"}))), "metadata"),
        case("bell in a metadata key", Request::Create(with("metadata", json!({"a\u{7}": "v"}))), "metadata"),
        case("C1 control in a metadata key", Request::Create(with("metadata", json!({"a\u{85}": "v"}))), "metadata"),
        case(
            "NUL in notify_url",
            Request::Create(with("notify_url", json!("https://example.com/n\u{0}"))),
            "notify_url",
        ),
        case(
            "line break in notify_url",
            Request::Create(with("notify_url", json!("https://example.com/\nn"))),
            "notify_url",
        ),
        case(
            "NUL in return_url",
            Request::Create(with("return_url", json!("https://example.com/r\u{0}"))),
            "return_url",
        ),
        case("NUL in subject", Request::Create(with("subject", json!("tea\u{0}"))), "subject"),
        case("NUL in out_trade_no", Request::Create(with("out_trade_no", json!("T\u{0}1"))), "out_trade_no"),
        case("NUL in user_id", Request::Create(with("user_id", json!("u\u{0}"))), "user_id"),
        case("NUL in channel", Request::Create(with("channel", json!("sandbox\u{0}"))), "channel"),
        case("NUL in currency", Request::Create(with("currency", json!("CN\u{0}"))), "currency"),
        case(
            "duplicate metadata keys",
            Request::CreateRaw(
                r#"{"out_trade_no":"T-DUP","amount":100,"currency":"CNY","channel":"sandbox","subject":"Tea","metadata":{"k":"1","k":"2"}}"#
                    .into(),
            ),
            "metadata",
        ),
        case(
            "a cursor carrying NUL",
            Request::Get(format!("/v1/orders?cursor={}", cursor(&format!("2026-01-01\u{0}|{uuid}")))),
            "cursor",
        ),
        case(
            "a cursor carrying SQL",
            Request::Get(format!("/v1/orders?cursor={}", cursor(&format!("' OR 1=1 --|{uuid}")))),
            "cursor",
        ),
        case("NUL in the out_trade_no filter", Request::Get("/v1/orders?out_trade_no=%00".into()), "out_trade_no"),
    ]
}

async fn every_hostile_text_is_refused_alike(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let key = s.add_merchant("shop1").await.api_key;
    for Case { what, request, field } in corpus() {
        let r = match request {
            Request::Create(body) => create(&s, &key, &body).await,
            Request::CreateRaw(body) => {
                s.post_raw("/v1/orders", Some(&key), "application/json", body.into_bytes())
                    .await
            }
            Request::Get(path) => s.call("GET", &path, Some(&key), None).await,
        };
        assert_eq!(r.status, 422, "{what}: {}", r.text);
        assert!(
            r.json["errors"][field].is_array(),
            "{what}: no error for {field}: {}",
            r.text
        );
    }
    let orders = s.call("GET", "/v1/orders", Some(&key), None).await;
    assert_eq!(orders.status, 200, "{}", orders.text);
    assert_eq!(orders.json["data"], json!([]), "a hostile request stored an order");

    // Control characters other than NUL are a merchant's data in metadata values, kept as sent.
    let body = with("metadata", json!({"note": "line 1\nline 2\ttab"}));
    let r = create(&s, &key, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let order_id = r.json["order_id"].as_str().unwrap();
    let got = s.call("GET", &format!("/v1/orders/{order_id}"), Some(&key), None).await;
    assert_eq!(got.json["metadata"]["note"], "line 1\nline 2\ttab", "{}", got.text);
}

payledger_tests::both_backends!(every_hostile_text_is_refused_alike);
