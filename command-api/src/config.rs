//! The configuration file (`payledger serve --config FILE`, env `PAYLEDGER_CONFIG`, default
//! `payledger.toml` in the working directory when it exists): the channel accounts payledger
//! collects money with, and the public base URL channels send notifications to.
//!
//! ```toml
//! # Base of the notify URLs handed to channels: {public_base_url}/v1/callbacks/{channel}.
//! # Default: the server's public URL (--public-url, else http://<listen address>).
//! public_base_url = "https://pay.example.com"
//!
//! [channels.wechatpay.main]                 # "main" is our name for the account
//! # new_orders = true    # default; false: this account places no new order, but keeps serving
//! #                      # the orders it placed (notifications, queries, closes, refunds)
//! # legacy = false       # true: it placed the orders from before accounts were recorded
//! app_id = "wxd678efh567hg6787"
//! mch_id = "1230000109"
//! merchant_serial_no = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
//! merchant_private_key_file = "keys/apiclient_key.pem"       # relative to this file
//! platform_serial_no = "PUB_KEY_ID_0114232134912410000000000000"
//! platform_public_key_file = "keys/wechatpay_pub.pem"
//! api_v3_key = "0123456789abcdef0123456789abcdef"            # 32 bytes
//! # base_url = "https://api.mch.weixin.qq.com"               # default
//!
//! [channels.alipay.main]
//! app_id = "2021000000000001"
//! app_private_key_file = "keys/alipay_app_private.pem"
//! alipay_public_key_file = "keys/alipay_public.pem"
//! # gateway_url = "https://openapi.alipay.com/gateway.do"    # default
//! # seller_id = "2088000000000001"   # optional: refuse notifications for another seller
//! ```
//!
//! Rules:
//! - Unknown keys are errors, so a typo never silently leaves a check off.
//! - Key file paths are resolved against the directory of the configuration file. Each key may
//!   instead be given inline as PEM text (`merchant_private_key_pem`, `platform_public_key_pem`,
//!   `app_private_key_pem`, `alipay_public_key_pem`), one form per key.
//! - In NATS mode the same entries also come from a KV bucket and override these (see
//!   [`crate::kv_config`]).
//! - Several accounts per channel, each under its own id (`[A-Za-z0-9_-]`, at most
//!   [`ACCOUNT_ID_CHARS_MAX`] characters). A new order is placed with the channel's first account,
//!   by id, that takes new orders (`new_orders`, default `true`). Every order records the account
//!   that placed it (id and channel-side `app_id` / `mch_id`), and that account serves it to the
//!   end, whatever the configuration says about new orders. Each account has its own notify
//!   URL, `{public_base_url}/v1/callbacks/{channel}/{account_id}`.
//! - To move a channel to new credentials (another `mch_id` or `app_id`), add them as a new
//!   account and set `new_orders = false` on the old one; remove the old one once it serves no
//!   open order. Changing the `app_id` / `mch_id` of an account in place, or removing an
//!   account, while it still has orders awaiting payment or refunds pending is refused (at
//!   start-up, and for a change in the NATS KV bucket), because the old account's orders would
//!   otherwise be asked about at the wrong account.
//! - Orders opened before accounts were recorded (event `ChannelOrderOpened` version 1.0) belong
//!   to the channel's legacy account, pinned in the database by the first start of this version
//!   ([`crate::channel_accounts::pin_legacy_accounts`]): the account marked `legacy = true` then,
//!   or the channel's only account. At most one account per channel is marked.
//! - Errors name the file, the key path (`channels.wechatpay.main.api_v3_key`) and what is wrong.
//!   They never contain key material: TOML syntax errors are reported by line and column only,
//!   without the offending line's text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use payledger_channel_adapters::alipay::account::{parse_private_key, parse_public_key};
use payledger_channel_adapters::alipay::{self, AlipayAccount, AlipayChannel};
use payledger_channel_adapters::wechatpay::{self, AccountError, WechatPayAccount, WechatPayChannel, WechatPayIds};
use payledger_channel_adapters::{AccountUse, Channel};
use serde::Deserialize;

/// The file read when neither `--config` nor `PAYLEDGER_CONFIG` names one (only if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "payledger.toml";
/// Largest configuration file read, bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Longest account id, in characters.
pub const ACCOUNT_ID_CHARS_MAX: usize = 64;
/// Largest key file read, bytes (a 4096-bit PKCS#8 PEM is about 3.3 KB).
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Why the configuration could not be used. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {file}: {message}")]
    Io { file: String, message: String },
    /// Not TOML, or not the expected shape (unknown key, wrong type, missing key).
    #[error("{file}: {key}: {message}")]
    Shape { file: String, key: String, message: String },
    /// A value is not acceptable (unreadable key file, wrong key length, bad URL …).
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
}

/// Channel accounts read from the configuration file: keys loaded and parsed, every value
/// checked. The accounts' `notify_url` is set by [`ChannelAccounts::channels`], once the server
/// knows its public URL.
#[derive(Debug, Clone, Default)]
pub struct ChannelAccounts {
    /// Base of the notify URLs, without a trailing `/`; `None`: the server's public URL.
    pub public_base_url: Option<String>,
    /// The accounts, WeChat Pay's first, each channel's by id.
    pub accounts: Vec<Configured>,
}

/// An account's adapter and its use, as the registry takes them
/// ([`payledger_channel_adapters::Channels::insert_account`]).
pub type AccountAdapter = (Arc<dyn Channel>, AccountUse);

/// One configured channel account and how it is used.
#[derive(Debug, Clone)]
pub struct Configured {
    /// The account.
    pub account: ChannelAccount,
    /// Whether it takes new orders and whether it is the channel's legacy account.
    pub usage: AccountUse,
}

impl Configured {
    /// The adapter for this account (see [`ChannelAccount::into_channel`]) and its use.
    ///
    /// # Errors
    /// When the channel's HTTP client cannot be built.
    pub fn into_channel(self, base: &str) -> Result<AccountAdapter, String> {
        Ok((self.account.into_channel(base)?, self.usage))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    public_base_url: Option<String>,
    #[serde(default)]
    channels: ChannelsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsSection {
    #[serde(default)]
    wechatpay: BTreeMap<String, WechatPayEntry>,
    #[serde(default)]
    alipay: BTreeMap<String, AlipayEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WechatPayEntry {
    app_id: String,
    mch_id: String,
    merchant_serial_no: String,
    merchant_private_key_file: Option<PathBuf>,
    merchant_private_key_pem: Option<String>,
    platform_serial_no: String,
    platform_public_key_file: Option<PathBuf>,
    platform_public_key_pem: Option<String>,
    api_v3_key: String,
    base_url: Option<String>,
    new_orders: Option<bool>,
    legacy: Option<bool>,
}

// Hand-written so that a stray `{:?}` can never print the APIv3 key.
impl std::fmt::Debug for WechatPayEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayEntry")
            .field("app_id", &self.app_id)
            .field("mch_id", &self.mch_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlipayEntry {
    app_id: String,
    app_private_key_file: Option<PathBuf>,
    app_private_key_pem: Option<String>,
    alipay_public_key_file: Option<PathBuf>,
    alipay_public_key_pem: Option<String>,
    gateway_url: Option<String>,
    seller_id: Option<String>,
    new_orders: Option<bool>,
    legacy: Option<bool>,
}

// Hand-written so that a stray `{:?}` can never print inline key material.
impl std::fmt::Debug for AlipayEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayEntry")
            .field("app_id", &self.app_id)
            .field("gateway_url", &self.gateway_url)
            .field("seller_id", &self.seller_id)
            .finish_non_exhaustive()
    }
}

/// One channel account, keys parsed and values checked (an entry of the file or of the KV
/// bucket, see [`crate::kv_config`]).
#[derive(Debug, Clone)]
pub enum ChannelAccount {
    /// A WeChat Pay account.
    WechatPay(WechatPayAccount),
    /// An Alipay account.
    Alipay(AlipayAccount),
}

impl ChannelAccount {
    /// Parses one account entry: `text` is the TOML body of a `[channels.<channel>.<account_id>]`
    /// table (the same keys as in the file). `source` names where it came from in errors; key
    /// files resolve against `dir`. The notify URL is set later, by
    /// [`ChannelAccount::into_channel`].
    ///
    /// # Errors
    /// [`ConfigError`] naming `source` and the key path `channels.<channel>.<account_id>.<key>`;
    /// an unknown `channel` or a bad account id is [`ConfigError::Invalid`].
    pub fn parse(
        channel: &str,
        account_id: &str,
        text: &str,
        source: &str,
        dir: &Path,
    ) -> Result<Configured, ConfigError> {
        let prefix = format!("channels.{channel}.{account_id}");
        let invalid = |(key, message): (String, String)| ConfigError::Invalid {
            file: source.to_string(),
            key,
            message,
        };
        check_account_id(channel, account_id).map_err(invalid)?;
        match channel {
            wechatpay::NAME => {
                let entry: WechatPayEntry = from_toml(text, source, &prefix)?;
                wechatpay_account(account_id, &entry, dir, "")
                    .map(|a| Configured {
                        account: Self::WechatPay(a),
                        usage: usage(entry.new_orders, entry.legacy),
                    })
                    .map_err(invalid)
            }
            alipay::CHANNEL_NAME => {
                let entry: AlipayEntry = from_toml(text, source, &prefix)?;
                alipay_account(account_id, &entry, dir, "")
                    .map(|a| Configured {
                        account: Self::Alipay(a),
                        usage: usage(entry.new_orders, entry.legacy),
                    })
                    .map_err(invalid)
            }
            other => Err(invalid((
                format!("channels.{other}"),
                format!("unknown channel; known: {}, {}", wechatpay::NAME, alipay::CHANNEL_NAME),
            ))),
        }
    }

    /// Our name of the account (`<account_id>` in the key path).
    pub fn account_id(&self) -> &str {
        match self {
            Self::WechatPay(a) => &a.account_id,
            Self::Alipay(a) => &a.account_id,
        }
    }

    /// The channel's name.
    pub fn channel_name(&self) -> &'static str {
        match self {
            Self::WechatPay(_) => wechatpay::NAME,
            Self::Alipay(_) => alipay::CHANNEL_NAME,
        }
    }

    /// The adapter for this account, its notify URL `{base}/v1/callbacks/{channel}/{account_id}`.
    ///
    /// # Errors
    /// When the channel's HTTP client cannot be built (the message names no key material).
    pub fn into_channel(self, base: &str) -> Result<Arc<dyn Channel>, String> {
        Ok(match self {
            Self::WechatPay(mut account) => {
                account.notify_url = notify_url(base, wechatpay::NAME, &account.account_id);
                Arc::new(WechatPayChannel::new(account))
            }
            Self::Alipay(mut account) => {
                account.notify_url = notify_url(base, alipay::CHANNEL_NAME, &account.account_id);
                Arc::new(AlipayChannel::new(account).map_err(|e| e.to_string())?)
            }
        })
    }
}

/// Deserializes TOML `text` as `T`; errors name `source` and the key path under `prefix`, and
/// never quote the text (it may hold key material).
fn from_toml<T: serde::de::DeserializeOwned>(text: &str, source: &str, prefix: &str) -> Result<T, ConfigError> {
    let shape = |key: String, message: String| ConfigError::Shape {
        file: source.to_string(),
        key,
        message,
    };
    let where_ = |e: &toml::de::Error| {
        e.span()
            .map(|s| {
                let (line, col) = line_col(text, s.start);
                format!(" (line {line}, column {col})")
            })
            .unwrap_or_default()
    };
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| shape("(syntax)".into(), format!("{}{}", e.message(), where_(&e))))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix.is_empty(), path.is_empty() || path == ".") {
            (true, true) => "(top level)".into(),
            (true, false) => path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{path}"),
        };
        let inner = e.into_inner();
        shape(key, format!("{}{}", inner.message(), where_(&inner)))
    })
}

/// The PEM text of a key given either inline (`{name}_pem`) or as a file (`{name}_file`,
/// relative to `dir`): exactly one of the two. Errors are `(key, message)`.
fn key_pem(
    prefix: &str,
    name: &str,
    file: Option<&PathBuf>,
    pem: Option<&String>,
    dir: &Path,
) -> Result<(String, String), (String, String)> {
    match (file, pem) {
        (Some(path), None) => {
            let key = format!("{prefix}.{name}_file");
            read_key(dir, path)
                .map(|text| (key.clone(), text))
                .map_err(|m| (key, m))
        }
        (None, Some(text)) => Ok((format!("{prefix}.{name}_pem"), text.clone())),
        (Some(_), Some(_)) => Err((
            format!("{prefix}.{name}_pem"),
            format!("give {name}_file or {name}_pem, not both"),
        )),
        (None, None) => Err((
            prefix.to_string(),
            format!("missing field `{name}_file` (or `{name}_pem`)"),
        )),
    }
}

/// A checked WeChat Pay account from its entry; notify URL `{provisional_base}/v1/callbacks/…`
/// until the server knows its public URL. Errors are `(key path, message)`.
fn wechatpay_account(
    account_id: &str,
    e: &WechatPayEntry,
    dir: &Path,
    provisional_base: &str,
) -> Result<WechatPayAccount, (String, String)> {
    let prefix = format!("channels.{}.{account_id}", wechatpay::NAME);
    let key = |field: &str| format!("{prefix}.{field}");
    for (field, value) in [
        ("app_id", &e.app_id),
        ("mch_id", &e.mch_id),
        ("merchant_serial_no", &e.merchant_serial_no),
        ("platform_serial_no", &e.platform_serial_no),
    ] {
        if value.trim().is_empty() {
            return Err((key(field), "must not be empty".into()));
        }
    }
    let (private_key, private_pem) = key_pem(
        &prefix,
        "merchant_private_key",
        e.merchant_private_key_file.as_ref(),
        e.merchant_private_key_pem.as_ref(),
        dir,
    )?;
    let (public_key, public_pem) = key_pem(
        &prefix,
        "platform_public_key",
        e.platform_public_key_file.as_ref(),
        e.platform_public_key_pem.as_ref(),
        dir,
    )?;
    let ids = WechatPayIds {
        account_id: account_id.to_string(),
        app_id: e.app_id.trim().to_string(),
        mch_id: e.mch_id.trim().to_string(),
        merchant_serial_no: e.merchant_serial_no.trim().to_string(),
        platform_serial_no: e.platform_serial_no.trim().to_string(),
        notify_url: notify_url(provisional_base, wechatpay::NAME, account_id),
    };
    let account = WechatPayAccount::from_pem(ids, &private_pem, &public_pem, e.api_v3_key.as_bytes()).map_err(
        |err| match err {
            AccountError::PrivateKey | AccountError::PrivateKeyUnusable(_) => (private_key.clone(), err.to_string()),
            AccountError::PublicKey => (public_key.clone(), err.to_string()),
            AccountError::ApiV3KeyLength(_) => (key("api_v3_key"), err.to_string()),
            AccountError::Empty(field) => (key(field), err.to_string()),
            AccountError::Io { .. } => (key("(key files)"), err.to_string()),
        },
    )?;
    let base_url = match &e.base_url {
        Some(u) => check_url(u).map_err(|m| (key("base_url"), m))?,
        None => wechatpay::DEFAULT_BASE_URL.to_string(),
    };
    Ok(account.with_base_url(&base_url))
}

/// A checked Alipay account from its entry (see [`wechatpay_account`]).
fn alipay_account(
    account_id: &str,
    e: &AlipayEntry,
    dir: &Path,
    provisional_base: &str,
) -> Result<AlipayAccount, (String, String)> {
    let prefix = format!("channels.{}.{account_id}", alipay::CHANNEL_NAME);
    let key = |field: &str| format!("{prefix}.{field}");
    if e.app_id.trim().is_empty() {
        return Err((key("app_id"), "must not be empty".into()));
    }
    let (private_key, pem) = key_pem(
        &prefix,
        "app_private_key",
        e.app_private_key_file.as_ref(),
        e.app_private_key_pem.as_ref(),
        dir,
    )?;
    let private_key = parse_private_key(&pem).map_err(|err| (private_key, err.to_string()))?;
    let (public_key, pem) = key_pem(
        &prefix,
        "alipay_public_key",
        e.alipay_public_key_file.as_ref(),
        e.alipay_public_key_pem.as_ref(),
        dir,
    )?;
    let public_key = parse_public_key(&pem).map_err(|err| (public_key, err.to_string()))?;
    let gateway_url = match &e.gateway_url {
        Some(u) => check_url(u).map_err(|m| (key("gateway_url"), m))?,
        None => alipay::DEFAULT_GATEWAY_URL.to_string(),
    };
    let mut account = AlipayAccount::new(
        account_id,
        e.app_id.trim(),
        private_key,
        public_key,
        &notify_url(provisional_base, alipay::CHANNEL_NAME, account_id),
    )
    .with_gateway_url(&gateway_url);
    match e.seller_id.as_deref().map(str::trim) {
        Some("") => return Err((key("seller_id"), "must not be empty when given".into())),
        Some(seller_id) => account = account.with_seller_id(seller_id),
        None => {}
    }
    Ok(account)
}

/// The notify URL of `channel`'s account `account_id` under `base`:
/// `{base}/v1/callbacks/{channel}/{account_id}`.
pub fn notify_url(base: &str, channel: &str, account_id: &str) -> String {
    format!("{}/v1/callbacks/{channel}/{account_id}", base.trim_end_matches('/'))
}

/// How an entry's `new_orders` (default `true`) and `legacy` (default `false`) use it.
fn usage(new_orders: Option<bool>, legacy: Option<bool>) -> AccountUse {
    AccountUse {
        new_orders: new_orders.unwrap_or(true),
        legacy: legacy.unwrap_or(false),
    }
}

/// An account id is a path segment of its notify URL and a token of its KV key: 1 to
/// [`ACCOUNT_ID_CHARS_MAX`] of `A-Z a-z 0-9 _ -`. Errors are `(key, message)`.
pub fn check_account_id(channel: &str, account_id: &str) -> Result<(), (String, String)> {
    let fine = !account_id.is_empty()
        && account_id.chars().count() <= ACCOUNT_ID_CHARS_MAX
        && account_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if fine {
        return Ok(());
    }
    Err((
        format!("channels.{channel}"),
        format!(
            "account id {account_id:?} must be 1 to {ACCOUNT_ID_CHARS_MAX} of the characters A-Z a-z 0-9 _ - \
             (it is a path segment of the account's notify URL)"
        ),
    ))
}

/// The configuration file to read: `explicit` (from `--config` / `PAYLEDGER_CONFIG`) if given,
/// else [`DEFAULT_CONFIG_FILE`] in the working directory if it exists, else none.
pub fn locate(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        default.is_file().then_some(default)
    })
}

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl ChannelAccounts {
    /// Whether no channel account is configured.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Reads and checks the configuration file `path` (key files relative to its directory).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and key path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let io = |message: String| ConfigError::Io {
            file: file.clone(),
            message,
        };
        let len = std::fs::metadata(path).map_err(|e| io(e.to_string()))?.len();
        if len > CONFIG_FILE_BYTES_MAX {
            return Err(io(format!("{len} bytes is more than {CONFIG_FILE_BYTES_MAX}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io(e.to_string()))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &file, dir)
    }

    /// Parses configuration `text`; `file` names it in errors, relative key paths resolve
    /// against `dir`.
    ///
    /// # Errors
    /// [`ConfigError::Shape`] for TOML that is not the documented shape,
    /// [`ConfigError::Invalid`] for unacceptable values.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Self, ConfigError> {
        let parsed: FileConfig = from_toml(text, file, "")?;
        let invalid = |(key, message): (String, String)| ConfigError::Invalid {
            file: file.to_string(),
            key,
            message,
        };

        let public_base_url = parsed
            .public_base_url
            .as_deref()
            .map(|u| check_url(u).map_err(|m| invalid(("public_base_url".into(), m))))
            .transpose()?;
        // Until the server knows its public URL, a notify URL is the path alone.
        let provisional = public_base_url.as_deref().unwrap_or("");

        let mut accounts = Vec::new();
        for (account_id, e) in &parsed.channels.wechatpay {
            check_account_id(wechatpay::NAME, account_id).map_err(invalid)?;
            accounts.push(Configured {
                account: ChannelAccount::WechatPay(
                    wechatpay_account(account_id, e, dir, provisional).map_err(invalid)?,
                ),
                usage: usage(e.new_orders, e.legacy),
            });
        }
        for (account_id, e) in &parsed.channels.alipay {
            check_account_id(alipay::CHANNEL_NAME, account_id).map_err(invalid)?;
            accounts.push(Configured {
                account: ChannelAccount::Alipay(alipay_account(account_id, e, dir, provisional).map_err(invalid)?),
                usage: usage(e.new_orders, e.legacy),
            });
        }
        for channel in [wechatpay::NAME, alipay::CHANNEL_NAME] {
            let marked: Vec<&str> = accounts
                .iter()
                .filter(|c| c.account.channel_name() == channel && c.usage.legacy)
                .map(|c| c.account.account_id())
                .collect();
            if marked.len() > 1 {
                return Err(invalid((
                    format!("channels.{channel}"),
                    format!(
                        "accounts {} are all marked legacy = true; at most one account of a channel placed the \
                         orders from before accounts were recorded",
                        marked.join(", ")
                    ),
                )));
            }
        }

        Ok(Self {
            public_base_url,
            accounts,
        })
    }

    /// The base of notify URLs: `public_base_url`, else `server_public_url`.
    pub fn base<'a>(&'a self, server_public_url: &'a str) -> &'a str {
        self.public_base_url.as_deref().unwrap_or(server_public_url)
    }

    /// The configured account `account_id` of `channel`.
    pub fn account(&self, channel: &str, account_id: &str) -> Option<&Configured> {
        self.accounts
            .iter()
            .find(|c| c.account.channel_name() == channel && c.account.account_id() == account_id)
    }

    /// The configured accounts' adapters and uses, their notify URLs set to
    /// `{public_base_url or server_public_url}/v1/callbacks/{channel}/{account_id}`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a channel's HTTP client cannot be built.
    pub fn channels(&self, server_public_url: &str) -> Result<Vec<AccountAdapter>, ConfigError> {
        let base = self.base(server_public_url);
        let mut channels = Vec::new();
        for configured in self.accounts.clone() {
            let account = &configured.account;
            let key = format!("channels.{}.{}", account.channel_name(), account.account_id());
            let channel = configured.into_channel(base).map_err(|message| ConfigError::Invalid {
                file: "(configuration)".into(),
                key,
                message,
            })?;
            channels.push(channel);
        }
        Ok(channels)
    }
}

/// `url` if it is an absolute http(s) URL without query or fragment, without a trailing `/`.
fn check_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an http or https URL with a host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must have no query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The text of key file `path` (relative to `dir`), at most [`KEY_FILE_BYTES_MAX`] bytes.
fn read_key(dir: &Path, path: &Path) -> Result<String, String> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let shown = full.display();
    let len = std::fs::metadata(&full)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if len > KEY_FILE_BYTES_MAX {
        return Err(format!("{shown} has {len} bytes, more than {KEY_FILE_BYTES_MAX}"));
    }
    std::fs::read_to_string(&full).map_err(|e| format!("cannot read {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../channel-adapters/tests/fixtures")
    }

    fn wechatpay_toml(account: &str, api_v3_key: &str) -> String {
        format!(
            r#"
[channels.wechatpay.{account}]
app_id = "wxd678efh567hg6787"
mch_id = "1230000109"
merchant_serial_no = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
merchant_private_key_file = "wechatpay/wechatpay_doc_test_key_pkcs8.pem"
platform_serial_no = "PUB_KEY_ID_1"
platform_public_key_file = "wechatpay/wechatpay_doc_test_pub.pem"
api_v3_key = "{api_v3_key}"
"#
        )
    }

    const ALIPAY_TOML: &str = r#"
[channels.alipay.main]
app_id = "2021000000000001"
app_private_key_file = "alipay/app_private_pkcs8.pem"
alipay_public_key_file = "alipay/app_public_spki.pem"
gateway_url = "http://127.0.0.1:9/gateway.do"
seller_id = "2088000000000001"
"#;

    fn parse(text: &str) -> Result<ChannelAccounts, ConfigError> {
        ChannelAccounts::parse(text, "payledger.toml", &fixtures())
    }

    fn invalid_key(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Invalid { key, message, .. } | ConfigError::Shape { key, message, .. } => (key, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_configures_no_channel() {
        let accounts = parse("").unwrap();
        assert!(accounts.is_empty());
        assert!(accounts.channels("http://127.0.0.1:1").unwrap().is_empty());
    }

    #[test]
    fn both_channels_load_with_keys_relative_to_the_file_and_notify_urls_under_the_base() {
        let text = format!(
            "public_base_url = \"https://pay.example.com/\"\n{}{ALIPAY_TOML}",
            wechatpay_toml("main", API_V3_KEY)
        );
        let accounts = parse(&text).unwrap();
        assert_eq!(accounts.public_base_url.as_deref(), Some("https://pay.example.com"));
        let ChannelAccount::WechatPay(w) = &accounts.account("wechatpay", "main").unwrap().account else {
            panic!("not WeChat Pay")
        };
        assert_eq!(w.account_id, "main");
        assert_eq!(w.mch_id, "1230000109");
        assert_eq!(w.base_url, wechatpay::DEFAULT_BASE_URL);
        assert_eq!(&w.api_v3_key, API_V3_KEY.as_bytes());
        let ChannelAccount::Alipay(a) = &accounts.account("alipay", "main").unwrap().account else {
            panic!("not Alipay")
        };
        assert_eq!(a.gateway_url, "http://127.0.0.1:9/gateway.do");
        assert_eq!(a.seller_id.as_deref(), Some("2088000000000001"));

        let channels = accounts.channels("http://127.0.0.1:8080").unwrap();
        let names: Vec<&str> = channels.iter().map(|(c, _)| c.name()).collect();
        assert_eq!(names, ["wechatpay", "alipay"]);
        assert!(channels.iter().all(|(_, usage)| *usage == AccountUse::default()));
        // The configured base wins over the server's own URL.
        let debug = format!("{accounts:?}");
        assert!(
            debug.contains("https://pay.example.com/v1/callbacks/wechatpay/main"),
            "{debug}"
        );
        assert!(!debug.contains(API_V3_KEY), "the APIv3 key must never be printed");
    }

    #[test]
    fn notify_urls_default_to_the_servers_public_url() {
        let accounts = parse(&wechatpay_toml("main", API_V3_KEY)).unwrap();
        let channels = accounts.channels("http://127.0.0.1:8080/").unwrap();
        assert_eq!(channels.len(), 1);
        assert_eq!(
            notify_url("http://127.0.0.1:8080/", "wechatpay", "main"),
            "http://127.0.0.1:8080/v1/callbacks/wechatpay/main"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_its_path() {
        let text = wechatpay_toml("main", API_V3_KEY) + "api_v3_kye = \"x\"\n";
        let e = parse(&text).unwrap_err();
        assert!(matches!(e, ConfigError::Shape { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.starts_with("payledger.toml: channels.wechatpay.main"), "{shown}");
        assert!(shown.contains("api_v3_kye"), "{shown}");
    }

    #[test]
    fn a_missing_key_names_the_account() {
        let text = wechatpay_toml("main", API_V3_KEY).replace("mch_id = \"1230000109\"\n", "");
        let (key, message) = invalid_key(parse(&text).unwrap_err());
        assert_eq!(key, "channels.wechatpay.main");
        assert!(message.contains("mch_id"), "{message}");
    }

    #[test]
    fn a_wrong_api_v3_key_length_is_refused_without_showing_it() {
        let short = "tooshortkey-secret";
        let e = parse(&wechatpay_toml("main", short)).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains(short), "{shown}");
        let (key, message) = invalid_key(e);
        assert_eq!(key, "channels.wechatpay.main.api_v3_key");
        assert!(message.contains("32 bytes"), "{message}");
    }

    #[test]
    fn a_syntax_error_gives_line_and_column_but_not_the_line() {
        let text = format!("{}oops = \"{API_V3_KEY}", wechatpay_toml("main", API_V3_KEY));
        let shown = parse(&text).unwrap_err().to_string();
        assert!(shown.contains("line 10"), "{shown}");
        assert!(!shown.contains(API_V3_KEY), "{shown}");
    }

    #[test]
    fn a_missing_key_file_names_the_key_and_the_resolved_path() {
        let text = wechatpay_toml("main", API_V3_KEY).replace("wechatpay_doc_test_pub.pem", "missing.pem");
        let (key, message) = invalid_key(parse(&text).unwrap_err());
        assert_eq!(key, "channels.wechatpay.main.platform_public_key_file");
        assert!(
            message.contains(&fixtures().join("wechatpay/missing.pem").display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn a_public_key_where_the_private_key_belongs_is_refused() {
        let text = ALIPAY_TOML.replace("app_private_pkcs8.pem", "app_public_spki.pem");
        let (key, _) = invalid_key(parse(&text).unwrap_err());
        assert_eq!(key, "channels.alipay.main.app_private_key_file");
    }

    #[test]
    fn several_accounts_of_one_channel_load_each_with_its_use() {
        let second =
            wechatpay_toml("b", API_V3_KEY).replace("1230000109", "1230000200") + "new_orders = false\nlegacy = true\n";
        let accounts = parse(&(wechatpay_toml("a", API_V3_KEY) + &second)).unwrap();
        let a = accounts.account("wechatpay", "a").unwrap();
        assert_eq!(a.usage, AccountUse::default());
        let b = accounts.account("wechatpay", "b").unwrap();
        assert_eq!(
            b.usage,
            AccountUse {
                new_orders: false,
                legacy: true
            }
        );
        let ChannelAccount::WechatPay(b) = &b.account else {
            panic!("not WeChat Pay")
        };
        assert_eq!(b.mch_id, "1230000200");
        assert_eq!(accounts.channels("http://x.example").unwrap().len(), 2);
    }

    #[test]
    fn two_legacy_accounts_of_one_channel_are_refused() {
        let text =
            wechatpay_toml("a", API_V3_KEY) + "legacy = true\n" + &wechatpay_toml("b", API_V3_KEY) + "legacy = true\n";
        let (key, message) = invalid_key(parse(&text).unwrap_err());
        assert_eq!(key, "channels.wechatpay");
        assert!(message.contains("a, b"), "{message}");
    }

    #[test]
    fn an_account_id_that_cannot_be_a_path_segment_is_refused() {
        for bad in ["\"a b\"", "\"a/b\"", "\"ü\""] {
            let text = wechatpay_toml(bad, API_V3_KEY);
            let (key, message) = invalid_key(parse(&text).unwrap_err());
            assert_eq!(key, "channels.wechatpay", "{bad}");
            assert!(message.contains("A-Z a-z 0-9 _ -"), "{message}");
        }
    }

    #[test]
    fn urls_must_be_http_without_query() {
        let (key, _) = invalid_key(parse("public_base_url = \"ftp://x\"").unwrap_err());
        assert_eq!(key, "public_base_url");
        let text = ALIPAY_TOML.replace("/gateway.do", "/gateway.do?x=1");
        let (key, _) = invalid_key(parse(&text).unwrap_err());
        assert_eq!(key, "channels.alipay.main.gateway_url");
    }

    #[test]
    fn a_missing_explicit_file_is_an_io_error_naming_it() {
        let e = ChannelAccounts::load(Path::new("/nonexistent/payledger.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/payledger.toml"));
    }
}
