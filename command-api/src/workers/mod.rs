//! Background roles that react to the global log.

pub mod refunds;
