//! `Payledger-Signature`: how merchants know a notification is ours and fresh.
//!
//! Header value `t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>`: the
//! timestamp is signed with the body so a captured notification cannot be replayed later.

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
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

/// Checks a header value against `body` (constant-time) and that `t` is within
/// `tolerance_seconds` of `now`. What a merchant's receiver does; used by our tests.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_seconds: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    (now - t).abs() <= tolerance_seconds && mac(secret, t, body).verify_slice(&v1).is_ok()
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
}
