//! The queue's state machine, synchronous and lock-free of any async concern.
//!
//! Layout (chosen for memory per key and for speed):
//! * every known key lives once, in a slot of a chunked [`Slab`] (`slots`: no doubling slack,
//!   no copy on growth), found through an index-only `hashbrown::HashTable<u32>` — no second
//!   copy of the key anywhere; with metrics on, the time a key became dirty shares the slot's
//!   deadline field and the time it was handed out sits in a parallel slab (8 bytes a key);
//! * ready keys are `u32` slot indices in one of two [`Lane`]s (high / low priority);
//! * delayed keys are entries of a binary heap of `(deadline, slot)` — a hand-rolled heap rather
//!   than `tokio_util::time::DelayQueue`: it costs 24 bytes per pending timer, needs no per-entry
//!   `Key` bookkeeping to cancel or shorten a delay (stale entries are skipped on pop), and is
//!   driven by whichever worker is idle, so no background task or runtime is needed to build a
//!   queue; one tokio `sleep_until` for the earliest deadline is enough;
//! * a key with a non-zero retry count keeps its slot while idle, so `num_requeues` survives
//!   `done` until `forget`, exactly like client-go's failure map;
//! * a key the queue no longer needs (idle, no retry count) is not removed at once: it stays in
//!   its slot, listed as idle, until a new key needs a slot and none is free, when the oldest
//!   idle key is evicted. Re-adding a recently finished key (the common case: requeues, events)
//!   then costs no insertion, `done` costs one lookup and no removal, and the number of slots
//!   never exceeds the peak number of keys the queue held at once (as before).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;

use crate::backoff::BackoffPolicy;
use crate::config::{Priority, QueueConfig};
use crate::lanes::Lane;
use crate::metrics::QueueMetrics;
use crate::rate_limit::Bucket;
use crate::slab::Slab;

/// In a ready lane.
const QUEUED: u8 = 1;
/// Lane of the queued entry, or lane wanted by a pending re-run.
const LOW: u8 = 2;
/// Handed to a worker, `done` not yet called.
const PROCESSING: u8 = 4;
/// Added while processing: runs once more after `done`.
const DIRTY: u8 = 8;
/// A timer is pending at `Slot::deadline`.
const DELAYED: u8 = 16;
/// Due, waiting for a token of the global bucket.
const THROTTLED: u8 = 32;
/// The pending timer / throttle comes from `add_rate_limited`: firing it counts a retry.
const RATE_LIMITED: u8 = 64;

struct Slot<K> {
    key: Option<K>,
    /// While DELAYED or THROTTLED: the deadline. With metrics on, while QUEUED or DIRTY: when
    /// the key became dirty (for the queue latency). The two never overlap: a queued or dirty
    /// key ignores delayed adds, and a delay ends before the key becomes ready.
    deadline: u64,
    /// Retries that fired (saturating; the backoff is capped long before 65 535).
    requeues: u16,
    /// Low 16 bits of the sequence number of the slot's live timer: a heap entry fires only if
    /// its own sequence matches, so entries left by a shortened or cancelled delay (or by a
    /// previous key of a reused slot) never fire, even with an equal deadline.
    timer_tag: u16,
    flags: u8,
    /// Stale entries of this slot still in the low lane (left by promotions). They are always
    /// older than a live entry, so the next `stale_low` low-lane pops of this slot are skipped.
    /// A slot is not reused while it has stale entries (its key is gone, the slot is not yet in
    /// the free list), so all entries of a slot belong to one key, hence to one tenant.
    stale_low: u16,
    /// In the idle list (`Core::idle_slots`); the key may have become busy again since.
    idle_listed: bool,
}

impl<K> Default for Slot<K> {
    fn default() -> Self {
        Self {
            key: None,
            deadline: 0,
            requeues: 0,
            timer_tag: 0,
            flags: 0,
            stale_low: 0,
            idle_listed: false,
        }
    }
}

impl<K> Slot<K> {
    /// Holds a key the queue does not need: nothing pending, no retry count.
    fn is_idle(&self) -> bool {
        self.key.is_some() && self.flags == 0 && self.requeues == 0
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: u64,
    /// Insertion order: equal deadlines fire first-in first-out.
    seq: u32,
    idx: u32,
}

/// A due rate-limited retry waiting for a token; valid while the slot is still throttled with
/// this deadline and timer tag.
struct Throttled {
    at: u64,
    seq: u32,
    idx: u32,
}

/// Who must be woken after an operation (done by the caller, outside the lock).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wake {
    /// Newly ready keys that idle workers may pick up.
    pub(crate) ready: usize,
    /// The earliest deadline moved earlier.
    pub(crate) timekeeper: bool,
    /// Shut down and nothing left to hand out: wake every waiter.
    pub(crate) all: bool,
}

/// Metric events of one locked operation, reported by the async layer once the lock is
/// released (all hooks but `depth`, which must follow the lock's order).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Observations {
    pub(crate) adds: u32,
    pub(crate) retries: u32,
    pub(crate) queue_latency: Option<Duration>,
    pub(crate) work_duration: Option<Duration>,
}

/// Maps a key to its tenant id (a hash of the tenant name).
pub(crate) type TenantFn<K> = Box<dyn Fn(&K) -> u64 + Send + Sync>;

/// The hasher of the key table; the async layer hashes keys before taking the lock.
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A key with its hash by the queue's [`KeyHasher`].
pub(crate) struct Hashed<'a, K> {
    pub(crate) key: &'a K,
    pub(crate) hash: u64,
}

impl<K> Clone for Hashed<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Hashed<'_, K> {}

pub(crate) struct Core<K> {
    table: HashTable<u32>,
    hasher: KeyHasher,
    slots: Slab<Slot<K>>,
    /// Slots without a key.
    free: Vec<u32>,
    /// Slots whose key became idle, oldest first (evicted when a new key needs a slot).
    idle_slots: VecDeque<u32>,
    /// With metrics on: when each slot's key was handed out (0: not processing).
    started: Slab<u64>,
    track_times: bool,
    /// Metric events since the async layer last took them.
    obs: Observations,
    high: Lane,
    low: Lane,
    high_valid: usize,
    low_valid: usize,
    high_streak: u32,
    low_every: u32,
    tenant: Option<TenantFn<K>>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u32,
    /// Due rate-limited retries in the order they became due: the bucket serves the oldest first.
    throttled: VecDeque<Throttled>,
    /// When the bucket has its next token for the head of `throttled`.
    throttle_wake: Option<u64>,
    bucket: Option<Bucket>,
    policy: Arc<dyn BackoffPolicy>,
    max_delay: Duration,
    metrics: Arc<dyn QueueMetrics>,
    epoch: tokio::time::Instant,
    processing: usize,
    dirty: usize,
    depth: usize,
    pub(crate) shutting_down: bool,
    pub(crate) stopped: bool,
    pub(crate) rejected: u64,
    pub(crate) dropped: Vec<K>,
    /// Waiters currently parked in `get` (maintained by the async layer).
    pub(crate) idle: usize,
    /// Whether one parked waiter is sleeping until the next deadline.
    pub(crate) timekeeper: bool,
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The `stale` callback of the lanes: whether the entry `idx` popped from the low (`low`) or
/// high lane is stale, consuming it. A slot whose key is gone is freed with its last stale entry.
fn consume_stale<K>(slots: &mut Slab<Slot<K>>, free: &mut Vec<u32>, idx: u32, low: bool) -> bool {
    let s = &mut slots[idx as usize];
    if low && s.stale_low > 0 {
        s.stale_low -= 1;
        if s.stale_low == 0 && s.key.is_none() {
            free.push(idx);
        }
        return true;
    }
    s.flags & QUEUED == 0 || (s.flags & LOW != 0) != low
}

impl<K: Clone + Eq + Hash> Core<K> {
    /// A core for a validated `config`.
    pub(crate) fn new(
        config: &QueueConfig,
        hasher: KeyHasher,
        policy: Arc<dyn BackoffPolicy>,
        tenant: Option<TenantFn<K>>,
        metrics: Arc<dyn QueueMetrics>,
    ) -> Self {
        let fair = config.fairness;
        Self {
            table: HashTable::new(),
            hasher,
            slots: Slab::default(),
            free: Vec::new(),
            idle_slots: VecDeque::new(),
            started: Slab::default(),
            track_times: metrics.enabled(),
            obs: Observations::default(),
            high: Lane::new(fair),
            low: Lane::new(fair),
            high_valid: 0,
            low_valid: 0,
            high_streak: 0,
            low_every: config.low_priority_every.max(1),
            tenant: if fair { tenant } else { None },
            timers: BinaryHeap::new(),
            timer_seq: 0,
            throttled: VecDeque::new(),
            throttle_wake: None,
            bucket: config.bucket.and_then(Bucket::new),
            policy,
            max_delay: config.max_delay,
            metrics,
            epoch: tokio::time::Instant::now(),
            processing: 0,
            dirty: 0,
            depth: 0,
            shutting_down: false,
            stopped: false,
            rejected: 0,
            dropped: Vec::new(),
            idle: 0,
            timekeeper: false,
        }
    }

    /// Nanoseconds since the queue was built, on tokio's (pausable) clock.
    pub(crate) fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    /// The instant [`Self::now`] counts from.
    pub(crate) fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }

    pub(crate) fn instant_at(&self, at: u64) -> tokio::time::Instant {
        self.epoch
            .checked_add(Duration::from_nanos(at))
            .unwrap_or_else(|| {
                // Far future: a year is as good as never for a sleeping timekeeper.
                tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
            })
    }

    fn find(&self, key: Hashed<'_, K>) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(key.hash, |&i| {
                slots[i as usize].key.as_ref() == Some(key.key)
            })
            .copied()
    }

    fn find_or_insert(&mut self, key: Hashed<'_, K>) -> u32 {
        if let Some(i) = self.find(key) {
            return i;
        }
        let (hash, key) = (key.hash, key.key);
        let idx = match self.take_slot() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.key = Some(key.clone());
                s.deadline = 0;
                s.requeues = 0;
                s.flags = 0;
                i
            }
            None => {
                let i = u32::try_from(self.slots.len()).expect("more than 2^32 keys in one queue");
                self.slots.push(Slot {
                    key: Some(key.clone()),
                    deadline: 0,
                    requeues: 0,
                    timer_tag: 0,
                    flags: 0,
                    stale_low: 0,
                    idle_listed: false,
                });
                if self.track_times {
                    self.started.push(0);
                }
                i
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        // Rehash by the key itself (never `Option<&K>`, whose hash differs): live slots hold a key.
        self.table
            .insert_unique(hash, idx, |&i| match &slots[i as usize].key {
                Some(k) => hasher.hash_one(k),
                None => 0,
            });
        idx
    }

    /// A slot for a new key: a free one, else the oldest idle key's (evicted), else `None`.
    fn take_slot(&mut self) -> Option<u32> {
        loop {
            if let Some(i) = self.free.pop() {
                return Some(i);
            }
            let i = self.idle_slots.pop_front()?;
            let s = &mut self.slots[i as usize];
            s.idle_listed = false;
            if !s.is_idle() {
                continue; // busy again; listed anew when it next becomes idle
            }
            let Some(old) = s.key.take() else {
                continue;
            };
            let quarantined = s.stale_low > 0;
            let hash = self.hasher.hash_one(&old);
            if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
                e.remove();
            }
            if !quarantined {
                return Some(i);
            }
            // Stale lane entries remain: the slot is freed with the last one (`consume_stale`).
        }
    }

    /// Lists the slot as idle if its key is no longer needed (see the module docs).
    fn settle(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.is_idle() && !s.idle_listed {
            s.idle_listed = true;
            self.idle_slots.push_back(idx);
        }
    }

    fn tenant_of(&self, idx: u32) -> u64 {
        match (&self.tenant, &self.slots[idx as usize].key) {
            (Some(f), Some(k)) => f(k),
            _ => 0,
        }
    }

    fn push_lane(&mut self, idx: u32, low: bool) {
        let tenant = self.tenant_of(idx);
        if low {
            self.low.push(idx, tenant);
            self.low_valid += 1;
        } else {
            self.high.push(idx, tenant);
            self.high_valid += 1;
        }
    }

    /// Counts a key becoming dirty, client-go style.
    fn note_add(&mut self, idx: u32) {
        self.depth += 1;
        if self.track_times {
            self.obs.adds += 1;
            self.metrics.depth(self.depth);
            let now = self.now();
            self.slots[idx as usize].deadline = now.max(1);
        }
    }

    /// Makes an idle (not queued, not processing) key ready, or marks a processing key dirty.
    /// Returns whether a key became ready.
    fn make_ready(&mut self, idx: u32, low: bool) -> bool {
        let flags = self.slots[idx as usize].flags;
        if flags & PROCESSING != 0 {
            if flags & DIRTY == 0 {
                self.slots[idx as usize].flags = (flags | DIRTY) & !LOW | if low { LOW } else { 0 };
                self.dirty += 1;
                self.note_add(idx);
            }
            return false;
        }
        self.slots[idx as usize].flags = (flags | QUEUED) & !LOW | if low { LOW } else { 0 };
        self.push_lane(idx, low);
        self.note_add(idx);
        true
    }

    /// Immediate add. An add cancels any pending delay or throttle of the key.
    pub(crate) fn add(&mut self, key: Hashed<'_, K>, priority: Priority) -> Wake {
        if self.shutting_down {
            self.rejected += 1;
            return Wake::default();
        }
        let low = priority == Priority::Low;
        let idx = self.find_or_insert(key);
        let flags = self.slots[idx as usize].flags;
        if flags & QUEUED != 0 {
            if !low && flags & LOW != 0 {
                // Promote: the low-lane entry becomes stale.
                let s = &mut self.slots[idx as usize];
                s.flags &= !LOW;
                s.stale_low = s.stale_low.saturating_add(1);
                self.low_valid -= 1;
                let tenant = self.tenant_of(idx);
                let (slots, free) = (&mut self.slots, &mut self.free);
                self.low
                    .invalidate(tenant, |i| consume_stale(slots, free, i, true));
                self.push_lane(idx, false);
            }
            return Wake::default();
        }
        if flags & PROCESSING != 0 && flags & DIRTY != 0 {
            if !low {
                self.slots[idx as usize].flags &= !LOW;
            }
            return Wake::default();
        }
        self.slots[idx as usize].flags &= !(DELAYED | THROTTLED | RATE_LIMITED);
        Wake {
            ready: usize::from(self.make_ready(idx, low)),
            ..Wake::default()
        }
    }

    /// Delayed add; `rate_limited` for retries (their firing goes through the bucket and counts a
    /// requeue). Earliest deadline wins.
    fn schedule(&mut self, key: Hashed<'_, K>, delay: Duration, rate_limited: bool) -> Wake {
        if self.shutting_down {
            self.rejected += 1;
            return Wake::default();
        }
        if self.track_times {
            self.obs.retries += 1;
        }
        if delay.is_zero() && !rate_limited {
            return self.add(key, Priority::High);
        }
        let idx = self.find_or_insert(key);
        let s = &self.slots[idx as usize];
        if s.flags & (QUEUED | THROTTLED) != 0
            || s.flags & (PROCESSING | DIRTY) == PROCESSING | DIRTY
        {
            return Wake::default();
        }
        let at = self.now().saturating_add(nanos(delay));
        let s = &mut self.slots[idx as usize];
        if s.flags & DELAYED != 0 && s.deadline <= at {
            return Wake::default();
        }
        s.flags |= DELAYED;
        if rate_limited {
            s.flags |= RATE_LIMITED;
        }
        s.deadline = at;
        let earliest = self.timers.peek().is_none_or(|Reverse(t)| at < t.at);
        self.timer_seq = self.timer_seq.wrapping_add(1);
        let seq = self.timer_seq;
        self.slots[idx as usize].timer_tag = seq as u16;
        self.timers.push(Reverse(Timer { at, seq, idx }));
        Wake {
            timekeeper: earliest,
            ..Wake::default()
        }
    }

    pub(crate) fn add_after(&mut self, key: Hashed<'_, K>, delay: Duration) -> Wake {
        self.schedule(key, delay, false)
    }

    /// Rate-limited add: the per-key backoff for the number of retries that actually fired
    /// (at most `max_delay`), then a token of the global bucket, whatever the wait.
    pub(crate) fn add_rate_limited(&mut self, key: Hashed<'_, K>) -> Wake {
        let retries = self
            .find(key)
            .map_or(0, |i| u32::from(self.slots[i as usize].requeues));
        let per_key = self.policy.delay(retries).min(self.max_delay);
        self.schedule(key, per_key, true)
    }

    pub(crate) fn forget(&mut self, key: Hashed<'_, K>) {
        if let Some(idx) = self.find(key) {
            self.slots[idx as usize].requeues = 0;
            self.settle(idx);
        }
    }

    pub(crate) fn num_requeues(&self, key: Hashed<'_, K>) -> u32 {
        self.find(key)
            .map_or(0, |i| u32::from(self.slots[i as usize].requeues))
    }

    /// A due retry: counts it if rate-limited, then makes the key ready (or dirty).
    fn fire(&mut self, idx: u32) -> bool {
        let s = &mut self.slots[idx as usize];
        if s.flags & RATE_LIMITED != 0 {
            s.requeues = s.requeues.saturating_add(1);
        }
        s.flags &= !(DELAYED | THROTTLED | RATE_LIMITED);
        self.make_ready(idx, false)
    }

    /// Moves due timers to the ready lanes; due rate-limited retries queue for the bucket and
    /// leave that queue oldest first, one token each. The bucket is never bypassed.
    fn promote_due(&mut self) -> usize {
        let now = self.now();
        let mut ready = 0;
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.at > now {
                break;
            }
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            let s = &mut self.slots[t.idx as usize];
            if s.flags & DELAYED == 0 || s.deadline != t.at || s.timer_tag != t.seq as u16 {
                continue;
            }
            if s.flags & RATE_LIMITED != 0 && self.bucket.is_some() {
                s.flags = (s.flags & !DELAYED) | THROTTLED;
                self.throttled.push_back(Throttled {
                    at: t.at,
                    seq: t.seq,
                    idx: t.idx,
                });
            } else {
                ready += usize::from(self.fire(t.idx));
            }
        }
        self.throttle_wake = None;
        while let Some(t) = self.throttled.front() {
            let (idx, s) = (t.idx, &self.slots[t.idx as usize]);
            if s.flags & THROTTLED == 0 || s.deadline != t.at || s.timer_tag != t.seq as u16 {
                self.throttled.pop_front();
                continue;
            }
            if let Some(Err(wait)) = self.bucket.as_ref().map(Bucket::try_take) {
                self.throttle_wake = Some(now.saturating_add(nanos(wait)));
                break;
            }
            self.throttled.pop_front();
            ready += usize::from(self.fire(idx));
        }
        ready
    }

    /// When the timekeeper must wake next, if anything is pending.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        let timer = self.timers.peek().map(|Reverse(t)| t.at);
        let throttle = if self.throttled.is_empty() {
            None
        } else {
            Some(self.throttle_wake.unwrap_or(0))
        };
        match (timer, throttle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop_ready(&mut self) -> Option<u32> {
        if self.high_valid + self.low_valid == 0 {
            return None;
        }
        let use_low =
            self.low_valid > 0 && (self.high_valid == 0 || self.high_streak + 1 >= self.low_every);
        let (slots, free) = (&mut self.slots, &mut self.free);
        let lane = if use_low {
            &mut self.low
        } else {
            &mut self.high
        };
        let Some(idx) = lane.pop(|i| consume_stale(slots, free, i, use_low)) else {
            // Unreachable by the lane invariant (the valid count matches the live entries).
            if use_low {
                self.low_valid = 0;
            } else {
                self.high_valid = 0;
            }
            return self.pop_ready();
        };
        if use_low {
            self.low_valid -= 1;
            self.high_streak = 0;
        } else {
            self.high_valid -= 1;
            self.high_streak += 1;
        }
        Some(idx)
    }

    /// Hands the next ready key (and its slot, a hint for `done`) to a worker. `.1` is how many
    /// more keys became ready on the way (timers that fired), for waking other workers. `now`
    /// is [`Self::now`] read by the caller before taking the lock, if metrics are on.
    pub(crate) fn try_pop(&mut self, now: Option<u64>) -> (Option<(K, u32)>, usize) {
        if self.stopped {
            return (None, 0);
        }
        let fired = if self.timers.is_empty() && self.throttled.is_empty() {
            0
        } else {
            self.promote_due()
        };
        let Some(idx) = self.pop_ready() else {
            return (None, fired);
        };
        let s = &mut self.slots[idx as usize];
        s.flags = (s.flags & !(QUEUED | LOW)) | PROCESSING;
        let key = s.key.clone();
        self.processing += 1;
        self.depth -= 1;
        if self.track_times {
            self.metrics.depth(self.depth);
            let now = now.unwrap_or_else(|| self.now());
            let s = &mut self.slots[idx as usize];
            if s.deadline != 0 {
                self.obs.queue_latency = Some(Duration::from_nanos(now.saturating_sub(s.deadline)));
            }
            s.deadline = 0;
            self.started[idx as usize] = now.max(1);
        }
        (key.map(|k| (k, idx)), fired.saturating_sub(1))
    }

    /// A worker finished `key`. Re-queues it if it was added meanwhile. `hint` is the slot the
    /// caller was handed the key from, if it knows (checked, so any value is safe); `now` as for
    /// [`Self::try_pop`].
    pub(crate) fn done(&mut self, key: &K, hint: Option<u32>, now: Option<u64>) -> Wake {
        let hinted = hint.filter(|&i| {
            self.slots
                .get(i as usize)
                .is_some_and(|s| s.key.as_ref() == Some(key))
        });
        // Hashed here, under the lock, only when the hint misses (rarely: a worker finishing a
        // key it was not just handed).
        let found = hinted.or_else(|| {
            let hash = self.hasher.hash_one(key);
            self.find(Hashed { key, hash })
        });
        let Some(idx) = found else {
            return Wake::default();
        };
        let flags = self.slots[idx as usize].flags;
        if flags & PROCESSING == 0 {
            return Wake::default();
        }
        self.processing -= 1;
        if self.track_times {
            let now = now.unwrap_or_else(|| self.now());
            let started = std::mem::take(&mut self.started[idx as usize]);
            if started != 0 {
                self.obs.work_duration = Some(Duration::from_nanos(now.saturating_sub(started)));
            }
        }
        let mut wake = Wake::default();
        if flags & DIRTY != 0 {
            self.dirty -= 1;
            if self.stopped {
                self.slots[idx as usize].flags = flags & !(PROCESSING | DIRTY | LOW);
                self.depth -= 1;
                if let Some(k) = &self.slots[idx as usize].key {
                    self.dropped.push(k.clone());
                }
            } else {
                let low = flags & LOW != 0;
                self.slots[idx as usize].flags = (flags & !(PROCESSING | DIRTY)) | QUEUED;
                self.push_lane(idx, low);
                wake.ready = 1;
            }
        } else {
            self.slots[idx as usize].flags = flags & !PROCESSING;
        }
        self.settle(idx);
        wake.all = self.is_drained();
        wake
    }

    /// Ready keys (not counting keys waiting to re-run after their current processing).
    pub(crate) fn len(&self) -> usize {
        self.high_valid + self.low_valid
    }

    /// Whether a worker could still get something.
    pub(crate) fn is_drained(&self) -> bool {
        (self.shutting_down && self.len() == 0 && self.dirty == 0) || self.stopped
    }

    /// Nothing ready and nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.len() == 0 && self.processing == 0
    }

    /// Stops intake; pending delays and throttled retries are dropped (kept for the report).
    pub(crate) fn shutdown(&mut self) -> Wake {
        if self.shutting_down {
            return Wake {
                all: true,
                ..Wake::default()
            };
        }
        self.shutting_down = true;
        let mut released = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.flags & (DELAYED | THROTTLED) != 0 {
                s.flags &= !(DELAYED | THROTTLED | RATE_LIMITED);
                if let Some(k) = &s.key {
                    self.dropped.push(k.clone());
                }
                released.push(i as u32);
            }
        }
        self.timers.clear();
        self.throttled.clear();
        self.throttle_wake = None;
        released.into_iter().for_each(|i| self.settle(i));
        Wake {
            all: true,
            ..Wake::default()
        }
    }

    /// Ends intake and hand-outs: ready keys are dropped (kept for the report) and `get`
    /// returns `None` from now on; keys being processed may still call `done` (a re-run they
    /// asked for is dropped too). Returns the keys still being processed.
    pub(crate) fn stop(&mut self) -> Vec<K> {
        self.shutdown();
        self.stopped = true;
        let mut unfinished = Vec::new();
        let mut released = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.stale_low > 0 && s.key.is_none() {
                self.free.push(i as u32);
            }
            s.stale_low = 0;
            if s.flags & QUEUED != 0 {
                s.flags &= !(QUEUED | LOW);
                if let Some(k) = &s.key {
                    self.dropped.push(k.clone());
                }
                released.push(i as u32);
            }
            if s.flags & PROCESSING != 0
                && let Some(k) = &s.key
            {
                unfinished.push(k.clone());
            }
        }
        self.high.clear();
        self.low.clear();
        self.high_valid = 0;
        self.low_valid = 0;
        self.depth = self.dirty;
        if self.track_times {
            self.metrics.depth(self.depth);
        }
        released.into_iter().for_each(|i| self.settle(i));
        unfinished
    }

    /// Keys the queue needs (tests): anything pending or a retry count; idle keys excluded.
    #[cfg(test)]
    pub(crate) fn remembered_keys(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.is_some() && !s.is_idle())
            .count()
    }

    /// Panics if the counters, the table and the free list disagree with the slots (tests).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let count = |f: &dyn Fn(&Slot<K>) -> bool| self.slots.iter().filter(|s| f(s)).count();
        let queued = |low: bool| {
            count(&|s| s.flags & QUEUED != 0 && (s.flags & LOW != 0) == low && s.key.is_some())
        };
        assert_eq!(self.high_valid, queued(false), "high lane count");
        assert_eq!(self.low_valid, queued(true), "low lane count");
        assert_eq!(self.processing, count(&|s| s.flags & PROCESSING != 0));
        assert_eq!(self.dirty, count(&|s| s.flags & DIRTY != 0));
        assert_eq!(
            self.table.len(),
            count(&|s| s.key.is_some()),
            "table vs keys"
        );
        let quarantined = count(&|s| s.key.is_none() && s.stale_low > 0);
        assert_eq!(
            self.free.len() + quarantined + self.table.len(),
            self.slots.len(),
            "every slot is live, free or waiting for its stale entries"
        );
        for &i in &self.free {
            let s = &self.slots[i as usize];
            assert!(
                s.key.is_none() && s.stale_low == 0 && !s.idle_listed,
                "free slot {i} in use"
            );
        }
        for (i, s) in self.slots.iter().enumerate() {
            assert!(!s.is_idle() || s.idle_listed, "idle slot {i} not listed");
        }
        assert_eq!(
            self.idle_slots.len(),
            count(&|s| s.idle_listed),
            "each listed slot once in the idle list"
        );
    }

    /// Metric events since the last call (see [`Observations`]).
    pub(crate) fn take_observations(&mut self) -> Observations {
        std::mem::take(&mut self.obs)
    }

    /// Sum of ages of in-flight keys and the oldest, for `unfinished_work` (`None` without
    /// metrics).
    pub(crate) fn unfinished_work(&self) -> Option<(Duration, Duration)> {
        if !self.track_times {
            return None;
        }
        let now = self.now();
        let (mut total, mut oldest) = (0u64, 0u64);
        for (s, &started) in self.slots.iter().zip(self.started.iter()) {
            if s.flags & PROCESSING != 0 && started != 0 {
                let age = now.saturating_sub(started);
                total = total.saturating_add(age);
                oldest = oldest.max(age);
            }
        }
        Some((Duration::from_nanos(total), Duration::from_nanos(oldest)))
    }
}
