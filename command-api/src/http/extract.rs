//! Request extractors: JSON bodies with field-level errors, and the merchant's API key.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use payledger_store::merchants::ApiKeyHash;
use payledger_store::OrderOwner;
use serde::de::DeserializeOwned;

use crate::app::{AppState, BODY_LIMIT_BYTES};
use crate::http::error::ApiError;
use crate::http::rate_limit::ClientAddr;

/// Deepest nesting of arrays and objects a JSON request body may have; the top-level object is
/// level 1. Our requests need 2 (`metadata`); serde_json alone would go to 128, and every level
/// costs stack while parsing.
pub const JSON_DEPTH_MAX: usize = 32;
/// Longest `Authorization: Bearer` API key we look up, bytes (ours are 68); a longer one is a
/// 401 without touching the database.
pub const API_KEY_BYTES_MAX: usize = 256;

/// A JSON body: 415 without `Content-Type: application/json`, 413 over [`BODY_LIMIT_BYTES`], 400
/// for malformed JSON or nesting deeper than [`JSON_DEPTH_MAX`], 422 naming the field for JSON of
/// the wrong shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e, BODY_LIMIT_BYTES))?;
        parse_json(&body).map(JsonBody)
    }
}

/// Maps a failure to read the body of a route whose limit is `limit_bytes`: over the limit is
/// 413 naming it, anything else 400.
pub fn body_rejection(rejection: BytesRejection, limit_bytes: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit_bytes }
    } else {
        ApiError::Malformed(rejection.body_text())
    }
}

/// Whether `body` nests arrays and objects deeper than `depth_max`. One pass over the bytes that
/// only tracks strings and brackets, stopping at the first level too deep: far cheaper than the
/// parse it guards. Exact for valid JSON; for invalid JSON the answer does not matter, the parse
/// refuses it anyway.
pub fn json_nested_deeper_than(body: &[u8], depth_max: usize) -> bool {
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > depth_max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Deserialises `body`, naming the offending field on a shape error.
///
/// # Errors
/// [`ApiError::Malformed`] for invalid JSON or nesting deeper than [`JSON_DEPTH_MAX`],
/// [`ApiError::Validation`] for the wrong shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if json_nested_deeper_than(body, JSON_DEPTH_MAX) {
        return Err(ApiError::Malformed(format!(
            "body nests arrays and objects deeper than the limit of {JSON_DEPTH_MAX} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::Malformed(format!("body is not valid JSON: {inner}"))
        } else {
            let field = if path == "." { "body".to_string() } else { path };
            ApiError::field(&field, inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ApiError::Malformed(format!("trailing data after the JSON body: {e}")))?;
    Ok(value)
}

/// The merchant authenticated by `Authorization: Bearer <api_key>`, in the mode of that key (its
/// live key or its test key): every read and command of the request is scoped to this
/// [`OrderOwner`]. 401 otherwise (also for a
/// key longer than [`API_KEY_BYTES_MAX`]). Then charged one request against the merchant's rate
/// limit ([`crate::http::rate_limit`]): 429 when over it.
///
/// A request that is not authenticated is charged against its client address instead
/// ([`crate::http::rate_limit::AddressRateLimit`]), 429 past that limit: a missing or malformed
/// key at once, a key the lookup does not find after it. While the address is over its limit, a
/// key this process has never found is refused before its lookup (uncharged), so an address over
/// its limit costs no database query however many made-up keys it sends. A merchant's valid key
/// never charges the address, so merchants sharing an address (a NAT, a proxy) with a client
/// sending wrong keys are still served once their key is known to the process.
pub struct AuthMerchant(pub OrderOwner);

impl FromRequestParts<AppState> for AuthMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let addr = ClientAddr::of(parts).0;
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|k| !k.is_empty() && k.len() <= API_KEY_BYTES_MAX);
        let Some(key) = key else {
            state.address_limit.check(addr)?;
            return Err(ApiError::Unauthorized);
        };
        // Hashed once: the cache check and the lookup both use it.
        let hash = ApiKeyHash::of(key);
        if !state.api_keys.known(&hash) {
            state.address_limit.over_limit(addr)?;
        }
        let Some((merchant, mode)) = state.api_keys.merchant(state.db.pool(), &state.keyring, &hash).await? else {
            state.address_limit.check(addr)?;
            return Err(ApiError::Unauthorized);
        };
        state.rate_limit.check(&merchant.merchant_id, mode)?;
        Ok(AuthMerchant(OrderOwner {
            merchant_id: merchant.merchant_id,
            mode,
        }))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched without regard
/// to case (RFC 9110 §11.1: `bearer`, `BEARER` are `Bearer`), separated from the token by one or
/// more spaces; surrounding whitespace is trimmed. `None` for another scheme or no token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_bearer_scheme_matches_without_regard_to_case() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "BeArEr   k1 ", " Bearer k1"] {
            assert_eq!(bearer_token(value), Some("k1"), "{value:?}");
        }
        for value in ["Basic k1", "Bearerk1", "Bearer", "Token k1", "Bear k1"] {
            assert_eq!(bearer_token(value).filter(|t| !t.is_empty()), None, "{value:?}");
        }
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn json_at_the_depth_limit_parses_and_one_level_more_is_refused() {
        assert!(parse_json::<Value>(nested(JSON_DEPTH_MAX).as_bytes()).is_ok());
        match parse_json::<Value>(nested(JSON_DEPTH_MAX + 1).as_bytes()) {
            Err(ApiError::Malformed(m)) => assert!(m.contains(&format!("{JSON_DEPTH_MAX} levels")), "{m}"),
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let body = format!(r#"{{"subject": "{}\\", "x": "\"[{{"}}"#, "[".repeat(100));
        assert!(!json_nested_deeper_than(body.as_bytes(), 1), "{body}");
        assert!(parse_json::<Value>(body.as_bytes()).is_ok(), "{body}");
        assert!(json_nested_deeper_than(br#"{"a": {"b": 1}}"#, 1));
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Runs `bytes` through everything a request body meets before a handler's async checks.
    fn exercise(bytes: &[u8]) {
        use crate::http::orders::CreateOrderRequest;
        use crate::http::refunds::RefundRequest;
        use crate::validate::{self, FieldErrors};
        if let Ok(v) = parse_json::<Value>(bytes) {
            assert!(depth(&v) <= JSON_DEPTH_MAX, "{} levels parsed", depth(&v));
        }
        if let Ok(req) = parse_json::<CreateOrderRequest>(bytes) {
            let mut e = FieldErrors::default();
            validate::merchant_no(&mut e, "out_trade_no", &req.out_trade_no);
            validate::amount_minor(&mut e, "amount", &req.amount);
            validate::currency_code(&mut e, "currency", &req.currency);
            validate::text(&mut e, "subject", &req.subject, validate::SUBJECT_CHARS_MAX, true);
            validate::metadata(&mut e, &req.metadata);
        }
        if let Ok(req) = parse_json::<RefundRequest>(bytes) {
            let mut e = FieldErrors::default();
            validate::merchant_no(&mut e, "out_refund_no", &req.out_refund_no);
            validate::amount_minor(&mut e, "amount", &req.amount);
        }
    }

    /// Deterministic, coverage-less fuzzing of request JSON (the cargo-fuzz target
    /// `fuzz/fuzz_targets/request_json.rs` does the same with coverage): valid bodies with bytes
    /// flipped, inserted and cut, and random bytes, never panic the parser or the field rules,
    /// and nothing deeper than the limit gets through.
    #[test]
    fn fuzz_request_json_mutated_bodies_are_refused_or_parsed_within_limits() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let seeds: Vec<Vec<u8>> = vec![
            br#"{"out_trade_no":"T-1","amount":100,"currency":"CNY","channel":"sandbox","subject":"Tea","metadata":{"k":"v"},"expire_in_seconds":600}"#.to_vec(),
            br#"{"out_refund_no":"R-1","amount":1,"reason":"\u00e9 \"quoted\" [x]"}"#.to_vec(),
            format!(r#"{{"amount":{}1{}}}"#, "[".repeat(JSON_DEPTH_MAX - 1), "]".repeat(JSON_DEPTH_MAX - 1)).into_bytes(),
        ];
        const ALPHABET: &[u8] = b"{}[]\",:\\0123456789-.eEtrufalsnu ";
        let mut rng = StdRng::seed_from_u64(6);
        for i in 0..20_000 {
            let mut bytes = if i % 10 == 9 {
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
            } else {
                seeds[i % seeds.len()].clone()
            };
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..=bytes.len());
                match rng.gen_range(0..4) {
                    0 if at < bytes.len() => bytes[at] = rng.gen(),
                    1 => bytes.insert(at, ALPHABET[rng.gen_range(0..ALPHABET.len())]),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            exercise(&bytes);
        }
    }
}
