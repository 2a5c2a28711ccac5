//! payledger's pure domain: the `PaymentOrder` aggregate, its commands and events, money and ids.
//!
//! Nothing here does I/O, reads a clock or draws randomness: time and identifiers arrive in the
//! commands, so the same command sequence always yields the same events (replay, tests, audit).
//!
//! Shapes:
//! - [`Money`]: a positive integer amount in the currency's minor unit (fen, cents) plus an
//!   ISO-4217 [`Currency`]. No floating point anywhere.
//! - [`PaymentOrder`]: one aggregate per payment order, keyed by [`ids::order_id`].
//! - [`console::ConsoleUser`]: one aggregate per console user (operators and merchants' staff).
//! - [`PaymentOrderCommand`] → [`PaymentOrderEvent`]s, by the rules in [`aggregate`] (tabled in
//!   `ARCHITECTURE.md`, "Where each money rule lives").

pub mod aggregate;
pub mod commands;
pub mod console;
pub mod error;
pub mod events;
pub mod ids;
pub mod merchant;
pub mod mode;
pub mod money;
pub mod reconciliation;
pub mod status;

pub use aggregate::{PaymentOrder, Refund};
pub use commands::*;
pub use error::OrderError;
pub use events::*;
pub use mode::{Mode, SANDBOX_CHANNEL};
pub use money::{
    format_minor, parse_currency as parse_currency_code, parse_major, Currency, Money, MoneyError, AMOUNT_MINOR_MAX,
};
pub use status::{OrderStatus, RefundStatus};
