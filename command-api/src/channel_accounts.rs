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
        tokio::time::sleep(Duration::from_millis(crate::app::PROJECTION_POLL_MS)).await;
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
