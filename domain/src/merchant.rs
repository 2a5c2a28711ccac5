//! Merchants' lifecycle as facts: added, API key rotated, webhook secret rotated (with how long
//! the previous one keeps signing), disabled, enabled. One [`Merchant`] aggregate per merchant,
//! keyed by [`merchant_aggregate_id`].
//!
//! The credentials themselves (API key hashes, sealed webhook secrets) are not facts to keep for
//! ever and never enter an event: they live in the `merchants` table, changed in the same
//! transaction as the event that says they changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Mode;

/// Namespace of merchant aggregate ids. Never change it.
pub const MERCHANT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b12);

/// The aggregate id of merchant `merchant_id`.
pub fn merchant_aggregate_id(merchant_id: &str) -> Uuid {
    Uuid::new_v5(&MERCHANT_NAMESPACE, merchant_id.as_bytes())
}

/// What a merchant's commands ask. `by`: who (`cli`, `console:<email>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantCommand {
    Add {
        by: String,
        at: DateTime<Utc>,
    },
    RotateApiKey {
        mode: Mode,
        by: String,
        at: DateTime<Utc>,
    },
    /// The previous secret keeps signing, beside the new one, until `previous_valid_until`.
    RotateWebhookSecret {
        mode: Mode,
        previous_valid_until: DateTime<Utc>,
        by: String,
        at: DateTime<Utc>,
    },
    Disable {
        by: String,
        at: DateTime<Utc>,
    },
    Enable {
        by: String,
        at: DateTime<Utc>,
    },
}

/// Facts about a merchant. Never changed, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MerchantEvent {
    MerchantAdded {
        by: String,
        at: DateTime<Utc>,
    },
    ApiKeyRotated {
        mode: Mode,
        by: String,
        at: DateTime<Utc>,
    },
    WebhookSecretRotated {
        mode: Mode,
        previous_valid_until: DateTime<Utc>,
        by: String,
        at: DateTime<Utc>,
    },
    MerchantDisabled {
        by: String,
        at: DateTime<Utc>,
    },
    MerchantEnabled {
        by: String,
        at: DateTime<Utc>,
    },
}

impl MerchantEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            MerchantEvent::MerchantAdded { .. } => "MerchantAdded",
            MerchantEvent::ApiKeyRotated { .. } => "ApiKeyRotated",
            MerchantEvent::WebhookSecretRotated { .. } => "WebhookSecretRotated",
            MerchantEvent::MerchantDisabled { .. } => "MerchantDisabled",
            MerchantEvent::MerchantEnabled { .. } => "MerchantEnabled",
        }
    }

    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            MerchantEvent::MerchantAdded { at, .. }
            | MerchantEvent::ApiKeyRotated { at, .. }
            | MerchantEvent::WebhookSecretRotated { at, .. }
            | MerchantEvent::MerchantDisabled { at, .. }
            | MerchantEvent::MerchantEnabled { at, .. } => *at,
        }
    }
}

/// Why a merchant's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerchantError {
    #[error("the merchant exists already")]
    Exists,
    #[error("the previous webhook secret's end must be after the rotation")]
    OverlapInThePast,
}

/// A merchant as its events left it. Merchants added before their lifecycle was recorded have no
/// `MerchantAdded`: they start enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merchant {
    added: bool,
    disabled: bool,
}

impl Merchant {
    /// The aggregate type stored beside each event.
    pub const TYPE: &'static str = "Merchant";

    /// Whether the merchant is disabled.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Decides `command`: the events (none for a repeat: disabling a disabled merchant), or why
    /// not.
    ///
    /// # Errors
    /// [`MerchantError`].
    pub fn decide(&self, command: MerchantCommand) -> Result<Vec<MerchantEvent>, MerchantError> {
        use MerchantCommand as C;
        use MerchantEvent as E;
        Ok(match command {
            C::Add { .. } if self.added => return Err(MerchantError::Exists),
            C::Add { by, at } => vec![E::MerchantAdded { by, at }],
            C::RotateApiKey { mode, by, at } => vec![E::ApiKeyRotated { mode, by, at }],
            C::RotateWebhookSecret {
                previous_valid_until,
                at,
                ..
            } if previous_valid_until < at => return Err(MerchantError::OverlapInThePast),
            C::RotateWebhookSecret {
                mode,
                previous_valid_until,
                by,
                at,
            } => vec![E::WebhookSecretRotated {
                mode,
                previous_valid_until,
                by,
                at,
            }],
            C::Disable { .. } if self.disabled => Vec::new(),
            C::Disable { by, at } => vec![E::MerchantDisabled { by, at }],
            C::Enable { .. } if !self.disabled => Vec::new(),
            C::Enable { by, at } => vec![E::MerchantEnabled { by, at }],
        })
    }

    /// Folds `event` in.
    pub fn apply(&mut self, event: &MerchantEvent) {
        match event {
            MerchantEvent::MerchantAdded { .. } => self.added = true,
            MerchantEvent::MerchantDisabled { .. } => self.disabled = true,
            MerchantEvent::MerchantEnabled { .. } => self.disabled = false,
            MerchantEvent::ApiKeyRotated { .. } | MerchantEvent::WebhookSecretRotated { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::minutes(minute)
    }

    fn run(m: &mut Merchant, c: MerchantCommand) -> Result<usize, MerchantError> {
        let events = m.decide(c)?;
        events.iter().for_each(|e| m.apply(e));
        Ok(events.len())
    }

    #[test]
    fn disabling_and_enabling_are_facts_and_repeats_are_not() {
        let mut m = Merchant::default();
        let by = || "console:a@b.c".to_string();
        assert_eq!(run(&mut m, MerchantCommand::Add { by: by(), at: at(0) }), Ok(1));
        assert_eq!(
            run(&mut m, MerchantCommand::Add { by: by(), at: at(1) }),
            Err(MerchantError::Exists)
        );
        assert_eq!(run(&mut m, MerchantCommand::Disable { by: by(), at: at(2) }), Ok(1));
        assert!(m.disabled());
        assert_eq!(run(&mut m, MerchantCommand::Disable { by: by(), at: at(3) }), Ok(0));
        assert_eq!(run(&mut m, MerchantCommand::Enable { by: by(), at: at(4) }), Ok(1));
        assert!(!m.disabled());
        assert_eq!(run(&mut m, MerchantCommand::Enable { by: by(), at: at(5) }), Ok(0));
    }

    #[test]
    fn a_rotation_keeps_the_previous_secret_only_forward_in_time() {
        let mut m = Merchant::default();
        let rotate = |until| MerchantCommand::RotateWebhookSecret {
            mode: Mode::Test,
            previous_valid_until: until,
            by: "cli".into(),
            at: at(10),
        };
        assert_eq!(run(&mut m, rotate(at(9))), Err(MerchantError::OverlapInThePast));
        assert_eq!(
            run(&mut m, rotate(at(10))),
            Ok(1),
            "no overlap: the old secret stops now"
        );
        assert_eq!(run(&mut m, rotate(at(70))), Ok(1));
        assert_eq!(merchant_aggregate_id("m1"), merchant_aggregate_id("m1"));
        assert_ne!(merchant_aggregate_id("m1"), merchant_aggregate_id("m2"));
    }
}
