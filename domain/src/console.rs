//! Console users: the people who run payledger (operators) and the merchants' staff, in the
//! browser. One [`ConsoleUser`] aggregate per person, keyed by [`console_user_id`] of the e-mail
//! address, so that everything the console knows about a person (added, password changed, second
//! factor enrolled, logins, failed logins, logouts, every action taken, disabled) is an event, and
//! the audit log is a read of those events.
//!
//! Like [`crate::PaymentOrder`], pure: [`ConsoleUser::decide`] refuses or emits, [`ConsoleUser::apply`]
//! folds. Time, addresses and the password's hash arrive in the commands; hashing and the TOTP
//! secret's sealing happen outside (the domain neither hashes nor encrypts).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of console user ids. Never change it: every stored console user id depends on it.
pub const CONSOLE_USER_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_59b4_3c0e_4f52_9a57_8d3e_2c1a_0b10);

/// Failed logins in a row (since the last success) after which the account is throttled.
pub const FAILED_LOGINS_MAX: usize = 5;
/// How long an account stays throttled after its [`FAILED_LOGINS_MAX`]th failure in a row, and
/// how far back failures count.
pub const LOGIN_THROTTLE_MINUTES: i64 = 15;

/// `UUIDv5(ns, lower-case e-mail)`: one user per address, whatever its case.
pub fn console_user_id(email: &str) -> Uuid {
    Uuid::new_v5(&CONSOLE_USER_NAMESPACE, email.trim().to_lowercase().as_bytes())
}

/// What a console user may do. Operators see every merchant; merchant roles are bound to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleRole {
    /// Everything, console users included.
    Admin,
    /// Refunds, reconciliation, the ledger.
    Finance,
    /// Orders, notification resends, closing orders.
    Support,
    /// Reads only.
    Viewer,
    /// One merchant: its keys and webhook secret, refunds, resends.
    MerchantAdmin,
    /// One merchant, reads only.
    MerchantViewer,
}

impl ConsoleRole {
    /// Every role, operators first.
    pub const ALL: [ConsoleRole; 6] = [
        ConsoleRole::Admin,
        ConsoleRole::Finance,
        ConsoleRole::Support,
        ConsoleRole::Viewer,
        ConsoleRole::MerchantAdmin,
        ConsoleRole::MerchantViewer,
    ];

    /// The wire name (`admin`, `merchant_viewer`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Admin => "admin",
            ConsoleRole::Finance => "finance",
            ConsoleRole::Support => "support",
            ConsoleRole::Viewer => "viewer",
            ConsoleRole::MerchantAdmin => "merchant_admin",
            ConsoleRole::MerchantViewer => "merchant_viewer",
        }
    }

    /// The role of a wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether the role belongs to the platform's staff (every merchant) rather than to one
    /// merchant. Operators must enrol a second factor (PCI DSS 8.4.1: multi-factor for
    /// administrative access).
    pub fn is_operator(self) -> bool {
        !matches!(self, ConsoleRole::MerchantAdmin | ConsoleRole::MerchantViewer)
    }
}

/// What a console user's commands ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleUserCommand {
    /// A new user with a one-time password (to be changed at the first login).
    AddUser {
        email: String,
        role: ConsoleRole,
        /// Required for merchant roles, refused for operators.
        merchant_id: Option<String>,
        password_hash: String,
        /// Who added the user (`cli`, or `console:<email>`).
        added_by: String,
        at: DateTime<Utc>,
    },
    /// The user chose a new password.
    ChangePassword { password_hash: String, at: DateTime<Utc> },
    /// The user enrolled a TOTP second factor; `sealed_secret` is the secret sealed by the
    /// installation's keyring, never the secret itself.
    EnrolTotp { sealed_secret: String, at: DateTime<Utc> },
    /// A password (and, where enrolled, TOTP code) was accepted. `totp_step`: the 30-second
    /// step of the code used, so that a code is never accepted twice.
    RecordLogin {
        address: String,
        totp_step: Option<u64>,
        at: DateTime<Utc>,
    },
    /// A login failed (`reason`: `password`, `totp`, `throttled`, `disabled`).
    RecordFailedLogin {
        address: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The user logged out, from this session or from every session.
    RecordLogout {
        address: String,
        everywhere: bool,
        at: DateTime<Utc>,
    },
    /// The user took an action in the console (`refund`, `close`, `resend`, …) on `target`
    /// (an order id, a notification id, …), with its `outcome` (`ok` or the refusal).
    RecordAction {
        action: String,
        target: String,
        detail: String,
        outcome: String,
        address: String,
        at: DateTime<Utc>,
    },
    /// The user may no longer log in.
    Disable { by: String, at: DateTime<Utc> },
}

/// Facts about a console user. Never changed, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConsoleUserEvent {
    UserAdded {
        email: String,
        role: ConsoleRole,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merchant_id: Option<String>,
        password_hash: String,
        added_by: String,
        at: DateTime<Utc>,
    },
    PasswordChanged {
        password_hash: String,
        at: DateTime<Utc>,
    },
    TotpEnrolled {
        sealed_secret: String,
        at: DateTime<Utc>,
    },
    LoginSucceeded {
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<u64>,
        at: DateTime<Utc>,
    },
    LoginFailed {
        address: String,
        reason: String,
        at: DateTime<Utc>,
    },
    LoggedOut {
        address: String,
        everywhere: bool,
        at: DateTime<Utc>,
    },
    ActionRecorded {
        action: String,
        target: String,
        #[serde(default)]
        detail: String,
        outcome: String,
        address: String,
        at: DateTime<Utc>,
    },
    UserDisabled {
        by: String,
        at: DateTime<Utc>,
    },
}

impl ConsoleUserEvent {
    /// The event's type name, as stored (`UserAdded`, `LoginFailed`, …).
    pub fn event_type(&self) -> &'static str {
        match self {
            ConsoleUserEvent::UserAdded { .. } => "UserAdded",
            ConsoleUserEvent::PasswordChanged { .. } => "PasswordChanged",
            ConsoleUserEvent::TotpEnrolled { .. } => "TotpEnrolled",
            ConsoleUserEvent::LoginSucceeded { .. } => "LoginSucceeded",
            ConsoleUserEvent::LoginFailed { .. } => "LoginFailed",
            ConsoleUserEvent::LoggedOut { .. } => "LoggedOut",
            ConsoleUserEvent::ActionRecorded { .. } => "ActionRecorded",
            ConsoleUserEvent::UserDisabled { .. } => "UserDisabled",
        }
    }

    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            ConsoleUserEvent::UserAdded { at, .. }
            | ConsoleUserEvent::PasswordChanged { at, .. }
            | ConsoleUserEvent::TotpEnrolled { at, .. }
            | ConsoleUserEvent::LoginSucceeded { at, .. }
            | ConsoleUserEvent::LoginFailed { at, .. }
            | ConsoleUserEvent::LoggedOut { at, .. }
            | ConsoleUserEvent::ActionRecorded { at, .. }
            | ConsoleUserEvent::UserDisabled { at, .. } => *at,
        }
    }
}

/// Why a console user's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleUserError {
    #[error("a console user with this e-mail address exists")]
    UserExists,
    #[error("no such console user")]
    UserNotFound,
    #[error("the role {0} is bound to a merchant: give --merchant")]
    MerchantRequired(&'static str),
    #[error("the role {0} sees every merchant: it takes no merchant")]
    MerchantNotAllowed(&'static str),
    #[error("a second factor is enrolled already")]
    TotpAlreadyEnrolled,
    #[error("this TOTP code was used already")]
    TotpReplayed,
    #[error("the user is disabled")]
    Disabled,
}

/// A console user as its events left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub user_id: Uuid,
    pub email: String,
    pub role: ConsoleRole,
    pub merchant_id: Option<String>,
    /// PHC string of the password's hash (argon2id).
    pub password_hash: String,
    /// The password is the one-time password of `UserAdded`: it must be changed before anything
    /// else.
    pub must_change_password: bool,
    /// The sealed TOTP secret, once enrolled.
    pub totp_secret: Option<String>,
    /// The step of the last TOTP code accepted.
    pub last_totp_step: Option<u64>,
    /// Times of the failed logins since the last success, oldest first.
    pub failures_in_row: Vec<DateTime<Utc>>,
    pub disabled: bool,
}

/// One console user: `None` state until `UserAdded`.
///
/// Serialisable as a snapshot of the fold (the store keeps one beside the events, so that loading
/// a user with a long history reads only the events after it): change
/// [`ConsoleUser::SNAPSHOT_VERSION`] whenever [`ConsoleUser::apply`] or this shape changes, and
/// snapshots of the old fold are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleUser {
    state: Option<UserState>,
}

impl ConsoleUser {
    /// The aggregate type stored beside each event.
    pub const TYPE: &'static str = "ConsoleUser";

    /// The version of the fold a stored snapshot was made by.
    pub const SNAPSHOT_VERSION: i64 = 1;

    /// The user folded from `events` (in sequence order).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a ConsoleUserEvent>) -> Self {
        let mut user = Self::default();
        for e in events {
            user.apply(e);
        }
        user
    }

    /// The user's state; `None` before it was added.
    pub fn state(&self) -> Option<&UserState> {
        self.state.as_ref()
    }

    /// Until when logins are refused: [`LOGIN_THROTTLE_MINUTES`] after the
    /// [`FAILED_LOGINS_MAX`]th failed login in a row within that window, `None` when not
    /// throttled at `now`.
    pub fn throttled_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let state = self.state.as_ref()?;
        let window = Duration::minutes(LOGIN_THROTTLE_MINUTES);
        let recent: Vec<_> = state.failures_in_row.iter().filter(|t| now - **t < window).collect();
        if recent.len() < FAILED_LOGINS_MAX {
            return None;
        }
        let until = *recent[recent.len() - FAILED_LOGINS_MAX] + window;
        (until > now).then_some(until)
    }

    /// Decides `command`: the events to append, or why not.
    ///
    /// # Errors
    /// [`ConsoleUserError`], one variant per rule.
    pub fn decide(&self, command: ConsoleUserCommand) -> Result<Vec<ConsoleUserEvent>, ConsoleUserError> {
        use ConsoleUserCommand as C;
        use ConsoleUserEvent as E;
        if let C::AddUser {
            email,
            role,
            merchant_id,
            password_hash,
            added_by,
            at,
        } = command
        {
            if self.state.is_some() {
                return Err(ConsoleUserError::UserExists);
            }
            match (role.is_operator(), &merchant_id) {
                (true, Some(_)) => return Err(ConsoleUserError::MerchantNotAllowed(role.as_str())),
                (false, None) => return Err(ConsoleUserError::MerchantRequired(role.as_str())),
                _ => {}
            }
            return Ok(vec![E::UserAdded {
                email: email.trim().to_lowercase(),
                role,
                merchant_id,
                password_hash,
                added_by,
                at,
            }]);
        }
        let state = self.state.as_ref().ok_or(ConsoleUserError::UserNotFound)?;
        // Facts about what happened are recorded whatever the user's state: a disabled user's
        // refused login is still worth auditing.
        match command {
            C::AddUser { .. } => unreachable!("handled above"),
            C::RecordFailedLogin { address, reason, at } => Ok(vec![E::LoginFailed { address, reason, at }]),
            C::RecordLogout {
                address,
                everywhere,
                at,
            } => Ok(vec![E::LoggedOut {
                address,
                everywhere,
                at,
            }]),
            C::RecordAction {
                action,
                target,
                detail,
                outcome,
                address,
                at,
            } => Ok(vec![E::ActionRecorded {
                action,
                target,
                detail,
                outcome,
                address,
                at,
            }]),
            _ if state.disabled => Err(ConsoleUserError::Disabled),
            C::ChangePassword { password_hash, at } => Ok(vec![E::PasswordChanged { password_hash, at }]),
            C::EnrolTotp { sealed_secret, at } => {
                if state.totp_secret.is_some() {
                    return Err(ConsoleUserError::TotpAlreadyEnrolled);
                }
                Ok(vec![E::TotpEnrolled { sealed_secret, at }])
            }
            C::RecordLogin { address, totp_step, at } => {
                if let (Some(step), Some(last)) = (totp_step, state.last_totp_step) {
                    if step <= last {
                        return Err(ConsoleUserError::TotpReplayed);
                    }
                }
                Ok(vec![E::LoginSucceeded { address, totp_step, at }])
            }
            C::Disable { by, at } => Ok(vec![E::UserDisabled { by, at }]),
        }
    }

    /// Folds `event` in.
    ///
    /// # Panics
    /// On an event that cannot follow the state (a second `UserAdded`, any event before it):
    /// a bug in `decide` or a corrupt store, not input.
    pub fn apply(&mut self, event: &ConsoleUserEvent) {
        use ConsoleUserEvent as E;
        if let E::UserAdded {
            email,
            role,
            merchant_id,
            password_hash,
            ..
        } = event
        {
            assert!(self.state.is_none(), "UserAdded twice for {email}");
            self.state = Some(UserState {
                user_id: console_user_id(email),
                email: email.clone(),
                role: *role,
                merchant_id: merchant_id.clone(),
                password_hash: password_hash.clone(),
                must_change_password: true,
                totp_secret: None,
                last_totp_step: None,
                failures_in_row: Vec::new(),
                disabled: false,
            });
            return;
        }
        let state = self.state.as_mut().expect("a console user's event before UserAdded");
        match event {
            E::UserAdded { .. } => unreachable!("handled above"),
            E::PasswordChanged { password_hash, .. } => {
                state.password_hash = password_hash.clone();
                state.must_change_password = false;
            }
            E::TotpEnrolled { sealed_secret, .. } => state.totp_secret = Some(sealed_secret.clone()),
            E::LoginSucceeded { totp_step, .. } => {
                state.failures_in_row.clear();
                if totp_step.is_some() {
                    state.last_totp_step = *totp_step;
                }
            }
            E::LoginFailed { at, .. } => {
                state.failures_in_row.push(*at);
                // Only the newest few matter to the throttle.
                let excess = state.failures_in_row.len().saturating_sub(FAILED_LOGINS_MAX);
                state.failures_in_row.drain(..excess);
            }
            E::LoggedOut { .. } | E::ActionRecorded { .. } => {}
            E::UserDisabled { .. } => state.disabled = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minute)
    }

    fn added(role: ConsoleRole, merchant: Option<&str>) -> ConsoleUser {
        let events = ConsoleUser::default()
            .decide(ConsoleUserCommand::AddUser {
                email: " Ops@Example.COM ".into(),
                role,
                merchant_id: merchant.map(str::to_string),
                password_hash: "h1".into(),
                added_by: "cli".into(),
                at: t(0),
            })
            .unwrap();
        ConsoleUser::from_events(&events)
    }

    fn run(user: &mut ConsoleUser, command: ConsoleUserCommand) -> Result<(), ConsoleUserError> {
        for e in user.decide(command)? {
            user.apply(&e);
        }
        Ok(())
    }

    #[test]
    fn roles_and_merchants_go_together() {
        let add = |role, merchant: Option<&str>| {
            ConsoleUser::default().decide(ConsoleUserCommand::AddUser {
                email: "a@b.c".into(),
                role,
                merchant_id: merchant.map(str::to_string),
                password_hash: "h".into(),
                added_by: "cli".into(),
                at: t(0),
            })
        };
        assert_eq!(
            add(ConsoleRole::Admin, Some("m1")),
            Err(ConsoleUserError::MerchantNotAllowed("admin"))
        );
        assert_eq!(
            add(ConsoleRole::MerchantViewer, None),
            Err(ConsoleUserError::MerchantRequired("merchant_viewer"))
        );
        assert!(add(ConsoleRole::MerchantAdmin, Some("m1")).is_ok());
        for role in ConsoleRole::ALL {
            assert_eq!(ConsoleRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(ConsoleRole::parse("root"), None);
    }

    #[test]
    fn email_is_the_identity_whatever_its_case() {
        let user = added(ConsoleRole::Admin, None);
        let state = user.state().unwrap();
        assert_eq!(state.email, "ops@example.com");
        assert_eq!(state.user_id, console_user_id("OPS@example.com"));
        assert!(state.must_change_password);
        let again = user.decide(ConsoleUserCommand::AddUser {
            email: "ops@example.com".into(),
            role: ConsoleRole::Viewer,
            merchant_id: None,
            password_hash: "h".into(),
            added_by: "cli".into(),
            at: t(1),
        });
        assert_eq!(again, Err(ConsoleUserError::UserExists));
    }

    #[test]
    fn five_failures_in_a_row_throttle_for_fifteen_minutes_and_a_success_resets() {
        let mut user = added(ConsoleRole::Support, None);
        let fail = |minute| ConsoleUserCommand::RecordFailedLogin {
            address: "10.0.0.1".into(),
            reason: "password".into(),
            at: t(minute),
        };
        for minute in 0..4 {
            run(&mut user, fail(minute)).unwrap();
        }
        assert_eq!(user.throttled_until(t(4)), None);
        run(&mut user, fail(4)).unwrap();
        assert_eq!(user.throttled_until(t(5)), Some(t(15)));
        assert_eq!(user.throttled_until(t(15)), None, "the oldest failure left the window");
        // Failures spread over more than the window do not throttle.
        let mut slow = added(ConsoleRole::Support, None);
        for minute in [0, 10, 20, 30, 40] {
            run(&mut slow, fail(minute)).unwrap();
        }
        assert_eq!(slow.throttled_until(t(41)), None);
        // A success clears the row.
        run(
            &mut user,
            ConsoleUserCommand::RecordLogin {
                address: "10.0.0.1".into(),
                totp_step: None,
                at: t(16),
            },
        )
        .unwrap();
        run(&mut user, fail(17)).unwrap();
        assert_eq!(user.throttled_until(t(17)), None);
    }

    #[test]
    fn a_totp_code_is_accepted_once_and_enrolment_once() {
        let mut user = added(ConsoleRole::Admin, None);
        run(
            &mut user,
            ConsoleUserCommand::EnrolTotp {
                sealed_secret: "sealed".into(),
                at: t(0),
            },
        )
        .unwrap();
        assert_eq!(
            user.decide(ConsoleUserCommand::EnrolTotp {
                sealed_secret: "other".into(),
                at: t(1)
            }),
            Err(ConsoleUserError::TotpAlreadyEnrolled)
        );
        let login = |step| ConsoleUserCommand::RecordLogin {
            address: "a".into(),
            totp_step: Some(step),
            at: t(2),
        };
        run(&mut user, login(100)).unwrap();
        assert_eq!(user.decide(login(100)), Err(ConsoleUserError::TotpReplayed));
        assert_eq!(user.decide(login(99)), Err(ConsoleUserError::TotpReplayed));
        run(&mut user, login(101)).unwrap();
    }

    #[test]
    fn a_disabled_user_cannot_log_in_but_its_attempts_are_recorded() {
        let mut user = added(ConsoleRole::Viewer, None);
        run(
            &mut user,
            ConsoleUserCommand::Disable {
                by: "console:admin@example.com".into(),
                at: t(1),
            },
        )
        .unwrap();
        let login = ConsoleUserCommand::RecordLogin {
            address: "a".into(),
            totp_step: None,
            at: t(2),
        };
        assert_eq!(user.decide(login), Err(ConsoleUserError::Disabled));
        let failed = ConsoleUserCommand::RecordFailedLogin {
            address: "a".into(),
            reason: "disabled".into(),
            at: t(2),
        };
        assert_eq!(user.decide(failed).unwrap().len(), 1);
    }

    #[test]
    fn commands_on_a_missing_user_are_refused() {
        let missing = ConsoleUser::default().decide(ConsoleUserCommand::RecordFailedLogin {
            address: "a".into(),
            reason: "password".into(),
            at: t(0),
        });
        assert_eq!(missing, Err(ConsoleUserError::UserNotFound));
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = ConsoleUserEvent::ActionRecorded {
            action: "refund".into(),
            target: "order:1".into(),
            detail: "100 CNY".into(),
            outcome: "ok".into(),
            address: "127.0.0.1".into(),
            at: t(0),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "ActionRecorded");
        assert_eq!(serde_json::from_value::<ConsoleUserEvent>(json).unwrap(), e);
    }
}
