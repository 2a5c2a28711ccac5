//! Per-merchant request rate: each merchant gets its own GCRA bucket (the `governor` crate), so a
//! merchant flooding the API is answered `429 Too Many Requests` while every other merchant is
//! served as usual.
//!
//! The key is the merchant id, known only after authentication: the check runs in
//! [`crate::http::extract::AuthMerchant`], before the body is read, so a refused request costs one
//! API-key lookup and nothing else. Requests without a valid key (401) and channel callbacks are
//! not counted: they have no merchant to charge.
//!
//! The answer follows RFC 6585 §4 (429) and RFC 9110 §10.2.3 (`Retry-After` in whole seconds,
//! rounded up so a client that waits that long is served).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;

/// Default sustained rate, requests per second per merchant (`serve --rate-limit`).
pub const RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 200;
/// Default burst, requests a merchant may send at once after being idle (`serve --rate-limit-burst`).
pub const RATE_LIMIT_BURST_DEFAULT: u32 = 400;

/// The per-merchant quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per merchant; 0 switches the limit off.
    pub per_second: u32,
    /// Requests a merchant may send at once after being idle; at least 1 (0 is read as
    /// `per_second`).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: RATE_LIMIT_PER_SECOND_DEFAULT,
            burst: RATE_LIMIT_BURST_DEFAULT,
        }
    }
}

/// The limiter shared by every handler: one bucket per merchant id. Cheap to clone. Its memory
/// grows with the number of merchants that have called (a few dozen bytes each), not with
/// requests: only authenticated merchant ids are keys.
#[derive(Clone)]
pub struct MerchantRateLimit {
    inner: Option<Arc<Limiter>>,
}

struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    config: RateLimitConfig,
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
        let Some(per_second) = NonZeroU32::new(config.per_second) else {
            return Self { inner: None };
        };
        let burst = NonZeroU32::new(config.burst).unwrap_or(per_second);
        let config = RateLimitConfig {
            per_second: per_second.get(),
            burst: burst.get(),
        };
        Self {
            inner: Some(Arc::new(Limiter {
                buckets: RateLimiter::dashmap(Quota::per_second(per_second).allow_burst(burst)),
                config,
            })),
        }
    }

    /// No limit at all.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Takes one request from `merchant_id`'s bucket.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the bucket is empty, with the whole seconds (at least 1)
    /// until the next request would pass.
    pub fn check(&self, merchant_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        match limiter.buckets.check_key(&merchant_id.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.buckets.clock().now());
                // Whole seconds, rounded up: waiting the advertised time always suffices.
                let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let RateLimitConfig { per_second, burst } = limiter.config;
                Err(ApiError::TooManyRequests {
                    detail: format!(
                        "rate limit of {per_second} requests per second (burst {burst}) for merchant \
                         {merchant_id} exceeded; retry after {} s",
                        retry_after_seconds.max(1)
                    ),
                    retry_after_seconds: retry_after_seconds.max(1),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_quota_is_refused_for_that_merchant_only() {
        let limit = MerchantRateLimit::new(RateLimitConfig {
            per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(limit.check("shop1").is_ok());
        }
        match limit.check("shop1") {
            Err(ApiError::TooManyRequests {
                detail,
                retry_after_seconds,
            }) => {
                assert_eq!(retry_after_seconds, 1);
                assert!(detail.contains("1 requests per second (burst 3)"), "{detail}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limit.check("shop2").is_ok());
    }

    #[test]
    fn zero_per_second_switches_the_limit_off() {
        let limit = MerchantRateLimit::new(RateLimitConfig {
            per_second: 0,
            burst: 0,
        });
        for _ in 0..10_000 {
            assert!(limit.check("shop1").is_ok());
        }
    }
}
