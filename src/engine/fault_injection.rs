//! Test-only stalls, compiled only with the cargo feature `fault-injection` (which `make test`
//! enables and release builds never do), applied by [`super::handle`] to a session's reconcile
//! under either engine. Each is released by a file, so a test decides exactly when it ends:
//!
//! - `ambient-code.io/test-hang-until: <path>`: every reconcile of the session awaits until the
//!   file exists (a handler stuck on something that never answers; cancellable at its await).
//! - `ambient-code.io/test-block-until: <path>`: a reconcile of the session blocks its worker
//!   thread, without ever yielding, until the file exists (a wedged worker: nothing can cancel
//!   it).
//!
//! And one of the process, for the sharded watches (`--sharding`, default engine): with
//! `AGENTIC_TEST_HOLD_GAINED_LISTS_MS=<n>` in its environment, the list of every source a
//! watch starts for buckets it gained (not its first) is held back `n` ms before the watch sees
//! it: a slow list of a shard, on this replica only.

use std::path::Path;
use std::time::Duration;

use agentic_crds::AgenticSession;
use kube::ResourceExt;

/// The annotation naming the file whose creation ends an awaiting hang.
pub const HANG_ANNOTATION: &str = "ambient-code.io/test-hang-until";
/// The annotation naming the file whose creation ends a thread-blocking stall.
pub const BLOCK_ANNOTATION: &str = "ambient-code.io/test-block-until";

const POLL: Duration = Duration::from_millis(50);

/// The environment variable holding back gained sources' lists.
pub const HOLD_GAINED_LISTS: &str = "AGENTIC_TEST_HOLD_GAINED_LISTS_MS";

/// How long a gained source's list is held back, if this process was asked to.
pub fn gained_list_hold() -> Option<Duration> {
    std::env::var(HOLD_GAINED_LISTS)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// Stalls as `session`'s annotations ask, until their files exist.
pub async fn stall(session: &AgenticSession) {
    let annotations = session.annotations();
    if let Some(path) = annotations.get(BLOCK_ANNOTATION).map(Path::new)
        && !path.exists()
    {
        tracing::warn!(path = %path.display(), "injected fault: blocking the worker thread");
        while !path.exists() {
            std::thread::sleep(POLL);
        }
        tracing::warn!("injected fault: worker thread released");
    }
    if let Some(path) = annotations.get(HANG_ANNOTATION).map(Path::new)
        && !path.exists()
    {
        tracing::warn!(path = %path.display(), "injected fault: reconcile hangs");
        while !path.exists() {
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!("injected fault: reconcile released");
    }
}
