//! The lock around the queue's state.
//!
//! A parking mutex (`parking_lot`): it spins briefly, then parks the thread, and hands the lock
//! to a parked waiter now and then (eventual fairness). A spinlock whose unlock is a plain
//! store was tried: a serial add → get → done was about 10 ns faster (three unlocks per item
//! without a read-modify-write), the drain no faster within noise, but under the add storm
//! (two producer threads adding flat out beside two workers on two cores) the spinning
//! producers took the CPU and the lock from the workers, which completed half as many items
//! (a starvation flag in the spirit of Go's `sync.Mutex` did not help: the waste is CPU, not
//! order). Parked waiters leave their core to the holder.

/// A mutex over `T`.
pub(crate) type Lock<T> = parking_lot::Mutex<T>;

/// The guard of a [`Lock`].
pub(crate) type LockGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
