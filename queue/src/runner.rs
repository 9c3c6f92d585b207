//! A pool of workers draining a [`WorkQueue`] through an async handler.

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::queue::{DrainReport, WorkQueue};

/// What a successful handler asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Done with this key until the next event: its retry count is reset.
    Never,
    /// Run it again after this delay (retry count reset; not rate limited).
    After(Duration),
}

/// Runs `workers` concurrent workers over a [`WorkQueue`].
///
/// Each worker loops: [`WorkQueue::get`] → handler → outcome → [`WorkQueue::done`].
/// * `Ok(Requeue::Never)` → `forget`;
/// * `Ok(Requeue::After(d))` → `forget` + `add_after(d)`;
/// * `Err(e)` → `add_rate_limited` (the error is logged with `tracing`);
/// * a panic, while building or polling the handler's future → counted as a failure
///   (`add_rate_limited`); the worker survives.
///
/// [`run`](Self::run) returns when `cancel` fires or when the queue was shut down elsewhere and
/// drained.
///
/// # Shutdown
/// When `cancel` fires the pool stops the queue with [`WorkQueue::shutdown_in_flight`]: the
/// handlers already running finish (within the grace period), no ready key is started any more,
/// and the keys never started come back as `dropped` in the [`DrainReport`]. A consumer whose
/// inputs stop being updated at shutdown (an operator's caches) must not act on more keys.
/// Handlers still running when the grace period ends are aborted at their next `.await` and
/// reported as `unfinished`.
#[derive(Debug)]
pub struct WorkerPool<K> {
    queue: WorkQueue<K>,
    workers: usize,
    grace: Duration,
    unfinished_interval: Duration,
}

impl<K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static> WorkerPool<K> {
    /// A pool of `workers` (at least 1) workers with a 30 s drain grace period.
    pub fn new(queue: WorkQueue<K>, workers: usize) -> Self {
        Self {
            queue,
            workers: workers.max(1),
            grace: Duration::from_secs(30),
            unfinished_interval: Duration::from_millis(500),
        }
    }

    /// How long a cancelled pool waits for the handlers already running (30 s by default).
    #[must_use]
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs until `cancel` fires or the queue is shut down and drained; see the type docs.
    pub async fn run<H, Fut, E>(self, handler: H, cancel: CancellationToken) -> DrainReport<K>
    where
        H: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Requeue, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        let mut workers = JoinSet::new();
        for _ in 0..self.workers {
            workers.spawn(worker(self.queue.clone(), Arc::clone(&handler)));
        }
        let ticker = {
            let queue = self.queue.clone();
            let interval = self.unfinished_interval;
            let stop = cancel.child_token();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => queue.update_unfinished_work(),
                    }
                }
            })
        };
        let all_exited = async { while workers.join_next().await.is_some() {} };
        let report = tokio::select! {
            _ = cancel.cancelled() => self.queue.shutdown_in_flight(self.grace).await,
            () = all_exited => self.queue.shutdown_with_drain(Duration::ZERO).await,
        };
        workers.shutdown().await;
        ticker.abort();
        report
    }
}

async fn worker<K, H, Fut, E>(queue: WorkQueue<K>, handler: Arc<H>)
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    H: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Requeue, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    while let Some(key) = queue.get().await {
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(key.clone()))) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        match outcome {
            Ok(Ok(Requeue::Never)) => queue.forget(&key),
            Ok(Ok(Requeue::After(delay))) => {
                queue.forget(&key);
                queue.add_after(&key, delay);
            }
            Ok(Err(error)) => {
                tracing::warn!(?key, %error, "handler failed; retrying with backoff");
                queue.add_rate_limited(&key);
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(?key, panic = %msg, "handler panicked; retrying with backoff");
                queue.add_rate_limited(&key);
            }
        }
        queue.done(&key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::queue::tests::queue;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_counts_as_a_failure_and_the_worker_survives() {
        let q = queue();
        q.add(&1);
        q.add(&2);
        let calls = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let pool = WorkerPool::new(q.clone(), 1);
        let run = tokio::spawn({
            let (calls, cancel) = (Arc::clone(&calls), cancel.clone());
            pool.run(
                move |k: u32| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if k == 1 && n == 0 {
                            panic!("boom");
                        }
                        Ok::<_, std::io::Error>(Requeue::Never)
                    }
                },
                cancel,
            )
        });
        // Key 1 panics, key 2 still runs on the same (only) worker, key 1 is retried after 5 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(q.num_requeues(&1), 0, "the successful retry forgot the key");
        cancel.cancel();
        let report = run.await.expect("pool");
        assert!(report.completed);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_requeue_after_reruns_the_key() {
        let q = queue();
        q.add(&1);
        q.add(&2);
        let calls = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let run = tokio::spawn(WorkerPool::new(q.clone(), 2).run(
            {
                let calls = Arc::clone(&calls);
                move |k: u32| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match k {
                            1 => Err(format!("attempt {n} failed")),
                            _ => Ok(Requeue::After(Duration::from_secs(10))),
                        }
                    }
                }
            },
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(5 + 10 + 20 + 1)).await;
        assert_eq!(q.num_requeues(&1), 3, "retries after 5, 10 and 20 ms");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            calls.load(Ordering::SeqCst) >= 6,
            "2 first runs, 3 retries, 1 requeue"
        );
        cancel.cancel();
        let report = run.await.expect("pool");
        assert!(
            report.dropped.contains(&1) && report.dropped.contains(&2),
            "{report:?}"
        );
    }

    /// A pool over `keys` ready keys whose handler takes `work` per key, counting completions.
    fn slow_pool(
        keys: u32,
        workers: usize,
        work: Duration,
    ) -> (
        WorkQueue<u32>,
        Arc<AtomicU32>,
        CancellationToken,
        tokio::task::JoinHandle<DrainReport<u32>>,
    ) {
        let q = queue();
        for k in 0..keys {
            q.add(&k);
        }
        let done = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let run = tokio::spawn(
            WorkerPool::new(q.clone(), workers)
                .drain_grace(Duration::from_secs(5))
                .run(
                    {
                        let done = Arc::clone(&done);
                        move |_k: u32| {
                            let done = Arc::clone(&done);
                            async move {
                                tokio::time::sleep(work).await;
                                done.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, String>(Requeue::Never)
                            }
                        }
                    },
                    cancel.clone(),
                ),
        );
        (q, done, cancel, run)
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_pool_finishes_in_flight_keys_and_starts_no_more() {
        let (q, done, cancel, run) = slow_pool(20, 3, Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // 3 keys done at 100 ms, 3 more in flight since then.
        cancel.cancel();
        let report = run.await.expect("pool");
        assert!(report.completed, "{report:?}");
        assert!(report.unfinished.is_empty());
        assert_eq!(
            done.load(Ordering::SeqCst),
            6,
            "only the in-flight keys finished"
        );
        let mut dropped = report.dropped;
        dropped.sort_unstable();
        assert_eq!(
            dropped,
            (6..20).collect::<Vec<_>>(),
            "the backlog, never started"
        );
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_keys_past_the_grace_period_are_reported_unfinished() {
        let (_q, done, cancel, run) = slow_pool(4, 2, Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(1)).await;
        cancel.cancel();
        let report = run.await.expect("pool");
        assert!(!report.completed);
        let mut unfinished = report.unfinished;
        unfinished.sort_unstable();
        assert_eq!(unfinished, vec![0, 1]);
        assert_eq!(report.dropped.len(), 2);
        assert_eq!(done.load(Ordering::SeqCst), 0);
    }
}
