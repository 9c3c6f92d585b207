//! The legacy engine (`--legacy-watch`): one raw watch loop per kind ([`agentic_legacy`]). Each
//! loop applies every change to the caches as soon as it reads it, and handles the events it
//! read inline, one at a time, in arrival order, with the same [`super::handle`] the work-queue
//! engine calls. No queue: no deduplication, no reordering, no workers, no rate limit.
//!
//! Besides events, keys are handled when they are due on the engine's [`Timers`]: the handler
//! says when to look again (start timeout, inactivity, token refresh), a failed handling is
//! retried after the key's own exponential backoff, and the keys cached at start-up (or when a
//! namespace becomes managed, or its ProjectSettings change) are due at once. One task takes due
//! keys and handles them inline, one at a time, beside the watch loops.
//!
//! What is not handled, because it cannot change an outcome or is known to be premature:
//! - session updates that touch only status (the operator's own writes among them), unless the
//!   key's last handling read a copy older than the API server's (a write conflict): the update
//!   that brings the cache up to date is the one that gets it handled again;
//! - child events for a session the cache shows without a status: its first handling always
//!   writes one (or fails and is retried), and the event of that write handles it again, with
//!   the children then cached; handling it earlier repeats the first handling's writes against
//!   a copy the API server has already replaced;
//! - Secret changes other than deletion (a deleted token Secret is provisioned again);
//! - ProjectSettings updates that leave the generation unchanged (status writes).
//!
//! One lock per key ([`KeyLocks`]) keeps the loops and the timers from handling a key twice at
//! once. On shutdown no new handling starts; in-flight ones get `--shutdown-grace-period`.
//!
//! With `--sharding` the loops of namespaced kinds hold only the scope's buckets: a filter
//! drops other namespaces' objects, their requests carry the scope's shard selector, and a
//! scope change relists them (what left is reported deleted, what joined applied). The keys of
//! a bucket acquired are due at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use agentic_crds::{AgenticSession, ProjectSettings, keys};
use agentic_legacy::{Change, KeyLocks, Timers, WatchLoop};
use dashmap::{DashMap, DashSet};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher::Event;
use kube::{Api, Resource, ResourceExt};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{CRD_PAGE_SIZE, SyncTracker, WatchedKind, handle, session_fingerprint, sessions_in};
use crate::cache::ObjectKey;
use crate::cache::projections::{
    CaBundle, NamedSecret, RunnerChild, RunnerJob, RunnerPod, RunnerSecret, RunnerService,
    RunnerWorkload,
};
use crate::cache::{
    CacheWriters, Slim, Writer, child_selector, managed_namespace_selector, name_selector,
    secret_selector, service_selector,
};
use crate::context::Context;
use crate::handlers::session::SessionContext;
use crate::observability::readiness::Readiness;
use crate::shard::{Scope, ShardGate, ShardSelector, WatchSlot};

/// Watches whose first list must complete before events are handled, besides one per shared
/// Secret source.
const KINDS: usize = 10;

/// Runs the loops until `shutdown`, then lets in-flight handling finish within
/// `--shutdown-grace-period`.
pub async fn run(
    ctx: SessionContext,
    writers: CacheWriters,
    readiness: Readiness,
    leading: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let engine = Engine::new(ctx, readiness, writers.sources.len(), shutdown.clone());
    let mut tasks = tokio::task::JoinSet::new();
    engine.spawn_watches(&mut tasks, writers);

    // Handle events only once every cache is complete and this replica leads.
    let started = async {
        engine.synced.wait().await;
        tracing::info!("caches synced");
        leading.notified().await;
    };
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        () = started => {
            let backlog = engine.activate();
            tracing::info!(backlog, "legacy engine handling events inline");
            tasks.spawn(crate::handlers::session::runner_events::run(engine.ctx.clone(), shutdown.clone()));
            // A finished runner call (live changes) or a refused pod makes its session due again.
            let timers = engine.timers.clone();
            engine.ctx.state.waker.set(Arc::new(move |key| {
                timers.schedule(key, std::time::Duration::ZERO);
            }));
            tasks.spawn(engine.clone().handle_due_keys());
            if let Some(gate) = &engine.ctx.shard {
                // Events of a bucket were dropped while it was not ours: all it holds is due.
                let (caches, timers) = (engine.ctx.caches.clone(), engine.timers.clone());
                gate.on_acquired(Box::new(move |buckets| {
                    for key in super::keys_in(&caches, &buckets) {
                        timers.schedule(key, std::time::Duration::ZERO);
                    }
                }));
            }
            shutdown.cancelled().await;
        }
    }

    let grace = engine.ctx.config.args.shutdown_grace_period;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight handling did not finish within the grace period; abandoned"
        );
        tasks.abort_all();
    }
}

/// Why a key is being handled: decides whether it is worth it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// An event of the session itself; `changed` unless it touched only status.
    Session { changed: bool },
    /// An event of one of the session's children (Job, Pod, token Secret, Service).
    Child,
    /// Any other event (Namespace, ProjectSettings, shared Secrets).
    Other,
    /// Its deadline on the timers.
    Due,
}

/// The keys an event names, and why.
type Work = Vec<(ObjectKey, Trigger)>;

impl Trigger {
    /// Whether handling a key now can change anything (see the module docs). `stale`: its last
    /// handling read a copy the API server had already replaced; `has_status`: the cached
    /// session has a status (asked only for child events).
    fn worth_handling(self, stale: bool, has_status: impl FnOnce() -> bool) -> bool {
        match self {
            // The session's own update is what brings a stale copy up to date.
            Trigger::Session { changed } => changed || stale,
            Trigger::Child => !stale && has_status(),
            Trigger::Other | Trigger::Due => !stale,
        }
    }
}

/// State shared by the loops, the timers' task and the handlers; cheap to clone.
#[derive(Clone)]
struct Engine {
    ctx: SessionContext,
    locks: KeyLocks<ObjectKey>,
    timers: Timers<ObjectKey>,
    /// Sessions whose last handling read a copy the API server had already replaced; only the
    /// session's next event (which brings the newer copy) handles them again.
    stale: Arc<DashSet<ObjectKey>>,
    /// What the loops remember between events, to tell which ones matter.
    seen: Arc<Seen>,
    /// Set once every kind has listed and this replica leads: events are then handled.
    active: CancellationToken,
    synced: Arc<SyncTracker>,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Seen {
    /// [`session_fingerprint`] of every session, and whether it had finished.
    fingerprints: DashMap<ObjectKey, (u64, bool)>,
    /// Managed namespaces.
    managed: DashSet<String>,
    /// ProjectSettings generation by namespace.
    generations: DashMap<String, i64>,
}

impl Engine {
    fn new(
        ctx: SessionContext,
        readiness: Readiness,
        sources: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let timers = Timers::new(
            ctx.config.args.retry_base_delay,
            ctx.config.args.retry_max_delay,
        );
        let watches = KINDS + usize::from(ctx.config.args.kueue) + sources;
        Engine {
            ctx,
            locks: KeyLocks::default(),
            timers,
            stale: Arc::default(),
            seen: Arc::default(),
            active: CancellationToken::new(),
            synced: Arc::new(SyncTracker::new(watches, readiness)),
            shutdown,
        }
    }

    fn spawn_watches(&self, tasks: &mut tokio::task::JoinSet<()>, writers: CacheWriters) {
        let client = self.ctx.client.clone();
        let part = self
            .ctx
            .shard
            .as_ref()
            .map(|gate| Part::follow(&self.ctx, gate.clone(), self.shutdown.clone()));
        // The client of the namespaced kinds: with sharding, its requests carry the selector.
        let mine = part
            .as_ref()
            .map_or_else(|| client.clone(), |p| p.client.clone());
        let children = Some(child_selector());
        tasks.spawn(
            self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<AgenticSession>::all(mine.clone()), None)
                        .with_page_size(CRD_PAGE_SIZE),
                ),
                writers.sessions,
                Engine::on_session,
            ),
        );
        tasks.spawn(self.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<RunnerJob>::all(mine.clone()), children.clone()),
            ),
            writers.jobs,
            Engine::on_child,
        ));
        tasks.spawn(self.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<RunnerPod>::all(mine.clone()), children.clone()),
            ),
            writers.pods,
            |engine: &Engine, event: &Event<RunnerPod>| {
                engine.ctx.caches.pods_by_session.apply(event);
                engine.on_child(event)
            },
        ));
        tasks.spawn(self.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(
                    Api::<RunnerSecret>::all(mine.clone()),
                    Some(secret_selector()),
                ),
            ),
            writers.secrets,
            Engine::on_secret,
        ));
        tasks.spawn(self.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(
                    Api::<RunnerService>::all(mine.clone()),
                    Some(service_selector()),
                ),
            ),
            writers.services,
            Engine::on_child,
        ));
        tasks.spawn(
            self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<NamedSecret>::all(mine.clone()), None)
                        .with_field_selector(name_selector(keys::RUNNER_SECRETS)),
                ),
                writers.runner_secrets,
                Engine::on_runner_secrets,
            ),
        );
        tasks.spawn(
            self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<NamedSecret>::all(mine.clone()), None)
                        .with_field_selector(name_selector(keys::INTEGRATIONS_SECRET)),
                ),
                writers.integration_secrets,
                Engine::on_integration_secrets,
            ),
        );
        tasks.spawn(
            self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<CaBundle>::all(mine.clone()), None)
                        .with_field_selector(name_selector(keys::CA_BUNDLE_CONFIGMAP)),
                ),
                writers.ca_bundles,
                |_, _| Vec::new(),
            ),
        );
        if self.ctx.config.args.kueue {
            tasks.spawn(self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<RunnerWorkload>::all(mine.clone()), None),
                ),
                writers.workloads,
                Engine::on_workload,
            ));
        }
        // Every replica copies the shared Secret sources and follows every managed namespace.
        for (namespace, name, writer) in writers.sources {
            tasks.spawn(
                self.clone().watch(
                    Scoped::all(
                        WatchLoop::new(
                            Api::<NamedSecret>::namespaced(client.clone(), &namespace),
                            None,
                        )
                        .with_field_selector(name_selector(name)),
                    ),
                    writer,
                    Engine::on_shared_source,
                ),
            );
        }
        tasks.spawn(self.clone().watch(
            Scoped::all(WatchLoop::new(
                Api::<Namespace>::all(client),
                Some(managed_namespace_selector()),
            )),
            writers.namespaces,
            Engine::on_namespace,
        ));
        tasks.spawn(
            self.clone().watch(
                Part::narrow(
                    &part,
                    WatchLoop::new(Api::<ProjectSettings>::all(mine), None)
                        .with_page_size(CRD_PAGE_SIZE),
                ),
                writers.project_settings,
                Engine::on_project_settings,
            ),
        );
    }

    /// One kind's loop: each change is applied to the cache as soon as it is read and noted
    /// (`react`); the keys it names are then handled inline, one at a time, in arrival order.
    async fn watch<K>(
        self,
        scoped: Scoped<K>,
        mut writer: Writer<K>,
        react: fn(&Engine, &Event<K>) -> Work,
    ) where
        K: WatchedKind,
    {
        // The first list fills the cache the way kube's watcher does: Init, InitApply per
        // object, InitDone. InitDone swaps the store's buffer in, so an object of the first list
        // applied directly instead of buffered would be swapped out and forgotten (every object
        // that existed before the operator started, managed namespaces included).
        let init = Event::Init;
        writer.apply_watcher_event(&init);
        react(&self, &init);
        let store = writer.as_reader();
        let mut listed = false;
        let Scoped { watch, report } = scoped;
        let observe = |change| {
            let event = match change {
                Change::Applied(object) if !listed => Event::InitApply(object),
                Change::Applied(object) => Event::Apply(object),
                Change::Deleted(object) => Event::Delete(object),
                // Gone while the loop was away: the cache has its last state.
                Change::Vanished(name) => {
                    let namespace = name.namespace.as_deref().unwrap_or_default();
                    match store.get(namespace, &name.name) {
                        Some(object) => Event::Delete(K::clone(&object)),
                        None => return Vec::new(),
                    }
                }
                Change::Listed { first, generation } => {
                    // The cache holds the scope this list was made for, unless the scope
                    // changed meanwhile (another relist is on its way then).
                    if let Some((slot, scope)) = &report {
                        let scope = *scope.read();
                        if scope.generation == generation {
                            slot.synced(generation, scope.buckets);
                        }
                    }
                    if !first {
                        return Vec::new();
                    }
                    listed = true;
                    self.synced.mark(true);
                    Event::InitDone
                }
            };
            writer.apply_watcher_event(&event);
            react(&self, &event)
        };
        let this = &self;
        let handle = |(key, trigger)| async move {
            if this.active.is_cancelled() {
                this.handle(key, trigger).await;
            } // else the start-up backlog covers it
        };
        watch
            .with_modifier(Slim::slim)
            .run(observe, handle, self.shutdown.clone())
            .await;
    }

    fn on_session(&self, event: &Event<AgenticSession>) -> Work {
        self.ctx.caches.unfinished.apply(event);
        match event {
            Event::InitApply(session) | Event::Apply(session) => {
                let Some(key) = ObjectKey::of_session(session) else {
                    return Vec::new();
                };
                let print = (session_fingerprint(session), session.phase().is_terminal());
                let previous = self.seen.fingerprints.insert(key.clone(), print);
                let Event::Apply(_) = event else {
                    return Vec::new();
                };
                let changed = previous.map(|p| p.0) != Some(print.0);
                let mut work = vec![(key.clone(), Trigger::Session { changed })];
                // A session finished (or restarted): its namespace may need fewer (or more)
                // Secret copies.
                if previous.is_some_and(|p| p.1 != print.1) {
                    work.push((
                        ObjectKey::SecretCopies(key.namespace().to_string()),
                        Trigger::Other,
                    ));
                }
                work
            }
            Event::Delete(session) => {
                let Some(key) = ObjectKey::of_session(session) else {
                    return Vec::new();
                };
                self.seen.fingerprints.remove(&key);
                crate::handlers::session::forget_deleted(
                    key.namespace(),
                    &session.name_any(),
                    &self.ctx.state,
                );
                self.stale.remove(&key);
                self.timers.forget(&key);
                vec![(
                    ObjectKey::SecretCopies(key.namespace().to_string()),
                    Trigger::Other,
                )]
            }
            Event::Init | Event::InitDone => Vec::new(),
        }
    }

    fn on_child<K: RunnerChild>(&self, event: &Event<K>) -> Work {
        match event {
            Event::Apply(child) | Event::Delete(child) => ObjectKey::owning_session(child)
                .map(|key| (key, Trigger::Child))
                .into_iter()
                .collect(),
            Event::Init | Event::InitApply(_) | Event::InitDone => Vec::new(),
        }
    }

    /// A Workload changed: its runner Job's session (found through the Job's UID in the Job
    /// cache) is looked at again.
    fn on_workload(&self, event: &Event<RunnerWorkload>) -> Work {
        let (Event::Apply(workload) | Event::Delete(workload)) = event else {
            return Vec::new();
        };
        let (Some(namespace), Some(job_uid)) = (workload.namespace(), workload.job_uid()) else {
            return Vec::new();
        };
        self.ctx
            .caches
            .jobs
            .find_in(&namespace, |job| {
                job.metadata.uid.as_deref() == Some(job_uid)
            })
            .as_deref()
            .and_then(ObjectKey::owning_session)
            .map(|key| (key, Trigger::Child))
            .into_iter()
            .collect()
    }

    /// Of a session's own Secrets only deletion matters: it is provisioned again (other
    /// changes are the operator's own writes: creation, token refresh). Any change of a copy
    /// of a shared Secret has its namespace's copies reconciled.
    fn on_secret(&self, event: &Event<RunnerSecret>) -> Work {
        match event {
            Event::Apply(secret) | Event::Delete(secret)
                if ObjectKey::owning_session(secret).is_none() =>
            {
                secret
                    .namespace()
                    .map(|ns| (ObjectKey::SecretCopies(ns), Trigger::Other))
                    .into_iter()
                    .collect()
            }
            Event::Delete(_) => self.on_child(event),
            _ => Vec::new(),
        }
    }

    /// The appearance (or change) of a namespace's runner credentials starts its waiting
    /// sessions.
    fn on_runner_secrets(&self, event: &Event<NamedSecret>) -> Work {
        match event {
            Event::Apply(secret) | Event::Delete(secret) => secret
                .namespace()
                .map(|ns| sessions_in(&self.ctx, &ns))
                .unwrap_or_default()
                .into_iter()
                .map(|key| (key, Trigger::Other))
                .collect(),
            Event::Init | Event::InitApply(_) | Event::InitDone => Vec::new(),
        }
    }

    /// Like [`Engine::on_runner_secrets`], and the namespace's copies follow the integrations.
    fn on_integration_secrets(&self, event: &Event<NamedSecret>) -> Work {
        let mut work = self.on_runner_secrets(event);
        if let Event::Apply(secret) | Event::Delete(secret) = event {
            work.extend(
                secret
                    .namespace()
                    .map(|ns| (ObjectKey::SecretCopies(ns), Trigger::Other)),
            );
        }
        work
    }

    /// A shared Secret source rotated: every managed namespace's copies follow.
    fn on_shared_source(&self, event: &Event<NamedSecret>) -> Work {
        match event {
            Event::Apply(_) | Event::Delete(_) => self
                .ctx
                .caches
                .namespaces
                .state()
                .iter()
                .map(|ns| (ObjectKey::SecretCopies(ns.name_any()), Trigger::Other))
                .collect(),
            Event::Init | Event::InitApply(_) | Event::InitDone => Vec::new(),
        }
    }

    fn on_namespace(&self, event: &Event<Namespace>) -> Work {
        match event {
            Event::InitApply(namespace) => {
                self.seen.managed.insert(namespace.name_any());
                Vec::new()
            }
            Event::Apply(namespace) => {
                let name = namespace.name_any();
                if self.seen.managed.insert(name.clone()) {
                    // Newly managed: its sessions were ignored until now.
                    for key in sessions_in(&self.ctx, &name) {
                        self.timers.schedule(key, std::time::Duration::ZERO);
                    }
                }
                vec![(ObjectKey::Namespace(name), Trigger::Other)]
            }
            Event::Delete(namespace) => {
                self.seen.managed.remove(&namespace.name_any());
                Vec::new()
            }
            Event::Init | Event::InitDone => Vec::new(),
        }
    }

    fn on_project_settings(&self, event: &Event<ProjectSettings>) -> Work {
        match event {
            Event::InitApply(settings) | Event::Apply(settings) => {
                let Some(namespace) = settings.namespace() else {
                    return Vec::new();
                };
                let generation = settings.meta().generation.unwrap_or_default();
                let previous = self.seen.generations.insert(namespace.clone(), generation);
                if matches!(event, Event::InitApply(_)) || previous == Some(generation) {
                    return Vec::new(); // listed at start-up, or a status-only update
                }
                if previous.is_some() {
                    // The inactivity timeout may have changed for every session here.
                    for key in sessions_in(&self.ctx, &namespace) {
                        self.timers.schedule(key, std::time::Duration::ZERO);
                    }
                }
                vec![(ObjectKey::ProjectSettings(namespace), Trigger::Other)]
            }
            Event::Delete(settings) => match settings.namespace() {
                Some(namespace) => {
                    self.seen.generations.remove(&namespace);
                    // A managed namespace always has its ProjectSettings: recreate it.
                    vec![(ObjectKey::Namespace(namespace), Trigger::Other)]
                }
                None => Vec::new(),
            },
            Event::Init | Event::InitDone => Vec::new(),
        }
    }

    /// Starts handling: every cached key is due now (the start-up backlog, drained by the
    /// timers' task while the loops handle fresh events). Returns the backlog's size.
    fn activate(&self) -> usize {
        self.active.cancel();
        let caches = &self.ctx.caches;
        let mut keys: Vec<ObjectKey> = caches
            .namespaces
            .state()
            .iter()
            .map(|ns| ObjectKey::Namespace(ns.name_any()))
            .collect();
        keys.extend(
            caches
                .project_settings
                .state()
                .iter()
                .filter_map(|ps| ps.namespace().map(ObjectKey::ProjectSettings)),
        );
        keys.extend(
            caches
                .sessions
                .state()
                .iter()
                .filter_map(|s| ObjectKey::of_session(s)),
        );
        let backlog = keys.len();
        for key in keys {
            self.timers.schedule(key, std::time::Duration::ZERO);
        }
        backlog
    }

    /// The timers' task: handles each key when it is due, one at a time.
    async fn handle_due_keys(self) {
        loop {
            let key = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                key = self.timers.next() => key,
            };
            self.handle(key, Trigger::Due).await;
        }
    }

    /// Handles `key` unless `trigger` says it is not worth it now. A panicking handler is a
    /// failed handling (SPEC §3): it must not take down the loop that called it.
    async fn handle(&self, key: ObjectKey, trigger: Trigger) {
        let _locked = self.locks.lock(key.clone()).await;
        if self.shutdown.is_cancelled() {
            return; // only in-flight handling finishes
        }
        let stale = self.stale.contains(&key);
        if !trigger.worth_handling(stale, || self.has_status(&key)) {
            return;
        }
        self.stale.remove(&key);
        self.timers.cancel(&key);
        let outcome = AssertUnwindSafe(handle(key.clone(), self.ctx.clone()))
            .catch_unwind()
            .instrument(key.span())
            .await;
        match outcome {
            Ok(Ok(after)) => {
                self.timers.succeeded(&key);
                if let Some(after) = after {
                    self.timers.schedule(key, after);
                }
            }
            Ok(Err(error)) if error.is_stale_read() => {
                tracing::debug!(?key, %error, "cached copy was behind; handled again on its next event");
                self.stale.insert(key);
            }
            Ok(Err(error)) => {
                let delay = self.timers.retry(key.clone());
                tracing::warn!(?key, %error, ?delay, "handler failed; retrying");
            }
            Err(panic) => {
                let delay = self.timers.retry(key.clone());
                let message = panic_message(panic.as_ref());
                tracing::error!(?key, panic = message, ?delay, "handler panicked; retrying");
            }
        }
    }

    /// Whether the cached session `key` names has a status (only sessions have none).
    fn has_status(&self, key: &ObjectKey) -> bool {
        match key {
            ObjectKey::Session { namespace, name } => self
                .ctx
                .caches
                .sessions
                .get(namespace, name)
                .is_some_and(|session| session.status.is_some()),
            ObjectKey::Namespace(_)
            | ObjectKey::ProjectSettings(_)
            | ObjectKey::SecretCopies(_) => true,
        }
    }
}

/// With `--sharding`: the scope the namespaced loops hold, and how they follow it.
struct Part {
    gate: ShardGate,
    /// The scope the filters read (updated before each relist is requested).
    scope: Arc<RwLock<Scope>>,
    /// Requests a relist of every namespaced loop (the scope's generation).
    relist: tokio::sync::watch::Sender<u64>,
    /// The namespaced loops' client, whose requests carry the scope's selector.
    client: kube::Client,
}

impl Part {
    /// Starts following the gate's scope (the coordinator published the first one before the
    /// engine started): each new scope updates the filters and the selector, then relists.
    fn follow(ctx: &Context, gate: ShardGate, shutdown: CancellationToken) -> Part {
        let selector = ShardSelector::default();
        let mut scopes = gate.subscribe();
        let first = *scopes.borrow_and_update();
        selector.set(first.buckets);
        let client = selector.client(&ctx.client_config, &ctx.client, "namespaced loops");
        let scope = Arc::new(RwLock::new(first));
        let (relist, _) = tokio::sync::watch::channel(first.generation);
        let part = Part {
            gate,
            scope: Arc::clone(&scope),
            relist: relist.clone(),
            client,
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = scopes.changed() => if changed.is_err() { return },
                }
                let next = *scopes.borrow_and_update();
                *scope.write() = next;
                selector.set(next.buckets);
                relist.send_replace(next.generation);
            }
        });
        part
    }

    /// `watch` restricted to the scope (unchanged without sharding).
    fn narrow<K>(part: &Option<Part>, watch: WatchLoop<K>) -> Scoped<K>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let Some(part) = part else {
            return Scoped::all(watch);
        };
        let scope = Arc::clone(&part.scope);
        Scoped {
            watch: watch
                .with_filter(Box::new(move |object: &K| {
                    object
                        .meta()
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| scope.read().buckets.contains_namespace(ns))
                }))
                .with_relist(part.relist.subscribe()),
            report: Some((part.gate.register_watch(), Arc::clone(&part.scope))),
        }
    }
}

/// A loop and, with sharding, where it reports the scope it synced.
struct Scoped<K> {
    watch: WatchLoop<K>,
    report: Option<(WatchSlot, Arc<RwLock<Scope>>)>,
}

impl<K> Scoped<K> {
    /// A loop holding everything it selects.
    fn all(watch: WatchLoop<K>) -> Self {
        Scoped {
            watch,
            report: None,
        }
    }
}

/// The message a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_only_session_updates_are_handled_only_after_a_stale_read() {
        let status_only = Trigger::Session { changed: false };
        assert!(!status_only.worth_handling(false, || true));
        assert!(status_only.worth_handling(true, || true));
        assert!(Trigger::Session { changed: true }.worth_handling(false, || true));
    }

    #[test]
    fn child_events_wait_for_the_sessions_first_status_and_for_a_stale_copy_to_catch_up() {
        assert!(Trigger::Child.worth_handling(false, || true));
        assert!(!Trigger::Child.worth_handling(false, || false));
        assert!(!Trigger::Child.worth_handling(true, || true));
    }

    #[test]
    fn due_keys_and_other_events_wait_only_for_a_stale_copy() {
        for trigger in [Trigger::Due, Trigger::Other] {
            assert!(trigger.worth_handling(false, || false));
            assert!(!trigger.worth_handling(true, || true));
        }
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("bang")), "bang");
        assert_eq!(panic_message(&42_u8), "(no message)");
    }
}
