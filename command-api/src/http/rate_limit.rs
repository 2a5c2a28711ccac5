//! Request rates, each a GCRA bucket per key (the `governor` crate), answered `429 Too Many
//! Requests` past the quota while every other key is served as usual:
//!
//! - [`MerchantRateLimit`], per merchant: the key is the merchant id, known only after
//!   authentication. Charged in [`crate::http::extract::AuthMerchant`], before the body is read,
//!   so a refused request costs one API-key lookup and nothing else.
//! - [`AddressRateLimit`], per client address, for traffic that has no merchant to charge: it
//!   is charged only by requests that are (or end up) unauthenticated, never by a merchant's
//!   authenticated requests, so a busy merchant behind one NAT is not throttled by it. What it is
//!   charged for, and why:
//!   - a request to the merchant API whose API key is missing, malformed or unknown (the 401s of
//!     [`crate::http::extract::AuthMerchant`]), charged when the lookup does not find the key. A
//!     key this process has not yet found is not even looked up while its address is over the
//!     limit ([`AddressRateLimit::over_limit`]: refused, uncharged, until the address's bucket
//!     has a request again), so a flood of made-up keys costs no query once the limit is
//!     reached. A merchant's valid key is never charged: a hundred merchants calling through one
//!     proxy address after a restart are all served.
//!   - a request to the sandbox pay page, `GET` and `POST /sandbox/pay/{order_id}`
//!     ([`crate::http::sandbox`]), whose pay token does not check (a guess): the token
//!     authenticates the payer, so a payer holding it is never charged.
//!   - a channel callback whose signature or content is refused ([`crate::http::callbacks`]):
//!     charged after verification, because a channel's valid callbacks must never be throttled by
//!     address (a channel calls from few addresses, and a refused callback is lost money); the
//!     limit therefore bounds how often one address is answered a refusal, not the cost of
//!     verifying.
//!
//!   The address is the TCP peer's ([`ClientAddr`]); `X-Forwarded-For` is not trusted. Behind a
//!   reverse proxy every request comes from the proxy's address, so the limit applies to all
//!   unauthenticated traffic together: raise it or switch it off (0) there. IPv6 addresses are
//!   keyed by their /64 network, which one host commonly holds whole.
//!
//! Memory: a bucket is a few dozen bytes. Merchant ids are few; addresses are as many as the
//! clients that were charged, so [`spawn_retention`] drops every bucket that has refilled (its
//! key idle for `burst / per_second` seconds) once a minute, keeping the address limiter bounded
//! by the addresses active in the last minute or so.
//!
//! The answer follows RFC 6585 §4 (429) and RFC 9110 §10.2.3 (`Retry-After` in whole seconds,
//! rounded up so a client that waits that long is served). Each refusal counts in
//! [`RATE_LIMITED_TOTAL`] with its `limit` (`merchant`, `address`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use payledger_domain::Mode;
use tokio::task::JoinHandle;

use crate::http::error::ApiError;

/// Default sustained rate, requests per second per merchant (`serve --rate-limit`).
pub const RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 200;
/// Default burst, requests a merchant may send at once after being idle (`serve --rate-limit-burst`).
pub const RATE_LIMIT_BURST_DEFAULT: u32 = 400;
/// Default sustained rate of unauthenticated requests per client address
/// (`serve --unauthenticated-rate-limit`): far above what a payer's browser or a mistyped key
/// sends, far below a flood.
pub const UNAUTHENTICATED_RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 20;
/// Default burst of unauthenticated requests per client address
/// (`serve --unauthenticated-rate-limit-burst`).
pub const UNAUTHENTICATED_RATE_LIMIT_BURST_DEFAULT: u32 = 40;
/// How often [`spawn_retention`] drops the buckets of idle keys.
pub const RETAIN_INTERVAL: Duration = Duration::from_secs(60);
/// Counter of requests refused with 429, label `limit`: `merchant` or `address`.
pub const RATE_LIMITED_TOTAL: &str = "payledger_rate_limited_total";

/// A quota: the per-merchant one (`--rate-limit`, `--rate-limit-burst`) and the per-address one
/// of unauthenticated requests (`--unauthenticated-rate-limit`,
/// `--unauthenticated-rate-limit-burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key; 0 switches the limit off.
    pub per_second: u32,
    /// Requests a key may send at once after being idle; at least 1 (0 is read as
    /// `per_second`).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    /// The per-merchant default: 200/s, burst 400.
    fn default() -> Self {
        Self {
            per_second: RATE_LIMIT_PER_SECOND_DEFAULT,
            burst: RATE_LIMIT_BURST_DEFAULT,
        }
    }
}

impl RateLimitConfig {
    /// The per-address default of unauthenticated requests: 20/s, burst 40.
    pub fn unauthenticated_default() -> Self {
        Self {
            per_second: UNAUTHENTICATED_RATE_LIMIT_PER_SECOND_DEFAULT,
            burst: UNAUTHENTICATED_RATE_LIMIT_BURST_DEFAULT,
        }
    }
}

/// One keyed limiter and its (normalised) quota.
struct Limiter<K: Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
    config: RateLimitConfig,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `None` (no limit) when `config.per_second` is 0.
    fn new(config: RateLimitConfig) -> Option<Arc<Self>> {
        let per_second = NonZeroU32::new(config.per_second)?;
        let burst = NonZeroU32::new(config.burst).unwrap_or(per_second);
        Some(Arc::new(Self {
            buckets: RateLimiter::dashmap(Quota::per_second(per_second).allow_burst(burst)),
            config: RateLimitConfig {
                per_second: per_second.get(),
                burst: burst.get(),
            },
        }))
    }

    /// Takes one request from `key`'s bucket; when empty, how long until the next request
    /// would pass.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.buckets
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }
}

/// A wait in whole seconds, rounded up and at least 1 (`Retry-After`): waiting the advertised
/// time always suffices.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The per-merchant limiter shared by every handler: one bucket per merchant id. Cheap to clone.
/// Its memory grows with the number of merchants that have called (a few dozen bytes each), not
/// with requests: only authenticated merchant ids are keys.
#[derive(Clone)]
pub struct MerchantRateLimit {
    inner: Option<Arc<Limiter<String>>>,
}

impl std::fmt::Debug for MerchantRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantRateLimit")
            .field("config", &self.inner.as_ref().map(|l| l.config))
            .finish()
    }
}

impl MerchantRateLimit {
    /// A limiter for `config`; off (every request passes) when `config.per_second` is 0.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            inner: Limiter::new(config),
        }
    }

    /// No limit at all.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Takes one request from the bucket of `merchant_id` in `mode`: each mode has its own, so a
    /// load test on the test key never throttles live payments.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the bucket is empty, with the whole seconds (at least 1)
    /// until the next request would pass.
    pub fn check(&self, merchant_id: &str, mode: Mode) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        limiter.check(&format!("{merchant_id}/{mode}")).map_err(|wait| {
            let retry_after_seconds = whole_seconds(wait);
            metrics::counter!(RATE_LIMITED_TOTAL, "limit" => "merchant").increment(1);
            let RateLimitConfig { per_second, burst } = limiter.config;
            ApiError::TooManyRequests {
                detail: format!(
                    "rate limit of {per_second} requests per second (burst {burst}) for merchant \
                     {merchant_id} exceeded; retry after {retry_after_seconds} s"
                ),
                retry_after_seconds,
            }
        })
    }

    /// Drops the buckets of merchants idle long enough for their bucket to be full again.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.inner {
            limiter.buckets.retain_recent();
        }
    }
}

/// The per-address limiter of unauthenticated requests (see the module documentation for what
/// is charged): one bucket per client address ([`address_key`]). Cheap to clone.
#[derive(Clone)]
pub struct AddressRateLimit {
    inner: Option<Arc<Limiter<IpAddr>>>,
    /// Addresses refused by [`AddressRateLimit::check`], and until when their bucket is empty:
    /// what [`AddressRateLimit::over_limit`] reads without charging.
    refused: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

impl std::fmt::Debug for AddressRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressRateLimit")
            .field("config", &self.inner.as_ref().map(|l| l.config))
            .field("addresses", &self.inner.as_ref().map(|l| l.buckets.len()))
            .finish()
    }
}

impl AddressRateLimit {
    /// A limiter for `config`; off (every request passes) when `config.per_second` is 0.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            inner: Limiter::new(config),
            refused: Arc::default(),
        }
    }

    /// No limit at all.
    pub fn off() -> Self {
        Self {
            inner: None,
            refused: Arc::default(),
        }
    }

    /// Refuses, without charging, an address that [`AddressRateLimit::check`] refused and whose
    /// bucket is still empty: the API key lookup of a key this process has not seen is skipped
    /// for it, so a flood of made-up keys costs no query once the address is over its limit,
    /// while a merchant's valid key is never charged.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`], as [`AddressRateLimit::check`] answers it.
    pub fn over_limit(&self, addr: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(addr)) = (&self.inner, addr) else {
            return Ok(());
        };
        let key = address_key(addr);
        let until = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        match until.and_then(|u| u.checked_duration_since(Instant::now())) {
            Some(wait) if !wait.is_zero() => Err(limiter_refusal(limiter, key, wait)),
            _ => Ok(()),
        }
    }

    /// Takes one unauthenticated request from `addr`'s bucket. `None` (a request that did not
    /// come through the server's listener, such as a router called in process) is not limited.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the bucket is empty, with the whole seconds (at least 1)
    /// until the next request would pass.
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(addr)) = (&self.inner, addr) else {
            return Ok(());
        };
        let key = address_key(addr);
        limiter.check(&key).map_err(|wait| {
            self.refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, Instant::now() + wait);
            limiter_refusal(limiter, key, wait)
        })
    }

    /// Drops the buckets of addresses idle long enough for their bucket to be full again, and
    /// the refusals that have expired.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.inner {
            limiter.buckets.retain_recent();
        }
        let now = Instant::now();
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }

    /// Addresses holding a bucket now.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |l| l.buckets.len())
    }

    /// Whether no address holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 429 of the address limiter for `key`, `wait` before its next request passes (counted in
/// [`RATE_LIMITED_TOTAL`]).
fn limiter_refusal(limiter: &Limiter<IpAddr>, key: IpAddr, wait: Duration) -> ApiError {
    metrics::counter!(RATE_LIMITED_TOTAL, "limit" => "address").increment(1);
    let RateLimitConfig { per_second, burst } = limiter.config;
    let retry_after_seconds = whole_seconds(wait);
    ApiError::TooManyRequests {
        detail: format!(
            "rate limit of {per_second} unauthenticated requests per second (burst {burst}) \
             for address {key} exceeded; retry after {retry_after_seconds} s"
        ),
        retry_after_seconds,
    }
}

/// The key of a client address: an IPv4 address (also written IPv4-mapped in IPv6) as it is, an
/// IPv6 address by its /64 network, since one host commonly holds a whole /64 and could
/// otherwise take a fresh bucket per request.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1_u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Every [`RETAIN_INTERVAL`], drops the buckets of idle merchants and addresses, so the limiters
/// hold only keys active in the last interval or so. The task runs until aborted.
pub fn spawn_retention(merchants: MerchantRateLimit, addresses: AddressRateLimit) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            merchants.retain_recent();
            addresses.retain_recent();
        }
    })
}

/// The client's IP address: the TCP peer of the connection (axum's [`ConnectInfo`], which
/// [`crate::app::start`] serves). `X-Forwarded-For` and the like are not trusted. `None` for a
/// request without a connection (the router called in process).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

impl ClientAddr {
    /// The peer address of `request`'s connection, if any.
    pub fn of_request<B>(request: &axum::http::Request<B>) -> Option<IpAddr> {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
    }

    /// The peer address of `parts`' connection, if any.
    pub fn of(parts: &Parts) -> Self {
        Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_quota_is_refused_for_that_merchant_and_mode_only() {
        let limit = MerchantRateLimit::new(RateLimitConfig {
            per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(limit.check("shop1", Mode::Test).is_ok());
        }
        match limit.check("shop1", Mode::Test) {
            Err(ApiError::TooManyRequests {
                detail,
                retry_after_seconds,
            }) => {
                assert_eq!(retry_after_seconds, 1);
                assert!(detail.contains("1 requests per second (burst 3)"), "{detail}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limit.check("shop2", Mode::Test).is_ok());
        assert!(
            limit.check("shop1", Mode::Live).is_ok(),
            "the live key has its own bucket"
        );
    }

    #[test]
    fn an_address_past_its_burst_is_refused_and_other_addresses_are_not() {
        let limit = AddressRateLimit::new(RateLimitConfig {
            per_second: 2,
            burst: 3,
        });
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(Some(a)).is_ok());
        }
        match limit.check(Some(a)) {
            Err(ApiError::TooManyRequests {
                detail,
                retry_after_seconds,
            }) => {
                assert_eq!(retry_after_seconds, 1);
                assert!(
                    detail.contains("2 unauthenticated requests per second (burst 3)"),
                    "{detail}"
                );
                assert!(detail.contains("203.0.113.7"), "{detail}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // The same address written IPv4-mapped is the same client.
        assert!(limit.check(Some("::ffff:203.0.113.7".parse().unwrap())).is_err());
        assert!(limit.check(Some("203.0.113.8".parse().unwrap())).is_ok());
        // A request without a connection (router called in process) is not limited.
        for _ in 0..10 {
            assert!(limit.check(None).is_ok());
        }
        assert_eq!(limit.len(), 2);
    }

    #[test]
    fn over_limit_refuses_only_an_address_already_refused_and_charges_nothing() {
        let limit = AddressRateLimit::new(RateLimitConfig {
            per_second: 1,
            burst: 2,
        });
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..10 {
            assert!(limit.over_limit(Some(a)).is_ok(), "reading the limit charges nothing");
        }
        assert!(limit.check(Some(a)).is_ok());
        assert!(limit.check(Some(a)).is_ok());
        assert!(limit.over_limit(Some(a)).is_ok(), "empty, but not refused yet");
        assert!(limit.check(Some(a)).is_err());
        match limit.over_limit(Some(a)) {
            Err(ApiError::TooManyRequests {
                retry_after_seconds, ..
            }) => assert_eq!(retry_after_seconds, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limit.over_limit(Some("203.0.113.8".parse().unwrap())).is_ok());
        assert!(AddressRateLimit::off().over_limit(Some(a)).is_ok());
        // Once the bucket has a request again (1/s), the refusal has expired.
        std::thread::sleep(Duration::from_millis(1_050));
        assert!(limit.over_limit(Some(a)).is_ok());
        limit.retain_recent();
        assert!(limit.refused.lock().unwrap().is_empty(), "expired refusals are dropped");
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let limit = AddressRateLimit::new(RateLimitConfig {
            per_second: 1,
            burst: 2,
        });
        assert!(limit.check(Some("2001:db8:1:2::1".parse().unwrap())).is_ok());
        assert!(limit.check(Some("2001:db8:1:2:ffff::9".parse().unwrap())).is_ok());
        assert!(limit.check(Some("2001:db8:1:2::abcd".parse().unwrap())).is_err());
        assert!(limit.check(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
        assert_eq!(
            address_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn retain_recent_drops_the_buckets_of_idle_addresses() {
        // 1000/s, burst 1: a bucket is full again a millisecond after its one request.
        let limit = AddressRateLimit::new(RateLimitConfig {
            per_second: 1000,
            burst: 1,
        });
        for i in 0..100_u8 {
            assert!(limit.check(Some(IpAddr::from([198, 51, 100, i]))).is_ok());
        }
        assert_eq!(limit.len(), 100);
        std::thread::sleep(Duration::from_millis(5));
        limit.retain_recent();
        assert!(limit.is_empty(), "{} buckets left", limit.len());
    }

    #[test]
    fn zero_per_second_switches_the_limit_off() {
        let limit = MerchantRateLimit::new(RateLimitConfig {
            per_second: 0,
            burst: 0,
        });
        for _ in 0..10_000 {
            assert!(limit.check("shop1", Mode::Live).is_ok());
        }
        let limit = AddressRateLimit::new(RateLimitConfig {
            per_second: 0,
            burst: 40,
        });
        for _ in 0..10_000 {
            assert!(limit.check(Some(IpAddr::from([127, 0, 0, 1]))).is_ok());
        }
    }
}
