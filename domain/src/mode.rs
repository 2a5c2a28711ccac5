//! Test mode and live mode (Stripe's model): every order, and every fact derived from it, belongs
//! to exactly one of them.
//!
//! A merchant has one API key per mode. An order created with the test key is a test order: it
//! can only be placed on the sandbox channel, its money is no one's, and no query, balance,
//! statistic or (later) settlement of live mode ever includes it. Live orders go only to real
//! channels. The mode is part of the order's terms (`OrderCreated`), so every later event of the
//! order belongs to the same mode; it is published with every event (envelope field `mode`,
//! NATS header `Payledger-Mode`) and sent with every notification.

use serde::{Deserialize, Serialize};

/// The name of the built-in sandbox channel: the only channel of test mode, and never one of
/// live mode.
pub const SANDBOX_CHANNEL: &str = "sandbox";

/// Which money an order is about. Serialised `"test"` / `"live"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sandbox money: nobody paid, nobody is paid.
    Test,
    /// Real money, through real channels.
    Live,
}

impl Mode {
    /// `"test"` or `"live"`: the stored and published form.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    /// The mode named `text` (`"test"`, `"live"`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "test" => Some(Mode::Test),
            "live" => Some(Mode::Live),
            _ => None,
        }
    }

    /// Whether an order of this mode may be placed on `channel`: test mode only on the
    /// sandbox, live mode never on it.
    pub fn reaches(self, channel: &str) -> bool {
        (channel == SANDBOX_CHANNEL) == (self == Mode::Test)
    }

    /// The mode of an order placed on `channel` before modes existed: its channel decided
    /// whether real money moved (the sandbox: test; any real channel: live).
    pub fn of_legacy_channel(channel: &str) -> Self {
        if channel == SANDBOX_CHANNEL {
            Mode::Test
        } else {
            Mode::Live
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mode_reaches_only_the_sandbox_and_live_mode_never_does() {
        assert!(Mode::Test.reaches("sandbox"));
        assert!(!Mode::Test.reaches("wechatpay"));
        assert!(!Mode::Live.reaches("sandbox"));
        assert!(Mode::Live.reaches("alipay"));
    }

    #[test]
    fn modes_round_trip_through_their_names() {
        for mode in [Mode::Test, Mode::Live] {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), serde_json::json!(mode.as_str()));
        }
        assert_eq!(Mode::parse("Live"), None);
    }
}
