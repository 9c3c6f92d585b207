//! Whether the operator is ready: false until the engine reports every cache synced. Written by the
//! engine, read by `/readyz` ([`crate::app::admin`]) and by the metrics ([`super::metrics`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared readiness flag: false until the engine reports its caches synced.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready (caches synced) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
