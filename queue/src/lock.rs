//! The lock around the queue's state, and who goes first when it is contended.
//!
//! A parking mutex (`parking_lot`): it spins briefly, then parks the thread, and hands the lock
//! to a parked waiter now and then (eventual fairness). A spinlock whose unlock is a plain
//! store was tried: a serial add → get → done was about 10 ns faster (three unlocks per item
//! without a read-modify-write), the drain no faster within noise, but under the add storm
//! (two producer threads adding flat out beside two workers on two cores) the spinning
//! producers took the CPU and the lock from the workers. Parked waiters leave their core to the
//! holder.
//!
//! A parking mutex alone lets producers starve the workers: the unlock that wakes a parked
//! worker does not hand it the lock, and by the time the worker's thread runs, a producer
//! adding flat out has taken the lock again. Measured (the tests below, on the mutex alone):
//! a waiting worker was overtaken by 16,000 to 394,000 adds before it was served, and under
//! the add storm the workers completed 0.14–0.22× what client-go's did. So the lock knows two
//! roles:
//! * a **worker** ([`Lock::lock_for_worker`]: `get`, `done`, `forget`) that cannot take the lock
//!   at once announces itself; if a producer holds it, the worker spins on a read of the lock
//!   until it looks free, yields its thread a few times (the holder may have lost its core),
//!   and only then parks; if another worker holds it, the mutex's own spin-then-park is used
//!   (it backs off more, which a drain by many workers needs);
//! * a **producer** ([`Lock::lock_for_producer`]: the adds) does not try for the lock while a
//!   worker is announced: it spins a little, then yields its thread until no worker waits. In
//!   the operator the producers are watch tasks: a held-back one blocks its runtime thread for
//!   at most the waiting workers' critical sections.
//!
//! Invariant: once a worker has announced itself, at most one more lock entry per producer
//! thread (those already past the check) comes before it; the work a queue exists for is
//! never starved by the events that feed it. Uncontended, a worker pays one `try_lock` and a
//! producer one load of the waiting count; both also read the last holder's role, which is
//! written only when it changes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_utils::CachePadded;

/// The guard of a [`Lock`].
pub(crate) type LockGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// Spins of a producer held back by a waiting worker before it yields its thread.
const SPINS_BEFORE_YIELD: u32 = 16;

/// Spins of an announced worker waiting for the lock to look free.
const WORKER_SPINS: u32 = 256;

/// Then, yields of its thread (to a holder that lost its core) before it parks in the mutex.
const WORKER_YIELDS: u32 = 16;

/// How the lock is contended, read without it.
struct Arbitration {
    /// Workers waiting for the lock right now; producers hold back while it is not zero.
    workers_waiting: AtomicU32,
    /// Whether the last to take the lock was a producer (written under the lock, and only
    /// when it changes, so the line stays shared while the holders do not change roles).
    held_by_producer: AtomicBool,
}

/// A mutex over `T` that serves waiting workers before producers.
pub(crate) struct Lock<T> {
    inner: parking_lot::Mutex<T>,
    /// Who waits and who holds, on cache lines of their own: on the lines of the lock and
    /// the state it guards, which change hands on every entry, these reads halved the drain
    /// of 100k keys by two workers (5 M against 10 M items/s).
    arbitration: CachePadded<Arbitration>,
    #[cfg(test)]
    pub(crate) contention: tests::Contention,
}

impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            inner: parking_lot::Mutex::new(value),
            arbitration: CachePadded::new(Arbitration {
                workers_waiting: AtomicU32::new(0),
                held_by_producer: AtomicBool::new(false),
            }),
            #[cfg(test)]
            contention: tests::Contention::default(),
        }
    }

    /// For anything that is neither a worker taking or finishing work nor an add.
    #[inline]
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        self.inner.lock()
    }

    /// For a worker: served before any producer that arrives while it waits.
    #[inline]
    pub(crate) fn lock_for_worker(&self) -> LockGuard<'_, T> {
        let guard = match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.wait_as_worker(),
        };
        if self.arbitration.held_by_producer.load(Ordering::Relaxed) {
            self.arbitration
                .held_by_producer
                .store(false, Ordering::Relaxed);
        }
        guard
    }

    #[cold]
    fn wait_as_worker(&self) -> LockGuard<'_, T> {
        // SeqCst with the producers' load: a producer whose check comes after this increment
        // in the single total order sees it.
        self.arbitration
            .workers_waiting
            .fetch_add(1, Ordering::SeqCst);
        #[cfg(test)]
        let entered = self.contention.producer_entries();
        let guard = if self.arbitration.held_by_producer.load(Ordering::Relaxed) {
            // No new producer takes the lock now: it is free as soon as this producer is done,
            // so spinning beats parking (a futex wake and a context switch per item). Spin on a
            // read (the line stays shared) and try only when it looks free; if the holder lost
            // its core, yield ours to it a few times; park only after that.
            (0..WORKER_SPINS)
                .find_map(|_| {
                    std::hint::spin_loop();
                    if self.inner.is_locked() {
                        None
                    } else {
                        self.inner.try_lock()
                    }
                })
                .or_else(|| {
                    (0..WORKER_YIELDS).find_map(|_| {
                        std::thread::yield_now();
                        self.inner.try_lock()
                    })
                })
                .unwrap_or_else(|| self.inner.lock())
        } else {
            // Another worker holds it (workers are not held back by each other): the mutex's
            // own spin, yield and park backs off more, which a drain of many workers needs.
            self.inner.lock()
        };
        self.arbitration
            .workers_waiting
            .fetch_sub(1, Ordering::SeqCst);
        #[cfg(test)]
        self.contention.worker_served(entered);
        guard
    }

    /// For an add: holds back while a worker waits for the lock.
    #[inline]
    pub(crate) fn lock_for_producer(&self) -> LockGuard<'_, T> {
        if self.arbitration.workers_waiting.load(Ordering::SeqCst) != 0 {
            self.hold_back();
        }
        let guard = self.inner.lock();
        if !self.arbitration.held_by_producer.load(Ordering::Relaxed) {
            self.arbitration
                .held_by_producer
                .store(true, Ordering::Relaxed);
        }
        #[cfg(test)]
        self.contention.producer_entered();
        guard
    }

    #[cold]
    fn hold_back(&self) {
        let mut spins = 0;
        while self.arbitration.workers_waiting.load(Ordering::SeqCst) != 0 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                // The worker may need this core to run: its thread was parked in the mutex.
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// What a test reads of the lock's arbitration.
    #[derive(Default)]
    pub(crate) struct Contention {
        producer_entries: AtomicU64,
        /// Most producer entries that came before a waiting worker was served.
        most_overtaken: AtomicU64,
        /// Workers that had to wait.
        workers_waited: AtomicU64,
    }

    impl Contention {
        pub(super) fn producer_entries(&self) -> u64 {
            self.producer_entries.load(Ordering::SeqCst)
        }

        fn workers_waited(&self) -> u64 {
            self.workers_waited.load(Ordering::SeqCst)
        }

        pub(super) fn producer_entered(&self) {
            self.producer_entries.fetch_add(1, Ordering::SeqCst);
        }

        /// Panics unless some worker waited and none was overtaken by more producer entries
        /// than `producers`.
        pub(crate) fn assert_overtaken_at_most(&self, producers: usize) {
            assert!(
                self.workers_waited.load(Ordering::SeqCst) > 0,
                "the workers never met a held lock: the test measured nothing"
            );
            let overtaken = self.most_overtaken.load(Ordering::SeqCst);
            assert!(
                overtaken <= producers as u64,
                "a waiting worker was overtaken by {overtaken} producer entries \
                 ({producers} producers)"
            );
        }

        pub(super) fn worker_served(&self, entries_when_announced: u64) {
            let overtaken = self.producer_entries() - entries_when_announced;
            self.most_overtaken.fetch_max(overtaken, Ordering::SeqCst);
            self.workers_waited.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Producers take the lock flat out on more threads than the machine has cores; a waiting
    /// worker must still come before all but the producers already past the check.
    #[test]
    fn a_waiting_worker_is_overtaken_at_most_once_per_producer() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let producers = cores * 2;
        let lock = Arc::new(Lock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let adders: Vec<_> = (0..producers)
            .map(|_| {
                let (lock, stop) = (lock.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        *lock.lock_for_producer() += 1;
                    }
                })
            })
            .collect();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    // 20k entries, and on until the workers have met a held lock often enough
                    // to measure: on a starved machine (the producers seldom scheduled) a fixed
                    // count could pass without one wait. Bounded, so a test that cannot measure
                    // fails rather than hangs.
                    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    let mut entries = 0u32;
                    while entries < 20_000
                        || (lock.contention.workers_waited() < 100
                            && std::time::Instant::now() < give_up)
                    {
                        *lock.lock_for_worker() += 1;
                        entries += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        stop.store(true, Ordering::Relaxed);
        for p in adders {
            p.join().expect("producer");
        }
        lock.contention.assert_overtaken_at_most(producers);
    }
}
