//! The same timer scenarios under `--legacy-watch`: its timers must fire as the queue's do.

mod support;

use support::operator::Engine;

timer_tests!(Engine::Legacy);
