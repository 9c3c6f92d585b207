//! Ready lanes: FIFO, or round-robin across tenants when fairness is on.
//!
//! Entries are slot indices. A lane may hold stale entries (a key promoted to the high lane
//! leaves its low-lane entry behind, since removing from the middle of a deque is costly). The
//! core recognises them: `pop` and `invalidate` take a `stale` callback that answers whether an
//! entry is stale *and consumes it* (the core keeps a per-slot count of stale entries).
//!
//! # Invariants (fair lanes)
//! * A tenant is in the rotation exactly when it has at least one live entry, once; it joins at
//!   the back when it gets its first live entry (a stale entry never keeps its place).
//! * Each tenant's queue is FIFO; a stale entry never counts as a turn.

use std::collections::{HashMap, VecDeque};

/// One tenant's entries and how many of them are live.
#[derive(Default)]
pub(crate) struct TenantQueue {
    entries: VecDeque<u32>,
    live: usize,
}

/// One lane. Fair lanes keep one FIFO per tenant and rotate over tenants that have live entries.
pub(crate) enum Lane {
    Fifo(VecDeque<u32>),
    Fair {
        queues: HashMap<u64, TenantQueue, foldhash::fast::FixedState>,
        rotation: VecDeque<u64>,
    },
}

impl Lane {
    pub(crate) fn new(fair: bool) -> Self {
        if fair {
            Lane::Fair {
                queues: HashMap::default(),
                rotation: VecDeque::new(),
            }
        } else {
            Lane::Fifo(VecDeque::new())
        }
    }

    /// Appends a live entry.
    pub(crate) fn push(&mut self, idx: u32, tenant: u64) {
        match self {
            Lane::Fifo(q) => q.push_back(idx),
            Lane::Fair { queues, rotation } => {
                let q = queues.entry(tenant).or_default();
                if q.live == 0 {
                    rotation.push_back(tenant);
                }
                q.live += 1;
                q.entries.push_back(idx);
            }
        }
    }

    /// Pops the next live entry, consuming (through `stale`) the stale ones met on the way.
    pub(crate) fn pop(&mut self, mut stale: impl FnMut(u32) -> bool) -> Option<u32> {
        match self {
            Lane::Fifo(q) => loop {
                let idx = q.pop_front()?;
                if !stale(idx) {
                    return Some(idx);
                }
            },
            Lane::Fair { queues, rotation } => loop {
                let tenant = *rotation.front()?;
                let Some(q) = queues.get_mut(&tenant) else {
                    // Unreachable by the invariant; recover rather than spin.
                    rotation.pop_front();
                    continue;
                };
                let served = loop {
                    match q.entries.pop_front() {
                        Some(idx) if stale(idx) => {}
                        other => break other,
                    }
                };
                rotation.pop_front();
                let Some(idx) = served else {
                    queues.remove(&tenant);
                    continue;
                };
                q.live -= 1;
                if q.live > 0 {
                    rotation.push_back(tenant);
                } else {
                    // Whatever is left is stale: consume it so the tenant leaves cleanly.
                    q.entries.drain(..).for_each(|i| {
                        stale(i);
                    });
                    queues.remove(&tenant);
                }
                return Some(idx);
            },
        }
    }

    /// One live entry of `tenant` became stale (its key was promoted to the other lane).
    /// A fair lane drops a tenant that has no live entry left (consuming its stale entries).
    pub(crate) fn invalidate(&mut self, tenant: u64, mut stale: impl FnMut(u32) -> bool) {
        let Lane::Fair { queues, rotation } = self else {
            return;
        };
        let Some(q) = queues.get_mut(&tenant) else {
            return;
        };
        q.live = q.live.saturating_sub(1);
        if q.live == 0 {
            q.entries.drain(..).for_each(|i| {
                stale(i);
            });
            queues.remove(&tenant);
            if let Some(pos) = rotation.iter().position(|&t| t == tenant) {
                rotation.remove(pos);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Lane::Fifo(q) => q.clear(),
            Lane::Fair { queues, rotation } => {
                queues.clear();
                rotation.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn pop_all(lane: &mut Lane, stale: &mut HashSet<u32>) -> Vec<u32> {
        std::iter::from_fn(|| lane.pop(|i| stale.remove(&i))).collect()
    }

    #[test]
    fn fair_lane_alternates_between_tenants() {
        let mut lane = Lane::new(true);
        for i in 0..5 {
            lane.push(i, 1);
        }
        lane.push(100, 2);
        assert_eq!(
            pop_all(&mut lane, &mut HashSet::new()),
            vec![0, 100, 1, 2, 3, 4]
        );
    }

    #[test]
    fn fifo_lane_keeps_insertion_order_and_skips_stale_entries() {
        let mut lane = Lane::new(false);
        lane.push(3, 9);
        lane.push(1, 7);
        lane.push(4, 7);
        assert_eq!(pop_all(&mut lane, &mut HashSet::from([1])), vec![3, 4]);
    }

    #[test]
    fn a_stale_entry_does_not_count_as_its_tenants_turn() {
        let mut lane = Lane::new(true);
        lane.push(1, 10);
        lane.push(3, 10);
        lane.push(2, 20);
        // 1 was promoted away: tenant 10 still has 3, and it is still its turn first.
        let mut stale = HashSet::from([1]);
        assert_eq!(pop_all(&mut lane, &mut stale), vec![3, 2]);
        assert!(stale.is_empty(), "the stale entry was consumed");
    }

    #[test]
    fn a_tenant_left_with_only_stale_entries_rejoins_at_the_back() {
        let mut lane = Lane::new(true);
        lane.push(1, 10);
        lane.push(2, 20);
        let mut stale = HashSet::from([1]);
        lane.invalidate(10, |i| stale.remove(&i));
        assert!(stale.is_empty(), "its stale entry was consumed at once");
        lane.push(5, 10);
        assert_eq!(pop_all(&mut lane, &mut stale), vec![2, 5]);
    }
}
