//! `Payledger-Signature`: how merchants know a notification is ours and fresh.
//!
//! Header value `t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>`: the
//! timestamp is signed with the body so a captured notification cannot be replayed later. While a
//! rotated secret's overlap lasts, one `v1=` per secret, the current one first
//! (`t=…,v1=<new>,v1=<old>`): a receiver still on the old secret and one already on the new both
//! verify.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header name.
pub const SIGNATURE_HEADER: &str = "Payledger-Signature";

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    sign_with_all(&[secret], t, body)
}

/// The header value for `body` sent at unix time `t`, one `v1=` per secret, in order.
pub fn sign_with_all(secrets: &[&str], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(&format!(
            ",v1={}",
            hex::encode(mac(secret, t, body).finalize().into_bytes())
        ));
    }
    header
}

/// Checks a header value against `body` (constant-time): some `v1=` is `secret`'s signature, and
/// `t` is within `tolerance_seconds` of `now`. What a merchant's receiver does; used by our tests.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_seconds: i64) -> bool {
    let mut t = None;
    let mut v1s = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1s.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    (now - t).abs() <= tolerance_seconds && v1s.iter().any(|v1| mac(secret, t, body).verify_slice(v1).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_and_rejects_tampering_and_staleness() {
        let header = sign("whsec", 1_700_000_000, b"{\"a\":1}");
        assert!(verify("whsec", &header, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("whsec", &header, b"{\"a\":2}", 1_700_000_010, 300));
        assert!(!verify("other", &header, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("whsec", &header, b"{\"a\":1}", 1_700_000_400, 300));
        assert!(!verify("whsec", "garbage", b"{\"a\":1}", 1_700_000_010, 300));
    }

    #[test]
    fn during_a_rotation_both_secrets_verify_and_no_other() {
        let header = sign_with_all(&["new", "old"], 1_700_000_000, b"x");
        assert_eq!(header.matches(",v1=").count(), 2);
        assert!(
            header.starts_with(&sign("new", 1_700_000_000, b"x")),
            "the current secret first"
        );
        assert!(verify("new", &header, b"x", 1_700_000_000, 300));
        assert!(verify("old", &header, b"x", 1_700_000_000, 300));
        assert!(!verify("other", &header, b"x", 1_700_000_000, 300));
        assert!(!verify("new", &header, b"y", 1_700_000_000, 300));
    }
}
