//! The cloneable, async queue handle.

use std::hash::BuildHasher as _;
use std::hash::Hash;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::backoff::{BackoffPolicy, ExponentialBackoffPolicy};
use crate::config::{ConfigError, Priority, QueueConfig};
use crate::core::{Core, Hashed, KeyHasher, Observations, Wake};
use crate::lock::{Lock, LockGuard};
use crate::metrics::{NoopMetrics, QueueMetrics};
use crate::precise::PreciseTimer;

struct Shared<K> {
    /// On cache lines of its own: the lock word changes hands all the time, while the fields
    /// below are read outside the lock on every call.
    core: CachePadded<Lock<Core<K>>>,
    /// The core's key hasher: keys are hashed before taking the lock.
    hasher: KeyHasher,
    /// The core's metrics, fed after the lock is released (see [`Observations`]).
    metrics: Arc<dyn QueueMetrics>,
    /// `metrics.enabled()`.
    measured: bool,
    /// The core's epoch, to read its clock before taking the lock.
    epoch: tokio::time::Instant,
    /// Parked `get`s wait here.
    ready: Notify,
    /// The timekeeper (one parked `get`) also waits here for an earlier deadline.
    timer: Notify,
    /// The timekeeper's sub-millisecond wake-up (tokio's timer has 1 ms ticks).
    precise: PreciseTimer,
    /// `shutdown_with_drain` waits here for the queue to become idle.
    drained: Notify,
}

/// Who takes the lock: waiting workers are served before producers (see [`Lock`]).
#[derive(Clone, Copy)]
enum Role {
    /// An add.
    Producer,
    /// A worker taking, finishing or forgetting a key.
    Worker,
    /// Anything else.
    Other,
}

/// What a drain left undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport<K> {
    /// Keys that were queued (never started, or asked to re-run), delayed or waiting for the
    /// bucket, and will not be processed.
    pub dropped: Vec<K>,
    /// Keys still being processed when the grace period ended (empty if the drain finished).
    pub unfinished: Vec<K>,
    /// Adds refused because the queue was shutting down.
    pub rejected_adds: u64,
    /// Whether the work the shutdown waits for (in flight and queued for
    /// [`WorkQueue::shutdown_with_drain`], in flight only for [`WorkQueue::shutdown_in_flight`])
    /// finished within the grace period.
    pub completed: bool,
}

/// A deduplicating, delaying, rate-limited work queue with priority lanes.
///
/// A cheap [`Clone`] handle: all clones share one queue. Keys are generic.
///
/// # Semantics (invariants)
/// * **Dedup**: one entry per key. Adding a queued key is a no-op (a [`Priority::High`] add
///   promotes a queued low-priority key). A key handed out by [`get`](Self::get) is never handed
///   to a second worker before [`done`](Self::done); adding it meanwhile makes it run exactly once
///   more after `done`.
/// * **Delays**: [`add_after`](Self::add_after) never blocks; the earliest deadline wins; an
///   immediate add cancels a pending delay (the key runs once, not twice as in client-go).
///   Any `Duration` is accepted (saturating, no clamp, no panic).
/// * **Rate limiting**: [`add_rate_limited`](Self::add_rate_limited) waits the per-key backoff for
///   the number of retries that actually *fired* (events that run the key in between do not
///   escalate it), capped at [`QueueConfig::max_delay`], then for a token of the global bucket.
///   The bucket is never exceeded: due retries take tokens one each, oldest due first, however
///   long the line. [`forget`](Self::forget) resets the count. A key waiting for a token is
///   already due: a delayed add leaves it in line, an immediate add runs it at once.
/// * **Priority**: while both lanes hold keys, one get in `low_priority_every` serves the low lane,
///   so a resync backlog always progresses and fresh events are not stuck behind it.
/// * **Fairness** (opt-in, [`QueueConfig::fairness`] + [`with_tenant`](Self::with_tenant)):
///   within a lane, ready keys are served round-robin across tenants.
/// * **Shutdown**: [`shutdown`](Self::shutdown) refuses new adds and drops pending delays; ready
///   keys are still handed out, then [`get`](Self::get) returns `None`.
///   [`shutdown_in_flight`](Self::shutdown_in_flight) also drops the ready keys at once and only
///   waits for the keys being processed.
///
/// Timers are driven by parked `get` calls (no background task): at least one worker must be
/// waiting in `get` for delayed keys to become ready on time.
///
/// # Panics
/// A queue holding more than 2³² distinct keys at once panics. Methods must be called inside a
/// tokio runtime with the `time` driver enabled (they read tokio's clock).
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
    /// 1 + the slot of the key this handle's last `get` returned (0: none): lets `done` skip
    /// the table lookup when a worker finishes the key it was just handed. A hint only, checked
    /// under the lock; each clone has its own.
    last_get: AtomicU64,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            last_get: AtomicU64::new(0),
        }
    }
}

impl<K> std::fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue").finish_non_exhaustive()
    }
}

/// A waiter parked in `get`. Leaving normally ([`Parked::resign`]) just unregisters; dropping it
/// (the `get` future was cancelled while parked) also hands the timekeeper role to another
/// parked waiter, so timers keep firing.
struct Parked<'a, K: Clone + Eq + Hash> {
    shared: &'a Shared<K>,
    timekeeper: bool,
    resigned: bool,
}

impl<K: Clone + Eq + Hash> Parked<'_, K> {
    fn resign(mut self) {
        self.resigned = true;
        let mut core = self.shared.core.lock_for_worker();
        core.idle -= 1;
        if self.timekeeper {
            core.timekeeper = false;
        }
    }
}

impl<K: Clone + Eq + Hash> Drop for Parked<'_, K> {
    fn drop(&mut self) {
        if self.resigned {
            return;
        }
        let mut core = self.shared.core.lock_for_worker();
        core.idle -= 1;
        if self.timekeeper {
            core.timekeeper = false;
            hand_off_timekeeper(self.shared, &core);
        }
    }
}

/// Wakes a parked waiter to take the timekeeper role if timers are pending and nobody holds it.
fn hand_off_timekeeper<K: Clone + Eq + Hash>(shared: &Shared<K>, core: &Core<K>) {
    if !core.timekeeper && core.idle > 0 && core.next_wake().is_some() {
        shared.ready.notify_one();
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// A queue with no metrics and no tenant function.
    pub fn new(config: QueueConfig) -> Result<Self, ConfigError> {
        Self::build(config, Arc::new(NoopMetrics), None, None)
    }

    /// A queue reporting to `metrics`.
    pub fn with_metrics(
        config: QueueConfig,
        metrics: Arc<dyn QueueMetrics>,
    ) -> Result<Self, ConfigError> {
        Self::build(config, metrics, None, None)
    }

    /// A queue whose keys belong to tenants (e.g. a namespace); used when `config.fairness` is on.
    /// Tenants are compared by a 64-bit hash of the name (a collision merges two tenants).
    pub fn with_tenant<F>(
        config: QueueConfig,
        metrics: Arc<dyn QueueMetrics>,
        tenant: F,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&K) -> Option<&str> + Send + Sync + 'static,
    {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::default();
        let f = move |k: &K| tenant(k).map_or(0, |t| hasher.hash_one(t));
        Self::build(config, metrics, Some(Box::new(f)), None)
    }

    /// A queue with a custom per-key [`BackoffPolicy`] (the config's backoff fields are ignored).
    pub fn with_policy(
        config: QueueConfig,
        metrics: Arc<dyn QueueMetrics>,
        policy: Arc<dyn BackoffPolicy>,
    ) -> Result<Self, ConfigError> {
        Self::build(config, metrics, None, Some(policy))
    }

    fn build(
        config: QueueConfig,
        metrics: Arc<dyn QueueMetrics>,
        tenant: Option<crate::core::TenantFn<K>>,
        policy: Option<Arc<dyn BackoffPolicy>>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = policy.unwrap_or_else(|| {
            Arc::new(ExponentialBackoffPolicy::new(
                config.backoff_base,
                config.backoff_cap,
                config.backoff_jitter,
            ))
        });
        let hasher = KeyHasher::default();
        let measured = metrics.enabled();
        let core = Core::new(
            &config,
            hasher.clone(),
            policy,
            tenant,
            Arc::clone(&metrics),
        );
        let epoch = core.epoch();
        Ok(Self {
            shared: Arc::new(Shared {
                core: CachePadded::new(Lock::new(core)),
                hasher,
                metrics,
                measured,
                epoch,
                ready: Notify::new(),
                timer: Notify::new(),
                precise: PreciseTimer::default(),
                drained: Notify::new(),
            }),
            last_get: AtomicU64::new(0),
        })
    }

    fn hashed<'a>(&self, key: &'a K) -> Hashed<'a, K> {
        Hashed {
            key,
            hash: self.shared.hasher.hash_one(key),
        }
    }

    fn wake(&self, wake: Wake, idle: usize, has_timekeeper: bool) {
        if wake.all {
            self.shared.ready.notify_waiters();
            self.shared.timer.notify_waiters();
            self.shared.drained.notify_waiters();
            return;
        }
        for _ in 0..wake.ready.min(idle) {
            self.shared.ready.notify_one();
        }
        if wake.timekeeper {
            if has_timekeeper {
                self.shared.timer.notify_one();
            } else if idle > 0 {
                // A parked waiter takes the timekeeper role.
                self.shared.ready.notify_one();
            }
        }
    }

    /// Runs `f` under the lock taken as `role`, then reports and wakes outside it.
    #[inline]
    fn with_core(&self, role: Role, f: impl FnOnce(&mut Core<K>) -> Wake) {
        let (wake, idle, has_timekeeper, obs) = {
            let lock = &self.shared.core;
            let mut core = match role {
                Role::Producer => lock.lock_for_producer(),
                Role::Worker => lock.lock_for_worker(),
                Role::Other => lock.lock(),
            };
            let wake = f(&mut core);
            let obs = self.shared.measured.then(|| core.take_observations());
            (wake, core.idle, core.timekeeper, obs)
        };
        if let Some(obs) = obs {
            self.report(obs);
        }
        if wake != Wake::default() {
            self.wake(wake, idle, has_timekeeper);
        }
    }

    /// The core's clock, read before taking the lock, when metrics need it.
    #[inline]
    fn metrics_now(&self) -> Option<u64> {
        self.shared
            .measured
            .then(|| crate::core::nanos(self.shared.epoch.elapsed()))
    }

    /// Feeds the metric events of a locked operation to the metrics, outside the lock.
    fn report(&self, obs: Observations) {
        let m = &*self.shared.metrics;
        for _ in 0..obs.adds {
            m.add();
        }
        for _ in 0..obs.retries {
            m.retry();
        }
        if let Some(d) = obs.queue_latency {
            m.queue_latency(d);
        }
        if let Some(d) = obs.work_duration {
            m.work_duration(d);
        }
    }

    /// Adds `key` to the high-priority lane now. No-op if it is already queued; if it is being
    /// processed it runs once more after [`done`](Self::done). Ignored after shutdown.
    pub fn add(&self, key: &K) {
        let key = self.hashed(key);
        self.with_core(Role::Producer, |c| c.add(key, Priority::High));
    }

    /// Adds `key` to the given lane (see [`Priority`]).
    pub fn add_with(&self, key: &K, priority: Priority) {
        let key = self.hashed(key);
        self.with_core(Role::Producer, |c| c.add(key, priority));
    }

    /// Adds `key` once `delay` has passed; earliest deadline wins. Never blocks.
    pub fn add_after(&self, key: &K, delay: Duration) {
        let key = self.hashed(key);
        self.with_core(Role::Producer, |c| c.add_after(key, delay));
    }

    /// Adds `key` after its per-key backoff (capped at `max_delay`) and then a token of the
    /// global bucket (never bypassed).
    pub fn add_rate_limited(&self, key: &K) {
        let key = self.hashed(key);
        self.with_core(Role::Producer, |c| c.add_rate_limited(key));
    }

    /// Resets the retry count of `key`.
    pub fn forget(&self, key: &K) {
        let key = self.hashed(key);
        self.shared.core.lock_for_worker().forget(key);
    }

    /// Retries of `key` that fired since the last [`forget`](Self::forget).
    pub fn num_requeues(&self, key: &K) -> u32 {
        let key = self.hashed(key);
        self.shared.core.lock_for_worker().num_requeues(key)
    }

    /// Marks `key` as finished; re-queues it if it was added while processing.
    pub fn done(&self, key: &K) {
        let hint = self.last_get.load(Ordering::Relaxed).checked_sub(1);
        let hint = hint.and_then(|i| u32::try_from(i).ok());
        let now = self.metrics_now();
        self.with_core(Role::Worker, |c| c.done(key, hint, now));
    }

    /// Number of ready keys (client-go `Len`).
    pub fn len(&self) -> usize {
        self.shared.core.lock().len()
    }

    /// Whether no key is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.core.lock().shutting_down
    }

    /// Reports in-flight work to the metrics (client-go does this every 500 ms).
    pub fn update_unfinished_work(&self) {
        let work = self.shared.core.lock().unfinished_work();
        if let Some((unfinished, longest)) = work {
            self.shared.metrics.unfinished_work(unfinished, longest);
        }
    }

    /// Keys the queue holds a slot for (tests: forgotten keys must not linger).
    #[cfg(test)]
    pub(crate) fn remembered_keys(&self) -> usize {
        self.shared.core.lock().remembered_keys()
    }

    /// Panics if the core's bookkeeping disagrees with its slots (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.shared.core.lock().check_invariants();
    }

    /// Waits for the next ready key and marks it processing; call [`done`](Self::done) after.
    /// Returns `None` once the queue is shut down and nothing is left to hand out.
    ///
    /// Cancellation safe: dropping the future loses no key (a key is only taken when the future
    /// completes) and passes any wake-up it received on to another waiter. Consumes tokio's
    /// cooperative budget, so a busy consumer yields to its runtime periodically.
    pub async fn get(&self) -> Option<K> {
        // Take part in tokio's cooperative budget, like tokio's own channels: a worker looping
        // on a queue that always has keys still yields now and then, so timers and I/O on its
        // thread keep being driven.
        tokio::task::coop::consume_budget().await;
        let shared = &*self.shared;
        // Whether this call held the timekeeper role: leaving with a key then hands it over.
        let mut was_timekeeper = false;
        loop {
            if let Ok(key) = self.attempt(was_timekeeper) {
                return key;
            }
            let mut ready = pin!(shared.ready.notified());
            ready.as_mut().enable();
            let (wake_at, parked) = {
                let mut core = match self.attempt(was_timekeeper) {
                    Ok(key) => return key,
                    Err(core) => core,
                };
                core.idle += 1;
                let wake_at = match core.next_wake() {
                    Some(at) if !core.timekeeper => {
                        core.timekeeper = true;
                        Some(core.instant_at(at))
                    }
                    _ => None,
                };
                (
                    wake_at,
                    Parked {
                        shared,
                        timekeeper: wake_at.is_some(),
                        resigned: false,
                    },
                )
            };
            match wake_at {
                Some(at) => {
                    was_timekeeper = true;
                    // A notify_one sent before this point is kept as a permit, so none is lost.
                    let timer = shared.timer.notified();
                    tokio::select! {
                        _ = ready => {}
                        _ = timer => {}
                        _ = tokio::time::sleep_until(at) => {}
                        _ = shared.precise.sleep_until(at) => {}
                    }
                }
                None => ready.await,
            }
            parked.resign();
        }
    }

    /// One attempt of `get` under the lock: a key (`Ok(Some)`), the end (`Ok(None)`), or, when
    /// nothing is ready, the lock still held (to park atomically with the check).
    #[inline]
    fn attempt(&self, was_timekeeper: bool) -> Result<Option<K>, LockGuard<'_, Core<K>>> {
        let shared = &*self.shared;
        let now = self.metrics_now();
        let mut core = shared.core.lock_for_worker();
        let (key, more) = core.try_pop(now);
        let obs = shared.measured.then(|| core.take_observations());
        match key {
            Some((key, idx)) => {
                let idle = core.idle;
                if was_timekeeper {
                    hand_off_timekeeper(shared, &core);
                }
                drop(core);
                if let Some(obs) = obs {
                    self.report(obs);
                }
                self.last_get.store(u64::from(idx) + 1, Ordering::Relaxed);
                for _ in 0..more.min(idle) {
                    shared.ready.notify_one();
                }
                Ok(Some(key))
            }
            None => {
                // Rare: timers fired into keys still being processed (counted as adds).
                if let Some(obs) = obs {
                    self.report(obs);
                }
                if core.is_drained() {
                    Ok(None)
                } else {
                    Err(core)
                }
            }
        }
    }

    /// Stops intake: later adds are ignored, pending delays are dropped; ready keys are still
    /// handed out, then [`get`](Self::get) returns `None`.
    pub fn shutdown(&self) {
        self.with_core(Role::Other, Core::shutdown);
    }

    /// [`shutdown`](Self::shutdown), then waits up to `grace` for in-flight and ready keys to be
    /// processed. After `grace`, ready keys are dropped and `get` returns `None` at once.
    /// Reports what was dropped and what was still running.
    pub async fn shutdown_with_drain(&self, grace: Duration) -> DrainReport<K> {
        self.shutdown();
        self.wait_idle_then_stop(grace).await
    }

    /// Stops at once: later adds are ignored, pending delays *and ready keys* are dropped and
    /// [`get`](Self::get) returns `None`; then waits up to `grace` for the keys being processed
    /// to be [`done`](Self::done) (a re-run they ask for is dropped). For a consumer that must
    /// not start new work, e.g. because what it decides from is no longer kept up to date.
    /// Reports the ready keys that were never started as dropped.
    pub async fn shutdown_in_flight(&self, grace: Duration) -> DrainReport<K> {
        self.shared.core.lock().stop();
        self.wake(
            Wake {
                all: true,
                ..Wake::default()
            },
            0,
            false,
        );
        self.wait_idle_then_stop(grace).await
    }

    /// Waits up to `grace` for nothing to be ready or in flight, then stops the queue and
    /// reports. Cancellation safe: dropping it early leaves the queue shut down, not stopped.
    async fn wait_idle_then_stop(&self, grace: Duration) -> DrainReport<K> {
        let deadline = tokio::time::Instant::now() + grace;
        let completed = loop {
            let mut drained = pin!(self.shared.drained.notified());
            drained.as_mut().enable();
            if self.shared.core.lock().is_idle() {
                break true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break self.shared.core.lock().is_idle();
            }
        };
        let report = {
            let mut core = self.shared.core.lock();
            let unfinished = core.stop();
            DrainReport {
                dropped: std::mem::take(&mut core.dropped),
                unfinished,
                rejected_adds: core.rejected,
                completed,
            }
        };
        self.wake(
            Wake {
                all: true,
                ..Wake::default()
            },
            0,
            false,
        );
        report
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use futures::FutureExt as _;

    use super::*;
    use crate::config::BucketConfig;

    /// A queue without the global bucket (per-key backoff only), for tests in this crate.
    pub(crate) fn queue() -> WorkQueue<u32> {
        WorkQueue::new(QueueConfig {
            bucket: None,
            ..QueueConfig::default()
        })
        .expect("valid config")
    }

    /// Polls `get` once: `Some(key)` if one is ready now.
    fn try_get<K: Clone + Eq + Hash + Send + Sync + 'static>(q: &WorkQueue<K>) -> Option<K> {
        // Unconstrained: an exhausted coop budget must not read as "nothing ready".
        tokio::task::coop::unconstrained(q.get())
            .now_or_never()
            .flatten()
    }

    fn drain_now(q: &WorkQueue<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(k) = try_get(q) {
            q.done(&k);
            out.push(k);
        }
        out
    }

    #[tokio::test]
    async fn adding_a_queued_key_is_a_no_op() {
        let q = queue();
        q.add(&1);
        q.add(&1);
        q.add(&2);
        assert_eq!(q.len(), 2);
        assert_eq!(drain_now(&q), vec![1, 2]);
    }

    #[tokio::test]
    async fn add_while_processing_reruns_once_after_done() {
        let q = queue();
        q.add(&7);
        let k = try_get(&q).expect("ready");
        q.add(&7);
        q.add(&7);
        assert_eq!(
            try_get(&q),
            None,
            "a processing key is not handed to a second worker"
        );
        q.done(&k);
        assert_eq!(try_get(&q), Some(7));
        q.done(&7);
        assert_eq!(try_get(&q), None);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_holds_the_key_until_its_deadline() {
        let q = queue();
        q.add_after(&1, Duration::from_secs(5));
        assert_eq!(try_get(&q), None);
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(try_get(&q), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(try_get(&q), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_wins() {
        let q = queue();
        q.add_after(&1, Duration::from_secs(10));
        q.add_after(&1, Duration::from_secs(2));
        q.add_after(&1, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(try_get(&q), Some(1));
        q.done(&1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            try_get(&q),
            None,
            "the later deadlines were merged into the earliest"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn immediate_add_cancels_a_pending_delay() {
        let q = queue();
        q.add_after(&1, Duration::from_secs(1));
        q.add(&1);
        assert_eq!(try_get(&q), Some(1));
        q.done(&1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(try_get(&q), None, "processed once, not twice");
    }

    #[tokio::test(start_paused = true)]
    async fn huge_delays_are_accepted_without_panic() {
        let q = queue();
        q.add_after(&1, Duration::MAX);
        q.add_after(&2, Duration::from_secs(u64::MAX / 4));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(try_get(&q), None);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_worker_wakes_for_a_delayed_key() {
        let q = queue();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add_after(&3, Duration::from_millis(250));
        assert_eq!(worker.await.expect("worker"), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_per_fired_retry_and_forget_resets_it() {
        let q = queue();
        let base = Duration::from_millis(5);
        for n in 0..4u32 {
            q.add_rate_limited(&1);
            let delay = base * 2u32.pow(n);
            tokio::time::advance(delay - Duration::from_millis(1)).await;
            assert_eq!(try_get(&q), None, "retry {n} fired early");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(try_get(&q), Some(1));
            assert_eq!(q.num_requeues(&1), n + 1);
            q.done(&1);
        }
        q.forget(&1);
        assert_eq!(q.num_requeues(&1), 0);
        q.add_rate_limited(&1);
        tokio::time::advance(base).await;
        assert_eq!(try_get(&q), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn spurious_events_do_not_escalate_the_backoff() {
        let q = queue();
        q.add_rate_limited(&1);
        for _ in 0..100 {
            q.add(&1);
            let k = try_get(&q).expect("event runs the key");
            q.add_rate_limited(&k);
            q.done(&k);
        }
        assert_eq!(q.num_requeues(&1), 0);
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(try_get(&q), Some(1), "still the first 5 ms backoff");
        assert_eq!(q.num_requeues(&1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_throttles_retries_after_the_burst() {
        let cfg = QueueConfig {
            bucket: Some(BucketConfig {
                qps: 10.0,
                burst: 2,
            }),
            max_delay: Duration::from_secs(3600),
            ..QueueConfig::default()
        };
        let q = WorkQueue::new(cfg).expect("valid");
        for k in 0..4u32 {
            q.add_rate_limited(&k);
        }
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(drain_now(&q).len(), 2, "the burst");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(drain_now(&q).len(), 1, "one token per 100 ms");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(drain_now(&q).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_failures_take_the_bucket_rate_oldest_first_past_the_max_delay() {
        let cfg = QueueConfig {
            bucket: Some(BucketConfig {
                qps: 10.0,
                burst: 100,
            }),
            max_delay: Duration::from_secs(30),
            ..QueueConfig::default()
        };
        let q = WorkQueue::new(cfg).expect("valid");
        for k in 0..10_000u32 {
            q.add_rate_limited(&k);
        }
        tokio::time::advance(Duration::from_millis(5)).await;
        let mut served = drain_now(&q);
        assert_eq!(served.len(), 100, "the burst, no more");
        let mut ticks = 0;
        while served.len() < 10_000 {
            tokio::time::advance(Duration::from_millis(100)).await;
            ticks += 1;
            let now = drain_now(&q);
            assert_eq!(
                now.len(),
                1,
                "one token per 100 ms, also past the max delay"
            );
            served.extend(now);
        }
        assert_eq!(
            ticks, 9_900,
            "the last retry waits N / qps (990 s), not the max delay"
        );
        assert_eq!(served, (0..10_000).collect::<Vec<_>>(), "oldest first");
    }

    #[tokio::test]
    async fn low_priority_backlog_progresses_under_a_high_priority_stream() {
        let q = queue();
        for k in 0..100 {
            q.add_with(&k, Priority::Low);
        }
        let mut low_served = 0;
        for i in 0..800u32 {
            q.add(&(10_000 + i));
            let k = try_get(&q).expect("ready");
            q.done(&k);
            if k < 100 {
                low_served += 1;
            }
        }
        assert_eq!(low_served, 100, "one in eight gets serves the low lane");
    }

    #[tokio::test]
    async fn fresh_keys_overtake_the_low_priority_backlog() {
        let q = queue();
        for k in 0..1000 {
            q.add_with(&k, Priority::Low);
        }
        q.add(&5000);
        assert_eq!(try_get(&q), Some(5000));
    }

    #[tokio::test]
    async fn high_priority_add_promotes_a_queued_low_key_once() {
        let q = queue();
        for k in 0..10 {
            q.add_with(&k, Priority::Low);
        }
        q.add(&9);
        assert_eq!(try_get(&q), Some(9));
        q.done(&9);
        q.add_with(&9, Priority::Low);
        let order = drain_now(&q);
        assert_eq!(
            order,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            "the stale entry does not let 9 jump ahead"
        );
    }

    #[tokio::test]
    async fn fairness_serves_tenants_round_robin() {
        let cfg = QueueConfig {
            fairness: true,
            bucket: None,
            ..QueueConfig::default()
        };
        let q: WorkQueue<(String, u32)> =
            WorkQueue::with_tenant(cfg, Arc::new(NoopMetrics), |k: &(String, u32)| {
                Some(k.0.as_str())
            })
            .expect("valid");
        for i in 0..10_000 {
            q.add(&("big".to_owned(), i));
        }
        q.add(&("small".to_owned(), 0));
        let first = try_get(&q).expect("ready");
        let second = try_get(&q).expect("ready");
        assert!(
            first.0 == "small" || second.0 == "small",
            "the single key waits at most one slot: {first:?} {second:?}"
        );
    }

    #[tokio::test]
    async fn a_reused_slot_never_inherits_the_stale_lane_entry_of_its_previous_key() {
        let cfg = QueueConfig {
            fairness: true,
            bucket: None,
            ..QueueConfig::default()
        };
        let q: WorkQueue<u32> = WorkQueue::with_tenant(cfg, Arc::new(NoopMetrics), |k: &u32| {
            Some(if *k >= 100 { "b" } else { "a" })
        })
        .expect("valid");
        for k in [3, 1, 2] {
            q.add_with(&k, Priority::Low);
        }
        q.add(&1); // promoted: its low-lane entry is stale now
        assert_eq!(try_get(&q), Some(1));
        q.done(&1); // idle: the next new key evicts it
        q.add_with(&101, Priority::Low);
        q.add_with(&102, Priority::Low);
        assert_eq!(
            drain_now(&q),
            vec![3, 101, 2, 102],
            "round-robin a, b, a, b"
        );
    }

    #[tokio::test]
    async fn shutdown_refuses_adds_and_get_returns_none_once_drained() {
        let q = queue();
        q.add(&1);
        q.add_after(&2, Duration::from_secs(1));
        q.shutdown();
        q.add(&3);
        assert_eq!(try_get(&q), Some(1));
        q.done(&1);
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_with_drain_reports_what_it_dropped() {
        let q = queue();
        for k in 0..3 {
            q.add(&k);
        }
        q.add_after(&9, Duration::from_secs(60));
        let busy = try_get(&q).expect("ready");
        let report = q.shutdown_with_drain(Duration::from_secs(1)).await;
        assert!(!report.completed);
        assert_eq!(report.unfinished, vec![busy]);
        let dropped: HashSet<u32> = report.dropped.into_iter().collect();
        assert_eq!(dropped, HashSet::from([1, 2, 9]));
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_in_flight_drops_ready_keys_and_waits_for_running_ones() {
        let q = queue();
        for k in 0..3 {
            q.add(&k);
        }
        q.add_after(&9, Duration::from_secs(60));
        let busy = try_get(&q).expect("ready");
        let worker = tokio::spawn({
            let q = q.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                q.add(&busy); // refused: the queue is shutting down
                q.done(&busy);
            }
        });
        let report = q.shutdown_in_flight(Duration::from_secs(1)).await;
        worker.await.expect("worker");
        assert!(report.completed, "{report:?}");
        assert!(report.unfinished.is_empty());
        let dropped: HashSet<u32> = report.dropped.into_iter().collect();
        assert_eq!(dropped, HashSet::from([1, 2, 9]));
        assert_eq!(report.rejected_adds, 1);
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_with_drain_finishes_in_flight_and_ready_work() {
        let q = queue();
        for k in 0..50 {
            q.add(&k);
        }
        let processed = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..2 {
            let (q, processed) = (q.clone(), Arc::clone(&processed));
            workers.push(tokio::spawn(async move {
                while let Some(k) = q.get().await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    processed.fetch_add(1, Ordering::Relaxed);
                    q.done(&k);
                }
            }));
        }
        let report = q.shutdown_with_drain(Duration::from_secs(60)).await;
        assert!(report.completed);
        assert!(report.dropped.is_empty() && report.unfinished.is_empty());
        for w in workers {
            w.await.expect("worker");
        }
        assert_eq!(processed.load(Ordering::Relaxed), 50);
    }

    #[tokio::test]
    async fn dropping_a_pending_get_loses_no_key() {
        let q = queue();
        assert!(
            tokio::task::coop::unconstrained(q.get())
                .now_or_never()
                .is_none()
        );
        q.add(&1);
        assert_eq!(q.get().await, Some(1));
    }

    #[derive(Default)]
    struct Recorded {
        adds: AtomicU64,
        depth: AtomicU64,
        latencies: AtomicU64,
        works: AtomicU64,
        retries: AtomicU64,
    }

    impl QueueMetrics for Recorded {
        fn add(&self) {
            self.adds.fetch_add(1, Ordering::Relaxed);
        }
        fn depth(&self, depth: usize) {
            self.depth.store(depth as u64, Ordering::Relaxed);
        }
        fn queue_latency(&self, _: Duration) {
            self.latencies.fetch_add(1, Ordering::Relaxed);
        }
        fn work_duration(&self, _: Duration) {
            self.works.fetch_add(1, Ordering::Relaxed);
        }
        fn retry(&self) {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_follow_client_go_semantics() {
        let m = Arc::new(Recorded::default());
        let q = WorkQueue::with_metrics(
            QueueConfig {
                bucket: None,
                ..QueueConfig::default()
            },
            m.clone(),
        )
        .expect("valid");
        q.add(&1);
        q.add(&1); // dedup hit: not an add
        assert_eq!(m.adds.load(Ordering::Relaxed), 1);
        assert_eq!(m.depth.load(Ordering::Relaxed), 1);
        let k = try_get(&q).expect("ready");
        assert_eq!(m.depth.load(Ordering::Relaxed), 0);
        q.add(&1); // dirty while processing: counted, depth +1
        assert_eq!(m.adds.load(Ordering::Relaxed), 2);
        assert_eq!(m.depth.load(Ordering::Relaxed), 1);
        q.done(&k);
        assert_eq!(m.works.load(Ordering::Relaxed), 1);
        let k = try_get(&q).expect("re-run");
        q.done(&k);
        assert_eq!(m.latencies.load(Ordering::Relaxed), 2);
        q.add_after(&2, Duration::from_secs(1));
        q.add_rate_limited(&3);
        assert_eq!(m.retries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn concurrent_workers_never_share_a_key_and_lose_nothing() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let q = queue();
            let in_flight = Arc::new(parking_lot::Mutex::new(HashSet::new()));
            let runs = Arc::new(AtomicU64::new(0));
            let mut workers = Vec::new();
            for _ in 0..4 {
                let (q, in_flight, runs) = (q.clone(), Arc::clone(&in_flight), Arc::clone(&runs));
                workers.push(tokio::spawn(async move {
                    while let Some(k) = q.get().await {
                        assert!(in_flight.lock().insert(k), "key {k} handed to two workers");
                        tokio::task::yield_now().await;
                        assert!(in_flight.lock().remove(&k));
                        runs.fetch_add(1, Ordering::Relaxed);
                        q.done(&k);
                    }
                }));
            }
            let mut producers = Vec::new();
            for p in 0..3u32 {
                let q = q.clone();
                producers.push(tokio::spawn(async move {
                    for i in 0..20_000u32 {
                        let k = (i * 7 + p) % 500;
                        match i % 3 {
                            0 => q.add(&k),
                            1 => q.add_with(&k, Priority::Low),
                            _ => q.add_after(&k, Duration::from_micros(u64::from(i % 50))),
                        }
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                }));
            }
            for p in producers {
                p.await.expect("producer");
            }
            // Every key was added at least once: each must run at least once after its last add.
            let report = q.shutdown_with_drain(Duration::from_secs(60)).await;
            for w in workers {
                w.await.expect("worker");
            }
            assert!(report.completed, "{report:?}");
            assert!(report.unfinished.is_empty());
            assert!(runs.load(Ordering::Relaxed) >= 500 - report.dropped.len() as u64);
        });
    }

    /// The add storm on more producer threads than cores: a worker waiting for the lock to take
    /// or finish a key is served before all but the producers already past the check, and the
    /// workers complete every item they were promised.
    #[test]
    fn under_an_add_storm_a_waiting_worker_is_served_within_one_add_per_producer() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let producers = cores * 2;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let q = {
            let _guard = rt.enter();
            queue()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let adders: Vec<_> = (0..producers as u32)
            .map(|p| {
                let (q, stop, handle) = (q.clone(), stop.clone(), rt.handle().clone());
                std::thread::spawn(move || {
                    let _guard = handle.enter();
                    let mut k = p;
                    while !stop.load(Ordering::Relaxed) {
                        q.add(&(k % 10_000));
                        k = k.wrapping_add(1);
                    }
                })
            })
            .collect();
        let completed = rt.block_on(async {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    tokio::spawn(async move {
                        for _ in 0..20_000 {
                            let k = q.get().await.expect("a key");
                            q.done(&k);
                        }
                        20_000u64
                    })
                })
                .collect();
            let mut completed = 0;
            for w in workers {
                completed += w.await.expect("worker");
            }
            completed
        });
        stop.store(true, Ordering::Relaxed);
        for p in adders {
            p.join().expect("producer");
        }
        assert_eq!(completed, 40_000);
        q.shared.core.contention.assert_overtaken_at_most(producers);
    }

    mod model {
        //! Model-based test: random operation sequences applied to the queue and to an
        //! obviously-correct model (plain collections, linear scans), which must agree on every
        //! `get`, `len` and `num_requeues`, in four set-ups: with or without the global bucket,
        //! with or without tenant fairness. A few hot keys interact; colder keys keep arriving,
        //! so idle keys are evicted and their slots reused all along. After every step the
        //! queue's bookkeeping is checked and the keys it holds must be exactly those the model
        //! needs. Independently of the model, the retries that fired are checked against the
        //! bucket's rate.
        use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

        use proptest::prelude::*;

        use super::*;

        /// Keys 0..4 are hot, 4..KEYS cold.
        const KEYS: u8 = 16;
        const LOW_EVERY: u32 = 3;
        /// The bucket of the set-ups that have one: a token every 100 ms, 2 at most.
        const PERIOD_MS: u64 = 100;
        const BURST: u64 = 2;

        #[derive(Debug, Clone)]
        enum Op {
            Add(u8),
            AddLow(u8),
            AddAfter(u8, u16),
            AddRateLimited(u8),
            Get,
            Done(u8),
            Forget(u8),
            Advance(u16),
            Shutdown,
        }

        fn key() -> impl Strategy<Value = u8> + Clone {
            prop_oneof![3 => 0u8..4, 1 => 4..KEYS]
        }

        fn op() -> impl Strategy<Value = Op> {
            let k = key();
            prop_oneof![
                4 => k.clone().prop_map(Op::Add),
                3 => k.clone().prop_map(Op::AddLow),
                3 => (k.clone(), 0u16..40).prop_map(|(k, d)| Op::AddAfter(k, d)),
                4 => k.clone().prop_map(Op::AddRateLimited),
                6 => Just(Op::Get),
                4 => any::<u8>().prop_map(Op::Done),
                1 => k.prop_map(Op::Forget),
                3 => (0u16..120).prop_map(Op::Advance),
                1 => Just(Op::Shutdown),
            ]
        }

        fn tenant(k: u8) -> u8 {
            k % 3
        }

        /// A ready lane: one FIFO, or one FIFO per tenant served round-robin (a tenant is in the
        /// rotation while it has keys, and joins at the back).
        #[derive(Default)]
        struct ModelLane {
            fair: bool,
            fifo: VecDeque<u8>,
            tenants: BTreeMap<u8, VecDeque<u8>>,
            rotation: VecDeque<u8>,
        }

        impl ModelLane {
            fn push(&mut self, k: u8) {
                if !self.fair {
                    return self.fifo.push_back(k);
                }
                let q = self.tenants.entry(tenant(k)).or_default();
                if q.is_empty() {
                    self.rotation.push_back(tenant(k));
                }
                q.push_back(k);
            }

            fn pop(&mut self) -> Option<u8> {
                if !self.fair {
                    return self.fifo.pop_front();
                }
                let t = self.rotation.pop_front()?;
                let q = self.tenants.get_mut(&t)?;
                let k = q.pop_front();
                if q.is_empty() {
                    self.tenants.remove(&t);
                } else {
                    self.rotation.push_back(t);
                }
                k
            }

            fn remove(&mut self, k: u8) -> bool {
                if !self.fair {
                    let pos = self.fifo.iter().position(|&x| x == k);
                    return pos.and_then(|p| self.fifo.remove(p)).is_some();
                }
                let t = tenant(k);
                let Some(q) = self.tenants.get_mut(&t) else {
                    return false;
                };
                let Some(pos) = q.iter().position(|&x| x == k) else {
                    return false;
                };
                q.remove(pos);
                if q.is_empty() {
                    self.tenants.remove(&t);
                    self.rotation.retain(|&x| x != t);
                }
                true
            }

            fn contains(&self, k: u8) -> bool {
                self.fifo.contains(&k) || self.tenants.values().any(|q| q.contains(&k))
            }

            fn len(&self) -> usize {
                self.fifo.len() + self.tenants.values().map(VecDeque::len).sum::<usize>()
            }
        }

        /// A token bucket in milliseconds: `burst` tokens, one more every `PERIOD_MS`.
        struct ModelBucket {
            /// Credit in ms; a token costs `PERIOD_MS`.
            credit: u64,
            at: u64,
        }

        impl ModelBucket {
            fn take(&mut self, now: u64) -> bool {
                self.credit = (self.credit + (now - self.at)).min(BURST * PERIOD_MS);
                self.at = now;
                if self.credit >= PERIOD_MS {
                    self.credit -= PERIOD_MS;
                    true
                } else {
                    false
                }
            }
        }

        struct Model {
            now: u64,
            high: ModelLane,
            low: ModelLane,
            streak: u32,
            processing: BTreeSet<u8>,
            /// Processing keys added meanwhile, with the lane they want (true = low).
            dirty: BTreeMap<u8, bool>,
            /// key -> (deadline ms, insertion seq, rate-limited)
            timers: BTreeMap<u8, (u64, u64, bool)>,
            seq: u64,
            /// Due retries waiting for a token, oldest first.
            throttled: VecDeque<u8>,
            bucket: Option<ModelBucket>,
            requeues: HashMap<u8, u32>,
            shutting_down: bool,
        }

        impl Model {
            fn new(fair: bool, bucket: bool) -> Self {
                let lane = || ModelLane {
                    fair,
                    ..ModelLane::default()
                };
                Model {
                    now: 0,
                    high: lane(),
                    low: lane(),
                    streak: 0,
                    processing: BTreeSet::new(),
                    dirty: BTreeMap::new(),
                    timers: BTreeMap::new(),
                    seq: 0,
                    throttled: VecDeque::new(),
                    bucket: bucket.then_some(ModelBucket {
                        credit: BURST * PERIOD_MS,
                        at: 0,
                    }),
                    requeues: HashMap::new(),
                    shutting_down: false,
                }
            }

            fn queued(&self, k: u8) -> bool {
                self.high.contains(k) || self.low.contains(k)
            }

            /// Keys the queue must remember: anything pending, or a retry count to keep.
            fn remembered(&self) -> usize {
                (0..KEYS)
                    .filter(|&k| {
                        self.queued(k)
                            || self.processing.contains(&k)
                            || self.timers.contains_key(&k)
                            || self.throttled.contains(&k)
                            || self.requeues.get(&k).is_some_and(|&n| n > 0)
                    })
                    .count()
            }

            fn make_ready(&mut self, k: u8, low: bool) {
                if self.processing.contains(&k) {
                    self.dirty.entry(k).or_insert(low);
                } else if low {
                    self.low.push(k);
                } else {
                    self.high.push(k);
                }
            }

            fn add(&mut self, k: u8, low: bool) {
                if self.shutting_down {
                    return;
                }
                if self.queued(k) {
                    if !low && self.low.remove(k) {
                        self.high.push(k);
                    }
                    return;
                }
                if let Some(l) = self.dirty.get_mut(&k) {
                    if !low {
                        *l = false;
                    }
                    return;
                }
                self.timers.remove(&k);
                self.throttled.retain(|&x| x != k);
                self.make_ready(k, low);
            }

            fn schedule(&mut self, k: u8, delay: u64, rl: bool) {
                if self.shutting_down {
                    return;
                }
                if delay == 0 && !rl {
                    return self.add(k, false);
                }
                if self.queued(k) || self.dirty.contains_key(&k) || self.throttled.contains(&k) {
                    return;
                }
                let at = self.now + delay;
                if let Some(&(old, _, old_rl)) = self.timers.get(&k) {
                    if old <= at {
                        return;
                    }
                    self.seq += 1;
                    self.timers.insert(k, (at, self.seq, old_rl || rl));
                } else {
                    self.seq += 1;
                    self.timers.insert(k, (at, self.seq, rl));
                }
            }

            fn add_rate_limited(&mut self, k: u8) {
                let n = self.requeues.get(&k).copied().unwrap_or(0);
                let delay = 5u64.saturating_mul(1u64 << n.min(40)).min(300_000);
                self.schedule(k, delay, true);
            }

            fn fire(&mut self, k: u8, rl: bool) {
                if rl {
                    *self.requeues.entry(k).or_default() += 1;
                }
                self.make_ready(k, false);
            }

            fn get(&mut self) -> Option<u8> {
                let mut due: Vec<(u64, u64, u8, bool)> = self
                    .timers
                    .iter()
                    .filter(|(_, t)| t.0 <= self.now)
                    .map(|(&k, &(at, seq, rl))| (at, seq, k, rl))
                    .collect();
                due.sort();
                for (_, _, k, rl) in due {
                    self.timers.remove(&k);
                    if rl && self.bucket.is_some() {
                        self.throttled.push_back(k);
                    } else {
                        self.fire(k, rl);
                    }
                }
                while let Some(&k) = self.throttled.front() {
                    let now = self.now;
                    if !self.bucket.as_mut().is_some_and(|b| b.take(now)) {
                        break;
                    }
                    self.throttled.pop_front();
                    self.fire(k, true);
                }
                if self.low.len() + self.high.len() == 0 {
                    return None;
                }
                let use_low =
                    self.low.len() > 0 && (self.high.len() == 0 || self.streak + 1 >= LOW_EVERY);
                let k = if use_low {
                    self.streak = 0;
                    self.low.pop()?
                } else {
                    self.streak += 1;
                    self.high.pop()?
                };
                self.processing.insert(k);
                Some(k)
            }

            fn done(&mut self, k: u8) {
                if self.processing.remove(&k)
                    && let Some(low) = self.dirty.remove(&k)
                {
                    if low {
                        self.low.push(k);
                    } else {
                        self.high.push(k);
                    }
                }
            }

            fn shutdown(&mut self) {
                self.shutting_down = true;
                self.timers.clear();
                self.throttled.clear();
            }
        }

        /// Retries that fired at `times` (ms, in order) never exceed the bucket: within any
        /// window, at most `BURST` plus one per elapsed period.
        fn within_the_bucket(times: &[u64]) -> bool {
            (0..times.len()).all(|i| {
                (i..times.len())
                    .all(|j| (j - i + 1) as u64 <= BURST + (times[j] - times[i]) / PERIOD_MS)
            })
        }

        fn run(fair: bool, bucket: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let cfg = QueueConfig {
                    bucket: bucket.then_some(BucketConfig {
                        qps: 1000.0 / PERIOD_MS as f64,
                        burst: BURST as u32,
                    }),
                    fairness: fair,
                    low_priority_every: LOW_EVERY,
                    ..QueueConfig::default()
                };
                const NAMES: [&str; 3] = ["a", "b", "c"];
                let q: WorkQueue<u8> =
                    WorkQueue::with_tenant(cfg, Arc::new(NoopMetrics), |k: &u8| {
                        Some(NAMES[usize::from(tenant(*k))])
                    })
                    .expect("valid");
                let mut m = Model::new(fair, bucket);
                let mut fired = Vec::new();
                for op in ops {
                    let before: Vec<u32> = (0..KEYS).map(|k| q.num_requeues(&k)).collect();
                    match op {
                        Op::Add(k) => {
                            q.add(&k);
                            m.add(k, false);
                        }
                        Op::AddLow(k) => {
                            q.add_with(&k, Priority::Low);
                            m.add(k, true);
                        }
                        Op::AddAfter(k, d) => {
                            q.add_after(&k, Duration::from_millis(u64::from(d)));
                            m.schedule(k, u64::from(d), false);
                        }
                        Op::AddRateLimited(k) => {
                            q.add_rate_limited(&k);
                            m.add_rate_limited(k);
                        }
                        Op::Get => {
                            let expected = m.get();
                            prop_assert_eq!(try_get(&q), expected);
                        }
                        Op::Done(i) => {
                            if !m.processing.is_empty() {
                                let k = *m
                                    .processing
                                    .iter()
                                    .nth(usize::from(i) % m.processing.len())
                                    .expect("some");
                                q.done(&k);
                                m.done(k);
                            }
                        }
                        Op::Forget(k) => {
                            q.forget(&k);
                            m.requeues.remove(&k);
                        }
                        Op::Advance(ms) => {
                            tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
                            m.now += u64::from(ms);
                        }
                        Op::Shutdown => {
                            q.shutdown();
                            m.shutdown();
                        }
                    }
                    prop_assert_eq!(q.len(), m.high.len() + m.low.len());
                    for k in 0..KEYS {
                        let n = q.num_requeues(&k);
                        prop_assert_eq!(n, m.requeues.get(&k).copied().unwrap_or(0));
                        let new = n.saturating_sub(before[usize::from(k)]);
                        fired.extend(std::iter::repeat_n(m.now, new as usize));
                    }
                    prop_assert_eq!(q.remembered_keys(), m.remembered());
                    q.check_invariants();
                }
                if bucket {
                    prop_assert!(within_the_bucket(&fired), "{fired:?}");
                }
                Ok(())
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn queue_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
                run(false, false, ops)?;
            }

            #[test]
            fn queue_agrees_with_the_model_with_the_bucket_and_fairness(
                fair in any::<bool>(),
                ops in proptest::collection::vec(op(), 1..120),
            ) {
                run(fair, true, ops)?;
            }

            #[test]
            fn queue_agrees_with_the_model_with_fairness(
                ops in proptest::collection::vec(op(), 1..120),
            ) {
                run(true, false, ops)?;
            }
        }
    }
}
