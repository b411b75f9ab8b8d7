//! Per-API-key rate limits (`--rate-limit-per-sec`, `--rate-limit-burst`).
//!
//! One client must not be able to take the whole server: each account key
//! gets a token bucket (GCRA, the `governor` crate) refilled at
//! `per_sec` requests a second and holding at most `burst`. A request is
//! counted right after its key is authenticated, before its body is read
//! or anything else is done; past the limit it is answered 429
//! `RATE_LIMITED` with `Retry-After` (whole seconds, at least 1) and does
//! nothing. Off by default.
//!
//! The admin key is not limited: it manages accounts and keys, an operator
//! holds it, and limiting it could lock the operator out of a server under
//! load. Unauthenticated requests are not counted (they do no work beyond
//! the key check).
//!
//! Time comes from the engine clock, so tests drive it. Memory: one small
//! entry per key that made a request; keys are bounded by the catalog's
//! limits, and entries of keys idle for a full refill are dropped once more
//! than [`KEYS_TRACKED_MAX`] are held.

use super::error::{ApiError, ErrorCode};
use crate::clock::Clock;
use crate::config::RATE_PER_SEC_MAX;
use crate::ids::KeyId;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Keys with a bucket held before idle ones are dropped.
pub const KEYS_TRACKED_MAX: usize = 100_000;

/// How often (in checks) the number of tracked keys is looked at.
const TRACKED_CHECK_EVERY: u64 = 4_096;

/// The limit of every account key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests a second each key is refilled with; 0 turns limits off.
    pub per_sec: u32,
    /// Requests a key may send at once after being idle (0: `per_sec`).
    pub burst: u32,
}

impl RateLimitSettings {
    /// No limits.
    pub const OFF: RateLimitSettings = RateLimitSettings {
        per_sec: 0,
        burst: 0,
    };
}

/// The engine clock as the rate limiter's time source.
#[derive(Clone)]
struct EngineTime {
    /// The engine clock (milliseconds since the epoch).
    clock: Arc<dyn Clock>,
}

impl governor::clock::Clock for EngineTime {
    type Instant = Duration;

    fn now(&self) -> Duration {
        // A clock before 1970 is no clock: treat it as the epoch.
        Duration::from_millis(u64::try_from(self.clock.now_ms()).unwrap_or(0))
    }
}

/// The buckets of every account key.
pub struct RateLimit {
    /// The buckets, by key id.
    limiter: RateLimiter<KeyId, DashMapStateStore<KeyId>, EngineTime, NoOpMiddleware<Duration>>,
    /// The time source (for `Retry-After`).
    time: EngineTime,
    /// Checks so far, to look at the tracked keys now and then.
    checks: AtomicU64,
}

impl RateLimit {
    /// The limits of `settings` on `clock`, or `None` when they are off.
    pub fn new(settings: RateLimitSettings, clock: Arc<dyn Clock>) -> Option<Self> {
        let per_sec = NonZeroU32::new(settings.per_sec)?;
        assert!(
            settings.per_sec <= RATE_PER_SEC_MAX && settings.burst <= RATE_PER_SEC_MAX,
            "rate limits are validated by the CLI"
        );
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_sec);
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        let time = EngineTime { clock };
        Some(Self {
            limiter: RateLimiter::dashmap_with_clock(quota, time.clone()),
            time,
            checks: AtomicU64::new(0),
        })
    }

    /// Counts one request of `key`: 429 `RATE_LIMITED` past its limit.
    pub fn check(&self, key: KeyId) -> Result<(), ApiError> {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        if checks.is_multiple_of(TRACKED_CHECK_EVERY) && self.limiter.len() > KEYS_TRACKED_MAX {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.time));
                Err(limited(wait))
            }
        }
    }
}

/// The 429 for a key that may send again after `wait`.
fn limited(wait: Duration) -> ApiError {
    let secs = retry_after_secs(wait);
    ApiError::new(
        ErrorCode::RateLimited,
        format!("This API key sent more requests than its rate limit allows; retry in {secs} s."),
    )
    .retry_after(secs)
}

/// `wait` in whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: i64 = 1_768_672_800_000;

    fn limit(per_sec: u32, burst: u32) -> (RateLimit, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let limit = RateLimit::new(RateLimitSettings { per_sec, burst }, clock.clone())
            .expect("limits are on");
        (limit, clock)
    }

    #[test]
    fn off_when_zero_per_sec() {
        let clock = Arc::new(ManualClock::new(T0));
        assert!(RateLimit::new(RateLimitSettings::OFF, clock).is_none());
    }

    #[test]
    fn a_burst_then_refusals_until_the_bucket_refills() {
        let (limit, clock) = limit(2, 3);
        let key = KeyId(uuid::Uuid::from_u128(1));
        for _ in 0..3 {
            limit.check(key).unwrap();
        }
        let refused = limit.check(key).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(1));
        // Another key has its own bucket.
        limit.check(KeyId(uuid::Uuid::from_u128(2))).unwrap();
        // One request comes back every 500 ms.
        clock.advance_ms(499);
        assert!(limit.check(key).is_err());
        clock.advance_ms(1);
        limit.check(key).unwrap();
        assert!(limit.check(key).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        let (limit, _clock) = limit(1, 1);
        let key = KeyId(uuid::Uuid::from_u128(3));
        limit.check(key).unwrap();
        assert_eq!(limit.check(key).unwrap_err().retry_after_secs, Some(1));
    }

    #[test]
    fn burst_defaults_to_the_rate() {
        let (limit, _clock) = limit(4, 0);
        let key = KeyId(uuid::Uuid::from_u128(4));
        for _ in 0..4 {
            limit.check(key).unwrap();
        }
        assert!(limit.check(key).is_err());
    }
}
