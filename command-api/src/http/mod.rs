//! HTTP resources, one module each; `app` wires them.

pub mod callbacks;
pub mod error;
pub mod extract;
pub mod health;
pub mod orders;
pub mod refunds;
pub mod sandbox;
