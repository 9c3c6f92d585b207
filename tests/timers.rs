//! Timer rows of SPEC §2.1 on the real control plane, work-queue engine (the default).

mod support;

use support::operator::Engine;

timer_tests!(Engine::Queue);
