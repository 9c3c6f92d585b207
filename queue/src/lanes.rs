//! Ready lanes: FIFO, or round-robin across tenants when fairness is on.
//!
//! Entries are slot indices. A lane may hold stale entries (a key promoted to the high lane
//! leaves its low-lane entry behind); the core validates every popped entry against the slot,
//! which is cheaper than removing from the middle of a deque.

use std::collections::{HashMap, VecDeque};

/// One lane. Fair lanes keep one FIFO per tenant and rotate over tenants that have entries.
pub(crate) enum Lane {
    Fifo(VecDeque<u32>),
    Fair {
        queues: HashMap<u64, VecDeque<u32>, foldhash::fast::FixedState>,
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

    pub(crate) fn push(&mut self, idx: u32, tenant: u64) {
        match self {
            Lane::Fifo(q) => q.push_back(idx),
            Lane::Fair { queues, rotation } => {
                let q = queues.entry(tenant).or_default();
                if q.is_empty() {
                    rotation.push_back(tenant);
                }
                q.push_back(idx);
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<u32> {
        match self {
            Lane::Fifo(q) => q.pop_front(),
            Lane::Fair { queues, rotation } => loop {
                let tenant = rotation.pop_front()?;
                let Some(q) = queues.get_mut(&tenant) else {
                    continue;
                };
                let Some(idx) = q.pop_front() else {
                    queues.remove(&tenant);
                    continue;
                };
                if q.is_empty() {
                    queues.remove(&tenant);
                } else {
                    rotation.push_back(tenant);
                }
                return Some(idx);
            },
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
    use super::*;

    #[test]
    fn fair_lane_alternates_between_tenants() {
        let mut lane = Lane::new(true);
        for i in 0..5 {
            lane.push(i, 1);
        }
        lane.push(100, 2);
        assert_eq!(lane.pop(), Some(0));
        assert_eq!(lane.pop(), Some(100));
        assert_eq!(
            (1..5).map(|_| lane.pop()).collect::<Vec<_>>(),
            vec![Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(lane.pop(), None);
    }

    #[test]
    fn fifo_lane_keeps_insertion_order() {
        let mut lane = Lane::new(false);
        lane.push(3, 9);
        lane.push(1, 7);
        assert_eq!(lane.pop(), Some(3));
        assert_eq!(lane.pop(), Some(1));
        assert_eq!(lane.pop(), None);
    }
}
