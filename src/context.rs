//! Everything a handler needs, passed explicitly (no globals).

use std::sync::Arc;

use agentic_crds::StatusSchema;
use kube::Client;

use crate::caches::Caches;
use crate::config::Config;
use crate::engine::health::Health;
use crate::metrics::Metrics;
use crate::runtime::Catalog;
use crate::session::children::RunnerSettings;
use crate::session::events::{EventPublisher, Reporter};
use crate::session::refusals::PodRefusals;
use crate::session::runner_sync::RunnerSyncs;
use crate::session::waker::SessionWaker;
use crate::shard::ShardGate;

/// Name under which the operator reports Kubernetes Events and writes with server-side apply.
pub const FIELD_MANAGER: &str = "ambient-code-operator";

/// Shared state of the handlers; cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

/// The parts of a [`Context`].
pub struct ContextInner {
    /// API client.
    pub client: Client,
    /// What `client` was built from; each watch builds its own client from it (see
    /// [`crate::engine::health`]).
    pub client_config: kube::Config,
    /// Validated configuration.
    pub config: Config,
    /// Metric families.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events about sessions.
    pub events: EventPublisher,
    /// Cluster state as last seen by the engine.
    pub caches: Caches,
    /// Runner shape derived from the configuration.
    pub runner: RunnerSettings,
    /// The agent registry and the model manifest.
    pub catalog: Catalog,
    /// The runs this replica claimed and has not seen end: `(namespace, session, run start)`.
    pub claims: dashmap::DashSet<(String, String, String)>,
    /// Sessions this replica wrote, `(namespace, name)` → the versions its writes produced
    /// (see [`crate::session::reconcile`]): while the cache holds one our writes replaced, a
    /// reconcile would decide from state older than our own write.
    pub own_writes: dashmap::DashMap<(String, String), crate::session::OwnWrites>,
    /// Live-change calls to runners, made off the workers.
    pub syncs: RunnerSyncs,
    /// Refusals to create runner pods, by session (the Job controller's `FailedCreate`).
    pub refusals: PodRefusals,
    /// Makes a session due again from outside its reconcile (set by the engine).
    pub waker: SessionWaker,
    /// What `/healthz` reports: watches and in-flight reconciles.
    pub health: Health,
    /// With `--sharding`: which buckets this replica may reconcile (see [`crate::shard`]).
    pub shard: Option<ShardGate>,
    /// What the installed `AgenticSession` CRD keeps of a status write.
    pub status_schema: StatusSchema,
}

/// How the operator talks to the API server, and what it learnt of it at start-up.
pub struct Connection {
    /// API client.
    pub client: Client,
    /// What `client` was built from.
    pub client_config: kube::Config,
    /// What the installed `AgenticSession` CRD keeps of a status write.
    pub status_schema: StatusSchema,
}

impl Context {
    /// Assembles the context.
    pub fn new(
        connection: Connection,
        config: Config,
        metrics: Metrics,
        caches: Caches,
        health: Health,
        shard: Option<ShardGate>,
    ) -> Self {
        let Connection {
            client,
            client_config,
            status_schema,
        } = connection;
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: config
                .args
                .pod_name
                .clone()
                .unwrap_or_else(|| FIELD_MANAGER.into()),
        };
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
        let catalog = Catalog::new(
            &config.args.agent_registry_path,
            &config.args.models_manifest_path,
            metrics.clone(),
        );
        Context {
            inner: Arc::new(ContextInner {
                events: EventPublisher::new(client.clone(), reporter),
                client,
                client_config,
                config,
                metrics,
                caches,
                runner,
                catalog,
                claims: dashmap::DashSet::new(),
                own_writes: dashmap::DashMap::new(),
                syncs,
                refusals: PodRefusals::default(),
                waker,
                health,
                shard,
                status_schema,
            }),
        }
    }
}

impl std::ops::Deref for Context {
    type Target = ContextInner;
    fn deref(&self) -> &ContextInner {
        &self.inner
    }
}
