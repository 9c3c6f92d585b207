//! Queueing with Kueue (#27) on the real control plane with a real Kueue, work-queue engine
//! (the scenarios: `tests/support/kueue_scenarios.rs`).

mod support;

use support::operator::Engine;

kueue_tests!(Engine::Queue);
