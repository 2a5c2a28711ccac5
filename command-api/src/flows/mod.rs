//! The money workflow: what happens to an order between a caller and the event store.
//!
//! The rules of the money flow live in three places. `payledger_domain`'s aggregate decides
//! (may this order be refunded by this much?). A flow here orchestrates one step of the
//! workflow: it loads what it needs, calls the channel, and turns what happened into commands
//! for the aggregate. A projection folds the events into read models. Nothing else holds a rule
//! of the money flow: the HTTP handlers, the refund worker and the order monitor are thin
//! callers that extract their input, call one flow, and map its outcome.
//!
//! | flow | caller | what it does |
//! |---|---|---|
//! | [`Flows::place_order`] | `POST /v1/orders` | create the order, place it at its channel, record the channel's answer |
//! | [`Flows::close_order`] | `POST /v1/orders/{id}/close` | close an unpaid order of this merchant |
//! | [`Flows::receive_callback`] | `POST /v1/callbacks/{channel}` | verify a channel's notification, record the payment or refund outcome |
//! | [`Flows::request_refund`] | `POST /v1/orders/{id}/refunds` | record a refund request (the aggregate checks the refundable amount) |
//! | [`Flows::execute_refund`] | the refund worker | send a requested refund to its channel, record the outcome |
//! | [`Flows::query_before_expiry`] | the order monitor | ask the channel about a waiting order, record a payment it reports |
//! | [`Flows::settle_expired`] | the order monitor | settle an expired order: record a late-found payment, or close it at the channel and here |

mod callbacks;
mod expiry;
mod orders;
mod refunds;

pub use callbacks::CallbackReceipt;
pub use expiry::Settled;
pub use orders::Placed;
pub use refunds::{RefundExecution, CHANNEL_ATTEMPTS_MAX};

use payledger_channel_adapters::Channels;
use payledger_domain::aggregate::OrderState;
use payledger_store::{Database, ExecuteError, OrderOwner};
use uuid::Uuid;

/// What every flow works with: the event store and the channels this process reaches (the
/// adapters themselves, or remote ones through the channel service in NATS mode). Cheap to
/// clone.
#[derive(Clone)]
pub struct Flows {
    /// The event store and the read models.
    pub db: Database,
    /// The enabled channels, live (configuration changes apply to the next call).
    pub channels: Channels,
    /// The database holds test orders created before modes existed, under the ids live orders
    /// have now ([`payledger_domain::ids::legacy_test_order_id`]): creating a test order looks
    /// there too. Set by the migration that introduced modes, only when such orders exist.
    pub legacy_test_ids: bool,
    /// This process's recent channel calls (the console's channel page).
    pub calls: crate::metrics::CallLog,
}

/// The setting the modes migration leaves when the database holds sandbox orders created before
/// modes existed (`schemas/*/0007_test_and_live_mode.sql`).
pub const LEGACY_TEST_ORDER_IDS: &str = "legacy_test_order_ids";

/// Why a flow did nothing.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// No such order for this merchant in this mode (another merchant's, or the other mode's,
    /// is indistinguishable from none).
    #[error("order not found")]
    OrderNotFound,
    /// A field of the request cannot apply to this order (e.g. an amount in its currency).
    #[error("{field}: {message}")]
    Invalid {
        /// The request's field, as the caller named it.
        field: &'static str,
        /// Why, for a person.
        message: String,
    },
    /// The aggregate refused the command, or the event store failed.
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// The channel account that placed the order cannot be reached through the configuration
    /// (removed, or another identity under its name): what needs it cannot be sent.
    #[error(transparent)]
    ChannelAccount(#[from] payledger_channel_adapters::AccountError),
    /// Our own data is inconsistent (a bug or a configuration removed under a live order).
    #[error("{0}")]
    Internal(String),
}

impl Flows {
    /// A flow layer over `db` and `channels`, for a database without test orders from before
    /// modes existed (see [`Flows::legacy_test_ids`]).
    pub fn new(db: Database, channels: Channels) -> Self {
        Self {
            db,
            channels,
            legacy_test_ids: false,
            calls: crate::metrics::CallLog::default(),
        }
    }

    /// The same flows recording their channel calls in `calls` (one log per process, shared by
    /// the API's, the refund worker's and the monitor's flows).
    pub fn with_calls(self, calls: crate::metrics::CallLog) -> Self {
        Self { calls, ..self }
    }

    /// As [`Flows::new`], reading from `db` whether it holds test orders from before modes
    /// existed.
    ///
    /// # Errors
    /// [`payledger_store::DbError`] when the database fails.
    pub async fn open(db: Database, channels: Channels) -> Result<Self, payledger_store::DbError> {
        let legacy = payledger_store::settings::get(db.pool(), LEGACY_TEST_ORDER_IDS).await?;
        Ok(Self {
            legacy_test_ids: legacy.is_some(),
            ..Self::new(db, channels)
        })
    }

    /// The order's current state, folded from its events.
    ///
    /// # Errors
    /// [`ExecuteError`] when the event store fails.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderState>, ExecuteError> {
        Ok(self.db.orders().load(order_id).await?.order)
    }

    /// The order if it belongs to `owner` (its merchant, in its mode).
    ///
    /// # Errors
    /// [`FlowError::OrderNotFound`] for a missing order, another merchant's or one of the other
    /// mode; store failures.
    pub async fn owned_order(&self, owner: &OrderOwner, order_id: Uuid) -> Result<OrderState, FlowError> {
        match self.order(order_id).await? {
            Some(o) if owner.owns(&o.terms) => Ok(o),
            _ => Err(FlowError::OrderNotFound),
        }
    }
}
