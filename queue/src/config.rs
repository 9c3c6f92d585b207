//! Queue configuration and its validation.

use std::time::Duration;

/// Which ready lane an immediate add goes to.
///
/// Fresh events belong in [`Priority::High`]; keys produced by an initial list or a periodic
/// resync belong in [`Priority::Low`]. Low-priority keys are never starved: one get in every
/// [`QueueConfig::low_priority_every`] is served from the low lane while it has keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Fresh events (the default).
    #[default]
    High,
    /// Initial list and resync backlog.
    Low,
}

/// The global token bucket applied to rate-limited retries (client-go: 10 qps, burst 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Sustained retries per second.
    pub qps: f64,
    /// Retries that may be released at once.
    pub burst: u32,
}

/// Configuration of a [`crate::WorkQueue`]. Build with `QueueConfig::default()` and struct update.
///
/// Invariant checked by [`QueueConfig::validate`]: `backoff_base <= backoff_cap`,
/// `0 <= backoff_jitter <= 1`, a bucket has `qps > 0` (finite) and `burst >= 1`,
/// `low_priority_every >= 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// First per-key retry delay (client-go: 5 ms).
    pub backoff_base: Duration,
    /// Largest per-key retry delay.
    pub backoff_cap: Duration,
    /// Randomization factor of the per-key delay, 0 = none, 0.5 = ±50 %.
    pub backoff_jitter: f64,
    /// Global bucket for rate-limited retries; `None` disables it. When set, it is never exceeded:
    /// due retries wait for a token, oldest first, however long that takes.
    pub bucket: Option<BucketConfig>,
    /// Cap on the per-key backoff of a rate-limited retry, whatever the policy says. It does not
    /// bound the wait for a token of the bucket (that wait is the bucket's: about N / qps for
    /// N simultaneous failures).
    pub max_delay: Duration,
    /// Serve ready keys round-robin across tenants (see [`crate::WorkQueue::with_tenant`]).
    pub fairness: bool,
    /// While both lanes hold keys, one get in this many is served from the low lane.
    pub low_priority_every: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_secs(300),
            backoff_jitter: 0.0,
            bucket: Some(BucketConfig {
                qps: 10.0,
                burst: 100,
            }),
            max_delay: Duration::from_secs(300),
            fairness: false,
            low_priority_every: 8,
        }
    }
}

/// Why a [`QueueConfig`] was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// `backoff_base` is larger than `backoff_cap`.
    #[error("backoff base {base:?} is larger than the cap {cap:?}")]
    BackoffBaseAboveCap {
        /// The configured base.
        base: Duration,
        /// The configured cap.
        cap: Duration,
    },
    /// The jitter factor is outside `[0, 1]`.
    #[error("backoff jitter {0} is outside [0, 1]")]
    JitterOutOfRange(f64),
    /// The bucket's qps is not a positive finite number.
    #[error("bucket qps {0} must be positive and finite")]
    BucketQps(f64),
    /// The bucket's burst is zero.
    #[error("bucket burst must be at least 1")]
    BucketBurst,
    /// `low_priority_every` is zero.
    #[error("low_priority_every must be at least 1")]
    LowPriorityEvery,
}

impl QueueConfig {
    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backoff_base > self.backoff_cap {
            return Err(ConfigError::BackoffBaseAboveCap {
                base: self.backoff_base,
                cap: self.backoff_cap,
            });
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(ConfigError::JitterOutOfRange(self.backoff_jitter));
        }
        if let Some(b) = self.bucket {
            if !(b.qps.is_finite() && b.qps > 0.0) {
                return Err(ConfigError::BucketQps(b.qps));
            }
            if b.burst == 0 {
                return Err(ConfigError::BucketBurst);
            }
        }
        if self.low_priority_every == 0 {
            return Err(ConfigError::LowPriorityEvery);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(QueueConfig::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_values_are_rejected_with_the_reason() {
        let base_above_cap = QueueConfig {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(1),
            ..QueueConfig::default()
        };
        assert!(matches!(
            base_above_cap.validate(),
            Err(ConfigError::BackoffBaseAboveCap { .. })
        ));
        let nan_qps = QueueConfig {
            bucket: Some(BucketConfig {
                qps: f64::NAN,
                burst: 1,
            }),
            ..QueueConfig::default()
        };
        assert!(matches!(nan_qps.validate(), Err(ConfigError::BucketQps(_))));
        let zero_burst = QueueConfig {
            bucket: Some(BucketConfig { qps: 1.0, burst: 0 }),
            ..QueueConfig::default()
        };
        assert_eq!(zero_burst.validate(), Err(ConfigError::BucketBurst));
        let jitter = QueueConfig {
            backoff_jitter: 1.5,
            ..QueueConfig::default()
        };
        assert_eq!(jitter.validate(), Err(ConfigError::JitterOutOfRange(1.5)));
        let every = QueueConfig {
            low_priority_every: 0,
            ..QueueConfig::default()
        };
        assert_eq!(every.validate(), Err(ConfigError::LowPriorityEvery));
    }
}
