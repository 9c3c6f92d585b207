//! The live-change scenarios (tests/scenarios/live_changes.rs) under `--legacy-watch`: both
//! engines must reach the same state.

mod support;

use support::operator::Engine;

const ENGINE: Engine = Engine::Legacy;

include!("scenarios/live_changes.rs");
