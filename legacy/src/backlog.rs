//! What a loop has read but not handled yet, in the order it was read.
//!
//! A plain first-in first-out list with one reader and one writer, both in the loop's own task:
//! no deduplication, no reordering, no delays, no concurrency. It exists so that reading the
//! watch (and with it the caller's cache) never waits for handling.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Capacity kept after the backlog drains; a burst's larger buffer is given back.
const KEEP_CAPACITY: usize = 1024;

/// Items in arrival order; see the module docs.
pub(crate) struct Backlog<W> {
    items: Mutex<VecDeque<W>>,
    added: Notify,
}

impl<W> Default for Backlog<W> {
    fn default() -> Self {
        Backlog {
            items: Mutex::new(VecDeque::new()),
            added: Notify::new(),
        }
    }
}

impl<W> Backlog<W> {
    fn items(&self) -> MutexGuard<'_, VecDeque<W>> {
        // Push and pop leave the list consistent whatever panics elsewhere.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `items`, keeping their order.
    pub(crate) fn extend(&self, items: Vec<W>) {
        if items.is_empty() {
            return;
        }
        self.items().extend(items);
        self.added.notify_one();
    }

    /// Waits for the oldest item and removes it. Cancel safe; meant for a single consumer.
    pub(crate) async fn next(&self) -> W {
        loop {
            let added = self.added.notified();
            {
                let mut items = self.items();
                if let Some(item) = items.pop_front() {
                    if items.is_empty() && items.capacity() > KEEP_CAPACITY {
                        items.shrink_to(KEEP_CAPACITY);
                    }
                    return item;
                }
            }
            added.await;
        }
    }

    /// Number of items waiting.
    pub(crate) fn len(&self) -> usize {
        self.items().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn items_come_out_in_the_order_they_went_in() {
        let backlog = Backlog::default();
        backlog.extend(vec![3, 1]);
        backlog.extend(vec![2]);
        backlog.extend(Vec::new());
        assert_eq!(backlog.len(), 3);
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(backlog.next().await);
        }
        assert_eq!(out, vec![3, 1, 2]);
    }

    #[tokio::test]
    async fn duplicates_are_kept() {
        let backlog = Backlog::default();
        backlog.extend(vec!["a", "a"]);
        assert_eq!(backlog.next().await, "a");
        assert_eq!(backlog.next().await, "a");
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_for_the_next_item() {
        let backlog = Backlog::default();
        let mut next = Box::pin(backlog.next());
        assert!((&mut next).now_or_never().is_none());
        backlog.extend(vec![7]);
        assert_eq!(next.await, 7);
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_buffer_back() {
        let backlog = Backlog::default();
        backlog.extend((0..10 * KEEP_CAPACITY).collect());
        for _ in 0..10 * KEEP_CAPACITY {
            backlog.next().await;
        }
        assert!(backlog.items().capacity() <= KEEP_CAPACITY);
    }
}
