//! Field rules for request bodies. Every limit is a named constant with its unit.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;
use url::{Host, Url};

use payledger_domain::AMOUNT_MINOR_MAX;
use payledger_projections::queries::{decode_cursor, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};

/// `out_trade_no`, `out_refund_no`, merchant ids: 1..=64 of `[A-Za-z0-9_-]` (the union of what
/// WeChat Pay and Alipay accept, so the same number can travel to any channel).
pub const MERCHANT_NO_CHARS_MAX: usize = 64;
/// `subject`: characters.
pub const SUBJECT_CHARS_MAX: usize = 256;
/// `user_id`, refund `reason`: characters.
pub const SHORT_TEXT_CHARS_MAX: usize = 256;
/// `notify_url`, `return_url`: bytes.
pub const URL_BYTES_MAX: usize = 2048;
/// `metadata`: at most this many keys.
pub const METADATA_KEYS_MAX: usize = 20;
/// `metadata`: key length, characters.
pub const METADATA_KEY_CHARS_MAX: usize = 40;
/// `metadata`: value length, characters.
pub const METADATA_VALUE_CHARS_MAX: usize = 500;
/// `currency`: an ISO-4217 alphabetic code is 3 characters; longer text is refused before the
/// lookup (and never echoed back).
pub const CURRENCY_CHARS_MAX: usize = 3;
/// `cursor` of a list: bytes. Ours are about 90.
pub const CURSOR_BYTES_MAX: usize = 256;
/// `expire_in_seconds`: bounds and default (2 hours, the channels' usual default).
pub const EXPIRE_IN_SECONDS_MIN: i64 = 60;
pub const EXPIRE_IN_SECONDS_MAX: i64 = 15 * 24 * 3600;
pub const EXPIRE_IN_SECONDS_DEFAULT: u32 = 7200;

/// Collects field errors; turns into a 422 if any.
#[derive(Debug, Default)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// Records `message` for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_string()).or_default().push(message.into());
    }

    /// `Ok` when nothing was recorded, else the 422.
    ///
    /// # Errors
    /// [`crate::http::error::ApiError::Validation`] with every recorded field.
    pub fn finish(self) -> Result<(), crate::http::error::ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::http::error::ApiError::Validation(self.0))
        }
    }
}

/// The `limit` and `cursor` of a keyset-paginated list (`GET /v1/orders`,
/// `GET /v1/notifications`): the page size (default [`PAGE_LIMIT_DEFAULT`], within
/// 1..=[`PAGE_LIMIT_MAX`]) and the decoded cursor `(created_at, id)` (at most
/// [`CURSOR_BYTES_MAX`]); errors are added under `limit` and `cursor`.
pub fn page(errors: &mut FieldErrors, limit: Option<i64>, cursor: Option<&str>) -> (i64, Option<(String, String)>) {
    let limit = limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        errors.add("limit", format!("must be between 1 and {PAGE_LIMIT_MAX}"));
    }
    if cursor.is_some_and(|c| c.len() > CURSOR_BYTES_MAX) {
        errors.add("cursor", format!("must be at most {CURSOR_BYTES_MAX} bytes"));
        return (limit, None);
    }
    let cursor = match cursor.map(decode_cursor).transpose() {
        Ok(c) => c,
        Err(err) => {
            errors.add("cursor", err.to_string());
            None
        }
    };
    (limit, cursor)
}

/// Checks a merchant-chosen number (`out_trade_no`, `out_refund_no`, merchant id): 1 to
/// [`MERCHANT_NO_CHARS_MAX`] characters of the channel-safe alphabet.
pub fn merchant_no(errors: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() || value.len() > MERCHANT_NO_CHARS_MAX {
        errors.add(field, format!("must be 1 to {MERCHANT_NO_CHARS_MAX} characters"));
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errors.add(field, "may contain only A-Z, a-z, 0-9, '_' and '-'");
    }
}

/// Checks a `currency` before it is looked up: at most [`CURRENCY_CHARS_MAX`] characters. `false`
/// (with the error recorded) when it is too long to be a code.
pub fn currency_code(errors: &mut FieldErrors, field: &str, value: &str) -> bool {
    if value.chars().count() > CURRENCY_CHARS_MAX {
        errors.add(
            field,
            format!("must be an ISO-4217 code of {CURRENCY_CHARS_MAX} letters, e.g. \"CNY\""),
        );
        return false;
    }
    true
}

/// Checks free text: at most `chars_max` characters (Unicode scalar values), no control
/// characters, and not blank when `required`.
pub fn text(errors: &mut FieldErrors, field: &str, value: &str, chars_max: usize, required: bool) {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        errors.add(field, "must not be empty");
    } else if n > chars_max {
        errors.add(field, format!("must be at most {chars_max} characters"));
    } else if value.chars().any(char::is_control) {
        errors.add(field, "must not contain control characters");
    }
}

/// Reads an amount in minor units from a JSON value: a positive integer up to
/// [`AMOUNT_MINOR_MAX`]. Fractions are refused rather than rounded.
pub fn amount_minor(errors: &mut FieldErrors, field: &str, value: &Value) -> Option<i64> {
    let Value::Number(n) = value else {
        errors.add(field, "must be an integer amount in minor units (e.g. 1999 for 19.99)");
        return None;
    };
    match n.as_i64() {
        Some(v) if v <= 0 => errors.add(field, "must be positive"),
        Some(v) if v > AMOUNT_MINOR_MAX => errors.add(field, format!("must be at most {AMOUNT_MINOR_MAX}")),
        Some(v) => return Some(v),
        None if n.is_u64() => errors.add(field, format!("must be at most {AMOUNT_MINOR_MAX}")),
        None if n.is_f64()
            && n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() > AMOUNT_MINOR_MAX as f64) =>
        {
            errors.add(field, format!("must be at most {AMOUNT_MINOR_MAX}"))
        }
        None => errors.add(
            field,
            "must be an integer number of minor units; fractions are not rounded",
        ),
    }
    None
}

/// Checks `metadata`: at most [`METADATA_KEYS_MAX`] keys, each 1 to [`METADATA_KEY_CHARS_MAX`]
/// characters without control characters, each value at most [`METADATA_VALUE_CHARS_MAX`]
/// characters without NUL (PostgreSQL's text cannot hold it, so it is refused on both backends;
/// other control characters, a line break say, are the merchant's data). Duplicate keys are
/// refused while parsing ([`unique_keys`]).
pub fn metadata(errors: &mut FieldErrors, value: &BTreeMap<String, String>) {
    if value.len() > METADATA_KEYS_MAX {
        errors.add("metadata", format!("at most {METADATA_KEYS_MAX} keys"));
    }
    for (k, v) in value {
        if k.is_empty() || k.chars().count() > METADATA_KEY_CHARS_MAX {
            errors.add(
                "metadata",
                format!("keys must be 1 to {METADATA_KEY_CHARS_MAX} characters"),
            );
        } else if k.chars().any(char::is_control) {
            errors.add("metadata", "keys must not contain control characters");
        }
        if v.chars().count() > METADATA_VALUE_CHARS_MAX {
            errors.add(
                "metadata",
                format!("values must be at most {METADATA_VALUE_CHARS_MAX} characters"),
            );
        } else if v.contains('\0') {
            errors.add("metadata", "values must not contain the NUL character");
        }
    }
}

/// Deserialises a JSON object of strings, refusing a key that comes twice (serde keeps the last
/// one silently, where a struct's duplicate field is an error): for `metadata`.
///
/// # Errors
/// The deserializer's error for a duplicate key or a value that is not a string.
pub fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of string values")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "duplicate key `{}`",
                        k.escape_debug()
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Keys)
}

fn is_private(ip: IpAddr) -> bool {
    !payledger_notifier::outbound::is_public(ip)
}

/// Checks a merchant URL (`notify_url`, `return_url`): absolute http(s), at most
/// [`URL_BYTES_MAX`], no control characters, no credentials. With `allow_private == false`, hosts that are or resolve to
/// non-public addresses (loopback, private, link-local, CGNAT, reserved…: see
/// `payledger_notifier::outbound`) are refused, so notifications cannot be aimed at our own
/// network; the notifier checks again when it connects, since a name can change its answer.
pub async fn merchant_url(errors: &mut FieldErrors, field: &str, value: &str, allow_private: bool) {
    if value.len() > URL_BYTES_MAX {
        errors.add(field, format!("must be at most {URL_BYTES_MAX} bytes"));
        return;
    }
    // The URL parser would drop or escape them, but the text as given is what is stored.
    if value.chars().any(char::is_control) {
        errors.add(field, "must not contain control characters");
        return;
    }
    let url = match Url::parse(value) {
        Ok(u) => u,
        Err(e) => {
            errors.add(field, format!("must be an absolute URL: {e}"));
            return;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        errors.add(field, "must use http or https");
        return;
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.add(field, "must not contain credentials");
        return;
    }
    if allow_private {
        return;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let refused = match url.host() {
        None => true,
        Some(Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
        Some(Host::Domain(d)) if d == "localhost" || d.ends_with(".localhost") => true,
        Some(Host::Domain(d)) => match tokio::net::lookup_host((d, port)).await {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                addrs.is_empty() || addrs.iter().any(|a| is_private(a.ip()))
            }
            Err(_) => {
                errors.add(field, "host does not resolve");
                return;
            }
        },
    };
    if refused {
        errors.add(field, "private, loopback and link-local addresses are not allowed here");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_are_positive_integers_within_the_limit() {
        let mut e = FieldErrors::default();
        assert_eq!(amount_minor(&mut e, "amount", &json!(1)), Some(1));
        assert_eq!(
            amount_minor(&mut e, "amount", &json!(AMOUNT_MINOR_MAX)),
            Some(AMOUNT_MINOR_MAX)
        );
        assert!(e.0.is_empty());
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("100"),
            json!(AMOUNT_MINOR_MAX + 1),
            json!(u64::MAX),
            json!(1e30),
        ] {
            let mut e = FieldErrors::default();
            assert_eq!(amount_minor(&mut e, "amount", &bad), None, "{bad} accepted");
            assert_eq!(e.0.len(), 1);
        }
    }

    #[test]
    fn merchant_numbers_allow_only_the_channel_safe_alphabet() {
        let mut e = FieldErrors::default();
        merchant_no(&mut e, "out_trade_no", "T-2026_11_21");
        merchant_no(&mut e, "out_trade_no", &"a".repeat(MERCHANT_NO_CHARS_MAX));
        assert!(e.0.is_empty());
        for bad in ["", "has space", "订单", &"a".repeat(MERCHANT_NO_CHARS_MAX + 1)] {
            let mut e = FieldErrors::default();
            merchant_no(&mut e, "out_trade_no", bad);
            assert!(!e.0.is_empty(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn urls_must_be_http_and_private_hosts_can_be_refused() {
        let mut e = FieldErrors::default();
        merchant_url(&mut e, "notify_url", "http://127.0.0.1:9000/n", true).await;
        assert!(e.0.is_empty());
        for bad in ["ftp://x.example/", "not a url", "http://u:p@x.example/"] {
            let mut e = FieldErrors::default();
            merchant_url(&mut e, "notify_url", bad, true).await;
            assert!(!e.0.is_empty(), "{bad} accepted");
        }
        for private in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://localhost/",
            "http://192.168.0.1/",
            // The forms a review found accepted (IPv4-compatible, NAT64, 6to4, site-local,
            // multicast, benchmarking, IETF protocol block, reserved).
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://224.0.0.1/",
            "http://198.18.0.1/",
            "http://192.0.0.1/",
            "http://240.0.0.1/",
        ] {
            let mut e = FieldErrors::default();
            merchant_url(&mut e, "notify_url", private, false).await;
            assert!(!e.0.is_empty(), "{private} accepted with private addresses refused");
        }
        let mut e = FieldErrors::default();
        merchant_url(&mut e, "notify_url", "https://8.8.8.8/n", false).await;
        assert!(e.0.is_empty());
    }
}
