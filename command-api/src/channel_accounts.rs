//! The guard on channel account changes: no account may be removed, or given another
//! channel-side identity (`app_id`, `mch_id`), while it still serves open orders — orders
//! awaiting payment or with a refund pending ([`payledger_projections::accounts`]). Those orders
//! would otherwise be asked about at an account that does not know them: a paid order closed as
//! "not found", a notification refused, a refund stuck.
//!
//! Checked at start-up (the configuration file, and the NATS KV bucket once loaded) and before
//! each change the KV watch applies ([`crate::kv_config`]).

use std::time::Duration;

use payledger_channel_adapters::Channels;
use payledger_projections::accounts::{accounts_in_use, AccountInUse};
use payledger_projections::PROJECTION_NAME;
use payledger_store::subscription::checkpoint;
use payledger_store::Database;

/// The open orders `channels` cannot serve: one sentence per account (or per channel, for
/// orders opened before accounts were recorded), empty when every open order has its account.
pub fn stranded(in_use: &[AccountInUse], channels: &Channels) -> Vec<String> {
    let mut problems = Vec::new();
    for group in in_use.iter().filter(|g| g.open_orders > 0) {
        let channel = &group.channel;
        let n = group.open_orders;
        match (&group.account, &group.identity) {
            (Some(account), identity) => {
                let placed = identity.clone().unwrap_or_default();
                match channels.account(channel, account) {
                    None => problems.push(format!(
                        "channel account {channel}.{account} still serves {n} open order(s) (awaiting payment or \
                         with a refund pending) and is not configured: keep it, with new_orders = false, until \
                         they are settled"
                    )),
                    Some(adapter) if adapter.channel_account().identity() != placed => problems.push(format!(
                        "channel account {channel}.{account} still serves {n} open order(s) placed with {placed:?} \
                         and is now configured as {:?}: configure the new identity as a new account, and keep \
                         this one, with new_orders = false, until they are settled",
                        adapter.channel_account().identity()
                    )),
                    Some(_) => {}
                }
            }
            (None, _) => {
                if let Err(e) = channels.legacy(channel) {
                    problems.push(format!(
                        "{n} open order(s) of channel {channel} were opened before accounts were recorded, and no \
                         account serves them: {e}; mark the account that placed them with legacy = true"
                    ));
                }
            }
        }
    }
    problems
}

/// Pause between reads of the projection's checkpoint while waiting for it.
const CHECKPOINT_POLL_MS: u64 = 20;
/// Longest wait for the `order_view` projection to hold every committed event before the open
/// orders are read.
pub const READ_MODEL_WAIT_MS: u64 = 10_000;

/// The open orders of every account now, from the read model, once it holds every event
/// committed before this call (an order placed a moment ago is open too): the projection's
/// checkpoint is polled, wherever the projector runs, for at most [`READ_MODEL_WAIT_MS`]; past
/// that the read model is read as it is (logged).
///
/// # Errors
/// A message when the database cannot be read.
pub async fn in_use(db: &Database) -> Result<Vec<AccountInUse>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("reading which channel accounts serve open orders: {e}");
    let head = db.log().head().await.map_err(|e| failed(&e))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READ_MODEL_WAIT_MS);
    while checkpoint(db.pool(), PROJECTION_NAME).await.map_err(|e| failed(&e))? < head {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                ?head,
                "order_view behind the log: channel accounts checked against it as it is"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(CHECKPOINT_POLL_MS)).await;
    }
    accounts_in_use(db.pool()).await.map_err(|e| failed(&e))
}

/// Whether `channels` serves every open order in `db`.
///
/// # Errors
/// The stranded orders, one account per line; or the database error.
pub async fn check(db: &Database, channels: &Channels) -> Result<(), String> {
    let problems = stranded(&in_use(db).await?, channels);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Settings key prefix of the [legacy pins](Channels::pin_legacy): `legacy_channel_account:<channel>`.
pub const LEGACY_PIN_PREFIX: &str = "legacy_channel_account:";

/// Loads each channel's legacy pin into `channels`, storing it first where none is stored yet:
/// the account the configuration names for the channel's orders from before accounts were
/// recorded (its only account, or the one marked `legacy`). The first stored pin stays: an
/// upgraded server pins the accounts it runs with, which placed those orders, and a later change
/// of them is then noticed ([`stranded`], the orders' notifications, queries and refunds).
///
/// # Errors
/// A message when the settings cannot be read or written, or a stored pin does not parse.
pub async fn pin_legacy_accounts(db: &Database, channels: &Channels) -> Result<(), String> {
    for name in channels.names() {
        let key = format!("{LEGACY_PIN_PREFIX}{name}");
        let failed = |e: &dyn std::fmt::Display| format!("the legacy account of channel {name}: {e}");
        let stored = match channels.legacy_candidate(name) {
            Ok(candidate) => {
                let text = serde_json::to_string(&candidate).map_err(|e| failed(&e))?;
                Some(
                    payledger_store::settings::get_or_init(db.pool(), &key, || text)
                        .await
                        .map_err(|e| failed(&e))?,
                )
            }
            Err(_) => payledger_store::settings::get(db.pool(), &key)
                .await
                .map_err(|e| failed(&e))?,
        };
        if let Some(stored) = stored {
            channels.pin_legacy(name, serde_json::from_str(&stored).map_err(|e| failed(&e))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ChannelAccounts;

    /// WeChat Pay accounts `(id, mch_id)` from the channel adapters' key fixtures.
    fn wechatpay(accounts: &[(&str, &str)]) -> Channels {
        let mut toml = String::new();
        for (id, mch_id) in accounts {
            toml += &format!(
                "[channels.wechatpay.{id}]\napp_id = \"wxd678efh567hg6787\"\nmch_id = \"{mch_id}\"\n\
                 merchant_serial_no = \"408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB\"\n\
                 merchant_private_key_file = \"wechatpay/wechatpay_doc_test_key_pkcs8.pem\"\n\
                 platform_serial_no = \"PUB_KEY_ID_1\"\nplatform_public_key_file = \"wechatpay/wechatpay_doc_test_pub.pem\"\n\
                 api_v3_key = \"0123456789abcdef0123456789abcdef\"\n"
            );
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../channel-adapters/tests/fixtures");
        let channels = Channels::default();
        for (adapter, usage) in ChannelAccounts::parse(&toml, "t.toml", &dir)
            .expect("parses")
            .channels("http://127.0.0.1:1")
            .expect("adapters")
        {
            channels.insert_account(adapter, usage);
        }
        channels
    }

    fn open(account: Option<&str>, identity: Option<&str>, n: i64) -> AccountInUse {
        AccountInUse {
            channel: "wechatpay".into(),
            account: account.map(str::to_string),
            identity: identity.map(str::to_string),
            open_orders: n,
        }
    }

    const PLACED: &str = "app_id=wxd678efh567hg6787 mch_id=1230000109";

    #[test]
    fn open_orders_need_their_account_with_its_identity() {
        let in_use = [open(Some("old"), Some(PLACED), 2)];
        assert!(stranded(&in_use, &wechatpay(&[("old", "1230000109"), ("new", "1900000001")])).is_empty());
        let gone = stranded(&in_use, &wechatpay(&[("new", "1900000001")]));
        assert_eq!(gone.len(), 1);
        assert!(
            gone[0].contains("wechatpay.old still serves 2 open order(s)"),
            "{}",
            gone[0]
        );
        assert!(gone[0].contains("is not configured"), "{}", gone[0]);
        let changed = stranded(&in_use, &wechatpay(&[("old", "1900000001")]));
        assert!(changed[0].contains("is now configured as"), "{}", changed[0]);
        // Settled orders hold nothing.
        assert!(stranded(&[open(Some("old"), Some(PLACED), 0)], &wechatpay(&[])).is_empty());
    }

    #[test]
    fn orders_from_before_accounts_need_the_pinned_account_unchanged() {
        let in_use = [open(None, None, 3)];
        let channels = wechatpay(&[("main", "1230000109")]);
        channels.pin_legacy(
            "wechatpay",
            channels.legacy_candidate("wechatpay").expect("one account"),
        );
        assert!(stranded(&in_use, &channels).is_empty());
        // The pinned account's merchant id changed in place: noticed, though the orders never
        // recorded an account.
        let changed = wechatpay(&[("main", "1900000001")]);
        changed.pin_legacy(
            "wechatpay",
            channels.legacy_candidate("wechatpay").expect("one account"),
        );
        let problems = stranded(&in_use, &changed);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("3 open order(s) of channel wechatpay"),
            "{}",
            problems[0]
        );
        // Unpinned, with two accounts and none marked: no account serves them.
        let ambiguous = wechatpay(&[("a", "1230000109"), ("b", "1900000001")]);
        assert!(stranded(&in_use, &ambiguous)[0].contains("legacy = true"));
    }
}
