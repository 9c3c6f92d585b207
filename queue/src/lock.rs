//! The lock around the queue's state: a spinlock that yields the thread after a short spin.
//!
//! Why not a parking mutex: the critical sections are a few dozen nanoseconds and a serial
//! add → get → done takes the lock three times. A spinlock's unlock is a plain store, where a
//! parking mutex's is an atomic read-modify-write (it must see parked waiters); and a
//! contended hand-over between two cores needs no futex call. A waiter spins briefly with
//! exponential backoff, then yields to the OS on every further attempt, so a preempted holder
//! gets its core back instead of being starved by spinners.

use spinning_top::RawSpinlock;
use spinning_top::relax::Relax;

/// A mutex over `T` with the [`SpinThenYield`] policy.
pub(crate) type Lock<T> = spinning_top::lock_api::Mutex<RawSpinlock<SpinThenYield>, T>;

/// The guard of a [`Lock`].
pub(crate) type LockGuard<'a, T> =
    spinning_top::lock_api::MutexGuard<'a, RawSpinlock<SpinThenYield>, T>;

/// Spin 1, 2, 4, … 32 times (63 pause hints in all), then yield the thread on each attempt.
#[derive(Debug, Default)]
pub(crate) struct SpinThenYield {
    step: u8,
}

impl Relax for SpinThenYield {
    fn relax(&mut self) {
        if self.step < 6 {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn threads_contending_for_the_lock_lose_no_update() {
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*lock.lock(), 40_000);
    }
}
