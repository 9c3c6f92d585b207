//! The drop-in scenarios (tests/scenarios/dropin.rs) under `--legacy-watch`: failures as fast
//! and clear, restricted-v2, and the original's sessions through the switch, as under the
//! work-queue engine.

mod support;

use support::operator::Engine;

const ENGINE: Engine = Engine::Legacy;

include!("scenarios/dropin.rs");
