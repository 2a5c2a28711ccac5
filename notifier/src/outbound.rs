//! Outbound requests to merchant-supplied URLs (`notify_url`) that cannot be turned inward.
//!
//! A merchant chooses where its notifications go, so without a guard the notifier is a port
//! scanner and a way into our own network (SSRF). The guard works on the address actually
//! connected to, not on the URL as it was when the order was created:
//!
//! - [`is_public`] says whether an address is globally reachable unicast. It refuses loopback,
//!   unspecified, private (RFC 1918, IPv6 ULA `fc00::/7`), link-local, site-local (`fec0::/10`),
//!   CGNAT (`100.64.0.0/10`), the IETF protocol block (`192.0.0.0/24`, `2001::/23`),
//!   documentation and benchmarking ranges, multicast, reserved (`240.0.0.0/4`, broadcast) and
//!   the deprecated IPv4-compatible block (`::/96`, e.g. `[::127.0.0.1]`); an address that embeds
//!   an IPv4 address (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
//!   judged by the IPv4 address it reaches.
//! - [`PublicOnly`], a DNS resolver for `reqwest`: the names a request resolves are checked
//!   when it connects, so a name that resolved to a public address when the order was created
//!   and to `127.0.0.1` now (DNS rebinding) is refused.
//! - [`check_target`], for URLs whose host is an IP literal (which `reqwest` does not resolve).
//!
//! The attempt log then shows the merchant [`REFUSED_TARGET`] or [`NO_ANSWER`], never the
//! socket-level error (which would tell an open port from a closed one).

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// What the attempt log says when the target is not a public address (by literal or by name).
pub const REFUSED_TARGET: &str = "refused: notify_url is not a public address";

/// What the attempt log says when no HTTP answer came back for any reason other than a timeout
/// (refused connection, reset, a port that does not speak HTTP, TLS failure): one message, so
/// the log cannot be used to tell which.
pub const NO_ANSWER: &str = "could not connect, or no HTTP answer";

/// Whether `ip` is a globally reachable unicast address (see the module documentation for the
/// ranges refused).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0/8
        || a == 10
        || a == 127
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224) // multicast 224/4, reserved 240/4, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-mapped ::ffff:a.b.c.d: a socket connects to the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96: the translator connects to the embedded address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 2002:aabb:ccdd::/48 tunnels to aa.bb.cc.dd.
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    // Global unicast is 2000::/3; everything outside it (::/8 with loopback, unspecified and
    // IPv4-compatible, 64:ff9b:1::/48 local NAT64, 100::/64 discard, fc00::/7, fe80::/10,
    // fec0::/10, ff00::/8) is refused.
    if (s[0] & 0xe000) != 0x2000 {
        return false;
    }
    // IETF protocol assignments 2001::/23 (Teredo, benchmarking…) and documentation
    // (2001:db8::/32, 3fff::/20).
    let ietf_or_documentation = s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8);
    !(ietf_or_documentation || (s[0] == 0x3fff && s[1] & 0xf000 == 0))
}

/// Refuses a URL whose host is a non-public IP literal. Names are left to [`PublicOnly`].
///
/// # Errors
/// [`Refused`] when the host is an IP literal that is not [`is_public`].
pub fn check_target(url: &Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(Refused)
    }
}

/// A target refused because it is not a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REFUSED_TARGET)
    }
}

impl StdError for Refused {}

/// A `reqwest` resolver that resolves with the system resolver and keeps only public
/// addresses; a name with none left fails with [`Refused`]. Install with
/// `reqwest::ClientBuilder::dns_resolver` (and no proxy, which would resolve in our stead).
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)?
                .collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether `e` (or one of its causes) is a [`Refused`].
pub fn is_refused(e: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(cause) = source {
        if cause.is::<Refused>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn every_non_public_form_is_refused() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(!public(s), "{s} must be refused");
        }
    }

    #[test]
    fn public_addresses_and_their_embedded_forms_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "3fff:1000::1",
            "3ff0::1",
        ] {
            assert!(public(s), "{s} must pass");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_and_names_left_to_the_resolver() {
        for (url, ok) in [
            ("http://127.0.0.1:5432/", false),
            ("http://[::127.0.0.1]/", false),
            ("http://[64:ff9b::7f00:1]/", false),
            ("http://[2002:7f00:1::]/", false),
            ("http://[fec0::1]/", false),
            ("https://8.8.8.8/n", true),
            ("https://merchant.example/n", true),
        ] {
            let url = Url::parse(url).expect("url");
            assert_eq!(check_target(&url).is_ok(), ok, "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_reaches_only_loopback() {
        let name: Name = "localhost".parse().expect("name");
        let err = match PublicOnly.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(is_refused(err.as_ref()), "{err}");
    }
}
