//! Which channel accounts still serve open orders: the platform's view over every merchant
//! (not a merchant query), read before a channel account is removed or changed.
//!
//! An order is open for its account while it awaits payment (a notification may still come, the
//! order monitor queries and closes it) or has a refund pending (the refund worker sends it
//! there). Orders opened before accounts were recorded have no account here (`None`).

use sqlx::{AnyPool, Row};

/// Open orders of one channel account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInUse {
    /// The channel's name, e.g. `wechatpay`.
    pub channel: String,
    /// The account's id; `None`: orders opened before accounts were recorded.
    pub account: Option<String>,
    /// The channel-side identity the orders were placed with
    /// ([`payledger_domain::ChannelAccountRef::identity`]); `None` with `account`.
    pub identity: Option<String>,
    /// Orders awaiting payment or with a refund pending.
    pub open_orders: i64,
}

/// Every channel account (and the pre-account orders of each channel) with open orders, by
/// channel, account and identity.
///
/// # Errors
/// The database error.
pub async fn accounts_in_use(pool: &AnyPool) -> Result<Vec<AccountInUse>, sqlx::Error> {
    // Two index-backed sets (awaiting orders, pending refunds), unioned by order id.
    let rows = sqlx::query(
        "SELECT channel, channel_account, channel_account_identity, COUNT(*) AS open_orders FROM ( \
             SELECT order_id, channel, channel_account, channel_account_identity FROM order_view \
              WHERE status = 'awaiting_payment' \
             UNION \
             SELECT o.order_id, o.channel, o.channel_account, o.channel_account_identity \
               FROM refund_view r JOIN order_view o ON o.order_id = r.order_id \
              WHERE r.status = 'pending' \
         ) open_order \
         GROUP BY channel, channel_account, channel_account_identity \
         ORDER BY channel, channel_account, channel_account_identity",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AccountInUse {
                channel: row.try_get("channel")?,
                account: row.try_get("channel_account")?,
                identity: row.try_get("channel_account_identity")?,
                open_orders: row.try_get("open_orders")?,
            })
        })
        .collect()
}
