//! Protocol simulators: in-process stand-ins for payment channels that verify our signed
//! requests and send signed (and, for WeChat Pay, encrypted) notifications as the channel does.
//!
//! Behind the `simulators` feature of this crate; never part of a production build.

pub mod alipay;
pub mod wechatpay;
