//! Metrics hooks with client-go's `workqueue` semantics.
//!
//! | client-go metric | hook |
//! |---|---|
//! | `workqueue_depth` | [`QueueMetrics::depth`]: +1 when a key becomes dirty (queued, or re-added while processing), −1 when handed to a worker |
//! | `workqueue_adds_total` | [`QueueMetrics::add`]: once per add that made the key dirty (dedup hits are not counted) |
//! | `workqueue_queue_duration_seconds` | [`QueueMetrics::queue_latency`]: from the first such add to the get |
//! | `workqueue_work_duration_seconds` | [`QueueMetrics::work_duration`]: from get to done |
//! | `workqueue_unfinished_work_seconds`, `workqueue_longest_running_processor_seconds` | [`QueueMetrics::unfinished_work`], from [`crate::WorkQueue::update_unfinished_work`] (the pool calls it every 500 ms) |
//! | `workqueue_retries_total` | [`QueueMetrics::retry`]: every accepted `add_after` / `add_rate_limited` |

use std::time::Duration;

/// Receives queue events. All methods default to no-ops. [`depth`](Self::depth) is called with
/// the queue's lock held (so successive depths arrive in order); the others right after the lock
/// is released, so that observing a histogram does not lengthen the queue's critical section.
/// None may block or call back into the queue.
pub trait QueueMetrics: Send + Sync + 'static {
    /// Whether the queue should report at all; `false` (the [`NoopMetrics`] answer) skips every
    /// hook and the clock reads behind the latency hooks.
    fn enabled(&self) -> bool {
        true
    }
    /// A key became dirty (`adds_total`).
    fn add(&self) {}
    /// The new depth (`depth` gauge).
    fn depth(&self, _depth: usize) {}
    /// Time a key spent queued before a worker got it (`queue_duration_seconds`).
    fn queue_latency(&self, _latency: Duration) {}
    /// Time a worker held a key (`work_duration_seconds`).
    fn work_duration(&self, _duration: Duration) {}
    /// A delayed or rate-limited add was accepted (`retries_total`).
    fn retry(&self) {}
    /// Sum of the ages of all in-flight items and the oldest one.
    fn unfinished_work(&self, _unfinished: Duration, _longest_running: Duration) {}
}

/// The default: records nothing and lets the queue skip its clock reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopMetrics;

impl QueueMetrics for NoopMetrics {
    fn enabled(&self) -> bool {
        false
    }
}
