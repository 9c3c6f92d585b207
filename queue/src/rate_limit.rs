//! The global token bucket (governor) on a clock that follows tokio's (pausable) time.
//!
//! governor's default clock ignores `tokio::time::pause`, so the bucket runs on [`TokioClock`].

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::BucketConfig;

/// A governor clock reading `tokio::time::Instant`, so paused tokio time drives the bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// A point on [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioReference(tokio::time::Instant);

impl Add<Nanos> for TokioReference {
    type Output = Self;
    fn add(self, rhs: Nanos) -> Self {
        let d: Duration = rhs.into();
        Self(self.0.checked_add(d).unwrap_or(self.0))
    }
}

impl Reference for TokioReference {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        let d: Duration = duration.into();
        Self(self.0.checked_sub(d).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioReference;
    fn now(&self) -> TokioReference {
        TokioReference(tokio::time::Instant::now())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioReference>>;

/// The global bucket: `try_take` either takes a token or says how long until one is available.
pub(crate) struct Bucket {
    limiter: Limiter,
}

impl Bucket {
    /// `None` for a config that cannot form a quota (rejected earlier by validation).
    pub(crate) fn new(cfg: BucketConfig) -> Option<Self> {
        let period = Duration::from_secs_f64(1.0 / cfg.qps);
        let burst = std::num::NonZeroU32::new(cfg.burst)?;
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
        Some(Self {
            limiter: RateLimiter::direct_with_clock(quota, TokioClock),
        })
    }

    /// Takes one token, or returns how long until the next one.
    pub(crate) fn try_take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_the_burst_then_refills_with_paused_time() {
        let b = Bucket::new(BucketConfig {
            qps: 10.0,
            burst: 3,
        })
        .expect("valid quota");
        for _ in 0..3 {
            assert_eq!(b.try_take(), Ok(()));
        }
        let wait = b.try_take().expect_err("burst exhausted");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.try_take(), Ok(()));
        assert!(b.try_take().is_err());
    }
}
