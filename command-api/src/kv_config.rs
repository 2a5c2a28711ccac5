//! Channel accounts in a NATS KV bucket (NATS mode, `serve --nats-url`), applied without restart.
//!
//! - Bucket [`BUCKET_DEFAULT`] (`--config-bucket` to change), created when missing.
//! - One key per account: `channels.<channel>.<account_id>`, e.g. `channels.wechatpay.main`.
//! - The value is a TOML document with the keys of the file's `[channels.<channel>.<account_id>]`
//!   table (see [`crate::config`]). A KV value has no directory, so keys are best given inline as
//!   PEM text: `merchant_private_key_pem` / `platform_public_key_pem` (WeChat Pay),
//!   `app_private_key_pem` / `alipay_public_key_pem` (Alipay). The `*_file` forms are accepted
//!   too (relative paths resolve against the server's working directory); each key takes exactly
//!   one of the two forms.
//! - Precedence: a KV account replaces the file's account of the same channel and id; deleting
//!   the key brings the file's account back, or removes the account when the file has none. A
//!   channel may have several accounts, as in the file (`new_orders`, `legacy`).
//!   `public_base_url` stays in the file.
//! - The bucket is watched: a put rebuilds that account's adapter and swaps it into the live
//!   [`Channels`] (handlers, refund worker and order monitor use it from their next call); a
//!   delete or purge removes it. A value that does not parse or check is logged with its key and
//!   the problem (never key material) and the previous adapter stays.
//! - A change that would leave open orders without the account that placed them (removing the
//!   account, or giving it another `app_id` / `mch_id`) is refused the same way, and logged with
//!   the orders' count ([`crate::channel_accounts`]): the account stays as it was.
//! - At start the server waits up to [`SYNC_TIMEOUT_MS`] for the bucket's current entries; when
//!   NATS is unreachable it starts with the file's accounts and applies the bucket once NATS is
//!   back (the watch reconnects with backoff).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use payledger_channel_adapters::{AccountUse, Channel, Channels};
use payledger_store::Database;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::channel_accounts;
use crate::config::{ChannelAccount, ChannelAccounts};

/// Default KV bucket of the configuration.
pub const BUCKET_DEFAULT: &str = "payledger_config";
/// Prefix of channel account keys: `channels.<channel>.<account_id>`.
pub const CHANNELS_PREFIX: &str = "channels.";
/// How long [`spawn`]'s caller should wait for the bucket's current entries at start.
pub const SYNC_TIMEOUT_MS: u64 = 5_000;
/// Time to connect to NATS and for each JetStream request.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// First pause after the watch failed.
const BACKOFF_MS_MIN: u64 = 200;
/// Longest pause between attempts.
const BACKOFF_MS_MAX: u64 = 10_000;

/// Applies bucket entries to the live registry.
struct Applier {
    channels: Channels,
    file: ChannelAccounts,
    /// Base of notify URLs.
    base: String,
    /// `nats-kv:<bucket>`, naming the source in errors.
    source: String,
    /// Channel and account id of the KV entries in effect.
    active: BTreeSet<(String, String)>,
    /// Where the open orders are read before a change; `None`: changes are not guarded.
    db: Option<Database>,
    /// The bucket's entries at start are applied: from then on each change is guarded. The
    /// initial entries are checked together, once loaded (their order in the bucket is not
    /// one an operator chose, and the read models may still be catching up).
    loaded: bool,
}

/// The channel and account id of `key`, if it is a channel account key.
fn parse_key(key: &str) -> Result<(&str, &str), String> {
    let rest = key
        .strip_prefix(CHANNELS_PREFIX)
        .ok_or_else(|| format!("not a channel account key (expected {CHANNELS_PREFIX}<channel>.<account_id>)"))?;
    match rest.split_once('.') {
        Some((channel, account_id)) if !channel.is_empty() && !account_id.is_empty() && !account_id.contains('.') => {
            Ok((channel, account_id))
        }
        _ => Err(format!("expected {CHANNELS_PREFIX}<channel>.<account_id>")),
    }
}

impl Applier {
    async fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let (channel, account_id) = parse_key(key)?;
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8 text".to_string())?;
        let configured = ChannelAccount::parse(channel, account_id, text, &self.source, Path::new("."))
            .map_err(|e| e.to_string())?;
        let name = configured.account.channel_name();
        let (adapter, usage) = configured.into_channel(&self.base)?;
        self.guard(|trial| {
            trial.insert_account(adapter.clone(), usage);
        })
        .await?;
        self.channels.insert_account(adapter, usage);
        self.active.insert((name.to_string(), account_id.to_string()));
        Ok(())
    }

    async fn delete(&mut self, key: &str) -> Result<bool, String> {
        let (channel, account_id) = parse_key(key)?;
        let entry = (channel.to_string(), account_id.to_string());
        if !self.active.contains(&entry) {
            return Ok(false);
        }
        let fallback: Option<(Arc<dyn Channel>, AccountUse)> = self
            .file
            .account(channel, account_id)
            .cloned()
            .map(|c| c.into_channel(&self.base))
            .transpose()?;
        let apply = |channels: &Channels| match &fallback {
            Some((adapter, usage)) => {
                channels.insert_account(adapter.clone(), *usage);
            }
            None => {
                channels.remove_account(channel, account_id);
            }
        };
        self.guard(apply).await?;
        apply(&self.channels);
        self.active.remove(&entry);
        Ok(true)
    }

    /// Whether `change` leaves every open order its account: tried on a copy of the registry.
    async fn guard(&self, change: impl FnOnce(&Channels)) -> Result<(), String> {
        let Some(db) = self.db.as_ref().filter(|_| self.loaded) else {
            return Ok(());
        };
        let in_use = channel_accounts::in_use(db).await?;
        let before = channel_accounts::stranded(&in_use, &self.channels);
        let trial = self.channels.detached();
        change(&trial);
        let new: Vec<String> = channel_accounts::stranded(&in_use, &trial)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if new.is_empty() {
            Ok(())
        } else {
            Err(new.join("; "))
        }
    }

    /// The initial entries are applied: every later change is guarded. (The initial entries are
    /// checked together by the server's start, [`spawn`]'s caller.)
    fn loaded(&mut self) {
        self.loaded = true;
    }

    async fn apply(&mut self, entry: &kv::Entry) {
        let key = entry.key.as_str();
        if !key.starts_with(CHANNELS_PREFIX) {
            tracing::debug!(bucket = %entry.bucket, key, "configuration key ignored");
            return;
        }
        match entry.operation {
            kv::Operation::Put => match self.put(key, &entry.value).await {
                Ok(()) => {
                    tracing::info!(bucket = %entry.bucket, key, revision = entry.revision, "channel account applied")
                }
                Err(problem) => tracing::error!(
                    bucket = %entry.bucket, key, revision = entry.revision, %problem,
                    "channel account refused; the previous one stays"
                ),
            },
            kv::Operation::Delete | kv::Operation::Purge => match self.delete(key).await {
                Ok(true) => tracing::info!(bucket = %entry.bucket, key, "channel account removed"),
                Ok(false) => {}
                Err(problem) => {
                    tracing::error!(bucket = %entry.bucket, key, %problem, "channel account removal refused; the account stays")
                }
            },
        }
    }
}

/// The bucket `name`, created when missing.
async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // The KV stream as `create_key_value` would make it, created directly: that call first asks
    // for the account info, whose answer async-nats 0.46 cannot parse from NATS 2.9 servers.
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some("payledger configuration (channel accounts)".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 5,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    if let Err(e) = created {
        // Another server may have created it meanwhile: then the get below works.
        tracing::debug!(bucket = name, error = %e, "creating the configuration bucket");
    }
    js.get_key_value(name)
        .await
        .map_err(|e| format!("opening bucket {name}: {e}"))
}

/// One watch: current entries, then changes, until the watch ends or fails.
async fn watch_once(
    nats_url: &str,
    bucket_name: &str,
    replicas: usize,
    applier: &mut Applier,
    synced: &mut Option<oneshot::Sender<()>>,
) -> Result<(), String> {
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let client = async_nats::ConnectOptions::new()
        .name("payledger-config")
        .connection_timeout(timeout)
        .max_reconnects(None)
        .connect(payledger_bus::server_addrs(nats_url)?)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let js = jetstream::ContextBuilder::new().timeout(timeout).build(client);
    let store = bucket(&js, bucket_name, replicas).await?;
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| format!("watching bucket {bucket_name}: {e}"))?;
    let empty = store
        .status()
        .await
        .map(|s| s.info.state.messages == 0)
        .unwrap_or(false);
    if empty {
        applier.loaded();
        synced.take().map(|tx| tx.send(()));
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| format!("watching bucket {bucket_name}: {e}"))?;
        applier.apply(&entry).await;
        if entry.delta == 0 {
            applier.loaded();
            synced.take().map(|tx| tx.send(()));
        }
    }
    Err(format!("the watch of bucket {bucket_name} ended"))
}

/// Starts watching bucket `bucket_name` at `nats_url` (see the module docs; created with
/// `replicas` copies when missing), applying its channel accounts to `channels` over those of
/// `file`, notify URLs under `base`, each change checked against the open orders in `db` (`None`:
/// unchecked). Returns the task and a receiver completed once the bucket's current entries are
/// applied.
pub fn spawn(
    nats_url: String,
    bucket_name: String,
    replicas: usize,
    channels: Channels,
    file: ChannelAccounts,
    base: String,
    db: Option<Database>,
) -> (JoinHandle<()>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let mut applier = Applier {
        channels,
        file,
        base,
        source: format!("nats-kv:{bucket_name}"),
        active: BTreeSet::new(),
        db,
        loaded: false,
    };
    let task = tokio::spawn(async move {
        let mut synced = Some(tx);
        let mut backoff = BACKOFF_MS_MIN;
        loop {
            let started = tokio::time::Instant::now();
            if let Err(problem) = watch_once(&nats_url, &bucket_name, replicas, &mut applier, &mut synced).await {
                tracing::warn!(bucket = %bucket_name, %problem, "configuration watch failed; retrying");
            }
            if started.elapsed() > Duration::from_millis(BACKOFF_MS_MAX) {
                backoff = BACKOFF_MS_MIN;
            }
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MS_MAX);
        }
    });
    (task, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_channel_and_one_account() {
        assert_eq!(parse_key("channels.wechatpay.main"), Ok(("wechatpay", "main")));
        assert!(parse_key("channels.wechatpay").is_err());
        assert!(parse_key("channels.wechatpay.a.b").is_err());
        assert!(parse_key("other.wechatpay.main").is_err());
    }
}
