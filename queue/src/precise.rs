//! A precise wake-up for the timekeeper, from a helper thread sleeping on the kernel's
//! high-resolution timers.
//!
//! tokio's timer wheel has 1 ms ticks and rounds every deadline up to the next tick, and the
//! reactor parks in `epoll_wait` with a millisecond timeout: a sleeping timekeeper wakes up to
//! about 2 ms after the deadline it asked for. A thread blocked in a condition variable's timed
//! wait (a futex with a timeout, served by an hrtimer) wakes within the kernel's timer slack,
//! 50 µs by default. So the timekeeper waits for both, whichever comes first: the helper for
//! precision, tokio's sleep because it follows paused time in tests (there the helper, on the
//! real clock, only ever adds a spurious wake, which the timekeeper's loop absorbs).
//!
//! Nothing spins. The helper is spawned on first use and sleeps without a deadline while no
//! timer is armed; it exits when the queue is dropped. (A timerfd in tokio's reactor would
//! spare the thread, but registering a raw fd with tokio now takes `unsafe`, which this
//! workspace forbids.) If the thread cannot be spawned, the wait never completes and tokio's
//! sleep alone wakes the timekeeper, as before.
//!
//! Cancellation safe: dropping [`PreciseTimer::sleep_until`] leaves at most an armed deadline,
//! whose wake-up the next wait absorbs as a spurious one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The helper thread's side: at most one deadline, armed by the (single) timekeeper.
#[derive(Default)]
pub(crate) struct PreciseTimer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    fired: Notify,
}

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    spawned: bool,
    /// The thread could not be spawned: precise wake-ups are off.
    unavailable: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PreciseTimer {
    /// Completes around `deadline` (within the kernel's timer slack) on the real clock, or
    /// never if the helper thread is unavailable. May complete early once after a wait that
    /// was dropped (a spurious wake-up).
    pub(crate) async fn sleep_until(&self, deadline: tokio::time::Instant) {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let fired = self.shared.fired.notified();
        if !self.arm(Instant::now() + wait) {
            return std::future::pending().await;
        }
        fired.await;
    }

    /// Hands `at` to the helper (spawned on first use); false if it cannot run.
    fn arm(&self, at: Instant) -> bool {
        let mut state = self.shared.lock();
        if !state.spawned && !state.unavailable {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("queue-timekeeper".into())
                .spawn(move || run(&shared));
            state.spawned = spawned.is_ok();
            state.unavailable = spawned.is_err();
        }
        if state.unavailable {
            return false;
        }
        state.deadline = Some(at);
        drop(state);
        self.shared.changed.notify_one();
        true
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

/// The helper: waits for a deadline, sleeps until it, wakes the timekeeper.
fn run(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.closed {
            return;
        }
        state = match state.deadline {
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if left > Duration::ZERO => {
                    shared
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                _ => {
                    state.deadline = None;
                    drop(state);
                    shared.fired.notify_one();
                    shared.lock()
                }
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time (the helper does not follow paused time); the 10 s bound only turns a timer
    /// that never fires into a failure instead of a hang.
    #[tokio::test]
    async fn the_helper_fires_not_before_the_deadline_and_again_when_rearmed() {
        let timer = PreciseTimer::default();
        let bound = Duration::from_secs(10);
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(3);
        let fired = tokio::time::timeout(bound, timer.sleep_until(deadline)).await;
        assert!(fired.is_ok(), "the timer never fired");
        assert!(tokio::time::Instant::now() >= deadline, "fired early");
        let now = tokio::time::Instant::now();
        let fired = tokio::time::timeout(bound, timer.sleep_until(now)).await;
        assert!(fired.is_ok(), "the re-armed timer never fired");
    }
}
