//! Protocol simulators: in-process stand-ins for payment channels, for tests.
//!
//! Behind the `simulators` feature of this crate.

pub mod wechatpay;
