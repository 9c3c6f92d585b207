//! The legacy engine (`--legacy-watch`): one raw watch loop per kind ([`agentic_legacy`]), each
//! event applied to the caches and handled inline, in arrival order, by the same
//! [`super::handle`] the work-queue engine calls. No queue: a failing handler is retried inline
//! a few times, and a periodic recheck of every unfinished session makes timers (start timeout,
//! inactivity, token refresh) fire and failed keys converge. Slow, but never wrong.
//!
//! With `--sharding` the loops of namespaced kinds hold only the scope's buckets: a filter
//! drops other namespaces' objects, their requests carry the scope's shard selector, and a
//! scope change relists them (what left is reported deleted, what joined applied).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use agentic_crds::{AgenticSession, ProjectSettings, keys};
use agentic_legacy::{Change, RetryDelays, WatchLoop};
use dashmap::{DashMap, DashSet};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use kube::{Api, Resource, ResourceExt};
use parking_lot::RwLock;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ObjectKey, SyncTracker, handle};
use crate::admin::Readiness;
use crate::caches::{
    CacheWriters, Slim, child_selector, managed_namespace_selector, name_selector, secret_selector,
    service_selector,
};
use crate::context::Context;
use crate::projections::{
    CaBundle, NamedSecret, RunnerJob, RunnerPod, RunnerSecret, RunnerService,
};
use crate::shard::{Scope, ShardGate, ShardSelector, WatchSlot};

/// How often every unfinished session is reconciled again.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Inline attempts of a failing handler before it is left to the periodic recheck.
const INLINE_ATTEMPTS: u32 = 4;
/// Watches whose first list must complete before events are handled, besides one per shared
/// Secret source.
const KINDS: usize = 10;

/// Shared by the loops of every kind.
#[derive(Clone)]
struct Shared {
    ctx: Context,
    /// Serialises handling of one key across the loops and the recheck.
    locks: Arc<DashMap<ObjectKey, Arc<Mutex<()>>>>,
    /// Keys whose last handling failed; retried by the recheck.
    failed: Arc<DashSet<ObjectKey>>,
    /// Set once every kind has listed and this replica leads: events are then handled.
    active: CancellationToken,
    synced: Arc<SyncTracker>,
}

/// Runs the loops until `shutdown`.
pub async fn run(
    ctx: Context,
    writers: CacheWriters,
    readiness: Readiness,
    leading: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let shared = Shared {
        ctx: ctx.clone(),
        locks: Arc::default(),
        failed: Arc::default(),
        active: CancellationToken::new(),
        synced: Arc::new(SyncTracker::new(KINDS + writers.sources.len(), readiness)),
    };
    let client = ctx.client.clone();
    let part = ctx
        .shard
        .as_ref()
        .map(|gate| Part::follow(&ctx, gate.clone(), shutdown.clone()));
    // The client of the namespaced kinds: with sharding, its requests carry the selector.
    let mine = part
        .as_ref()
        .map_or_else(|| client.clone(), |p| p.client.clone());
    let mut loops = tokio::task::JoinSet::new();
    let children = Some(child_selector());
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<AgenticSession>::all(mine.clone()), None)
                    .with_modifier(Slim::slim),
            ),
            writers.sessions,
            |session: &AgenticSession| {
                let mut keys: Vec<ObjectKey> = session_key(session).into_iter().collect();
                // A finished session may leave its namespace needing fewer Secret copies.
                if session.phase().is_terminal() {
                    keys.extend(session.namespace().map(ObjectKey::SecretCopies));
                }
                keys
            },
            |ctx, event| ctx.caches.unfinished.apply(event),
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<RunnerJob>::all(mine.clone()), children.clone())
                    .with_modifier(Slim::slim),
            ),
            writers.jobs,
            |job: &RunnerJob| ObjectKey::owning_session(job).into_iter().collect(),
            |_, _| {},
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<RunnerPod>::all(mine.clone()), children.clone())
                    .with_modifier(Slim::slim),
            ),
            writers.pods,
            |pod: &RunnerPod| ObjectKey::owning_session(pod).into_iter().collect(),
            |ctx, event| ctx.caches.pods_by_session.apply(event),
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(
                    Api::<RunnerSecret>::all(mine.clone()),
                    Some(secret_selector()),
                )
                .with_modifier(Slim::slim),
            ),
            writers.secrets,
            |secret: &RunnerSecret| match ObjectKey::owning_session(secret) {
                Some(key) => vec![key],
                None => secret
                    .namespace()
                    .map(ObjectKey::SecretCopies)
                    .into_iter()
                    .collect(),
            },
            |_, _| {},
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(
                    Api::<RunnerService>::all(mine.clone()),
                    Some(service_selector()),
                )
                .with_modifier(Slim::slim),
            ),
            writers.services,
            |service: &RunnerService| ObjectKey::owning_session(service).into_iter().collect(),
            |_, _| {},
            shutdown.clone(),
        ),
    );
    let named = |name: &str| name_selector(name);
    // The appearance of a namespace's credentials starts its waiting sessions.
    let sessions_of_namespace = {
        let ctx = ctx.clone();
        move |secret: &NamedSecret| {
            secret
                .namespace()
                .map(|ns| super::sessions_in(&ctx, &ns))
                .unwrap_or_default()
        }
    };
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<NamedSecret>::all(mine.clone()), None)
                    .with_field_selector(named(keys::RUNNER_SECRETS))
                    .with_modifier(Slim::slim),
            ),
            writers.runner_secrets,
            sessions_of_namespace.clone(),
            |_, _| {},
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<NamedSecret>::all(mine.clone()), None)
                    .with_field_selector(named(keys::INTEGRATIONS_SECRET))
                    .with_modifier(Slim::slim),
            ),
            writers.integration_secrets,
            move |secret: &NamedSecret| {
                let mut keys = sessions_of_namespace(secret);
                keys.extend(secret.namespace().map(ObjectKey::SecretCopies));
                keys
            },
            |_, _| {},
            shutdown.clone(),
        ),
    );
    loops.spawn(
        shared.clone().watch(
            Part::narrow(
                &part,
                WatchLoop::new(Api::<CaBundle>::all(mine.clone()), None)
                    .with_field_selector(named(keys::CA_BUNDLE_CONFIGMAP))
                    .with_modifier(Slim::slim),
            ),
            writers.ca_bundles,
            |_: &CaBundle| Vec::new(),
            |_, _| {},
            shutdown.clone(),
        ),
    );
    for (namespace, name, writer) in writers.sources {
        // A rotation: every managed namespace's copies follow.
        let caches = ctx.caches.clone();
        loops.spawn(
            shared.clone().watch(
                Scoped::all(
                    WatchLoop::new(
                        Api::<NamedSecret>::namespaced(client.clone(), &namespace),
                        None,
                    )
                    .with_field_selector(named(name))
                    .with_modifier(Slim::slim),
                ),
                writer,
                move |_: &NamedSecret| {
                    caches
                        .namespaces
                        .state()
                        .iter()
                        .map(|ns| ObjectKey::SecretCopies(ns.name_any()))
                        .collect()
                },
                |_, _| {},
                shutdown.clone(),
            ),
        );
    }
    loops.spawn(
        shared.clone().watch(
            Scoped::all(
                WatchLoop::new(
                    Api::<Namespace>::all(client.clone()),
                    Some(managed_namespace_selector()),
                )
                .with_modifier(Slim::slim),
            ),
            writers.namespaces,
            |namespace: &Namespace| vec![ObjectKey::Namespace(namespace.name_any())],
            |_, _| {},
            shutdown.clone(),
        ),
    );
    loops.spawn(shared.clone().watch(
        Part::narrow(
            &part,
            WatchLoop::new(Api::<ProjectSettings>::all(mine), None).with_modifier(Slim::slim),
        ),
        writers.project_settings,
        |settings: &ProjectSettings| {
            settings
                .namespace()
                .map(|ns| {
                    vec![
                        ObjectKey::ProjectSettings(ns.clone()),
                        ObjectKey::Namespace(ns),
                    ]
                })
                .unwrap_or_default()
        },
        |_, _| {},
        shutdown.clone(),
    ));

    // Handle events only once every cache is complete and this replica leads.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        () = shared.synced.wait() => {}
    }
    tracing::info!("caches synced");
    tokio::select! {
        _ = shutdown.cancelled() => return,
        () = leading.notified() => {}
    }
    tracing::info!("legacy engine handling events inline");
    tokio::spawn(crate::runner_events::run(ctx.clone(), shutdown.clone()));
    if let Some(gate) = &ctx.shard {
        // Events of a bucket were dropped while it was not ours: handle all it holds.
        let acquiring = shared.clone();
        gate.on_acquired(Box::new(move |buckets| {
            let shared = acquiring.clone();
            tokio::spawn(async move {
                for key in super::keys_in(&shared.ctx.caches, &buckets) {
                    shared.handle_inline(key).await;
                }
            });
        }));
    }
    let waking = shared.clone();
    ctx.syncs.set_waker(Arc::new(move |key| {
        let shared = waking.clone();
        tokio::spawn(async move { shared.handle_inline(key).await });
    }));
    shared.active.cancel();
    shared.recheck_everything().await;
    let mut tick = tokio::time::interval(RECHECK_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => shared.recheck_unfinished().await,
        }
    }
    while loops.join_next().await.is_some() {}
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
        let client = kube::client::ClientBuilder::try_from(ctx.client_config.clone())
            .map(|builder| builder.with_layer(&selector).build())
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "no client for the shard selector: filtering client-side only");
                ctx.client.clone()
            });
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

impl Shared {
    /// One kind's loop: apply each change to the cache, then handle the keys it affects.
    async fn watch<K, F>(
        self,
        scoped: Scoped<K>,
        mut writer: Writer<K>,
        keys_of: F,
        after_apply: fn(&Context, &Event<K>),
        shutdown: CancellationToken,
    ) where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
        F: Fn(&K) -> Vec<ObjectKey>,
    {
        // The first list fills the cache the way kube's watcher does: Init, InitApply per
        // object, InitDone. InitDone swaps the store's buffer in, so an object of the first list
        // applied directly instead of buffered would be swapped out and forgotten (every object
        // that existed before the operator started, managed namespaces included).
        writer.apply_watcher_event(&Event::Init);
        after_apply(&self.ctx, &Event::Init);
        let mut listed = false;
        let Scoped { watch, report } = scoped;
        watch
            .run(
                |change| {
                    let keys = match &change {
                        Change::Applied(object) | Change::Deleted(object) => keys_of(object),
                        Change::Listed { .. } => Vec::new(),
                    };
                    let event = match change {
                        Change::Applied(object) if !listed => Some(Event::InitApply(object)),
                        Change::Applied(object) => Some(Event::Apply(object)),
                        Change::Deleted(object) => Some(Event::Delete(object)),
                        Change::Listed { first, generation } => {
                            // The cache holds the scope this list was made for, unless the
                            // scope changed meanwhile (another relist is on its way then).
                            if let Some((slot, scope)) = &report {
                                let scope = *scope.read();
                                if scope.generation == generation {
                                    slot.synced(scope.buckets);
                                }
                            }
                            if first {
                                listed = true;
                                writer.apply_watcher_event(&Event::InitDone);
                                after_apply(&self.ctx, &Event::InitDone);
                                self.synced.mark(true);
                            }
                            None
                        }
                    };
                    if let Some(event) = &event {
                        writer.apply_watcher_event(event);
                        after_apply(&self.ctx, event);
                    }
                    let this = self.clone();
                    async move {
                        if this.active.is_cancelled() {
                            for key in keys {
                                this.handle_inline(key).await;
                            }
                        }
                    }
                },
                shutdown,
            )
            .await;
    }

    /// Handles `key` now, retrying a few times; a key still failing is left to the recheck.
    /// A panicking handler is a failed attempt (SPEC §3): it must not take down the watch loop
    /// or the recheck that called it.
    async fn handle_inline(&self, key: ObjectKey) {
        let lock = self.locks.entry(key.clone()).or_default().clone();
        let _held = lock.lock().await;
        let mut delays = RetryDelays::new(Duration::from_millis(50), Duration::from_secs(2));
        for attempt in 1..=INLINE_ATTEMPTS {
            let outcome = AssertUnwindSafe(handle(key.clone(), self.ctx.clone()))
                .catch_unwind()
                .instrument(key.span())
                .await;
            let result = match outcome {
                Ok(result) => result.map_err(|error| error.to_string()),
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(?key, panic = message, "handler panicked");
                    Err(format!("handler panicked: {message}"))
                }
            };
            match result {
                Ok(_) => {
                    self.failed.remove(&key);
                    return;
                }
                Err(error) if attempt == INLINE_ATTEMPTS => {
                    tracing::warn!(?key, %error, "handler failed; left to the periodic recheck");
                    self.failed.insert(key.clone());
                }
                Err(error) => {
                    tracing::debug!(?key, %error, attempt, "handler failed; retrying inline");
                    tokio::time::sleep(delays.next_delay()).await;
                }
            }
        }
    }

    /// Reconciles every cached object once (after start-up or a leadership change).
    async fn recheck_everything(&self) {
        let caches = &self.ctx.caches;
        let mut keys: BTreeSet<ObjectKey> = caches
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
                .filter_map(|s| session_key(s)),
        );
        for key in keys {
            self.handle_inline(key).await;
        }
    }

    /// Reconciles every session not in a final phase, plus keys whose last handling failed.
    async fn recheck_unfinished(&self) {
        let mut keys: BTreeSet<ObjectKey> = self
            .ctx
            .caches
            .sessions
            .state()
            .iter()
            .filter(|s| {
                let terminal = s.status.as_ref().is_some_and(|st| st.phase.is_terminal());
                !terminal || s.annotations().contains_key(keys::DESIRED_PHASE_ANNOTATION)
            })
            .filter_map(|s| session_key(s))
            .collect();
        keys.extend(self.failed.iter().map(|k| k.clone()));
        for key in keys {
            self.handle_inline(key).await;
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

fn session_key(session: &AgenticSession) -> Option<ObjectKey> {
    Some(ObjectKey::Session {
        namespace: session.namespace()?,
        name: session.name_any(),
    })
}
