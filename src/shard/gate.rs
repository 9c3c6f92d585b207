//! What the engines and the coordinator share at run time: which buckets may start reconciles
//! (admission), how many reconciles of each bucket are in flight, which buckets the caches must
//! hold (the scope the watches follow) and which they do hold (synced).
//!
//! A bucket counts as held only through a list that completed after the bucket last joined the
//! scope: each report names the scope generation it was made for, and a bucket that left and
//! came back is not ready on a report older than its return (however stale the report).
//!
//! Admission and release race without a lock: [`ShardGate::admit`] counts the reconcile in,
//! then checks the bucket is still active; the coordinator deactivates a bucket, then reads
//! its count ([`ShardGate::is_idle`]). With sequentially consistent atomics one of them sees
//! the other, so a released bucket never has a reconcile that started after its count read
//! zero.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::buckets::{BUCKETS, Bucket, BucketSet, bucket_of};

/// The buckets the caches must hold, numbered so a watch can tell a new scope from one it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The buckets.
    pub buckets: BucketSet,
    /// Increases with every change; 0 until the coordinator's first round.
    pub generation: u64,
}

/// Called with buckets that just became active, so the engine queues their keys (events of
/// those keys were dropped while the bucket was not ours yet), or that were just released, so
/// what is kept about their sessions is forgotten.
pub type OnBuckets = Box<dyn Fn(BucketSet) + Send + Sync>;

/// Shared between the coordinator, the watches and [`crate::engine::handle`]; cheap to clone.
#[derive(Clone)]
pub struct ShardGate {
    inner: Arc<Inner>,
}

struct Inner {
    active: [AtomicBool; BUCKETS],
    in_flight: [AtomicU32; BUCKETS],
    /// Woken when a deactivated bucket's last reconcile ends, or a watch synced a scope.
    wake: Notify,
    scope: watch::Sender<Scope>,
    /// What each registered watch holds, and when each bucket last joined the scope.
    synced: Mutex<Synced>,
    on_acquired: OnceLock<OnBuckets>,
    on_released: OnceLock<OnBuckets>,
    dropped: prometheus::IntCounter,
}

/// The watches' reports and the scope generations they are judged against.
struct Synced {
    /// Per registered watch: the scope generation it last reported for, and the buckets its
    /// cache held then (each listed by a list that completed at or after that generation's
    /// scope was published).
    reports: Vec<(u64, BucketSet)>,
    /// Per bucket: the generation of the scope it last joined (0: never in scope).
    joined_at: [u64; BUCKETS],
}

/// A reconcile counted in flight for its bucket until dropped.
pub struct InFlight {
    gate: ShardGate,
    bucket: Bucket,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gate.finish(self.bucket);
    }
}

/// A watch's registration: report each scope it synced.
#[derive(Clone)]
pub struct WatchSlot {
    gate: ShardGate,
    index: usize,
}

impl WatchSlot {
    /// Following the scope of `generation`, the watch's cache holds `buckets`, each listed by
    /// a list that completed after that bucket last joined the scope the watch follows.
    pub fn synced(&self, generation: u64, buckets: BucketSet) {
        self.gate.inner.synced.lock().reports[self.index] = (generation, buckets);
        self.gate.inner.wake.notify_one();
    }
}

impl ShardGate {
    /// A gate with nothing active and no scope yet; refused keys are counted in `dropped`.
    pub fn new(dropped: prometheus::IntCounter) -> Self {
        ShardGate {
            inner: Arc::new(Inner {
                active: std::array::from_fn(|_| AtomicBool::new(false)),
                in_flight: std::array::from_fn(|_| AtomicU32::new(0)),
                wake: Notify::new(),
                scope: watch::Sender::new(Scope {
                    buckets: BucketSet::EMPTY,
                    generation: 0,
                }),
                synced: Mutex::new(Synced {
                    reports: Vec::new(),
                    joined_at: [0; BUCKETS],
                }),
                on_acquired: OnceLock::new(),
                on_released: OnceLock::new(),
                dropped,
            }),
        }
    }

    /// Counts a reconcile of a key in `namespace` in, if its bucket is active; `None` (and the
    /// key counted as dropped) otherwise.
    pub fn admit(&self, namespace: &str) -> Option<InFlight> {
        let bucket = bucket_of(namespace);
        let index = bucket.index();
        if self.inner.active[index].load(Ordering::SeqCst) {
            self.inner.in_flight[index].fetch_add(1, Ordering::SeqCst);
            if self.inner.active[index].load(Ordering::SeqCst) {
                return Some(InFlight {
                    gate: self.clone(),
                    bucket,
                });
            }
            self.finish(bucket);
        }
        self.inner.dropped.inc();
        None
    }

    /// Whether reconciles of `namespace`'s keys may start here.
    pub fn owns(&self, namespace: &str) -> bool {
        self.inner.active[bucket_of(namespace).index()].load(Ordering::SeqCst)
    }

    fn finish(&self, bucket: Bucket) {
        let index = bucket.index();
        if self.inner.in_flight[index].fetch_sub(1, Ordering::SeqCst) == 1
            && !self.inner.active[index].load(Ordering::SeqCst)
        {
            self.inner.wake.notify_one();
        }
    }

    /// Makes exactly `buckets` admit reconciles.
    pub fn set_active(&self, buckets: BucketSet) {
        for bucket in Bucket::all() {
            self.inner.active[bucket.index()].store(buckets.contains(bucket), Ordering::SeqCst);
        }
    }

    /// Whether no reconcile of `bucket` is in flight.
    pub fn is_idle(&self, bucket: Bucket) -> bool {
        self.inner.in_flight[bucket.index()].load(Ordering::SeqCst) == 0
    }

    /// Resolves once a deactivated bucket became idle or a watch synced (or at once if that
    /// happened since the last call).
    pub async fn changed(&self) {
        self.inner.wake.notified().await;
    }

    /// Publishes the buckets the caches must hold (a new generation if they changed).
    pub fn set_scope(&self, buckets: BucketSet) {
        self.inner.scope.send_if_modified(|scope| {
            if scope.buckets == buckets && scope.generation > 0 {
                return false;
            }
            let joining = buckets.difference(&scope.buckets);
            scope.buckets = buckets;
            scope.generation += 1;
            let mut synced = self.inner.synced.lock();
            for bucket in joining.iter() {
                synced.joined_at[bucket.index()] = scope.generation;
            }
            true
        });
    }

    /// Follows the scope (the first one has generation 1).
    pub fn subscribe(&self) -> watch::Receiver<Scope> {
        self.inner.scope.subscribe()
    }

    /// Registers a watch whose cache follows the scope; it holds nothing until it reports.
    pub fn register_watch(&self) -> WatchSlot {
        let mut synced = self.inner.synced.lock();
        synced.reports.push((0, BucketSet::EMPTY));
        WatchSlot {
            gate: self.clone(),
            index: synced.reports.len() - 1,
        }
    }

    /// The buckets every registered watch holds through a list that completed after the
    /// bucket last joined the scope (none before a watch registered).
    pub fn cache_ready(&self) -> BucketSet {
        let synced = self.inner.synced.lock();
        if synced.reports.is_empty() {
            return BucketSet::EMPTY;
        }
        synced
            .reports
            .iter()
            .fold(BucketSet::ALL, |all, (generation, held)| {
                let current = held
                    .iter()
                    .filter(|bucket| synced.joined_at[bucket.index()] <= *generation)
                    .collect();
                all.intersection(&current)
            })
    }

    /// Sets what [`acquired`](Self::acquired) calls (once; the engine, when it starts).
    pub fn on_acquired(&self, callback: OnBuckets) {
        let _ = self.inner.on_acquired.set(callback);
    }

    /// `buckets` just became active: the engine queues their keys.
    pub fn acquired(&self, buckets: BucketSet) {
        if let Some(callback) = self.inner.on_acquired.get() {
            callback(buckets);
        }
    }

    /// Sets what [`released`](Self::released) calls (once, at start-up).
    pub fn on_released(&self, callback: OnBuckets) {
        let _ = self.inner.on_released.set(callback);
    }

    /// `buckets` were just released (no reconcile of theirs is in flight).
    pub fn released(&self, buckets: BucketSet) {
        if let Some(callback) = self.inner.on_released.get() {
            callback(buckets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> ShardGate {
        ShardGate::new(prometheus::IntCounter::new("dropped", "test").unwrap())
    }

    #[test]
    fn only_active_buckets_admit_and_in_flight_work_is_counted() {
        let gate = gate();
        let bucket = bucket_of("team-a");
        assert!(gate.admit("team-a").is_none());
        gate.set_active([bucket].into_iter().collect());
        let first = gate.admit("team-a").expect("admitted");
        let second = gate.admit("team-a").expect("admitted");
        assert!(!gate.is_idle(bucket));
        gate.set_active(BucketSet::EMPTY);
        assert!(
            gate.admit("team-a").is_none(),
            "released: nothing new starts"
        );
        drop(first);
        assert!(!gate.is_idle(bucket));
        drop(second);
        assert!(gate.is_idle(bucket));
        assert_eq!(gate.inner.dropped.get(), 2);
    }

    #[tokio::test]
    async fn the_last_reconcile_of_a_released_bucket_wakes_the_coordinator() {
        let gate = gate();
        gate.set_active(BucketSet::ALL);
        let running = gate.admit("ns").expect("admitted");
        gate.set_active(BucketSet::EMPTY);
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.changed().await }
        });
        drop(running);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
    }

    #[test]
    fn the_caches_hold_what_every_watch_synced() {
        let gate = gate();
        assert_eq!(gate.cache_ready(), BucketSet::EMPTY);
        let a = gate.register_watch();
        let b = gate.register_watch();
        let low: BucketSet = (0..128).map(Bucket).collect();
        gate.set_scope(BucketSet::ALL);
        a.synced(1, BucketSet::ALL);
        assert_eq!(gate.cache_ready(), BucketSet::EMPTY, "b has nothing yet");
        b.synced(1, low);
        assert_eq!(gate.cache_ready(), low);
    }

    #[test]
    fn a_bucket_that_left_and_came_back_waits_for_a_list_made_after_its_return() {
        let gate = gate();
        let watch = gate.register_watch();
        let low: BucketSet = (0..128).map(Bucket).collect();
        gate.set_scope(BucketSet::ALL); // generation 1
        watch.synced(1, BucketSet::ALL);
        assert_eq!(gate.cache_ready(), BucketSet::ALL);
        // The upper half leaves and comes back before the watch reports again: its report
        // of generation 1 still names them, but they were dropped since.
        gate.set_scope(low); // 2
        gate.set_scope(BucketSet::ALL); // 3
        assert_eq!(
            gate.cache_ready(),
            low,
            "a stale report makes nothing ready"
        );
        watch.synced(2, low);
        assert_eq!(gate.cache_ready(), low);
        watch.synced(3, BucketSet::ALL);
        assert_eq!(gate.cache_ready(), BucketSet::ALL);
    }

    #[test]
    fn a_scope_change_is_a_new_generation() {
        let gate = gate();
        let scope = gate.subscribe();
        assert_eq!(scope.borrow().generation, 0);
        gate.set_scope(BucketSet::ALL);
        assert_eq!(
            *scope.borrow(),
            Scope {
                buckets: BucketSet::ALL,
                generation: 1
            }
        );
        gate.set_scope(BucketSet::ALL);
        assert_eq!(scope.borrow().generation, 1, "unchanged");
        gate.set_scope(BucketSet::EMPTY);
        assert_eq!(scope.borrow().generation, 2);
    }
}
