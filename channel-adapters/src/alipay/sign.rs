//! RSA2 (SHA256withRSA, PKCS#1 v1.5, base64) signing and verification as the Alipay open
//! platform defines it.
//!
//! - Requests (<https://opendocs.alipay.com/common/02kf5q>, 自行实现签名): every parameter except
//!   `sign` whose value is not empty (so `sign_type` is included), sorted by key in ASCII order,
//!   joined as `k=v&k=v` with raw (not URL-encoded) values, UTF-8.
//! - Responses (<https://opendocs.alipay.com/common/02mse7>, 自行实现验签, 同步返回): the signed
//!   content is the exact text of the `<method with _ for .>_response` node as it appears in the
//!   body, from its `{` to its matching `}`; `sign` is that node's sibling. We never re-serialise.
//! - Notifications (<https://opendocs.alipay.com/common/02mse7>, 异步通知): every form parameter
//!   except `sign` and `sign_type`, URL-decoded, sorted, joined as `k=v&…`.

use std::collections::BTreeMap;

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::value::RawValue;
use sha2::Sha256;

pub use crate::rsa_sign::{SignError, SigningKey};

/// The only `sign_type` we send or accept.
pub const SIGN_TYPE: &str = "RSA2";

/// The content of a request to sign: parameters other than `sign` with a non-empty value,
/// sorted by key (ASCII), joined `k=v` with `&`. Values are not URL-encoded.
pub fn request_sign_content(params: &BTreeMap<String, String>) -> String {
    join_sorted(params.iter().filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()))
}

/// The content of a notification to verify: parameters other than `sign` and `sign_type`
/// (already URL-decoded), sorted, joined `k=v` with `&`. `skip_empty` leaves out parameters
/// whose value is empty (Alipay's SDK keeps them; some of Alipay's own guides drop them).
pub fn notify_sign_content(params: &BTreeMap<String, String>, skip_empty: bool) -> String {
    join_sorted(
        params
            .iter()
            .filter(|(k, v)| k.as_str() != "sign" && k.as_str() != "sign_type" && !(skip_empty && v.is_empty())),
    )
}

fn join_sorted<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    // BTreeMap iterates in byte order of the keys, which is Alipay's ASCII order.
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Base64 of the RSA2 signature of the UTF-8 bytes of `content`, made by *ring*
/// ([`SigningKey::sign_pkcs1_sha256`]).
///
/// # Errors
/// [`SignError`] if *ring* cannot sign (not expected with a key that loaded).
pub fn rsa2_sign(key: &SigningKey, content: &str) -> Result<String, SignError> {
    key.sign_pkcs1_sha256(content.as_bytes())
        .map(|signature| base64::engine::general_purpose::STANDARD.encode(signature))
}

/// Whether `sign_base64` is a valid RSA2 signature of `content` by `key`. Anything that is not
/// base64 or not a signature of the key's size is simply invalid. A public-key operation, left
/// on `rsa` (RUSTSEC-2023-0071 concerns private keys only).
pub fn rsa2_verify(key: &RsaPublicKey, content: &str, sign_base64: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(sign_base64.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(content.as_bytes(), &signature)
        .is_ok()
}

/// The name of a method's response node: `alipay.trade.query` → `alipay_trade_query_response`.
pub fn response_node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The node Alipay signed in a synchronous response, as raw text, and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseNode<'a> {
    /// `alipay_trade_xxx_response`, or `error_response` when the gateway answered with that.
    pub name: String,
    /// The node's exact text in the body: the signed content.
    pub text: &'a str,
    /// The `sign` sibling, if any (gateway-level errors come unsigned).
    pub sign: Option<String>,
}

/// Why a response body could not be split into node and signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseShapeError {
    /// Not a JSON object.
    #[error("response is not a JSON object: {0}")]
    NotJson(String),
    /// Neither the method's node nor `error_response`.
    #[error("response has no {0} node")]
    NoNode(String),
    /// `sign` is present but not a string.
    #[error("response sign is not a string")]
    BadSign,
}

/// Finds the method's response node in `body` without re-serialising it.
///
/// # Errors
/// [`ResponseShapeError`].
pub fn response_node<'a>(body: &'a str, method: &str) -> Result<ResponseNode<'a>, ResponseShapeError> {
    let top: BTreeMap<String, &'a RawValue> =
        serde_json::from_str(body).map_err(|e| ResponseShapeError::NotJson(e.to_string()))?;
    let wanted = response_node_name(method);
    let (name, text) = match top.get(&wanted) {
        Some(raw) => (wanted, raw.get()),
        None => match top.get("error_response") {
            Some(raw) => ("error_response".to_string(), raw.get()),
            None => return Err(ResponseShapeError::NoNode(wanted)),
        },
    };
    let sign = match top.get("sign") {
        None => None,
        Some(raw) => Some(serde_json::from_str::<String>(raw.get()).map_err(|_| ResponseShapeError::BadSign)?),
    };
    Ok(ResponseNode { name, text, sign })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The example of <https://opendocs.alipay.com/common/02kf5q> (自行实现签名, 第二步): these
    /// request parameters give exactly this content to sign. Alipay publishes no private key for
    /// it, so only the content is checked here.
    #[test]
    fn request_content_matches_alipays_published_example() {
        let biz = r#"{"button":[{"actionParam":"ZFB_HFCZ","actionType":"out","name":"话费充值"},{"name":"查询","subButton":[{"actionParam":"ZFB_YECX","actionType":"out","name":"余额查询"},{"actionParam":"ZFB_LLCX","actionType":"out","name":"流量查询"},{"actionParam":"ZFB_HFCX","actionType":"out","name":"话费查询"}]},{"actionParam":"http://m.alipay.com","actionType":"link","name":"最新优惠"}]}"#;
        let p = params(&[
            ("app_id", "2014072300007148"),
            ("method", "alipay.mobile.public.menu.add"),
            ("charset", "GBK"),
            ("sign_type", "RSA2"),
            ("timestamp", "2014-07-24 03:07:50"),
            ("biz_content", biz),
            (
                "sign",
                "e9zEAe4TTQ4LPLQvETPoLGXTiURcxiAKfMVQ6Hrrsx2hmyIEGvSfAQzbLxHrhyZ48wOJXTsD4FPnt",
            ),
            ("version", "1.0"),
        ]);
        let expected = format!(
            "app_id=2014072300007148&biz_content={biz}&charset=GBK&method=alipay.mobile.public.menu.add\
             &sign_type=RSA2&timestamp=2014-07-24 03:07:50&version=1.0"
        );
        assert_eq!(request_sign_content(&p), expected);
    }

    #[test]
    fn request_content_skips_empty_values_and_sign_but_keeps_sign_type() {
        let p = params(&[
            ("b", "2"),
            ("a", "1"),
            ("empty", ""),
            ("sign", "x"),
            ("sign_type", "RSA2"),
        ]);
        assert_eq!(request_sign_content(&p), "a=1&b=2&sign_type=RSA2");
    }

    /// The notification example of Alipay's verification guide (as quoted from
    /// opendocs 异步通知验签): sign and sign_type dropped, the rest sorted.
    #[test]
    fn notify_content_drops_sign_and_sign_type() {
        let p = params(&[
            ("total_amount", "2.00"),
            ("buyer_id", "2088102116773037"),
            ("notify_time", "2016-07-19 14:10:49"),
            ("sign_type", "RSA2"),
            ("sign", "kPbQIjX"),
            ("app_id", "2015102700040153"),
            ("trade_status", "TRADE_SUCCESS"),
            ("refund_fee", ""),
        ]);
        assert_eq!(
            notify_sign_content(&p, false),
            "app_id=2015102700040153&buyer_id=2088102116773037&notify_time=2016-07-19 14:10:49\
             &refund_fee=&total_amount=2.00&trade_status=TRADE_SUCCESS"
        );
        assert_eq!(
            notify_sign_content(&p, true),
            "app_id=2015102700040153&buyer_id=2088102116773037&notify_time=2016-07-19 14:10:49\
             &total_amount=2.00&trade_status=TRADE_SUCCESS"
        );
    }

    #[test]
    fn the_response_node_is_taken_verbatim() {
        // Spacing and key order as sent; a re-serialisation would change both.
        let body = r#"{"alipay_trade_query_response": {"msg":"Success", "code":"10000","x":"\u4e2d"} ,"sign":"abc=="}"#;
        let node = response_node(body, "alipay.trade.query").unwrap();
        assert_eq!(node.name, "alipay_trade_query_response");
        assert_eq!(node.text, r#"{"msg":"Success", "code":"10000","x":"\u4e2d"}"#);
        assert_eq!(node.sign.as_deref(), Some("abc=="));
    }

    #[test]
    fn an_error_response_node_is_found_and_may_be_unsigned() {
        let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#;
        let node = response_node(body, "alipay.trade.query").unwrap();
        assert_eq!(node.name, "error_response");
        assert_eq!(node.sign, None);
        assert_eq!(
            response_node(r#"{"other":{}}"#, "alipay.trade.query"),
            Err(ResponseShapeError::NoNode("alipay_trade_query_response".into()))
        );
        assert!(matches!(
            response_node("<html>", "alipay.trade.query"),
            Err(ResponseShapeError::NotJson(_))
        ));
    }
}
