//! Test-only fault injection, compiled only with the cargo feature `fault-injection` (which
//! `make test` enables and release builds never do): a session annotated
//! `ambient-code.io/test-panic: "<n>"` makes its first `n` reconciles in this process panic, so
//! the fault tests can prove a panicking handler is a failed reconcile that is retried, under
//! either engine, and never a dead worker or watch loop.

use std::sync::LazyLock;

use agentic_crds::AgenticSession;
use dashmap::DashMap;
use kube::ResourceExt;

/// The annotation that asks for panics; its value is how many reconciles panic.
pub const PANIC_ANNOTATION: &str = "ambient-code.io/test-panic";

/// Panics so far, by session UID.
static PANICS: LazyLock<DashMap<String, u32>> = LazyLock::new(DashMap::new);

/// Panics if `session` asks for it and has not had its share yet.
pub fn maybe_panic(session: &AgenticSession) {
    let Some(wanted) = session
        .annotations()
        .get(PANIC_ANNOTATION)
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return;
    };
    let uid = session.uid().unwrap_or_default();
    let mut done = PANICS.entry(uid).or_insert(0);
    if *done < wanted {
        *done += 1;
        let attempt = *done;
        drop(done);
        panic!(
            "injected panic {attempt}/{wanted} reconciling session {}",
            session.name_any()
        );
    }
}
