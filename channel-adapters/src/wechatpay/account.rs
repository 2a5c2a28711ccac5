//! A WeChat Pay merchant account: ids, keys and where to call.

use std::path::Path;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;

use crate::rsa_sign::{SigningKey, SigningKeyError};

/// WeChat Pay's production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// Length of the APIv3 key, bytes (AES-256).
pub const API_V3_KEY_LEN: usize = 32;

/// Why an account could not be built. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// A key file could not be read.
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    /// The merchant private key is neither PKCS#8 (`BEGIN PRIVATE KEY`) nor PKCS#1 PEM.
    #[error("merchant private key is not a PKCS#8 or PKCS#1 RSA PEM")]
    PrivateKey,
    /// The merchant private key is an RSA PEM but cannot sign `SHA256-RSA2048`: shorter than
    /// 2048 bits, or refused by *ring* (see [`SigningKeyError`]).
    #[error("merchant private key cannot sign: {0}")]
    PrivateKeyUnusable(SigningKeyError),
    /// The platform public key is neither SPKI (`BEGIN PUBLIC KEY`) nor PKCS#1 PEM.
    #[error("platform public key is not an SPKI or PKCS#1 RSA PEM")]
    PublicKey,
    /// The APIv3 key is not [`API_V3_KEY_LEN`] bytes.
    #[error("APIv3 key must be {API_V3_KEY_LEN} bytes, got {0}")]
    ApiV3KeyLength(usize),
    /// A required id is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// The ids of a merchant account: everything but keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatPayIds {
    /// Our name for this account (configuration key, logs).
    pub account_id: String,
    /// The `appid` orders are placed for (official account, mini program or app).
    pub app_id: String,
    /// The merchant id, `mchid`.
    pub mch_id: String,
    /// Serial number of the merchant API certificate whose private key signs our requests.
    pub merchant_serial_no: String,
    /// Serial number of the platform certificate, or the WeChat Pay public key id
    /// (`PUB_KEY_ID_…`), whose key signs WeChat Pay's responses and notifications.
    pub platform_serial_no: String,
    /// Where WeChat Pay sends payment and refund notifications (https, no query string),
    /// e.g. `https://pay.example.com/v1/callbacks/wechatpay`.
    pub notify_url: String,
}

/// A WeChat Pay merchant account (direct merchant, API v3).
///
/// `Debug` prints ids only: keys are never logged.
#[derive(Clone)]
pub struct WechatPayAccount {
    /// Our name for this account.
    pub account_id: String,
    /// `appid`.
    pub app_id: String,
    /// `mchid`.
    pub mch_id: String,
    /// Serial number of the merchant API certificate.
    pub merchant_serial_no: String,
    /// The merchant API private key (`apiclient_key.pem`): signs requests (with *ring*).
    pub merchant_private_key: SigningKey,
    /// Platform certificate serial or WeChat Pay public key id expected in `Wechatpay-Serial`.
    pub platform_serial_no: String,
    /// The WeChat Pay platform public key: verifies responses and notifications.
    pub platform_public_key: RsaPublicKey,
    /// The APIv3 key: decrypts notification resources.
    pub api_v3_key: [u8; API_V3_KEY_LEN],
    /// API host, no trailing slash; [`DEFAULT_BASE_URL`] unless changed.
    pub base_url: String,
    /// Notification URL sent with every order and refund.
    pub notify_url: String,
}

impl std::fmt::Debug for WechatPayAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayAccount")
            .field("account_id", &self.account_id)
            .field("app_id", &self.app_id)
            .field("mch_id", &self.mch_id)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("merchant_private_key", &"<redacted>")
            .field("platform_serial_no", &self.platform_serial_no)
            .field("platform_public_key", &"<redacted>")
            .field("api_v3_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("notify_url", &self.notify_url)
            .finish()
    }
}

impl WechatPayAccount {
    /// An account from parsed keys. `api_v3_key` is the 32-character key set in the merchant
    /// platform, as bytes.
    ///
    /// # Errors
    /// [`AccountError::ApiV3KeyLength`], [`AccountError::Empty`].
    pub fn new(
        ids: WechatPayIds,
        merchant_private_key: SigningKey,
        platform_public_key: RsaPublicKey,
        api_v3_key: &[u8],
    ) -> Result<Self, AccountError> {
        for (name, value) in [
            ("account_id", &ids.account_id),
            ("app_id", &ids.app_id),
            ("mch_id", &ids.mch_id),
            ("merchant_serial_no", &ids.merchant_serial_no),
            ("platform_serial_no", &ids.platform_serial_no),
            ("notify_url", &ids.notify_url),
        ] {
            if value.trim().is_empty() {
                return Err(AccountError::Empty(name));
            }
        }
        let api_v3_key: [u8; API_V3_KEY_LEN] = api_v3_key
            .try_into()
            .map_err(|_| AccountError::ApiV3KeyLength(api_v3_key.len()))?;
        Ok(Self {
            account_id: ids.account_id,
            app_id: ids.app_id,
            mch_id: ids.mch_id,
            merchant_serial_no: ids.merchant_serial_no,
            merchant_private_key,
            platform_serial_no: ids.platform_serial_no,
            platform_public_key,
            api_v3_key,
            base_url: DEFAULT_BASE_URL.to_string(),
            notify_url: ids.notify_url,
        })
    }

    /// An account from PEM text: the merchant private key as WeChat issues it
    /// (`apiclient_key.pem`, PKCS#8; PKCS#1 also accepted) and the platform public key
    /// (SPKI `BEGIN PUBLIC KEY`, as the merchant platform's "WeChat Pay public key" download;
    /// PKCS#1 also accepted).
    ///
    /// # Errors
    /// [`AccountError`] for an unreadable key ([`AccountError::PrivateKey`] when the private key
    /// is not such a PEM, [`AccountError::PrivateKeyUnusable`] when it is one *ring* cannot sign
    /// with, e.g. under 2048 bits), a wrong APIv3 key length or an empty id.
    pub fn from_pem(
        ids: WechatPayIds,
        merchant_private_key_pem: &str,
        platform_public_key_pem: &str,
        api_v3_key: &[u8],
    ) -> Result<Self, AccountError> {
        let private = SigningKey::from_pem(merchant_private_key_pem).map_err(|e| match e {
            SigningKeyError::Format => AccountError::PrivateKey,
            unusable => AccountError::PrivateKeyUnusable(unusable),
        })?;
        let public = RsaPublicKey::from_public_key_pem(platform_public_key_pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(platform_public_key_pem))
            .map_err(|_| AccountError::PublicKey)?;
        Self::new(ids, private, public, api_v3_key)
    }

    /// [`Self::from_pem`] with the keys read from files.
    ///
    /// # Errors
    /// [`AccountError::Io`] when a file cannot be read, else as [`Self::from_pem`].
    pub fn from_pem_files(
        ids: WechatPayIds,
        merchant_private_key_path: &Path,
        platform_public_key_path: &Path,
        api_v3_key: &[u8],
    ) -> Result<Self, AccountError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| AccountError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Self::from_pem(
            ids,
            &read(merchant_private_key_path)?,
            &read(platform_public_key_path)?,
            api_v3_key,
        )
    }

    /// The same account calling another host (a simulator, a proxy); trailing `/` removed.
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.trim_end_matches('/').to_string();
        self
    }
}
