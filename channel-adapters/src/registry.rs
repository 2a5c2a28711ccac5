//! [`Channels`]: the registry of channel accounts, by channel then account id. Which account a
//! new order is placed with, which one serves an existing order (the one that placed it), and
//! which one serves the orders from before accounts were recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use payledger_domain::{ChannelAccountRef, Mode};

use crate::remote::{RemoteChannel, Requester};
use crate::{Capabilities, Channel};

/// How the registry uses one channel account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountUse {
    /// New orders may be placed with it. An account that takes no new orders still serves the
    /// orders it placed (notifications, queries, closes, refunds): disabled is not removed.
    pub new_orders: bool,
    /// It serves the orders opened before accounts were recorded (`ChannelOrderOpened` 1.0,
    /// whose account is `None`). Only needed when the channel has more than one account.
    pub legacy: bool,
}

impl Default for AccountUse {
    /// Takes new orders, not marked legacy.
    fn default() -> Self {
        Self {
            new_orders: true,
            legacy: false,
        }
    }
}

/// Why the registry cannot name the account that serves an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// No account of the channel is configured.
    #[error("channel {channel} is not enabled")]
    ChannelNotEnabled {
        /// The channel's name.
        channel: String,
    },
    /// The account that placed the order is not configured any more.
    #[error("channel account {channel}.{account} is not configured, and it placed this order")]
    NotConfigured {
        /// The channel's name.
        channel: String,
        /// The account's id.
        account: String,
    },
    /// An account of that name is configured with another channel-side identity: it is another
    /// account at the channel, which would not know the order.
    #[error(
        "channel account {channel}.{account} is now configured as {now:?}, but the order was placed with {placed:?}: \
         configure the new identity as a new account and keep this one"
    )]
    Changed {
        /// The channel's name.
        channel: String,
        /// The account's id.
        account: String,
        /// The identity the order was placed with ([`ChannelAccountRef::identity`]).
        placed: String,
        /// The identity configured under that id now.
        now: String,
    },
    /// The order was opened before accounts were recorded, and the channel has several accounts,
    /// none marked `legacy`.
    #[error(
        "the order was opened before channel accounts were recorded, and channel {channel} has {accounts} accounts, \
         none marked legacy = true"
    )]
    NoLegacyAccount {
        /// The channel's name.
        channel: String,
        /// How many accounts it has.
        accounts: usize,
    },
}

/// One configured account of a channel.
#[derive(Clone)]
struct Account {
    adapter: Arc<dyn Channel>,
    usage: AccountUse,
}

/// Channel name → account id → account.
type Registry = BTreeMap<&'static str, BTreeMap<String, Account>>;

/// The enabled channels and their accounts: a live registry.
///
/// A channel may have several accounts, each its own adapter (its own keys and channel-side
/// identity, [`Channel::channel_account`]). Which account serves what:
/// - a new order: [`Channels::for_new_order`], the channel's first account (by id) that takes
///   new orders;
/// - an existing order: [`Channels::for_order`], the account recorded when it was opened, even
///   when it no longer takes new orders; an order from before accounts were recorded belongs to
///   the channel's [legacy account](Channels::legacy).
///
/// Clones share one registry, so an account [inserted](Channels::insert_account) or
/// [removed](Channels::remove_account) after start (channel accounts changed in the NATS KV
/// bucket) is seen by every holder (handlers, refund worker, order monitor) on its next lookup.
/// A call in flight keeps the adapter it already got.
#[derive(Clone, Default)]
pub struct Channels {
    registry: Arc<RwLock<Registry>>,
    /// Channel → the account its orders from before accounts were recorded were placed with
    /// (see [`Channels::pin_legacy`]).
    legacy_pins: Arc<RwLock<BTreeMap<String, ChannelAccountRef>>>,
    /// Set on a [remote view](Channels::remote): lookups wrap each adapter in a [`RemoteChannel`].
    remote: Option<(Arc<dyn Requester>, Arc<str>)>,
}

impl Channels {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // Writers only insert or remove one entry: a poisoned map is still consistent.
        self.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The adapter as this view hands it out: itself, or a [`RemoteChannel`] around it.
    fn view(&self, local: Arc<dyn Channel>) -> Arc<dyn Channel> {
        match &self.remote {
            None => local,
            Some((requester, prefix)) => Arc::new(RemoteChannel::new(local, requester.clone(), prefix)),
        }
    }

    /// Adds (or replaces) a channel account taking new orders.
    pub fn with(self, channel: Arc<dyn Channel>) -> Self {
        self.insert(channel);
        self
    }

    /// Adds or replaces a channel account taking new orders ([`AccountUse::default`]); returns
    /// the one it replaced.
    pub fn insert(&self, channel: Arc<dyn Channel>) -> Option<Arc<dyn Channel>> {
        self.insert_account(channel, AccountUse::default())
    }

    /// Adds or replaces the account of `channel` (its [`Channel::channel_account`] id) in the
    /// live registry, used as `usage` says; returns the adapter it replaced.
    pub fn insert_account(&self, channel: Arc<dyn Channel>, usage: AccountUse) -> Option<Arc<dyn Channel>> {
        let id = channel.channel_account().id;
        let name = channel.name();
        self.write()
            .entry(name)
            .or_default()
            .insert(
                id,
                Account {
                    adapter: channel,
                    usage,
                },
            )
            .map(|a| a.adapter)
    }

    /// Removes account `account_id` of channel `name` from the live registry; returns it.
    pub fn remove_account(&self, name: &str, account_id: &str) -> Option<Arc<dyn Channel>> {
        let mut registry = self.write();
        let accounts = registry.get_mut(name)?;
        let removed = accounts.remove(account_id).map(|a| a.adapter);
        if accounts.is_empty() {
            registry.remove(name);
        }
        removed
    }

    /// The account of channel `name` that new orders are placed with: the first (by account
    /// id) that [takes new orders](AccountUse::new_orders). `None` when the channel is not
    /// enabled or every account of it is closed to new orders.
    pub fn for_new_order(&self, name: &str) -> Option<Arc<dyn Channel>> {
        let local = self
            .read()
            .get(name)?
            .values()
            .find(|a| a.usage.new_orders)
            .map(|a| a.adapter.clone())?;
        Some(self.view(local))
    }

    /// Account `account_id` of channel `name`, whatever its use.
    pub fn account(&self, name: &str, account_id: &str) -> Option<Arc<dyn Channel>> {
        let local = self.read().get(name)?.get(account_id)?.adapter.clone();
        Some(self.view(local))
    }

    /// Records that channel `name`'s orders from before accounts were recorded were placed with
    /// `account`: from then on [`Channels::legacy`] serves them with that account only, checked
    /// like a recorded one (its id, and its identity under that id). Stored by the server the
    /// first time it sees the channel (when it has one account, or one marked legacy) and never
    /// changed, so a later change of that account cannot go unnoticed.
    pub fn pin_legacy(&self, name: &str, account: ChannelAccountRef) {
        self.legacy_pins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), account);
    }

    /// The account channel `name`'s orders from before accounts were recorded belong to, by the
    /// configuration: the one marked [`AccountUse::legacy`], else the channel's only account
    /// (what [`Channels::pin_legacy`] pins).
    ///
    /// # Errors
    /// As [`Channels::legacy`].
    pub fn legacy_candidate(&self, name: &str) -> Result<ChannelAccountRef, AccountError> {
        self.legacy_by_configuration(name).map(|a| a.channel_account())
    }

    /// The account of channel `name` that serves orders opened before accounts were recorded:
    /// the [pinned](Channels::pin_legacy) one, else the one marked [`AccountUse::legacy`], else
    /// the channel's only account.
    ///
    /// # Errors
    /// [`AccountError::ChannelNotEnabled`]; for a pinned account, the errors of
    /// [`Channels::for_order`]; else [`AccountError::NoLegacyAccount`] when the channel has
    /// several accounts and none (or more than one) is marked.
    pub fn legacy(&self, name: &str) -> Result<Arc<dyn Channel>, AccountError> {
        let pinned = self
            .legacy_pins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned();
        if let Some(pinned) = pinned {
            return self.for_order(name, Some(&pinned));
        }
        Ok(self.view(self.legacy_by_configuration(name)?))
    }

    /// The adapter of [`Channels::legacy_candidate`].
    fn legacy_by_configuration(&self, name: &str) -> Result<Arc<dyn Channel>, AccountError> {
        let local = {
            let registry = self.read();
            let accounts = registry.get(name).ok_or_else(|| AccountError::ChannelNotEnabled {
                channel: name.to_string(),
            })?;
            let marked: Vec<&Account> = accounts.values().filter(|a| a.usage.legacy).collect();
            match (marked.as_slice(), accounts.len()) {
                ([only], _) => only.adapter.clone(),
                ([], 1) => accounts.values().next().map(|a| a.adapter.clone()).ok_or_else(|| {
                    AccountError::ChannelNotEnabled {
                        channel: name.to_string(),
                    }
                })?,
                _ => {
                    return Err(AccountError::NoLegacyAccount {
                        channel: name.to_string(),
                        accounts: accounts.len(),
                    })
                }
            }
        };
        Ok(local)
    }

    /// The names of the channels with at least one account.
    pub fn names(&self) -> Vec<&'static str> {
        self.read().keys().copied().collect()
    }

    /// The account that serves an order of channel `name` opened with `placed` (`None`: before
    /// accounts were recorded, the [legacy account](Channels::legacy)).
    ///
    /// # Errors
    /// [`AccountError::NotConfigured`] when that account is gone, [`AccountError::Changed`] when
    /// an account of its name now has another channel-side identity (it would not know the
    /// order), and the errors of [`Channels::legacy`].
    pub fn for_order(&self, name: &str, placed: Option<&ChannelAccountRef>) -> Result<Arc<dyn Channel>, AccountError> {
        let Some(placed) = placed else {
            return self.legacy(name);
        };
        let local = self
            .read()
            .get(name)
            .and_then(|accounts| accounts.get(&placed.id))
            .map(|a| a.adapter.clone())
            .ok_or_else(|| AccountError::NotConfigured {
                channel: name.to_string(),
                account: placed.id.clone(),
            })?;
        let now = local.channel_account();
        if now != *placed {
            return Err(AccountError::Changed {
                channel: name.to_string(),
                account: placed.id.clone(),
                placed: placed.identity(),
                now: now.identity(),
            });
        }
        Ok(self.view(local))
    }

    /// Every configured account: channel name, the account, and its use; by channel, then id.
    pub fn accounts(&self) -> Vec<(&'static str, ChannelAccountRef, AccountUse)> {
        self.read()
            .iter()
            .flat_map(|(name, accounts)| {
                accounts
                    .values()
                    .map(move |a| (*name, a.adapter.channel_account(), a.usage))
            })
            .collect()
    }

    /// A view of the same live registry whose lookups hand out [`RemoteChannel`]s: each channel
    /// operation goes as a request through `requester` to
    /// `<subject_prefix>.<channel>.<operation>`, naming the account (see [`remote`]), while the
    /// names, methods and callback answers come from the adapters configured here. Inserts and
    /// removals (the NATS KV watch) apply to both views. [`Channels::local`] gives the adapters
    /// themselves back.
    pub fn remote(&self, requester: Arc<dyn Requester>, subject_prefix: &str) -> Self {
        Self {
            registry: self.registry.clone(),
            legacy_pins: self.legacy_pins.clone(),
            remote: Some((requester, Arc::from(subject_prefix))),
        }
    }

    /// A view of the same live registry that hands out the adapters themselves (what a channel
    /// service serves).
    pub fn local(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            legacy_pins: self.legacy_pins.clone(),
            remote: None,
        }
    }

    /// An independent copy of the registry as it is now, handing out the adapters themselves:
    /// changes to the copy are not seen by this registry, nor the other way round. For trying a
    /// change before making it.
    pub fn detached(&self) -> Self {
        let pins = self
            .legacy_pins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Self {
            registry: Arc::new(RwLock::new(self.read().clone())),
            legacy_pins: Arc::new(RwLock::new(pins)),
            remote: None,
        }
    }

    /// What every channel that takes new orders now takes, by name.
    pub fn list(&self) -> Vec<&'static Capabilities> {
        self.read()
            .values()
            .filter_map(|accounts| accounts.values().find(|a| a.usage.new_orders))
            .map(|a| a.adapter.capabilities())
            .collect()
    }

    /// As [`Channels::list`], only the channels `mode` reaches ([`Mode::reaches`]): what a
    /// merchant's key of that mode may place orders with.
    pub fn reachable_in(&self, mode: Mode) -> Vec<&'static Capabilities> {
        self.list().into_iter().filter(|c| mode.reaches(c.channel)).collect()
    }
}

/// An adapter for tests that names its account in everything it answers.
#[cfg(test)]
pub(crate) mod labelled {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use payledger_domain::{ChannelOrder, Money};
    use uuid::Uuid;

    use super::*;
    use crate::{
        wechatpay, CallbackAnswer, CallbackError, ChannelError, ChannelRefundRequest, ChannelRefundResult,
        CreateChannelOrder, Notification,
    };

    /// A `wechatpay` account `id` whose channel orders carry `channel_ref = id`.
    pub(crate) struct Labelled {
        pub(crate) id: String,
        pub(crate) mch_id: String,
    }

    /// The account `id` with merchant id `mch_id`, as a registry holds it.
    pub(crate) fn account(id: &str, mch_id: &str) -> Arc<dyn Channel> {
        Arc::new(Labelled {
            id: id.to_string(),
            mch_id: mch_id.to_string(),
        })
    }

    /// Which account answered a `create`.
    pub(crate) async fn who(channel: &Arc<dyn Channel>) -> String {
        let request = CreateChannelOrder {
            order_id: Uuid::from_u128(1),
            amount: Money::new(100, payledger_domain::Currency::CNY).expect("money"),
            method: "qr".into(),
            subject: "s".into(),
            expire_at: DateTime::<Utc>::UNIX_EPOCH,
            return_url: None,
            payer_id: None,
            payer_ip: None,
        };
        channel
            .create(&request)
            .await
            .expect("created")
            .channel_ref
            .expect("labelled")
    }

    #[async_trait]
    impl Channel for Labelled {
        fn name(&self) -> &'static str {
            "wechatpay"
        }

        fn capabilities(&self) -> &'static Capabilities {
            &wechatpay::CAPABILITIES
        }

        fn channel_account(&self) -> ChannelAccountRef {
            ChannelAccountRef {
                id: self.id.clone(),
                app_id: Some("wx-app".into()),
                mch_id: Some(self.mch_id.clone()),
            }
        }

        async fn create(&self, _: &CreateChannelOrder) -> Result<ChannelOrder, ChannelError> {
            Ok(ChannelOrder {
                channel_ref: Some(self.id.clone()),
                ..ChannelOrder::default()
            })
        }

        async fn refund(&self, _: &ChannelRefundRequest) -> Result<ChannelRefundResult, ChannelError> {
            Ok(ChannelRefundResult::Pending)
        }

        fn verify_callback(
            &self,
            _: &http::HeaderMap,
            _: &[u8],
            _: DateTime<Utc>,
        ) -> Result<Notification, CallbackError> {
            Err(CallbackError::BadSignature)
        }

        fn answer_callback(&self, _: Result<(), String>) -> CallbackAnswer {
            CallbackAnswer {
                status: 200,
                content_type: "text/plain",
                body: String::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::labelled::{account, who};
    use super::*;

    fn closed() -> AccountUse {
        AccountUse {
            new_orders: false,
            legacy: false,
        }
    }

    #[tokio::test]
    async fn new_orders_go_to_the_first_account_that_takes_them() {
        let channels = Channels::default();
        channels.insert_account(account("a", "1"), closed());
        assert!(
            channels.for_new_order("wechatpay").is_none(),
            "no account takes new orders"
        );
        assert!(channels.list().is_empty(), "nor is the channel listed");
        channels.insert(account("c", "3"));
        channels.insert(account("b", "2"));
        assert_eq!(who(&channels.for_new_order("wechatpay").unwrap()).await, "b");
        assert_eq!(channels.list().len(), 1);
        assert!(channels.for_new_order("alipay").is_none());
    }

    #[tokio::test]
    async fn an_order_is_served_by_the_account_that_placed_it_while_it_is_the_same_account() {
        let channels = Channels::default();
        channels.insert_account(account("old", "1"), closed());
        channels.insert(account("new", "2"));
        let placed = account("old", "1").channel_account();
        let served = channels.for_order("wechatpay", Some(&placed)).unwrap();
        assert_eq!(who(&served).await, "old", "closed to new orders, still serving its own");

        // The same name with another merchant id is another account at the channel.
        channels.insert_account(account("old", "9"), closed());
        assert_eq!(
            channels.for_order("wechatpay", Some(&placed)).err(),
            Some(AccountError::Changed {
                channel: "wechatpay".into(),
                account: "old".into(),
                placed: "app_id=wx-app mch_id=1".into(),
                now: "app_id=wx-app mch_id=9".into(),
            })
        );
        channels.remove_account("wechatpay", "old");
        assert_eq!(
            channels.for_order("wechatpay", Some(&placed)).err(),
            Some(AccountError::NotConfigured {
                channel: "wechatpay".into(),
                account: "old".into(),
            })
        );
        channels.remove_account("wechatpay", "new");
        assert!(matches!(
            channels.for_order("wechatpay", None),
            Err(AccountError::ChannelNotEnabled { .. })
        ));
    }

    #[tokio::test]
    async fn orders_from_before_accounts_belong_to_the_legacy_account() {
        let channels = Channels::default();
        channels.insert_account(account("only", "1"), closed());
        assert_eq!(
            who(&channels.legacy("wechatpay").unwrap()).await,
            "only",
            "a sole account"
        );
        channels.insert(account("second", "2"));
        assert_eq!(
            channels.for_order("wechatpay", None).err(),
            Some(AccountError::NoLegacyAccount {
                channel: "wechatpay".into(),
                accounts: 2,
            })
        );
        channels.insert_account(
            account("only", "1"),
            AccountUse {
                new_orders: false,
                legacy: true,
            },
        );
        assert_eq!(
            who(&channels.for_order("wechatpay", None).unwrap()).await,
            "only",
            "the marked one"
        );
    }

    #[tokio::test]
    async fn a_pinned_legacy_account_is_checked_like_a_recorded_one() {
        let channels = Channels::default().with(account("main", "1"));
        channels.pin_legacy("wechatpay", channels.legacy_candidate("wechatpay").unwrap());
        assert_eq!(who(&channels.legacy("wechatpay").unwrap()).await, "main");
        // The only account, changed in place: the old orders are not its orders.
        channels.insert(account("main", "2"));
        assert!(matches!(
            channels.legacy("wechatpay"),
            Err(AccountError::Changed { .. })
        ));
        // Another account marked legacy does not move the pin.
        channels.insert(account("main", "1"));
        channels.insert_account(
            account("other", "3"),
            AccountUse {
                new_orders: true,
                legacy: true,
            },
        );
        assert_eq!(who(&channels.legacy("wechatpay").unwrap()).await, "main");
    }

    #[tokio::test]
    async fn a_detached_copy_changes_alone() {
        let channels = Channels::default().with(account("a", "1"));
        let trial = channels.detached();
        trial.remove_account("wechatpay", "a");
        assert!(trial.for_new_order("wechatpay").is_none());
        assert!(channels.for_new_order("wechatpay").is_some());
        assert_eq!(channels.accounts().len(), 1);
    }
}
