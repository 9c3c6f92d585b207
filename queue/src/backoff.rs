//! Per-key retry delay policy.
//!
//! The exponential policy delegates to the `backoff` crate (unmaintained upstream), kept behind
//! our own [`BackoffPolicy`] trait so it can be swapped without touching the queue.

use std::time::Duration;

use backoff::backoff::Backoff as _;

/// Computes the delay before retry number `retries` (0 for the first retry) of one key.
///
/// Implementations must be pure apart from jitter and never panic for any `retries`.
pub trait BackoffPolicy: Send + Sync + 'static {
    /// The delay before the next retry of a key that already had `retries` retries.
    fn delay(&self, retries: u32) -> Duration;
}

/// `base · 2^retries`, capped at `cap`, optionally randomized by `jitter` (then re-capped).
#[derive(Debug, Clone)]
pub struct ExponentialBackoffPolicy {
    base: Duration,
    cap: Duration,
    template: backoff::ExponentialBackoff,
}

impl ExponentialBackoffPolicy {
    /// A policy starting at `base`, doubling per retry up to `cap`, with randomization factor
    /// `jitter` (0 disables it; values outside `[0, 1]` are clamped).
    pub fn new(base: Duration, cap: Duration, jitter: f64) -> Self {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let template = backoff::ExponentialBackoff {
            current_interval: base,
            initial_interval: base,
            randomization_factor: jitter,
            multiplier: 2.0,
            max_interval: cap,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        Self {
            base,
            cap,
            template,
        }
    }
}

impl BackoffPolicy for ExponentialBackoffPolicy {
    fn delay(&self, retries: u32) -> Duration {
        let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
        let interval = if retries >= 63 {
            self.cap
        } else {
            self.base
                .checked_mul(factor)
                .unwrap_or(self.cap)
                .min(self.cap)
        };
        if self.template.randomization_factor == 0.0 {
            return interval;
        }
        let mut b = self.template.clone();
        b.current_interval = interval;
        b.next_backoff().unwrap_or(interval).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_base_until_the_cap() {
        let p =
            ExponentialBackoffPolicy::new(Duration::from_millis(5), Duration::from_secs(1), 0.0);
        assert_eq!(p.delay(0), Duration::from_millis(5));
        assert_eq!(p.delay(1), Duration::from_millis(10));
        assert_eq!(p.delay(7), Duration::from_millis(640));
        assert_eq!(p.delay(8), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_factor_and_under_the_cap() {
        let p =
            ExponentialBackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 0.5);
        for _ in 0..200 {
            let d = p.delay(0);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                "{d:?}"
            );
            assert!(p.delay(10) <= Duration::from_secs(1));
        }
    }
}
