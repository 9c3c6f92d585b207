//! The session handler's own bookkeeping. It is handed to the session handler (and to the
//! engines, which wake sessions through it and tell it what they forget); no other handler
//! sees it.
//!
//! Invariant: everything here is per replica and rebuilt from the cluster after a restart; it
//! only keeps this replica from acting on a view older than its own last act.

use std::sync::Arc;

use crate::config::Config;
use crate::context::Context;

use super::OwnWrites;
use super::children::RunnerSettings;
use super::pending_clocks::PendingClocks;
use super::refusals::PodRefusals;
use super::runner_sync::RunnerSyncs;
use super::waker::SessionWaker;

/// The session handler's state; cheap to clone.
#[derive(Clone)]
pub struct SessionState {
    inner: Arc<SessionStateInner>,
}

/// The parts of a [`SessionState`].
pub struct SessionStateInner {
    /// Runner shape derived from the configuration.
    pub runner: RunnerSettings,
    /// The runs this replica claimed and has not seen end: `(namespace, session, run start)`.
    pub claims: dashmap::DashSet<(String, String, String)>,
    /// Sessions this replica wrote, `(namespace, name)` → the versions its writes produced
    /// (see [`super::reconcile`]): while the cache holds one our writes replaced, a reconcile
    /// would decide from state older than our own write.
    pub own_writes: dashmap::DashMap<(String, String), OwnWrites>,
    /// Live-change calls to runners, made off the workers.
    pub syncs: RunnerSyncs,
    /// Refusals to create runner pods, by session (the Job controller's `FailedCreate`).
    pub refusals: PodRefusals,
    /// Since when each Pending session has waited for its run, as this replica counts it.
    pub pending_clocks: PendingClocks,
    /// Makes a session due again from outside its reconcile (set by the engine).
    pub waker: SessionWaker,
}

impl SessionState {
    /// Empty bookkeeping for an operator configured by `config`.
    pub fn new(config: &Config) -> Self {
        let runner = RunnerSettings {
            image: config.args.runner_image.clone(),
            backend_api_url: config.backend_api_url(),
            cpu_request: config.args.runner_cpu_request.clone(),
            cpu_limit: config.args.runner_cpu_limit.clone(),
            memory_request: config.args.runner_memory_request.clone(),
            memory_limit: config.args.runner_memory_limit.clone(),
            workspace_size: config.args.workspace_size.clone(),
            workspace_storage_class: config.args.workspace_storage_class.clone(),
            state_sync_image: config.args.state_sync_image.clone(),
            s3_endpoint: config.args.s3_endpoint.clone(),
            s3_bucket: config.args.s3_bucket.clone(),
            pod_fsgroup: config.args.pod_fsgroup,
            state_uid: config.args.state_container_uid,
            image_pull_policy: config.args.image_pull_policy.clone(),
            vertex: config.vertex.clone(),
            mcp_config_file: config.args.mcp_config_file.clone(),
            backend_public_url: config.args.backend_public_url.clone(),
        };
        let waker = SessionWaker::default();
        let syncs = RunnerSyncs::new(&config.args.runner_base_url, waker.clone());
        SessionState {
            inner: Arc::new(SessionStateInner {
                runner,
                claims: dashmap::DashSet::new(),
                own_writes: dashmap::DashMap::new(),
                syncs,
                refusals: PodRefusals::default(),
                pending_clocks: PendingClocks::default(),
                waker,
            }),
        }
    }
}

impl std::ops::Deref for SessionState {
    type Target = SessionStateInner;
    fn deref(&self) -> &SessionStateInner {
        &self.inner
    }
}

/// What the session handler is called with: the shared [`Context`] and the session handler's
/// [`SessionState`]. It derefs to the shared context, so `ctx.client` and `ctx.caches` read as
/// in every handler; the session's own bookkeeping is `ctx.state`.
#[derive(Clone)]
pub struct SessionContext {
    shared: Context,
    /// The session handler's own bookkeeping.
    pub state: SessionState,
}

impl SessionContext {
    /// Pairs the shared context with the session handler's state.
    pub fn new(shared: Context, state: SessionState) -> Self {
        SessionContext { shared, state }
    }
}

impl std::ops::Deref for SessionContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.shared
    }
}
