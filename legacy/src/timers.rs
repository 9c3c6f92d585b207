//! When to look at a key again: the deadlines the handler asked for, and retries of keys whose
//! handling failed.
//!
//! [`Timers`] keeps at most one deadline per key; scheduling a key that already has one keeps the
//! earlier of the two. [`Timers::next`] waits until the earliest deadline is due and hands that
//! key over. A failing key is rescheduled with its own exponential backoff ([`RetryDelays`]),
//! which grows with each consecutive failure and is forgotten on success.
//!
//! This is not a work queue: nothing is handed over before it is due, and a key handed over is
//! handled inline by whoever took it. Events still reach the handler directly, in arrival order;
//! the timers only replace "recheck everything every few seconds" with "recheck what is due".
//!
//! Clones share the same timers. Time is tokio's, so tests run on paused time.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::retry::RetryDelays;

/// Deadlines by key, earliest first; see the module docs.
pub struct Timers<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Timers<K> {
    fn clone(&self) -> Self {
        Timers {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<K> {
    state: Mutex<State<K>>,
    /// Woken when a deadline earlier than every other one is set.
    earlier: Notify,
    retry_initial: Duration,
    retry_max: Duration,
}

/// A deadline, made unique by a sequence number (keys due at the same instant keep the order
/// they were scheduled in).
type Slot = (Instant, u64);

struct State<K> {
    by_time: BTreeMap<Slot, K>,
    by_key: HashMap<K, Slot>,
    sequence: u64,
    /// Backoff of keys whose last handling failed.
    failing: HashMap<K, RetryDelays>,
}

impl<K: Clone + Eq + Hash> Timers<K> {
    /// Empty timers; failed keys are retried after delays growing from `retry_initial` to
    /// `retry_max`.
    pub fn new(retry_initial: Duration, retry_max: Duration) -> Self {
        Timers {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    by_time: BTreeMap::new(),
                    by_key: HashMap::new(),
                    sequence: 0,
                    failing: HashMap::new(),
                }),
                earlier: Notify::new(),
                retry_initial,
                retry_max,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<K>> {
        // Every critical section leaves the maps consistent, so a panic elsewhere cannot have
        // left them half-updated.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at `key` again after `delay`, unless it is already due sooner.
    pub fn schedule(&self, key: K, delay: Duration) {
        self.schedule_at(key, Instant::now() + delay);
    }

    /// Looks at `key` again at `at`, unless it is already due sooner.
    pub fn schedule_at(&self, key: K, at: Instant) {
        let mut state = self.state();
        if let Some(&(current, sequence)) = state.by_key.get(&key) {
            if current <= at {
                return;
            }
            state.by_time.remove(&(current, sequence));
        }
        state.sequence += 1;
        let slot = (at, state.sequence);
        let earliest = state
            .by_time
            .first_key_value()
            .is_none_or(|(s, _)| slot < *s);
        state.by_time.insert(slot, key.clone());
        state.by_key.insert(key, slot);
        drop(state);
        if earliest {
            self.shared.earlier.notify_one();
        }
    }

    /// Records that handling `key` failed and schedules it after its next backoff delay (which
    /// doubles with each consecutive failure); returns that delay.
    pub fn retry(&self, key: K) -> Duration {
        let delay = {
            let mut state = self.state();
            state
                .failing
                .entry(key.clone())
                .or_insert_with(|| {
                    RetryDelays::new(self.shared.retry_initial, self.shared.retry_max)
                })
                .next_delay()
        };
        self.schedule(key, delay);
        delay
    }

    /// Records that handling `key` succeeded: its next failure starts from the initial delay.
    pub fn succeeded(&self, key: &K) {
        self.state().failing.remove(key);
    }

    /// Whether the last handling of `key` failed.
    pub fn is_failing(&self, key: &K) -> bool {
        self.state().failing.contains_key(key)
    }

    /// Drops the deadline of `key` (its handling starts now, or it is gone); returns whether
    /// it had one.
    pub fn cancel(&self, key: &K) -> bool {
        let mut state = self.state();
        match state.by_key.remove(key) {
            Some(slot) => {
                state.by_time.remove(&slot);
                true
            }
            None => false,
        }
    }

    /// Forgets `key` entirely: its deadline and its backoff (the object was deleted).
    pub fn forget(&self, key: &K) {
        self.cancel(key);
        self.state().failing.remove(key);
    }

    /// The deadline of `key`, if it has one.
    pub fn deadline(&self, key: &K) -> Option<Instant> {
        self.state().by_key.get(key).map(|(at, _)| *at)
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.state().by_key.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns a key whose deadline is at or before `now` (the earliest first).
    pub fn pop_due(&self, now: Instant) -> Option<K> {
        let mut state = self.state();
        let entry = state.by_time.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let key = entry.remove();
        state.by_key.remove(&key);
        Some(key)
    }

    /// Waits until the earliest deadline is due, then removes and returns its key.
    ///
    /// Cancel safe: a call dropped before it returns removes nothing. Meant for a single
    /// consumer; with several, each due key still goes to exactly one of them.
    pub async fn next(&self) -> K {
        loop {
            let woken = self.shared.earlier.notified();
            let earliest = {
                let state = self.state();
                state.by_time.first_key_value().map(|((at, _), _)| *at)
            };
            match earliest {
                Some(at) if at <= Instant::now() => {
                    if let Some(key) = self.pop_due(Instant::now()) {
                        return key;
                    }
                }
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn timers() -> Timers<&'static str> {
        Timers::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn keys_come_out_when_due_earliest_first() {
        let timers = timers();
        timers.schedule("late", Duration::from_secs(3));
        timers.schedule("early", Duration::from_secs(1));
        let started = Instant::now();
        assert_eq!(timers.next().await, "early");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(timers.next().await, "late");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(timers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_has_one_deadline_and_the_earliest_wins() {
        let timers = timers();
        timers.schedule("a", Duration::from_secs(5));
        timers.schedule("a", Duration::from_secs(2));
        timers.schedule("a", Duration::from_secs(9));
        assert_eq!(timers.len(), 1);
        let started = Instant::now();
        assert_eq!(timers.next().await, "a");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(timers.is_empty(), "the later deadlines were not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_comes_out_before_it_is_due() {
        let timers = timers();
        timers.schedule("a", Duration::from_secs(1));
        let mut next = Box::pin(timers.next());
        assert!((&mut next).now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!((&mut next).now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(next.await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_a_waiting_consumer() {
        let timers = timers();
        timers.schedule("late", Duration::from_secs(60));
        let consumer = {
            let timers = timers.clone();
            tokio::spawn(async move {
                let key = timers.next().await;
                (key, Instant::now())
            })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        timers.schedule("soon", Duration::from_secs(1));
        let (key, at) = consumer.await.expect("consumer");
        assert_eq!(key, "soon");
        assert_eq!(at - started, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_waiting_on_empty_timers_wakes_for_the_first_key() {
        let timers = timers();
        let consumer = {
            let timers = timers.clone();
            tokio::spawn(async move { timers.next().await })
        };
        tokio::task::yield_now().await;
        timers.schedule("a", Duration::ZERO);
        assert_eq!(consumer.await.expect("consumer"), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_keys_never_come_out() {
        let timers = timers();
        timers.schedule("a", Duration::from_secs(1));
        timers.schedule("b", Duration::from_secs(2));
        assert!(timers.cancel(&"a"));
        assert!(!timers.cancel(&"a"));
        assert_eq!(timers.next().await, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_waiting_next_removes_nothing() {
        let timers = timers();
        timers.schedule("a", Duration::from_secs(1));
        assert!(timers.next().now_or_never().is_none());
        assert_eq!(timers.len(), 1);
        assert!(timers.deadline(&"a").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_key_and_success_resets_them() {
        let timers = timers();
        let first = timers.retry("a");
        assert!(timers.is_failing(&"a"));
        assert!(first <= Duration::from_millis(120), "{first:?}");
        let _ = timers.next().await;
        let second = timers.retry("a");
        let _ = timers.next().await;
        let third = timers.retry("a");
        assert!(third > first, "grows: {first:?} then {third:?}");
        assert!(second >= Duration::from_millis(160), "{second:?}");

        // Another key's backoff is its own.
        let other = timers.retry("b");
        assert!(other <= Duration::from_millis(120), "{other:?}");

        timers.succeeded(&"a");
        assert!(!timers.is_failing(&"a"));
        timers.cancel(&"a");
        let again = timers.retry("a");
        assert!(again <= Duration::from_millis(120), "reset: {again:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_does_not_postpone_an_earlier_deadline() {
        let timers = timers();
        timers.schedule("a", Duration::ZERO);
        timers.retry("a");
        assert_eq!(timers.deadline(&"a"), Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_a_key_drops_its_deadline_and_backoff() {
        let timers = timers();
        timers.retry("a");
        timers.forget(&"a");
        assert!(timers.is_empty());
        assert!(!timers.is_failing(&"a"));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_due_together_come_out_in_scheduling_order() {
        let timers = timers();
        let at = Instant::now();
        for key in ["c", "a", "b"] {
            timers.schedule_at(key, at);
        }
        let mut out = Vec::new();
        while let Some(key) = timers.pop_due(Instant::now()) {
            out.push(key);
        }
        assert_eq!(out, vec!["c", "a", "b"]);
    }
}
