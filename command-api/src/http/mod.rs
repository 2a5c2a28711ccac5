//! HTTP resources, one module each; `app` wires them.

pub mod callbacks;
pub mod channels;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod health;
pub mod ledger;
pub mod notifications;
pub mod orders;
pub mod rate_limit;
pub mod refunds;
pub mod sandbox;
pub mod security;

use uuid::Uuid;

use crate::http::error::ApiError;

/// An id from a URL path. Text that is not a UUID names nothing we have: 404 `what`, the same
/// answer as for an id that does not exist (or belongs to another merchant).
///
/// # Errors
/// [`ApiError::NotFound`].
pub fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}
