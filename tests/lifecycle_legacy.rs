//! The same lifecycle scenarios under `--legacy-watch`: both engines must reach the same state.

mod support;

use support::operator::Engine;

lifecycle_tests!(Engine::Legacy);
