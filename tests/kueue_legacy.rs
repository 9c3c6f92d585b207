//! The same Kueue scenarios under `--legacy-watch`: it must follow Workloads as the queue does.

mod support;

use support::operator::Engine;

kueue_tests!(Engine::Legacy);
