//! Engines deliver work to the handlers. Both call [`handle`] with an [`ObjectKey`]; they differ
//! only in how events become calls: [`queued`] (default) goes through the project's work queue,
//! `--legacy-watch` handles raw watch events inline.

#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod legacy;
pub mod queued;
pub mod scoped_watch;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentic_crds::AgenticSession;
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use crate::cache::ObjectKey;
use crate::context::Context;
use crate::handlers::project::{namespace, settings as project_settings};
use crate::handlers::session::{self, SessionContext};
use crate::observability::readiness::Readiness;

/// Page size of the session and ProjectSettings lists, in both engines. Their types are the
/// CRDs', read whole: a page's managedFields are parsed into JSON maps before any object of it
/// is slimmed (on a restart of `make bench-scale`, managedFields of list pages of 500 were 35
/// of its 60 MiB heap peak). The children's projections skip managedFields as they parse, so
/// their pages stay at 500.
pub const CRD_PAGE_SIZE: u32 = 100;

/// What a watch can cache: a resource of a static kind, slimmed as it arrives.
pub trait WatchedKind:
    Resource<DynamicType = ()>
    + crate::cache::Slim
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> WatchedKind for K where
    K: Resource<DynamicType = ()>
        + crate::cache::Slim
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A handler failure, with the label it is counted under.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The reconcile did not finish within `--reconcile-timeout` and was cancelled.
    #[error("reconcile cancelled after {after:?} (--reconcile-timeout)")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// A session reconcile failed.
    #[error(transparent)]
    Session(#[from] session::SessionError),
    /// A namespace reconcile failed.
    #[error(transparent)]
    Namespace(#[from] namespace::NamespaceError),
    /// A ProjectSettings reconcile failed.
    #[error(transparent)]
    ProjectSettings(#[from] project_settings::ProjectSettingsError),
    /// Keeping a namespace's Secret copies failed.
    #[error(transparent)]
    Copies(#[from] crate::handlers::session::secret_copies::CopyError),
}

impl HandlerError {
    /// Whether the handler decided from a cached copy of the session older than the API
    /// server's (its resourceVersion-guarded status write conflicted): handling the key again
    /// helps only once the cache holds the newer copy.
    pub fn is_stale_read(&self) -> bool {
        matches!(
            self,
            HandlerError::Session(session::SessionError::Conflict { .. })
        )
    }
}

/// What, in a session, can change a reconcile's outcome besides status: spec (generation),
/// annotations (stop/start requests), deletion, and whether it has a status at all. Equal
/// fingerprints mean an update touched only status (the operator's own writes among them).
pub fn session_fingerprint(session: &AgenticSession) -> u64 {
    let mut hasher = DefaultHasher::new();
    session.meta().generation.hash(&mut hasher);
    session.annotations().hash(&mut hasher);
    session
        .meta()
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    session.status.is_none().hash(&mut hasher);
    hasher.finish()
}

/// Reconciles whatever `key` names, reading the object from the caches; returns when to look
/// again. An object no longer in the cache was deleted: garbage collection removes its children.
///
/// Both engines call this. With `--sharding`, a key whose bucket is not this replica's (or no
/// longer is) is dropped at once (`Ok(None)`; the bucket's keys are queued again if it becomes
/// ours), and the reconcile counts as in flight for its bucket until it returns, so a bucket
/// is released only once its reconciles finished. It is registered with [`Health`](crate::observability::health::Health)
/// while it runs. A reconcile
/// still running after `--reconcile-timeout` is cancelled
/// (dropped at its next `.await`) and is a failed reconcile: counted (a session's under
/// `ambient_session_errors_total{error_type="timeout"}` and
/// `ambient_reconcile_duration_seconds{success="false"}`) and retried by the engine.
pub async fn handle(key: ObjectKey, ctx: SessionContext) -> Result<Option<Duration>, HandlerError> {
    let _in_flight = match &ctx.shard {
        Some(gate) => match gate.admit(key.namespace()) {
            Some(in_flight) => Some(in_flight),
            None => return Ok(None),
        },
        None => None,
    };
    // In flight until dropped, even by a panic unwinding: /healthz spots a wedged worker.
    let _reconciling = ctx.health.reconciling(&key);
    let timeout = ctx.config.args.reconcile_timeout;
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, reconcile(&key, &ctx)).await {
        Ok(result) => result,
        Err(_) => {
            count_timeout(&key, &ctx, started.elapsed());
            Err(HandlerError::TimedOut { after: timeout })
        }
    }
}

async fn reconcile(
    key: &ObjectKey,
    ctx: &SessionContext,
) -> Result<Option<Duration>, HandlerError> {
    match key {
        ObjectKey::Session { namespace, name } => {
            let found = ctx.caches.sessions.get(namespace, name);
            match found {
                Some(session) => {
                    #[cfg(feature = "fault-injection")]
                    fault_injection::stall(&session).await;
                    Ok(session::reconcile(session, ctx).await?)
                }
                None => Ok(None),
            }
        }
        ObjectKey::Namespace(name) => Ok(namespace::reconcile(name, ctx).await?),
        ObjectKey::ProjectSettings(namespace) => {
            Ok(project_settings::reconcile(namespace, ctx).await?)
        }
        ObjectKey::SecretCopies(namespace) => {
            if !ctx.caches.is_managed(namespace) {
                return Ok(None);
            }
            Ok(crate::handlers::session::secret_copies::reconcile(namespace, ctx).await?)
        }
    }
}

/// Records a cancelled session reconcile as the session handler records a failed one (its own
/// recording was dropped with it).
fn count_timeout(key: &ObjectKey, ctx: &Context, took: Duration) {
    let ObjectKey::Session { namespace, name } = key else {
        return;
    };
    let phase = ctx
        .caches
        .sessions
        .get(namespace, name)
        .and_then(|session| session.status.as_ref().map(|status| status.phase))
        .unwrap_or_default();
    let families = ctx.metrics.families();
    families.record_reconcile(phase.as_str(), false, took);
    families
        .session_errors
        .with_label_values(&[namespace.as_str(), phase.as_str(), "timeout"])
        .inc();
}

/// Keys of every cached session in `namespace`.
pub fn sessions_in(ctx: &Context, namespace: &str) -> Vec<ObjectKey> {
    ctx.caches
        .sessions
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .map(|s| ObjectKey::Session {
            namespace: namespace.to_string(),
            name: s.name_any(),
        })
        .collect()
}

/// Every key of the cached objects in `buckets`: sessions, namespaces (with their Secret
/// copies) and ProjectSettings.
pub fn keys_in(caches: &crate::cache::Caches, buckets: &crate::shard::BucketSet) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = caches
        .sessions
        .state()
        .iter()
        .filter_map(|s| {
            let namespace = s.namespace()?;
            buckets
                .contains_namespace(&namespace)
                .then(|| ObjectKey::Session {
                    namespace,
                    name: s.name_any(),
                })
        })
        .collect();
    for namespace in caches.namespaces.state() {
        let name = namespace.name_any();
        if buckets.contains_namespace(&name) {
            keys.push(ObjectKey::Namespace(name.clone()));
            keys.push(ObjectKey::SecretCopies(name));
        }
    }
    keys.extend(
        caches
            .project_settings
            .state()
            .iter()
            .filter_map(|ps| ps.namespace())
            .filter(|namespace| buckets.contains_namespace(namespace))
            .map(ObjectKey::ProjectSettings),
    );
    keys
}

/// Counts watches whose initial list completed; marks the operator ready when all have. Both
/// engines start handling events only after [`SyncTracker::wait`] returns.
pub(crate) struct SyncTracker {
    remaining: AtomicUsize,
    readiness: Readiness,
    done: Notify,
}

impl SyncTracker {
    pub(crate) fn new(watches: usize, readiness: Readiness) -> Self {
        SyncTracker {
            remaining: AtomicUsize::new(watches),
            readiness,
            done: Notify::new(),
        }
    }

    /// Called on every InitDone; only the first per watch counts (`first` tells).
    pub(crate) fn mark(&self, first: bool) {
        if first && self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.readiness.set(true);
            self.done.notify_waiters();
        }
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}
