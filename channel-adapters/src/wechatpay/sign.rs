//! WeChat Pay API v3 signatures: SHA256withRSA (RSASSA-PKCS1-v1_5, SHA-256), base64.
//!
//! - Requests are signed by the merchant with its API certificate's private key over
//!   `METHOD\nURL\ntimestamp\nnonce\nbody\n` (URL = path plus `?query`, no host) and carried in
//!   `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`
//!   (<https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml>).
//! - Responses and notifications are signed by WeChat Pay with the platform private key over
//!   `timestamp\nnonce\nbody\n`, carried in [`HEADER_SIGNATURE`], [`HEADER_TIMESTAMP`],
//!   [`HEADER_NONCE`] and [`HEADER_SERIAL`]
//!   (<https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_1.shtml>).
//!
//! Every message line ends with `\n`, the last one included; the body is the exact bytes sent
//! (empty for GET and for a 204 answer).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};

pub use crate::rsa_sign::{SignError, SigningKey};

/// The `Authorization` scheme of API v3.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// Base64 signature of a response or notification.
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
/// Unix seconds at which WeChat Pay signed.
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
/// Random string of the signature.
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
/// Serial number of the platform certificate, or the WeChat Pay public key id, that signed.
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// Length of the nonces we generate, in characters (WeChat's examples use 32 hex digits).
pub const NONCE_LEN: usize = 32;

/// The message a request signature covers: `METHOD\nURL\ntimestamp\nnonce\nbody\n`.
///
/// `url` is the absolute path with the query string (`/v3/pay/transactions/out-trade-no/X?mchid=1`),
/// exactly as sent; `timestamp` is Unix seconds; `body` is the JSON sent, empty for GET.
pub fn request_message(method: &str, url: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The message a response or notification signature covers: `timestamp\nnonce\nbody\n`, with the
/// raw body bytes (empty for a 204 answer).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The message of the JSAPI / mini-program payment invocation signature (`paySign`):
/// `appId\ntimeStamp\nnonceStr\npackage\n`, `package` being `prepay_id=…`
/// (<https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_1_4.shtml>).
pub fn jsapi_pay_message(app_id: &str, timestamp: i64, nonce: &str, package: &str) -> Vec<u8> {
    format!("{app_id}\n{timestamp}\n{nonce}\n{package}\n").into_bytes()
}

/// Base64 SHA256withRSA (PKCS#1 v1.5) signature of `message`, made by *ring*
/// ([`SigningKey::sign_pkcs1_sha256`]).
///
/// # Errors
/// [`SignError`] if *ring* cannot sign (not expected with a key that loaded).
pub fn sign(key: &SigningKey, message: &[u8]) -> Result<String, SignError> {
    key.sign_pkcs1_sha256(message).map(|signature| BASE64.encode(signature))
}

/// Whether `signature` (base64) is a valid SHA256withRSA signature of `message` by `key`
/// (a public-key operation, left on `rsa`: RUSTSEC-2023-0071 concerns private keys only).
/// Bad base64, a wrong length or a wrong signature are all `false`.
pub fn verify(key: &RsaPublicKey, message: &[u8], signature: &str) -> bool {
    let Ok(signature) = BASE64.decode(signature.trim()) else {
        return false;
    };
    let digest = Sha256::digest(message);
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature).is_ok()
}

/// A fresh nonce: [`NONCE_LEN`] upper-case hex digits from the OS random generator.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; NONCE_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode_upper(bytes)
}

/// The signed fields of an `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Merchant id (`mchid`).
    pub mchid: String,
    /// Random string (`nonce_str`).
    pub nonce_str: String,
    /// Base64 signature.
    pub signature: String,
    /// Unix seconds, as sent.
    pub timestamp: String,
    /// Serial number of the merchant API certificate (`serial_no`).
    pub serial_no: String,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("mchid", &self.mchid)
            .field("nonce_str", &self.nonce_str)
            .field("signature", &"<redacted>")
            .field("timestamp", &self.timestamp)
            .field("serial_no", &self.serial_no)
            .finish()
    }
}

impl Authorization {
    /// The header value: `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
    pub fn header_value(&self) -> String {
        format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }

    /// Parses a header value as WeChat Pay does: the scheme, then the five `key="value"` pairs in
    /// any order, comma-separated. `None` when the scheme is not [`AUTH_SCHEME`], a pair is missing
    /// or repeated, or a key is unknown.
    pub fn parse(header: &str) -> Option<Self> {
        let params = header.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
        let (mut mchid, mut nonce_str, mut signature, mut timestamp, mut serial_no) = (None, None, None, None, None);
        for pair in params.split(',') {
            let (key, value) = pair.trim().split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?.to_string();
            let slot = match key {
                "mchid" => &mut mchid,
                "nonce_str" => &mut nonce_str,
                "signature" => &mut signature,
                "timestamp" => &mut timestamp,
                "serial_no" => &mut serial_no,
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(Self {
            mchid: mchid?,
            nonce_str: nonce_str?,
            signature: signature?,
            timestamp: timestamp?,
            serial_no: serial_no?,
        })
    }
}

/// The four signature headers of a WeChat Pay response or notification, read as text.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureHeaders<'a> {
    /// [`HEADER_SERIAL`].
    pub serial: &'a str,
    /// [`HEADER_SIGNATURE`], base64.
    pub signature: &'a str,
    /// [`HEADER_TIMESTAMP`], Unix seconds as text.
    pub timestamp: &'a str,
    /// [`HEADER_NONCE`].
    pub nonce: &'a str,
}

impl<'a> SignatureHeaders<'a> {
    /// The four headers, or `None` if one is missing or not visible ASCII.
    pub fn from_headers(headers: &'a http::HeaderMap) -> Option<Self> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Some(Self {
            serial: get(HEADER_SERIAL)?,
            signature: get(HEADER_SIGNATURE)?,
            timestamp: get(HEADER_TIMESTAMP)?,
            nonce: get(HEADER_NONCE)?,
        })
    }

    /// The timestamp as Unix seconds, `None` if it is not an integer.
    pub fn timestamp_seconds(&self) -> Option<i64> {
        self.timestamp.trim().parse().ok()
    }

    /// Whether the signature is WeChat Pay's over `timestamp\nnonce\nbody\n` with `key`.
    pub fn verify(&self, key: &RsaPublicKey, body: &[u8]) -> bool {
        verify(key, &response_message(self.timestamp, self.nonce, body), self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_message_has_five_lines_each_ending_in_newline() {
        let m = request_message(
            "GET",
            "/v3/certificates",
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            b"",
        );
        assert_eq!(
            m,
            b"GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        let m = request_message("POST", "/v3/x?a=1", 1, "N", br#"{"a":1}"#);
        assert_eq!(m, b"POST\n/v3/x?a=1\n1\nN\n{\"a\":1}\n");
    }

    #[test]
    fn response_message_covers_timestamp_nonce_and_raw_body() {
        assert_eq!(response_message("1", "N", b"{}"), b"1\nN\n{}\n");
        assert_eq!(response_message("1", "N", b""), b"1\nN\n\n");
    }

    #[test]
    fn jsapi_pay_message_has_four_lines() {
        assert_eq!(
            jsapi_pay_message("wx1", 2, "N", "prepay_id=p"),
            b"wx1\n2\nN\nprepay_id=p\n"
        );
    }

    #[test]
    fn authorization_round_trips_and_parses_in_any_order() {
        let a = Authorization {
            mchid: "1900009191".into(),
            nonce_str: "593BEC0C930BF1AFEB40B4A08C8FB242".into(),
            signature: "c2ln+/=".into(),
            timestamp: "1554208460".into(),
            serial_no: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
        };
        let header = a.header_value();
        assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str="));
        assert_eq!(Authorization::parse(&header), Some(a.clone()));
        let reordered = "WECHATPAY2-SHA256-RSA2048 serial_no=\"1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C\",\
                         timestamp=\"1554208460\",signature=\"c2ln+/=\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",\
                         mchid=\"1900009191\"";
        assert_eq!(Authorization::parse(reordered), Some(a));
    }

    #[test]
    fn malformed_authorization_headers_are_refused() {
        for bad in [
            "",
            "Bearer x",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial_no=\"x\",mchid=\"2\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial=\"x\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial_no=\"x\"",
        ] {
            assert_eq!(Authorization::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn nonces_are_32_upper_hex_and_differ() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn debug_of_authorization_hides_the_signature() {
        let a = Authorization {
            mchid: "1".into(),
            nonce_str: "n".into(),
            signature: "SECRETSIG".into(),
            timestamp: "1".into(),
            serial_no: "s".into(),
        };
        assert!(!format!("{a:?}").contains("SECRETSIG"));
    }
}
