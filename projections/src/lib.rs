//! Read models built only from the global log.
//!
//! - [`view`]: the order and refund views (the API's JSON shapes) as a pure fold over events.
//! - [`journal`]: the double-entry postings of each event, pure; [`stats`]: the daily figures.
//! - [`projection`]: the `order_view` projection (`order_view`, `refund_view`,
//!   `merchant_daily_stats`); [`journal_projection`]: the `journal` projection (`ledger_entry`,
//!   `account_balance`). Both are transactional subscribers of the global log (checkpoint in
//!   the same transaction), batched ([`sql`]).
//! - [`rebuild`]: replay into shadow tables and swap them in; verify live tables against a
//!   replay.
//! - [`queries`]: reads of those tables for the HTTP API; [`openapi`]: the schemas of the
//!   domain's wire enums those reads answer with.
//! - [`accounts`]: which channel accounts still serve open orders (read before an account is
//!   removed or changed).

pub mod accounts;
pub mod console;
pub mod journal;
pub mod journal_projection;
pub mod openapi;
pub mod projection;
pub mod queries;
pub mod rebuild;
pub mod reconcile;
pub mod sql;
pub mod stats;
pub mod view;

pub use journal_projection::{JournalProjection, JOURNAL_PROJECTION_NAME};
pub use projection::{OrderProjection, Tables, PROJECTION_NAME};
pub use view::{OrderView, RefundView};
