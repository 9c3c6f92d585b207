//! One lock per key, so that the loops of different kinds (and the timers) never handle the same
//! key at the same time. A key's lock exists only while someone holds it or waits for it: the
//! map does not grow with every key ever handled.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// Locks by key; see the module docs. Clones share the same locks.
pub struct KeyLocks<K> {
    slots: Arc<Mutex<HashMap<K, Slot>>>,
}

impl<K> Clone for KeyLocks<K> {
    fn clone(&self) -> Self {
        KeyLocks {
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<K> Default for KeyLocks<K> {
    fn default() -> Self {
        KeyLocks {
            slots: Arc::default(),
        }
    }
}

struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Holders and waiters; the slot is removed when the last of them is done.
    users: usize,
}

/// Holds a key's lock until dropped.
#[must_use = "the key is unlocked when this guard is dropped"]
pub struct KeyGuard<K: Eq + Hash> {
    // Fields drop in order: the lock is released before the slot is given back.
    _held: OwnedMutexGuard<()>,
    _user: User<K>,
}

/// One holder or waiter of a slot; gives the slot back on drop, also when waiting is abandoned.
struct User<K: Eq + Hash> {
    slots: Arc<Mutex<HashMap<K, Slot>>>,
    key: K,
}

impl<K: Eq + Hash> Drop for User<K> {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.users -= 1;
            if slot.users == 0 {
                slots.remove(&self.key);
            }
        }
    }
}

fn lock<K>(slots: &Mutex<HashMap<K, Slot>>) -> MutexGuard<'_, HashMap<K, Slot>> {
    // Critical sections only adjust a counter or an entry: nothing is left half-done by a panic.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Clone + Eq + Hash> KeyLocks<K> {
    /// Waits for `key`'s lock. Cancel safe: abandoning the wait gives the slot back.
    pub async fn lock(&self, key: K) -> KeyGuard<K> {
        let mutex = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                lock: Arc::default(),
                users: 0,
            });
            slot.users += 1;
            Arc::clone(&slot.lock)
        };
        let user = User {
            slots: Arc::clone(&self.slots),
            key,
        };
        let held = mutex.lock_owned().await;
        KeyGuard {
            _held: held,
            _user: user,
        }
    }

    /// Number of keys currently locked or waited for.
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Whether no key is locked or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_key_is_held_by_one_at_a_time() {
        let locks = KeyLocks::default();
        let held = locks.lock("a").await;
        let mut waiting = Box::pin(locks.lock("a"));
        assert!((&mut waiting).now_or_never().is_none(), "a is held");
        let other = locks.lock("b").now_or_never();
        assert!(other.is_some(), "b is independent");
        drop(held);
        assert!(waiting.now_or_never().is_some(), "a is free again");
    }

    #[tokio::test]
    async fn the_map_forgets_keys_nobody_holds_or_waits_for() {
        let locks = KeyLocks::default();
        let a = locks.lock("a").await;
        let b = locks.lock("b").await;
        assert_eq!(locks.len(), 2);
        drop(a);
        assert_eq!(locks.len(), 1);
        drop(b);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_keeps_the_key_until_it_is_done() {
        let locks = KeyLocks::default();
        let held = locks.lock("a").await;
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _guard = locks.lock("a").await;
            }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            locks.len() <= 1,
            "at most the waiter's slot is left: {}",
            locks.len()
        );
        waiting.await.expect("waiter");
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn abandoning_a_wait_gives_the_slot_back() {
        let locks = KeyLocks::default();
        let held = locks.lock("a").await;
        assert!(locks.lock("a").now_or_never().is_none());
        drop(held);
        assert!(locks.is_empty(), "the abandoned waiter left nothing behind");
    }
}
