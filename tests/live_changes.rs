//! Live changes on the real control plane (SPEC §5.6): a person adds a repository, changes a
//! branch, removes a repository, switches and clears the workflow of a Running session; the
//! runner is told (here: a fake runner recording the calls), in order, with the session's
//! AG-UI token, and the status records it with `observedGeneration`, only on success. A failing
//! runner is visible on the session and the change applies once it recovers; runners that
//! never answer hold no worker, so other sessions are not delayed.
//!
//! Work-queue engine; tests/live_changes_legacy.rs runs the same scenarios under `--legacy-watch`.

mod support;

use support::operator::Engine;

const ENGINE: Engine = Engine::Queue;

include!("scenarios/live_changes.rs");
