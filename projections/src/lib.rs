//! Read models built only from the global log.
//!
//! - [`view`]: the order and refund views (the API's JSON shapes) as a pure fold over events.
//! - [`projection`]: the `order_view` / `refund_view` tables, kept by a transactional
//!   subscriber of the global log (checkpoint in the same transaction).
//! - [`queries`]: reads of those tables for the HTTP API.

pub mod projection;
pub mod queries;
pub mod view;

pub use projection::{OrderProjection, PROJECTION_NAME};
pub use view::{OrderView, RefundView};
