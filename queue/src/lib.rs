//! A deduplicating, delaying, rate-limited work queue. Knows nothing about Kubernetes.
//!
//! * [`WorkQueue`]: the queue handle (dedup, delayed adds, rate-limited retries, priority lanes,
//!   optional per-tenant fairness, graceful drain).
//! * [`WorkerPool`]: N workers calling an async handler, panics counted as failures.
//! * [`QueueMetrics`]: client-go compatible metrics hooks, [`NoopMetrics`] by default.
//! * [`BackoffPolicy`]: the per-key retry policy ([`ExponentialBackoffPolicy`] by default).
#![warn(missing_docs)]

mod backoff;
mod config;
mod core;
mod lanes;
mod lock;
mod metrics;
mod precise;
mod queue;
mod rate_limit;
mod runner;
mod slab;

pub use crate::backoff::{BackoffPolicy, ExponentialBackoffPolicy};
pub use crate::config::{BucketConfig, ConfigError, Priority, QueueConfig};
pub use crate::metrics::{NoopMetrics, QueueMetrics};
pub use crate::queue::{DrainReport, WorkQueue};
pub use crate::rate_limit::{TokioClock, TokioReference};
pub use crate::runner::{Requeue, WorkerPool};
