//! Session lifecycle on the real control plane, work-queue engine (the default).

mod support;

use support::operator::Engine;

lifecycle_tests!(Engine::Queue);
