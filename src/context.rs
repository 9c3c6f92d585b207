//! What every handler needs, passed explicitly (no globals): the client, the configuration, the
//! caches, metrics and Events. A handler's own bookkeeping lives with that handler (the session
//! handler's in [`crate::handlers::session::SessionState`]).

use std::sync::Arc;

use agentic_crds::StatusSchema;
use kube::Client;

use crate::cache::Caches;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::observability::events::{EventPublisher, Reporter};
use crate::observability::health::Health;
use crate::observability::metrics::Metrics;
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
    /// [`crate::observability::health`]).
    pub client_config: kube::Config,
    /// Validated configuration.
    pub config: Config,
    /// Metric families.
    pub metrics: Metrics,
    /// Publishes Kubernetes Events about sessions.
    pub events: EventPublisher,
    /// Cluster state as last seen by the engine.
    pub caches: Caches,
    /// The agent registry and the model manifest.
    pub catalog: Catalog,
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
                catalog,
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
