//! The work-queue engine (default): kube watchers keep the caches, their events become keys in
//! the project's [`agentic_queue::WorkQueue`], and `--max-concurrent-reconciles` workers call
//! [`super::handle`].
//!
//! - Keys from an initial list go in the queue's low-priority lane, fresh events in the high one,
//!   so new sessions are not stuck behind a start-up backlog.
//! - Events that cannot change an outcome are dropped: session updates that touch only status
//!   (the operator's own writes among them), and Secret updates.
//! - Workers start only once every cache has synced (readiness turns true at the same moment),
//!   so no decision is made from a half-filled cache.
//! - Each watch lists and watches through a client of its own that reports to
//!   [`crate::observability::health`], and reports its errors and events there: `/healthz` knows which watch
//!   is failing or dead.

use std::sync::Arc;
use std::time::Duration;

use super::scoped_watch::ScopedWatch;
use agentic_crds::{AgenticSession, ProjectSettings, keys};
use agentic_queue::{
    BucketConfig, DrainReport, Priority, QueueConfig, QueueMetrics, Requeue, WorkQueue, WorkerPool,
};
use dashmap::{DashMap, DashSet};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{SyncTracker, WatchedKind, handle, session_fingerprint, sessions_in};
use crate::cache::ObjectKey;
use crate::cache::projections::{
    CaBundle, NamedSecret, RunnerChild, RunnerJob, RunnerPod, RunnerSecret, RunnerService,
    RunnerWorkload,
};
use crate::cache::{
    CacheWriters, Slim, Writer, child_selector, managed_namespace_selector, name_selector,
    secret_selector, service_selector,
};
use crate::config::Config;
use crate::handlers::session::SessionContext;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;

/// The `name` label of the `workqueue_*` metrics (the controller's name, as in controller-runtime).
pub const QUEUE_NAME: &str = "agenticsession";
/// Number of watch streams whose initial list must complete before workers start, besides
/// one per shared Secret source and, with `--kueue`, the Workloads'.
const WATCHES: usize = 10;

/// Failure to start the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The queue configuration derived from the flags was refused.
    #[error("work queue configuration: {0}")]
    Queue(#[from] agentic_queue::ConfigError),
    /// A watch's client could not be built.
    #[error("client of the {watch} watch: {source}")]
    WatchClient {
        /// The watch.
        watch: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// Queue settings from the operator's flags.
pub fn queue_config(config: &Config) -> QueueConfig {
    QueueConfig {
        backoff_base: config.args.retry_base_delay,
        backoff_cap: config.args.retry_max_delay,
        bucket: Some(BucketConfig {
            qps: f64::from(config.args.retry_qps),
            burst: config.args.retry_burst,
        }),
        max_delay: config.args.retry_max_delay,
        ..QueueConfig::default()
    }
}

fn tenant(key: &ObjectKey) -> Option<&str> {
    Some(key.namespace())
}

/// Runs watches and workers until `shutdown` fires, then drains in-flight work within
/// `--shutdown-grace-period`. `leading` gates the workers: they start once it is notified
/// (immediately when leader election is off) and the caches have synced.
pub async fn run(
    ctx: SessionContext,
    writers: CacheWriters,
    readiness: Readiness,
    leading: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<DrainReport<ObjectKey>, EngineError> {
    let metrics = Arc::new(WorkqueueMetrics::new(&ctx.metrics));
    let queue = WorkQueue::with_tenant(queue_config(&ctx.config), metrics, tenant)?;
    if let Some(gate) = &ctx.shard {
        // Events of a bucket were dropped while it was not ours: queue all it holds.
        let (queue, caches) = (queue.clone(), ctx.caches.clone());
        gate.on_acquired(Box::new(move |buckets| {
            for key in super::keys_in(&caches, &buckets) {
                queue.add_with(&key, Priority::Low);
            }
        }));
    }
    let kueue = usize::from(ctx.config.args.kueue);
    let synced = Arc::new(SyncTracker::new(
        WATCHES + kueue + writers.sources.len(),
        readiness,
    ));
    let watches = Watches {
        ctx: ctx.clone(),
        queue: queue.clone(),
        synced: Arc::clone(&synced),
        shutdown: shutdown.clone(),
    };
    watches.spawn_all(writers)?;

    tokio::select! {
        _ = shutdown.cancelled() => return Ok(queue.shutdown_with_drain(Duration::ZERO).await),
        () = synced.wait() => {}
    }
    tracing::info!("caches synced");
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(queue.shutdown_with_drain(Duration::ZERO).await),
        () = leading.notified() => {}
    }
    tracing::info!(
        workers = ctx.config.args.max_concurrent_reconciles,
        queued = queue.len(),
        "starting workers"
    );
    tokio::spawn(crate::handlers::session::runner_events::run(
        ctx.clone(),
        shutdown.clone(),
    ));
    let waking = queue.clone();
    ctx.state.waker.set(Arc::new(move |key| waking.add(&key)));
    let pool = WorkerPool::new(
        queue,
        usize::from(ctx.config.args.max_concurrent_reconciles),
    )
    .drain_grace(ctx.config.args.shutdown_grace_period);
    let worker_ctx = ctx.clone();
    let report = pool
        .run(
            move |key: ObjectKey| {
                let ctx = worker_ctx.clone();
                let span = key.span();
                async move {
                    match handle(key, ctx).await {
                        Ok(Some(after)) => Ok(Requeue::After(after)),
                        Ok(None) => Ok(Requeue::Never),
                        Err(error) => Err(error),
                    }
                }
                .instrument(span)
            },
            shutdown,
        )
        .await;
    Ok(report)
}

/// The watch tasks and what they share.
#[derive(Clone)]
struct Watches {
    ctx: SessionContext,
    queue: WorkQueue<ObjectKey>,
    synced: Arc<SyncTracker>,
    shutdown: CancellationToken,
}

impl Watches {
    fn spawn_all(&self, writers: CacheWriters) -> Result<(), EngineError> {
        let children = watcher::Config::default()
            .labels(&child_selector())
            .page_size(500);
        // Sessions and ProjectSettings are read whole, managedFields included (their types are
        // the CRDs'): a smaller page holds fewer of those at once while a list is read.
        let all = watcher::Config::default().page_size(super::CRD_PAGE_SIZE);

        let fingerprints: Arc<DashMap<ObjectKey, (u64, bool)>> = Arc::default();
        let this = self.clone();
        self.spawn::<AgenticSession, _>(
            "sessions",
            Part::Mine,
            Api::all,
            all.clone(),
            writers.sessions,
            move |event| {
                this.ctx.caches.unfinished.apply(event);
                this.on_session(event, &fingerprints)
            },
        )?;

        let this = self.clone();
        self.spawn::<RunnerJob, _>(
            "jobs",
            Part::Mine,
            Api::all,
            children.clone(),
            writers.jobs,
            move |event| this.on_child(event),
        )?;

        let this = self.clone();
        self.spawn::<RunnerPod, _>(
            "pods",
            Part::Mine,
            Api::all,
            children.clone(),
            writers.pods,
            move |event: &Event<RunnerPod>| {
                this.ctx.caches.pods_by_session.apply(event);
                this.on_child(event);
            },
        )?;

        let this = self.clone();
        self.spawn::<RunnerSecret, _>(
            "secrets",
            Part::Mine,
            Api::all,
            watcher::Config::default()
                .labels(&secret_selector())
                .page_size(500),
            writers.secrets,
            move |event: &Event<RunnerSecret>| {
                if let Event::Delete(secret) = event {
                    match ObjectKey::owning_session(secret) {
                        // A token Secret deleted behind our back is provisioned again.
                        Some(key) => this.queue.add(&key),
                        // A copy: made again if still needed.
                        None => {
                            if let Some(namespace) = secret.namespace() {
                                this.queue.add(&ObjectKey::SecretCopies(namespace));
                            }
                        }
                    }
                }
            },
        )?;

        let this = self.clone();
        self.spawn::<RunnerService, _>(
            "services",
            Part::Mine,
            Api::all,
            watcher::Config::default()
                .labels(&service_selector())
                .page_size(500),
            writers.services,
            move |event| this.on_child(event),
        )?;

        if self.ctx.config.args.kueue {
            // Every Workload: Kueue copies none of the Job's labels to it by default, so no
            // selector can pick the runners'; the handler maps one to its session.
            let this = self.clone();
            self.spawn::<RunnerWorkload, _>(
                "workloads",
                Part::Mine,
                Api::all,
                watcher::Config::default().page_size(500),
                writers.workloads,
                move |event| this.on_workload(event),
            )?;
        }

        // Credentials watched by name: their appearance starts waiting sessions.
        let this = self.clone();
        self.spawn::<NamedSecret, _>(
            "runner secrets",
            Part::Mine,
            Api::all,
            watcher::Config::default().fields(&name_selector(keys::RUNNER_SECRETS)),
            writers.runner_secrets,
            move |event| this.on_namespace_secret(event, false),
        )?;
        let this = self.clone();
        self.spawn::<NamedSecret, _>(
            "integration secrets",
            Part::Mine,
            Api::all,
            watcher::Config::default().fields(&name_selector(keys::INTEGRATIONS_SECRET)),
            writers.integration_secrets,
            move |event| this.on_namespace_secret(event, true),
        )?;
        self.spawn::<CaBundle, _>(
            "ca bundles",
            Part::Mine,
            Api::all,
            watcher::Config::default().fields(&name_selector(keys::CA_BUNDLE_CONFIGMAP)),
            writers.ca_bundles,
            |_| {}, // read when the next Job is made
        )?;
        for (namespace, name, writer) in writers.sources {
            let this = self.clone();
            self.spawn::<NamedSecret, _>(
                "shared secret",
                Part::All,
                move |client| Api::namespaced(client, &namespace),
                watcher::Config::default().fields(&name_selector(name)),
                writer,
                move |event| this.on_source(event),
            )?;
        }

        let managed: Arc<DashSet<String>> = Arc::default();
        let this = self.clone();
        self.spawn::<Namespace, _>(
            "namespaces",
            Part::All,
            Api::all,
            watcher::Config::default().labels(&managed_namespace_selector()),
            writers.namespaces,
            move |event| this.on_namespace(event, &managed),
        )?;

        let generations: Arc<DashMap<String, i64>> = Arc::default();
        let this = self.clone();
        self.spawn::<ProjectSettings, _>(
            "projectsettings",
            Part::Mine,
            Api::all,
            all,
            writers.project_settings,
            move |event| this.on_project_settings(event, &generations),
        )?;
        Ok(())
    }

    /// Runs one watch of the `K`s `api` reaches (with kube's default backoff on errors) into
    /// its cache, calling `on_event` for every event after the cache has applied it. The watch
    /// has a client of its own and reports to [`crate::observability::health`]; it stops (not dies) on
    /// shutdown.
    ///
    /// With `--sharding` a [`Part::Mine`] watch holds only the scope's buckets and follows its
    /// changes without stopping: see [`super::scoped_watch`].
    fn spawn<K, F>(
        &self,
        what: &'static str,
        part: Part,
        api: impl Fn(kube::Client) -> Api<K> + Send + 'static,
        config: watcher::Config,
        mut writer: Writer<K>,
        on_event: F,
    ) -> Result<(), EngineError>
    where
        K: WatchedKind,
        F: Fn(&Event<K>) + Send + 'static,
    {
        let health = self.ctx.health.watch(what);
        if let (Part::Mine, Some(gate)) = (part, &self.ctx.shard) {
            let watch = ScopedWatch {
                what,
                health,
                client_config: self.ctx.client_config.clone(),
                api,
                config,
                writer,
                on_event,
                slot: gate.register_watch(),
                scopes: gate.subscribe(),
                synced: Arc::clone(&self.synced),
                shutdown: self.shutdown.clone(),
            };
            tokio::spawn(watch.run());
            return Ok(());
        }
        let client =
            health
                .client(&self.ctx.client_config)
                .map_err(|source| EngineError::WatchClient {
                    watch: what,
                    source,
                })?;
        let api = api(client);
        let synced = Arc::clone(&self.synced);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut first_sync = true;
            // A relist's objects, held back until its InitDone (see below).
            let mut relisted: Vec<Event<K>> = Vec::new();
            let stream = watcher::watcher(api, config)
                .default_backoff()
                .modify(Slim::slim);
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        health.stopped();
                        return;
                    }
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(event)) => {
                        health.succeeded();
                        writer.apply_watcher_event(&event);
                        match event {
                            // The writer applies a list's objects to the cache only at its
                            // InitDone. After the first sync workers are running, so a
                            // relist's objects (after 410 Gone) are handled only then: a key
                            // handled earlier would read a cache without its object and take
                            // a session created meanwhile for deleted. (Before the first sync
                            // no worker runs.)
                            Event::InitApply(_) if !first_sync => relisted.push(event),
                            Event::Init => {
                                relisted.clear(); // a list that restarts starts over
                                on_event(&event);
                            }
                            Event::InitDone => {
                                synced.mark(first_sync);
                                first_sync = false;
                                for held in relisted.drain(..) {
                                    on_event(&held);
                                }
                                relisted.shrink_to_fit();
                                on_event(&event);
                            }
                            _ => on_event(&event),
                        }
                    }
                    Some(Err(error)) => {
                        health.failed(&error);
                        tracing::warn!(watch = what, %error, "watch error; retrying");
                    }
                    // Never, from kube's watcher: dropping `health` marks the watch dead.
                    None => return,
                }
            }
        });
        Ok(())
    }

    fn on_session(
        &self,
        event: &Event<AgenticSession>,
        fingerprints: &DashMap<ObjectKey, (u64, bool)>,
    ) {
        match event {
            Event::InitApply(session) | Event::Apply(session) => {
                let Some(key) = ObjectKey::of_session(session) else {
                    return;
                };
                let print = (session_fingerprint(session), session.phase().is_terminal());
                let previous = fingerprints.insert(key.clone(), print);
                if matches!(event, Event::InitApply(_)) {
                    self.queue.add_with(&key, Priority::Low);
                } else if previous.map(|p| p.0) != Some(print.0) {
                    self.queue.add(&key);
                }
                // A session finished (or restarted): its namespace may need fewer (or more)
                // Secret copies.
                if previous.is_some_and(|p| p.1 != print.1) {
                    self.queue.add_with(
                        &ObjectKey::SecretCopies(key.namespace().to_string()),
                        Priority::Low,
                    );
                }
            }
            Event::Delete(session) => {
                if let Some(key) = ObjectKey::of_session(session) {
                    fingerprints.remove(&key);
                    crate::handlers::session::forget_deleted(
                        key.namespace(),
                        &session.name_any(),
                        &self.ctx.state,
                    );
                    self.queue.add_with(
                        &ObjectKey::SecretCopies(key.namespace().to_string()),
                        Priority::Low,
                    );
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }

    /// `ambient-runner-secrets` or `ambient-non-vertex-integrations` of a namespace changed:
    /// its sessions may start (or their S3 settings, and so the copies, change).
    fn on_namespace_secret(&self, event: &Event<NamedSecret>, copies: bool) {
        let (Event::Apply(secret) | Event::Delete(secret)) = event else {
            return;
        };
        let Some(namespace) = secret.namespace() else {
            return;
        };
        for key in sessions_in(&self.ctx, &namespace) {
            self.queue.add(&key);
        }
        if copies {
            self.queue.add(&ObjectKey::SecretCopies(namespace));
        }
    }

    /// A shared Secret changed (a rotation): every managed namespace's copies follow.
    fn on_source(&self, event: &Event<NamedSecret>) {
        if !matches!(event, Event::Apply(_) | Event::Delete(_)) {
            return;
        }
        for namespace in self.ctx.caches.namespaces.state() {
            self.queue.add_with(
                &ObjectKey::SecretCopies(namespace.name_any()),
                Priority::Low,
            );
        }
    }

    fn on_child<K: RunnerChild>(&self, event: &Event<K>) {
        match event {
            Event::InitApply(child) => {
                if let Some(key) = ObjectKey::owning_session(child) {
                    self.queue.add_with(&key, Priority::Low);
                }
            }
            Event::Apply(child) | Event::Delete(child) => {
                if let Some(key) = ObjectKey::owning_session(child) {
                    self.queue.add(&key);
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }

    /// A Workload changed: its runner Job's session is looked at again (found through the
    /// Job's UID in the Job cache; a Workload of another Job is nobody's here).
    fn on_workload(&self, event: &Event<RunnerWorkload>) {
        let (Event::InitApply(workload) | Event::Apply(workload) | Event::Delete(workload)) = event
        else {
            return;
        };
        let (Some(namespace), Some(job_uid)) = (workload.namespace(), workload.job_uid()) else {
            return;
        };
        let job = self.ctx.caches.jobs.find_in(&namespace, |job| {
            job.metadata.uid.as_deref() == Some(job_uid)
        });
        if let Some(key) = job.as_deref().and_then(ObjectKey::owning_session) {
            match event {
                Event::InitApply(_) => self.queue.add_with(&key, Priority::Low),
                _ => self.queue.add(&key),
            }
        }
    }

    fn on_namespace(&self, event: &Event<Namespace>, managed: &DashSet<String>) {
        match event {
            Event::InitApply(namespace) => {
                managed.insert(namespace.name_any());
                self.queue
                    .add_with(&ObjectKey::Namespace(namespace.name_any()), Priority::Low);
            }
            Event::Apply(namespace) => {
                let name = namespace.name_any();
                self.queue.add(&ObjectKey::Namespace(name.clone()));
                if managed.insert(name.clone()) {
                    // Newly managed: its sessions were ignored until now.
                    for key in sessions_in(&self.ctx, &name) {
                        self.queue.add_with(&key, Priority::Low);
                    }
                }
            }
            Event::Delete(namespace) => {
                managed.remove(&namespace.name_any());
            }
            Event::Init | Event::InitDone => {}
        }
    }

    fn on_project_settings(
        &self,
        event: &Event<ProjectSettings>,
        generations: &DashMap<String, i64>,
    ) {
        match event {
            Event::InitApply(settings) | Event::Apply(settings) => {
                let Some(namespace) = settings.namespace() else {
                    return;
                };
                let key = ObjectKey::ProjectSettings(namespace.clone());
                let generation = settings.meta().generation.unwrap_or_default();
                let previous = generations.insert(namespace.clone(), generation);
                if matches!(event, Event::InitApply(_)) {
                    self.queue.add_with(&key, Priority::Low);
                    return;
                }
                if previous == Some(generation) {
                    return; // status-only update (our own write)
                }
                self.queue.add(&key);
                if previous.is_some() {
                    // The inactivity timeout may have changed for every session here.
                    for session in sessions_in(&self.ctx, &namespace) {
                        self.queue.add_with(&session, Priority::Low);
                    }
                }
            }
            Event::Delete(settings) => {
                if let Some(namespace) = settings.namespace() {
                    generations.remove(&namespace);
                    // A managed namespace always has its ProjectSettings: recreate it.
                    self.queue.add(&ObjectKey::Namespace(namespace));
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }
}

/// Which objects a watch holds with `--sharding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Those of this replica's buckets (namespaced kinds a session's reconcile reads).
    Mine,
    /// All it selects (cluster-scoped namespaces, the shared Secret sources every replica copies).
    All,
}

/// Feeds the queue's hooks into the `workqueue_*` families under [`QUEUE_NAME`].
/// Public so that the queue benchmarks build the queue exactly as [`run`] does.
pub struct WorkqueueMetrics {
    depth: prometheus::IntGauge,
    adds: prometheus::IntCounter,
    queue_duration: prometheus::Histogram,
    work_duration: prometheus::Histogram,
    unfinished: prometheus::Gauge,
    longest: prometheus::Gauge,
    retries: prometheus::IntCounter,
}

impl WorkqueueMetrics {
    /// The children of `metrics`' `workqueue_*` families for this queue.
    pub fn new(metrics: &Metrics) -> Self {
        let w = &metrics.families().workqueue;
        let name = [QUEUE_NAME];
        WorkqueueMetrics {
            depth: w.depth.with_label_values(&name),
            adds: w.adds.with_label_values(&name),
            queue_duration: w.queue_duration.with_label_values(&name),
            work_duration: w.work_duration.with_label_values(&name),
            unfinished: w.unfinished_work.with_label_values(&name),
            longest: w.longest_running_processor.with_label_values(&name),
            retries: w.retries.with_label_values(&name),
        }
    }
}

impl QueueMetrics for WorkqueueMetrics {
    fn add(&self) {
        self.adds.inc();
    }
    fn depth(&self, depth: usize) {
        self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    fn queue_latency(&self, latency: Duration) {
        self.queue_duration.observe(latency.as_secs_f64());
    }
    fn work_duration(&self, duration: Duration) {
        self.work_duration.observe(duration.as_secs_f64());
    }
    fn retry(&self) {
        self.retries.inc();
    }
    fn unfinished_work(&self, unfinished: Duration, longest_running: Duration) {
        self.unfinished.set(unfinished.as_secs_f64());
        self.longest.set(longest_running.as_secs_f64());
    }
}
