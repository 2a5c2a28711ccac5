//! Background roles that react to the global log or run on a schedule.

pub mod monitor;
pub mod refunds;
