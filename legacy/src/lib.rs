//! Raw-watch engine (`--legacy-watch`): one list/watch loop per kind, events handed to the
//! caller's handler inline, in arrival order, with no queue. Knows nothing about what it watches.
//!
//! * [`WatchLoop`]: the state machine (list, watch from the list's resourceVersion, resume from
//!   the last seen one after a disconnect, relist on 410 Gone synthesising what changed while
//!   away, back off on errors, stop on cancellation), read without pause while the caller's
//!   handler takes the changes one at a time, in arrival order.
//! * [`Change`]: what the handler receives.
//! * [`Timers`]: when to look at a key again (one deadline per key, the earliest wins; failed
//!   keys retried with their own exponential backoff).
//! * [`KeyLocks`]: one lock per key, kept only while in use.
//! * [`RetryDelays`]: the exponential policy (the `backoff` crate, kept behind this type).
#![warn(missing_docs)]

mod backlog;
mod locks;
mod retry;
mod timers;
mod watch;

pub use crate::locks::{KeyGuard, KeyLocks};
pub use crate::retry::RetryDelays;
pub use crate::timers::Timers;
pub use crate::watch::{Change, LegacyError, ObjectName, WatchLoop, WatchState};
