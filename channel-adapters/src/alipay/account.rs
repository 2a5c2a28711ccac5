//! One Alipay application's configuration and keys.
//!
//! Alipay's "public key mode" (公钥模式, <https://opendocs.alipay.com/common/02kipl>): we sign
//! requests with the application private key, whose public half is uploaded to Alipay; Alipay signs
//! responses and notifications with its own key, whose public half ("支付宝公钥") the open
//! platform shows us. Certificate mode (公钥证书模式) is not supported.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;

use crate::rsa_sign::{SigningKey, SigningKeyError};

/// Alipay's production gateway.
pub const DEFAULT_GATEWAY_URL: &str = "https://openapi.alipay.com/gateway.do";

/// RSA2 keys are 2048-bit (<https://opendocs.alipay.com/common/02kipl>); shorter ones are refused.
pub const RSA_KEY_BITS_MIN: usize = crate::rsa_sign::RSA_SIGNING_BITS_MIN;

/// The longest key file we read, in bytes (a 4096-bit PKCS#8 PEM is about 3.3 KB).
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Why a key could not be loaded. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {message}")]
    Io { path: String, message: String },
    /// Neither PKCS#8/PKCS#1/SPKI PEM nor bare base64 DER of an RSA key.
    #[error("{which} key is not an RSA key in PKCS#8, PKCS#1 or SPKI form (PEM or bare base64 DER)")]
    Format { which: &'static str },
    /// Fewer than [`RSA_KEY_BITS_MIN`] bits.
    #[error("{which} key has {bits} bits; RSA2 needs at least {RSA_KEY_BITS_MIN}")]
    TooShort { which: &'static str, bits: usize },
    /// A well-formed RSA private key of a usable size that *ring* will not sign with (modulus
    /// over 4096 bits or not a multiple of 512, public exponent under 65537, inconsistent
    /// components); `reason` is [`SigningKeyError::Rejected`]'s text.
    #[error("{which} key cannot sign RSA2: {reason}")]
    Unusable { which: &'static str, reason: String },
}

/// An Alipay application (`app_id`) we collect payments with.
///
/// `Debug` shows ids and URLs, never the private key; the Alipay public key is shown only by size.
#[derive(Clone)]
pub struct AlipayAccount {
    /// Our name for this account (configuration key, logs).
    pub account_id: String,
    /// The application id Alipay assigned, e.g. `2014072300007148`; sent as `app_id` and
    /// required in every notification.
    pub app_id: String,
    /// Signs our requests (RSA2 = SHA256withRSA, with *ring*).
    pub app_private_key: SigningKey,
    /// Verifies Alipay's responses and notifications.
    pub alipay_public_key: RsaPublicKey,
    /// Where requests go; [`DEFAULT_GATEWAY_URL`] unless set (the sandbox or a simulator).
    pub gateway_url: String,
    /// Sent as `notify_url`: where Alipay POSTs asynchronous notifications, e.g.
    /// `https://pay.example.com/v1/callbacks/alipay`.
    pub notify_url: String,
    /// The merchant's Alipay user id (PID, `2088…`). When set, a notification whose `seller_id`
    /// differs is refused, as Alipay's notification guide asks.
    pub seller_id: Option<String>,
}

impl fmt::Debug for AlipayAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayAccount")
            .field("account_id", &self.account_id)
            .field("app_id", &self.app_id)
            .field("app_private_key", &"<redacted>")
            .field(
                "alipay_public_key",
                &format_args!("<{}-bit RSA>", self.alipay_public_key.size() * 8),
            )
            .field("gateway_url", &self.gateway_url)
            .field("notify_url", &self.notify_url)
            .field("seller_id", &self.seller_id)
            .finish()
    }
}

impl AlipayAccount {
    /// An account with parsed keys and the production gateway.
    pub fn new(
        account_id: &str,
        app_id: &str,
        app_private_key: SigningKey,
        alipay_public_key: RsaPublicKey,
        notify_url: &str,
    ) -> Self {
        Self {
            account_id: account_id.to_string(),
            app_id: app_id.to_string(),
            app_private_key,
            alipay_public_key,
            gateway_url: DEFAULT_GATEWAY_URL.to_string(),
            notify_url: notify_url.to_string(),
            seller_id: None,
        }
    }

    /// An account from key text as Alipay hands it out: PEM (`PRIVATE KEY`, `RSA PRIVATE KEY`,
    /// `PUBLIC KEY`, `RSA PUBLIC KEY`) or the bare base64 DER the open platform's key tool shows.
    ///
    /// # Errors
    /// [`KeyError::Format`], [`KeyError::TooShort`], [`KeyError::Unusable`].
    pub fn from_pem(
        account_id: &str,
        app_id: &str,
        app_private_key: &str,
        alipay_public_key: &str,
        notify_url: &str,
    ) -> Result<Self, KeyError> {
        Ok(Self::new(
            account_id,
            app_id,
            parse_private_key(app_private_key)?,
            parse_public_key(alipay_public_key)?,
            notify_url,
        ))
    }

    /// As [`AlipayAccount::from_pem`], reading the keys from files.
    ///
    /// # Errors
    /// [`KeyError::Io`] (also for files over [`KEY_FILE_BYTES_MAX`]), [`KeyError::Format`],
    /// [`KeyError::TooShort`], [`KeyError::Unusable`].
    pub fn from_pem_files(
        account_id: &str,
        app_id: &str,
        app_private_key_path: &Path,
        alipay_public_key_path: &Path,
        notify_url: &str,
    ) -> Result<Self, KeyError> {
        Self::from_pem(
            account_id,
            app_id,
            &read_key_file(app_private_key_path)?,
            &read_key_file(alipay_public_key_path)?,
            notify_url,
        )
    }

    /// The same account at another gateway (Alipay's sandbox, a simulator).
    pub fn with_gateway_url(mut self, gateway_url: &str) -> Self {
        self.gateway_url = gateway_url.to_string();
        self
    }

    /// The same account, checking notifications' `seller_id` against `seller_id`.
    pub fn with_seller_id(mut self, seller_id: &str) -> Self {
        self.seller_id = Some(seller_id.to_string());
        self
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |message: String| KeyError::Io {
        path: path.display().to_string(),
        message,
    };
    let len = std::fs::metadata(path).map_err(|e| io(e.to_string()))?.len();
    if len > KEY_FILE_BYTES_MAX {
        return Err(io(format!("{len} bytes is more than {KEY_FILE_BYTES_MAX}")));
    }
    std::fs::read_to_string(path).map_err(|e| io(e.to_string()))
}

/// Bare base64 (whitespace ignored) to DER bytes, or `None` if it is not base64.
fn bare_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// An RSA private key from PKCS#8 or PKCS#1, PEM or bare base64 DER, loaded into *ring* for
/// signing ([`SigningKey`]).
///
/// # Errors
/// [`KeyError::Format`], [`KeyError::TooShort`], [`KeyError::Unusable`].
pub fn parse_private_key(text: &str) -> Result<SigningKey, KeyError> {
    const WHICH: &str = "application private";
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN") {
        SigningKey::from_pem(text)
    } else {
        match bare_base64(text) {
            // PKCS#8 first, as Alipay's key tool shows; PKCS#1 when it is not a PKCS#8 wrapper.
            Some(der) => match SigningKey::from_pkcs8_der(&der) {
                Err(SigningKeyError::Format) => SigningKey::from_pkcs1_der(&der),
                other => other,
            },
            None => Err(SigningKeyError::Format),
        }
    };
    key.map_err(|e| match e {
        SigningKeyError::Format => KeyError::Format { which: WHICH },
        SigningKeyError::TooShort { bits } => KeyError::TooShort { which: WHICH, bits },
        SigningKeyError::Rejected(reason) => KeyError::Unusable { which: WHICH, reason },
    })
}

/// An RSA public key from SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`), PEM or bare base64
/// DER (Alipay shows its public key as bare base64 SPKI).
///
/// # Errors
/// [`KeyError::Format`], [`KeyError::TooShort`].
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, KeyError> {
    const WHICH: &str = "Alipay public";
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN") {
        RsaPublicKey::from_public_key_pem(text)
            .ok()
            .or_else(|| RsaPublicKey::from_pkcs1_pem(text).ok())
    } else {
        bare_base64(text).and_then(|der| {
            RsaPublicKey::from_public_key_der(&der)
                .ok()
                .or_else(|| RsaPublicKey::from_pkcs1_der(&der).ok())
        })
    }
    .ok_or(KeyError::Format { which: WHICH })?;
    check_bits(WHICH, key.size())?;
    Ok(key)
}

fn check_bits(which: &'static str, size_bytes: usize) -> Result<(), KeyError> {
    let bits = size_bytes * 8;
    if bits < RSA_KEY_BITS_MIN {
        return Err(KeyError::TooShort { which, bits });
    }
    Ok(())
}
