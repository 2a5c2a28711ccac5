//! The roles one `payledger serve` process runs (`--roles`), so a deployment can split them
//! across processes on one database.

use std::fmt;
use std::str::FromStr;

/// One role of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The merchant, channel-callback and sandbox HTTP routes. Every process serves `/healthz`,
    /// `/readyz` and `/metrics`, with or without it.
    Api,
    /// The `order_view` and journal projections.
    Projector,
    /// The notify-job enqueuer and the notification sender.
    Notifier,
    /// The refund worker. Exactly one process should run it.
    Refunds,
    /// The order monitor (queries and expires unpaid orders).
    Monitor,
    /// The NATS relay; needs `--nats-url`.
    Relay,
    /// The channel service: serves the channel adapters over NATS to the processes that call
    /// channels (`api`, `refunds`, `monitor`); needs `--nats-url`. Without NATS the adapters run
    /// in those processes.
    Channels,
}

impl Role {
    /// Every role, in the order they are listed.
    pub const ALL: [Role; 7] = [
        Role::Api,
        Role::Projector,
        Role::Notifier,
        Role::Refunds,
        Role::Monitor,
        Role::Relay,
        Role::Channels,
    ];

    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Projector => "projector",
            Role::Notifier => "notifier",
            Role::Refunds => "refunds",
            Role::Monitor => "monitor",
            Role::Relay => "relay",
            Role::Channels => "channels",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Role`]s. The default is every role (one process runs everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// Every role.
    pub fn all() -> Self {
        Self::of(&Role::ALL)
    }

    /// Exactly `roles`.
    pub fn of(roles: &[Role]) -> Self {
        Self(roles.iter().fold(0, |bits, r| bits | r.bit()))
    }

    /// Whether `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The set without `role`.
    pub fn without(self, role: Role) -> Self {
        Self(self.0 & !role.bit())
    }

    /// Whether the set holds every role.
    pub fn is_all(self) -> bool {
        self == Self::all()
    }
}

impl Default for Roles {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = Role::ALL.iter().filter(|r| self.has(**r)).map(|r| r.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// Parses `api,projector,…` (or `all`). The error names the valid roles.
impl FromStr for Roles {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let valid = || Role::ALL.map(Role::name).join(", ");
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                return Ok(Self::all());
            }
            match Role::ALL.iter().find(|r| r.name().eq_ignore_ascii_case(part)) {
                Some(r) => roles.push(*r),
                None => return Err(format!("unknown role {part:?}; valid roles: {}, or all", valid())),
            }
        }
        if roles.is_empty() {
            return Err(format!("no role given; valid roles: {}, or all", valid()));
        }
        Ok(Self::of(&roles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all_and_refuses_unknown_roles() {
        let r: Roles = "api, relay".parse().unwrap();
        assert!(r.has(Role::Api) && r.has(Role::Relay) && !r.has(Role::Projector));
        assert_eq!(r.to_string(), "api,relay");
        assert!("all".parse::<Roles>().unwrap().is_all());
        let r: Roles = "channels".parse().unwrap();
        assert!(r.has(Role::Channels) && !r.has(Role::Api));
        assert_eq!(
            Roles::all().to_string(),
            "api,projector,notifier,refunds,monitor,relay,channels"
        );
        let e = "api,gateway".parse::<Roles>().unwrap_err();
        assert!(e.contains("\"gateway\"") && e.contains("channels"), "{e}");
        assert!("".parse::<Roles>().is_err());
    }
}
