//! Exponential retry delays. The `backoff` crate is unmaintained upstream, so it stays behind
//! this small type: replacing it touches this file only.

use std::time::Duration;

use backoff::backoff::Backoff;

/// Exponentially growing delays between `initial` and `max`, reset after a success.
#[derive(Debug)]
pub struct RetryDelays {
    inner: backoff::ExponentialBackoff,
}

impl RetryDelays {
    /// Delays starting at `initial`, doubling, capped at `max`, with ±20 % jitter; never gives up.
    pub fn new(initial: Duration, max: Duration) -> Self {
        RetryDelays {
            inner: backoff::ExponentialBackoff {
                current_interval: initial,
                initial_interval: initial,
                randomization_factor: 0.2,
                multiplier: 2.0,
                max_interval: max,
                max_elapsed_time: None,
                ..backoff::ExponentialBackoff::default()
            },
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next_backoff().unwrap_or(self.inner.max_interval)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_reset() {
        let mut delays = RetryDelays::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = delays.next_delay();
        assert!(first <= Duration::from_millis(120), "{first:?}");
        let mut last = first;
        for _ in 0..10 {
            last = delays.next_delay();
        }
        assert!(last <= Duration::from_millis(1200), "capped: {last:?}");
        assert!(last >= Duration::from_millis(800), "grew: {last:?}");
        delays.reset();
        assert!(delays.next_delay() <= Duration::from_millis(120));
    }
}
